//! Table-free AVX2 kernels for the cpu path (gathers are slow on Zen 3).
//!
//! `inv_gamma_pass` computes the BT.1886 inverse EOTF V = max(L, 0)^(1/2.4) as
//! exp2(log2(L) / 2.4): log2 from the float's exponent plus an atanh series on the mantissa
//! (centred on [√½, √2), |u| ≤ 0.172, truncation < 3e-8), exp2 from a degree-5 Taylor series on
//! [-½, ½] (relative error < 3e-6). That is far below 8- and 10-bit output steps and replaces the
//! six gathers per pixel of the interpolated table.

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    /// V = max(x, 0)^(1/2.4) for 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn inv_gamma8(x: __m256) -> __m256 {
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
        // u = (m - 1) / (m + 1) with a reciprocal estimate and one Newton step (rel. 1e-7),
        // cheaper than a divide.
        let den = _mm256_add_ps(m, one);
        let r0 = _mm256_rcp_ps(den);
        let r1 = _mm256_mul_ps(r0, _mm256_fnmadd_ps(den, r0, _mm256_set1_ps(2.0)));
        let u = _mm256_mul_ps(_mm256_sub_ps(m, one), r1);
        let u2 = _mm256_mul_ps(u, u);
        // ln(m) = 2 atanh(u) = 2(u + u³/3 + u⁵/5 + u⁷/7 + ...); the u⁹ term is < 3e-8.
        let mut s = _mm256_fmadd_ps(u2, _mm256_set1_ps(2.0 / 7.0), _mm256_set1_ps(2.0 / 5.0));
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
        // Degree 5: the next term is < 2.5e-6 relative.
        let mut p = _mm256_fmadd_ps(g, _mm256_set1_ps(1.0 / 120.0), _mm256_set1_ps(1.0 / 24.0));
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
        unsafe {
            super::avx2::inv_gamma_pass(&mut v, |x| (x.max(0.0) as f64).powf(1.0 / 2.4) as f32)
        };
        for (x, y) in xs.iter().zip(&v) {
            let want = (*x as f64).max(0.0).powf(1.0 / 2.4);
            assert!(
                (*y as f64 - want).abs() <= 5e-6 * want.max(1e-6),
                "x={x} got {y} want {want}"
            );
        }
    }
}

/// Row helpers for the chroma resampling and the 8-bit stores, AVX2 with scalar tails.
#[cfg(target_arch = "x86_64")]
pub(super) mod rows {
    use std::arch::x86_64::*;

    /// `out[2i] = h[i]`, `out[2i+1] = (h[i] + h[i+1]) / 2` (last column clamped), for
    /// `out.len() == 2 * h.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(in super::super) fn upsample_h(h: &[f32], out: &mut [f32]) {
        let cw = h.len().min(out.len() / 2);
        let mut i = 0;
        while i + 5 <= cw {
            // SAFETY: reads h[i..i+5] and writes out[2i..2i+8], both in bounds (i + 5 <= cw).
            unsafe {
                let a = _mm_loadu_ps(h.as_ptr().add(i));
                let b = _mm_loadu_ps(h.as_ptr().add(i + 1));
                let m = _mm_mul_ps(_mm_add_ps(a, b), _mm_set1_ps(0.5));
                let lo = _mm_unpacklo_ps(a, m);
                let hi = _mm_unpackhi_ps(a, m);
                _mm256_storeu_ps(out.as_mut_ptr().add(2 * i), _mm256_set_m128(hi, lo));
            }
            i += 4;
        }
        while i < cw {
            let i1 = (i + 1).min(cw - 1);
            out[2 * i] = h[i];
            out[2 * i + 1] = 0.5 * (h[i] + h[i1]);
            i += 1;
        }
    }

    /// `out[i] = o[2i-1]/4 + o[2i]/2 + o[2i+1]/4` (column -1 clamped to 0), for
    /// `o.len() == 2 * out.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(in super::super) fn downsample_h(o: &[f32], out: &mut [f32]) {
        let cw = out.len().min(o.len() / 2);
        if cw == 0 {
            return;
        }
        out[0] = 0.25 * o[0] + 0.5 * o[0] + 0.25 * o[(1).min(o.len() - 1)];
        let mut i = 1;
        // Needs o[2i-1 .. 2i+16].
        while 2 * i + 16 <= 2 * cw {
            // SAFETY: reads o[2i-1 .. 2i+16] and writes out[i..i+8]; 2i + 16 <= 2cw <= o.len()
            // and i + 8 <= cw.
            unsafe {
                let p = o.as_ptr().add(2 * i);
                let d1 = _mm256_add_ps(_mm256_loadu_ps(p.sub(1)), _mm256_loadu_ps(p));
                let d2 = _mm256_add_ps(_mm256_loadu_ps(p.add(7)), _mm256_loadu_ps(p.add(8)));
                let s = _mm256_hadd_ps(d1, d2);
                let s =
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(s)));
                _mm256_storeu_ps(
                    out.as_mut_ptr().add(i),
                    _mm256_mul_ps(s, _mm256_set1_ps(0.25)),
                );
            }
            i += 8;
        }
        while i < cw {
            let xp = (2 * i + 1).min(o.len() - 1);
            out[i] = 0.25 * o[2 * i - 1] + 0.5 * o[2 * i] + 0.25 * o[xp];
            i += 1;
        }
    }

    /// Stores `clamp(v, 0, max)` truncated to u8 (`max` <= 255).
    #[target_feature(enable = "avx2,fma")]
    pub(in super::super) fn store_u8(v: &[f32], out: &mut [u8], max: f32) {
        let n = v.len().min(out.len());
        let mut i = 0;
        let (zero, mx) = (_mm256_setzero_ps(), _mm256_set1_ps(max));
        while i + 16 <= n {
            // SAFETY: reads v[i..i+16], writes out[i..i+16], both within n.
            unsafe {
                let a = _mm256_loadu_ps(v.as_ptr().add(i));
                let b = _mm256_loadu_ps(v.as_ptr().add(i + 8));
                let a = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(a, zero), mx));
                let b = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(b, zero), mx));
                // packs work per 128-bit lane: fix the order with a permute.
                let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(a, b));
                let bytes =
                    _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
                _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut __m128i, bytes);
            }
            i += 16;
        }
        while i < n {
            out[i] = v[i].clamp(0.0, max) as u8;
            i += 1;
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod row_tests {
    fn have() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    #[test]
    fn rows_match_scalar() {
        if !have() {
            return;
        }
        for cw in [1usize, 2, 5, 8, 9, 17, 40, 43] {
            let h: Vec<f32> = (0..cw).map(|i| ((i * 37 % 11) as f32) - 3.0).collect();
            let mut up = vec![0f32; 2 * cw];
            // SAFETY: AVX2 and FMA were detected.
            unsafe { super::rows::upsample_h(&h, &mut up) };
            for i in 0..cw {
                assert_eq!(up[2 * i], h[i]);
                assert_eq!(up[2 * i + 1], 0.5 * (h[i] + h[(i + 1).min(cw - 1)]));
            }
            let mut down = vec![0f32; cw];
            // SAFETY: as above.
            unsafe { super::rows::downsample_h(&up, &mut down) };
            for i in 0..cw {
                let xm = (2 * i).saturating_sub(1);
                let want = 0.25 * up[xm] + 0.5 * up[2 * i] + 0.25 * up[2 * i + 1];
                assert!((down[i] - want).abs() < 1e-5, "cw={cw} i={i}");
            }
            let v: Vec<f32> = (0..2 * cw).map(|i| i as f32 * 13.7 - 40.0).collect();
            let mut o = vec![0u8; 2 * cw];
            // SAFETY: as above.
            unsafe { super::rows::store_u8(&v, &mut o, 255.0) };
            for (x, b) in v.iter().zip(&o) {
                assert_eq!(*b, x.clamp(0.0, 255.0) as u8);
            }
        }
    }
}
