//! Backend selection at run time. The CPU backend (`flex`) is always built; `cuda` and `wgpu` only with
//! the cargo features of the same names. `with_backend!` runs a generic function on the chosen one.

use crate::recipe::BackendKind;

/// The cargo feature a backend needs, and whether this binary has it.
pub fn available(kind: BackendKind) -> Result<(), String> {
    let (feature, built) = match kind {
        BackendKind::Flex => return Ok(()),
        BackendKind::Cuda => ("cuda", cfg!(feature = "cuda")),
        BackendKind::Wgpu => ("wgpu", cfg!(feature = "wgpu")),
    };
    if built {
        Ok(())
    } else {
        Err(format!(
            "backend `{feature}` is not in this binary: rebuild with `cargo build --release --features {feature}` \
             (or choose train.backend: flex)"
        ))
    }
}

/// `with_backend!(kind, func(args...))` calls `func::<Backend>(args..., device)`.
#[macro_export]
macro_rules! with_backend {
    ($kind:expr, $func:ident ( $($arg:expr),* $(,)? )) => {{
        use $crate::recipe::BackendKind;
        match $kind {
            BackendKind::Flex => $func::<burn::backend::Flex>($($arg,)* Default::default()),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => $func::<burn::backend::Cuda>($($arg,)* Default::default()),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => $func::<burn::backend::Wgpu>($($arg,)* Default::default()),
            #[allow(unreachable_patterns)]
            other => Err(anyhow::anyhow!($crate::backend::available(other).unwrap_err())),
        }
    }};
}

/// Memory the device allocator holds (MiB) on a GPU backend; `None` on the CPU backend, whose
/// memory is the process's RSS. Read at log steps; cubecl's pools do not shrink during a run,
/// so the value is the run's peak so far.
pub fn device_memory_mb<B: burn::prelude::Backend>(device: &B::Device) -> Option<f64> {
    #[allow(unused_variables)]
    let any = device as &dyn std::any::Any;
    #[cfg(feature = "cuda")]
    if let Some(d) = any.downcast_ref::<burn::backend::cuda::CudaDevice>() {
        use burn::cubecl::Runtime;
        let usage = burn::cubecl::cuda::CudaRuntime::client(d)
            .memory_usage()
            .ok()?;
        return Some(usage.bytes_reserved as f64 / (1024.0 * 1024.0));
    }
    #[cfg(feature = "wgpu")]
    if let Some(d) = any.downcast_ref::<burn::backend::wgpu::WgpuDevice>() {
        use burn::cubecl::Runtime;
        let usage = burn::cubecl::wgpu::WgpuRuntime::client(d)
            .memory_usage()
            .ok()?;
        return Some(usage.bytes_reserved as f64 / (1024.0 * 1024.0));
    }
    None
}

/// Peak FLOP/s used for MFU: `train.peak_flops` when set; on the CPU backend the f32 FMA rate of
/// `threads` cores, measured (`cpu_peak.rs`); on a GPU nothing is guessed (set `train.peak_flops`, e.g. 989e12 for an
/// H100 SXM's dense bf16).
pub fn peak_flops(kind: BackendKind, configured: Option<f64>, threads: usize) -> Option<f64> {
    configured.or_else(|| match kind {
        BackendKind::Flex => crate::cpu_peak::measured_peak_flops(threads),
        BackendKind::Cuda | BackendKind::Wgpu => None,
    })
}
