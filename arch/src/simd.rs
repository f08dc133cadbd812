//! CPU helpers shared by kiln's fused kernels (`layers/fused.rs`) and the trainer's fused
//! cross-entropy: run a closure compiled for AVX2 + FMA, and a vectorisable `exp`.

/// Runs `f` compiled for AVX-512 (F) or else AVX2 + FMA, whichever the CPU has (the crate is
/// built for baseline x86-64, i.e. SSE2): `f` and what it calls must be `#[inline(always)]` to
/// inherit the features.
#[inline(always)]
pub fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: the CPU supports the enabled features (checked just above).
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: the CPU supports the enabled features (checked just above).
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// `exp(x)` in f32 without a libm call, so that loops over it vectorise: Cephes' `expf`
/// (range reduction by ln 2, degree-6 polynomial, ~1 ulp). Arguments are clamped to
/// [-87.3, 88.3] (below, the true value is under f32's smallest normal; above, it overflows);
/// NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = if x < -87.3 { -87.3 } else { x };
    let x = if x > 88.3 { 88.3 } else { x };
    let t = x * LOG2E + ROUND;
    let n = t - ROUND; // round(x / ln 2)
    let n_int = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_2e-4_f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * (r * r) + r + 1.0;
    y * f32::from_bits(((n_int + 127) as u32) << 23)
}
