//! CPU helpers shared by kiln's fused kernels (`layers/fused*.rs`) and the trainer's fused
//! cross-entropy: run a closure compiled for AVX-512 or AVX2 + FMA, and vectorisable `exp`, `ln`
//! and softplus.

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

/// `ln(x)` in f32 for positive normal `x`, without a libm call (vectorisable): Cephes' `logf`
/// (mantissa in [√½, √2), degree-8 polynomial, ~1 ulp). Not for 0, subnormals, ∞ or NaN.
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let bits = x.to_bits();
    // x = m · 2^e with m in [0.5, 1).
    let mut e = ((bits >> 23) & 0xff) as i32 - 126;
    let mut m = f32::from_bits((bits & 0x807f_ffff) | 0x3f00_0000);
    if m < SQRT_HALF {
        e -= 1;
        m = m + m - 1.0;
    } else {
        m -= 1.0;
    }
    let fe = e as f32;
    let z = m * m;
    let mut p = 7.037_683_6e-2_f32;
    p = p * m - 1.151_461e-1;
    p = p * m + 1.167_699_9e-1;
    p = p * m - 1.242_014_1e-1;
    p = p * m + 1.424_932_3e-1;
    p = p * m - 1.666_805_8e-1;
    p = p * m + 2.000_071_4e-1;
    p = p * m - 2.499_999_4e-1;
    p = p * m + 0.333_333_3;
    let y = p * m * z + fe * -2.121_944_4e-4 - 0.5 * z;
    m + y + fe * 0.693_359_4
}

/// `ln(1 + eˣ)` (softplus without a threshold) for finite `x`, vectorisable:
/// `max(x, 0) + log1p(e^−|x|)`, with `log1p(t) = ln(u) · t / (u − 1)`, `u = 1 + t` (exact where
/// `u` rounds to 1: then `t`), which keeps the relative accuracy for tiny `t`.
#[inline(always)]
pub fn ln_1p_exp(x: f32) -> f32 {
    let t = exp(-x.abs());
    let u = 1.0 + t;
    let log1p = if u == 1.0 { t } else { ln(u) * t / (u - 1.0) };
    x.max(0.0) + log1p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_and_softplus_match_libm() {
        let mut worst_ln = 0.0f64;
        let mut worst_sp = 0.0f64;
        for i in 0..200_000 {
            // ln over many binades; softplus over [−60, 60].
            let x = 1e-30f32 * 1.0007f32.powi(i);
            let rel = ((ln(x) as f64) - (x as f64).ln()).abs() / (x as f64).ln().abs().max(1e-30);
            worst_ln = worst_ln.max(rel);
            let s = -60.0 + 120.0 * i as f32 / 200_000.0;
            let want = (s as f64).exp().ln_1p();
            worst_sp = worst_sp.max(((ln_1p_exp(s) as f64) - want).abs() / want);
        }
        assert!(worst_ln < 5e-7, "ln: worst relative error {worst_ln}");
        assert!(worst_sp < 1e-6, "softplus: worst relative error {worst_sp}");
    }
}
