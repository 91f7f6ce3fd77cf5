//! Table-free AVX2 kernels for the cpu path (gathers are slow on Zen 3).
//!
//! `inv_gamma_pass` computes the BT.1886 inverse EOTF V = max(L, 0)^(1/2.4) as
//! exp2(log2(L) / 2.4): log2 from the float's exponent plus an atanh series on the mantissa
//! (centred on [√½, √2), |u| ≤ 0.172, truncation < 1e-8), exp2 from a degree-6 Taylor series on
//! [-½, ½] (relative error < 2e-7). That is far below 8- and 10-bit output steps and replaces the
//! six gathers per pixel of the interpolated table.

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    /// V = max(x, 0)^(1/2.4) for 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(in super::super) fn inv_gamma8(x: __m256) -> __m256 {
        const LN2: f32 = std::f32::consts::LN_2;
        let one = _mm256_set1_ps(1.0);
        // Below 1e-30 the output is < 1e-12: treat as that tiny value (keeps floats normal).
        let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_setzero_ps());
        let xc = _mm256_max_ps(x, _mm256_set1_ps(1e-30));
        let bits = _mm256_castps_si256(xc);
        let mut e = _mm256_sub_epi32(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(127));
        let mut m = _mm256_castsi256_ps(_mm256_or_si256(
            _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
            _mm256_set1_epi32(0x3f80_0000),
        ));
        // Centre the mantissa on 1: m in [√½, √2).
        let big = _mm256_cmp_ps::<_CMP_GT_OQ>(m, _mm256_set1_ps(std::f32::consts::SQRT_2));
        m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5)), big);
        e = _mm256_sub_epi32(e, _mm256_castps_si256(big)); // big lanes are -1: e += 1
        let u = _mm256_div_ps(_mm256_sub_ps(m, one), _mm256_add_ps(m, one));
        let u2 = _mm256_mul_ps(u, u);
        // ln(m) = 2 atanh(u) = 2(u + u³/3 + u⁵/5 + u⁷/7 + ...)
        let mut s = _mm256_fmadd_ps(u2, _mm256_set1_ps(2.0 / 9.0), _mm256_set1_ps(2.0 / 7.0));
        s = _mm256_fmadd_ps(u2, s, _mm256_set1_ps(2.0 / 5.0));
        s = _mm256_fmadd_ps(u2, s, _mm256_set1_ps(2.0 / 3.0));
        s = _mm256_fmadd_ps(u2, s, _mm256_set1_ps(2.0));
        let ln_m = _mm256_mul_ps(u, s);
        // y = log2(x) / 2.4
        let y = _mm256_mul_ps(
            _mm256_fmadd_ps(ln_m, _mm256_set1_ps(1.0 / LN2), _mm256_cvtepi32_ps(e)),
            _mm256_set1_ps(1.0 / 2.4),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
        let g = _mm256_mul_ps(_mm256_sub_ps(y, n), _mm256_set1_ps(LN2));
        let mut p = _mm256_fmadd_ps(g, _mm256_set1_ps(1.0 / 720.0), _mm256_set1_ps(1.0 / 120.0));
        p = _mm256_fmadd_ps(g, p, _mm256_set1_ps(1.0 / 24.0));
        p = _mm256_fmadd_ps(g, p, _mm256_set1_ps(1.0 / 6.0));
        p = _mm256_fmadd_ps(g, p, _mm256_set1_ps(0.5));
        p = _mm256_fmadd_ps(g, p, one);
        p = _mm256_fmadd_ps(g, p, one);
        let r = _mm256_castsi256_ps(_mm256_add_epi32(
            _mm256_castps_si256(p),
            _mm256_slli_epi32::<23>(_mm256_cvtps_epi32(n)),
        ));
        _mm256_and_ps(r, pos)
    }

    /// In place over a slice; the tail (fewer than 8) goes through `tail`.
    #[target_feature(enable = "avx2,fma")]
    pub(in super::super) fn inv_gamma_pass(v: &mut [f32], tail: impl Fn(f32) -> f32) {
        let mut chunks = v.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` has exactly 8 elements.
            unsafe {
                let x = _mm256_loadu_ps(c.as_ptr());
                _mm256_storeu_ps(c.as_mut_ptr(), inv_gamma8(x));
            }
        }
        for x in chunks.into_remainder() {
            *x = tail(*x);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    #[test]
    fn inv_gamma_matches_powf() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            return;
        }
        let mut xs: Vec<f32> = vec![-1.0, 0.0, 1e-40, 1e-20];
        let mut x = 1e-9f32;
        while x < 1e4 {
            xs.push(x);
            x *= 1.0007;
        }
        let mut v = xs.clone();
        // SAFETY: AVX2 and FMA were detected above.
        unsafe { super::avx2::inv_gamma_pass(&mut v, |_| f32::NAN) };
        for (x, y) in xs.iter().zip(&v) {
            let want = (*x as f64).max(0.0).powf(1.0 / 2.4);
            assert!(
                (*y as f64 - want).abs() <= 1e-6 * want.max(1e-6),
                "x={x} got {y} want {want}"
            );
        }
    }
}
