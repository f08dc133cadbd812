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
