//! The CPU's f32 peak for MFU, measured rather than guessed.
//!
//! A nominal peak (cores × `cpu MHz` × FMA width) misses turbo: on a boosting CPU the real peak is
//! higher, and MFU against the nominal clock overstates utilisation (seen on a 2-vCPU AMD EPYC
//! VM: "88%" for a step that spends a fifth of its time outside matmuls). So the peak is timed:
//! every thread runs independent chains of fused multiply-adds on the widest vectors the CPU has
//! (AVX-512, AVX2 + FMA, or scalar), all threads at once, and the FLOPs done are divided by the
//! wall-clock time. Enough chains are kept in flight to hide the FMA latency on two FMA units
//! (latency 4 × 2 ports = 8 needed; 12 used). Takes ~0.1 s; measured once per process.

use std::sync::Mutex;
use std::time::Instant;

/// Independent accumulator chains per thread.
const CHAINS: usize = 12;
/// Loop iterations per thread in one round (~10 ms); one iteration is `CHAINS` vector FMAs.
const ITERS: usize = 1 << 22;
/// Timed rounds; the fastest counts.
const ROUNDS: usize = 8;

/// Measured f32 FLOP/s of `threads` threads running FMAs together, or `None` where the
/// measurement is meaningless (zero threads, a timer that did not move).
pub fn measured_peak_flops(threads: usize) -> Option<f64> {
    /// (threads, peak) pairs measured so far in this process.
    static MEASURED: Mutex<Vec<(usize, Option<f64>)>> = Mutex::new(Vec::new());
    let mut cache = MEASURED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, peak)) = cache.iter().find(|(t, _)| *t == threads) {
        return peak;
    }
    let peak = measure(threads);
    cache.push((threads, peak));
    peak
}

fn measure(threads: usize) -> Option<f64> {
    if threads == 0 {
        return None;
    }
    // One untimed round first, so that every core is awake and at its working clock; then the
    // best of several short rounds (a VM's vCPUs are now and then descheduled for a few ms).
    run_threads(threads, ITERS);
    let best = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let flops = run_threads(threads, ITERS);
            flops / start.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max);
    (best.is_finite() && best > 0.0).then_some(best)
}

/// FLOPs done by `threads` threads, each running `iters` iterations, all started together.
fn run_threads(threads: usize, iters: usize) -> f64 {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(move || fma_loop(iters)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
    })
}

/// Runs the FMA chains on this thread; returns the FLOPs done (2 per multiply-add and lane).
fn fma_loop(iters: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512 F (checked just above).
            let sink = unsafe { x86::fma_avx512(iters) };
            std::hint::black_box(sink);
            return (iters * CHAINS * 16 * 2) as f64;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            let sink = unsafe { x86::fma_avx2(iters) };
            std::hint::black_box(sink);
            return (iters * CHAINS * 8 * 2) as f64;
        }
    }
    let sink = fma_scalar(iters);
    std::hint::black_box(sink);
    (iters * CHAINS * 2) as f64
}

fn fma_scalar(iters: usize) -> f32 {
    let mut acc = [0.0f32; CHAINS];
    let (a, b) = std::hint::black_box((0.999_f32, 1e-3_f32));
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = x.mul_add(a, b);
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::CHAINS;
    use std::arch::x86_64::*;

    /// `acc = acc · a + b` on `CHAINS` independent 16-lane vectors; `a` < 1 keeps values finite.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma_avx512(iters: usize) -> f32 {
        let a = _mm512_set1_ps(std::hint::black_box(0.999));
        let b = _mm512_set1_ps(std::hint::black_box(1e-3));
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        let mut total = _mm512_setzero_ps();
        for x in acc {
            total = _mm512_add_ps(total, x);
        }
        _mm512_reduce_add_ps(total)
    }

    /// As [`fma_avx512`] on 8-lane vectors.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma_avx2(iters: usize) -> f32 {
        let a = _mm256_set1_ps(std::hint::black_box(0.999));
        let b = _mm256_set1_ps(std::hint::black_box(1e-3));
        let mut acc = [_mm256_setzero_ps(); CHAINS];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut lanes = [0.0f32; 8];
        let mut total = _mm256_setzero_ps();
        for x in acc {
            total = _mm256_add_ps(total, x);
        }
        _mm256_storeu_ps(lanes.as_mut_ptr(), total);
        lanes.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_peak_is_a_plausible_rate_and_is_measured_once() {
        let peak = measured_peak_flops(1).expect("a peak");
        // Any CPU this runs on does between 0.1 GFLOP/s (a scalar core under heavy load) and
        // 1 TFLOP/s (two AVX-512 FMA units at 8 GHz) per thread.
        assert!((1e8..1e12).contains(&peak), "{peak}");
        assert_eq!(
            measured_peak_flops(1),
            Some(peak),
            "cached, not re-measured"
        );
        assert_eq!(measured_peak_flops(0), None);
    }
}
