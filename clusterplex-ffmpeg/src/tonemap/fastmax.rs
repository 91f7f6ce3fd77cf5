//! Tables of the default path of `cpu` (PQ or HLG input, `mode=max`, 8-bit output: what Plex
//! sends), which runs the fused kernel of [`super::fused`] at every SIMD level (AVX2, SSE4.1,
//! NEON).
//!
//! Same chain as [`super::reference`], with no table gathers for the transfer functions (an
//! 8-lane gather costs ~12 cycles on Zen 3, and a pixel needed six); "`vpermps`" below is
//! [`super::lanes::Lanes::pick8`] (two `pshufb` under SSE4.1, `tbl` under NEON):
//! - PQ EOTF: sqrt(linear) as a degree-5 polynomial on each of 8 equal segments of E' in
//!   0..1.419 (where the linear value reaches the 1e4 cap); the segment index is the integer
//!   part of an affine map of the luma code and the upsampled Cb/Cr (the Y'CbCr -> R'G'B'
//!   matrix is folded into it) and each coefficient is picked with one `vpermps`. Squaring at
//!   the end keeps the relative error small over the whole range (< 5e-5 above 100 nits).
//! - HLG: the same segments over E' in 0..1 (the clamp of the segment index is the reference's
//!   clip of R'G'B' to 0..1) fit sqrt of the inverse OETF: exact below E' = 1/2 (sqrt(E'^2/3)
//!   is linear), and 1/2 is a segment boundary. Then the OOTF in a pass of its own: every
//!   channel times 10 * Ys^0.2 (gamma 1.2 for the 1000-nit reference display), Ys^0.2 computed
//!   like the BT.1886 inverse below (a cubic on the mantissa, two 8-entry exponent tables).
//! - the curve: hable, reinhard, mobius and linear are one rational function ([`Rational`]);
//!   bt2390, gamma and clip look up f(s) (the output, not the ratio, so neutral ramps stay
//!   monotonic) at bin centres, 256 bins per octave, one gather.
//! - BT.1886 inverse V = L^(1/2.4) = 2^(5e/12) * P(m) for L = 2^e * m: P a cubic on the
//!   mantissa (the same for every octave), 2^(5e/12) the product of two 8-entry tables indexed
//!   by the low and the next 3 bits of the float's exponent (two `vpermps`).
//!
//! Segments are fitted at table-build time through the Chebyshev-Lobatto points (exact at both
//! ends, so neighbouring segments meet and ramps stay monotonic).
//!
//! A band is done in one loop over 256-pixel chunks of each luma row (`fused::band`):
//! vertical chroma blend, horizontal upsampling, the pixel kernel (three short passes:
//! Y'CbCr -> linear (and the HLG OOTF pass), primaries + curve, BT.1886 inverse + BT.709
//! Y'CbCr), the luma store and the horizontal chroma downsampling all stay in L1; the vertical
//! downsampling and the chroma stores run once per output chroma row. Against the f64
//! reference a pixel's Y is within 0.3-0.45 of a code on top of rounding for legal R'G'B'
//! (0.83 for bt2390, whose looked-up curve is not interpolated; HLG 0.03-0.41). The scalar
//! build keeps the pass pipeline of `cpu.rs`; [`MaxTables::pixel`] is the scalar model of the
//! kernel (chunk tails, unit tests).

use super::Params;
use super::image::Transfer;
use super::math::*;
use super::{Mode, OutputFormat};

pub(super) const TONE_SHIFT: u32 = 15; // 23 - 15 = 8 mantissa bits: 256 bins per octave
const TONE_LO: i32 = -20; // the signal is floored at 1e-6 > 2^-20
const TONE_HI: i32 = 14; // linear values are capped at 1e4 < 2^14
/// PQ EOTF: sqrt(linear) as a degree-5 polynomial on each of 8 equal segments of E' in
/// 0..PQ_CAP (where the linear value reaches LIN_MAX); coefficients picked with one
/// `vpermps` each.
pub(super) const PQ_SEGS: usize = 8;
pub(super) const PQ_DEG: usize = 5;
/// Linear values are capped here (1e6 nits), as in `cpu.rs`.
const LIN_MAX: f64 = 1e4;
/// BT.1886 inverse: V = 2^(5e/12) * P(m) for L = 2^e * m, P a cubic on m in 1..2 (the same
/// for every octave); 2^(5e/12) = S1(e & 7) * S2(e >> 3) from two 8-entry tables (one
/// `vpermps` each) over the biased exponent. S2 is 0 for the exponent groups just below the
/// ones in use, and L is floored into them: V = 0 for L < 2^-32 (< 0.02 of a code), negative
/// L and NaN, without a compare.
pub(super) const OETF_FLOOR: f32 = 7.105_427_4e-15; // 2^-47: biased exponent 80, group 10
// Just below 2^10: above it (V > 17.9) the output is saturated whatever the other channels
// are (the smallest luma weight, 0.0722, times 17.9 is past 255).
pub(super) const OETF_MAX: f32 = 1_023.999_94;
/// HLG OOTF: Ys^(gamma - 1) = 2^((gamma - 1) e) * Q(m) for Ys = 2^e * m, the same scheme
/// as the BT.1886 inverse over biased exponents 64..=127 (groups 8..=15: all eight `vpermps`
/// slots). Ys is floored into group 8 (below it E <= Ys / 0.0593 < 2e-17: black whatever the
/// scale) and capped at 1 (the largest it can be: E <= 1 per channel, the weights sum to 1).
pub(super) const OOTF_FLOOR: f32 = 1e-18; // biased exponent 67, group 8
const OOTF_GROUPS: std::ops::RangeInclusive<usize> = 8..=15;

/// f(s) = mul * (s * (a * s + b) + c) / (s * (d * s + e) + g) + add, and f(s) = s below
/// `ident` (mobius): hable, reinhard, mobius and linear in one form. Computing these costs
/// fewer cycles than one gather on Zen 3 (~12 cycles per 8-lane gather).
#[derive(Clone, Copy)]
pub(super) struct Rational {
    pub(super) a: f32,
    pub(super) b: f32,
    pub(super) c: f32,
    pub(super) d: f32,
    pub(super) e: f32,
    pub(super) g: f32,
    pub(super) mul: f32,
    pub(super) add: f32,
    pub(super) ident: f32,
}

impl Rational {
    fn new(t: &super::ToneCurve) -> Option<Self> {
        use super::Curve;
        let [k0, k1, k2] = t.constants();
        let r = |a: f64, b: f64, c: f64, d: f64, e: f64, g: f64, mul: f64, add: f64, ident: f64| {
            Some(Rational {
                a: a as f32,
                b: b as f32,
                c: c as f32,
                d: d as f32,
                e: e as f32,
                g: g as f32,
                mul: mul as f32,
                add: add as f32,
                ident: ident as f32,
            })
        };
        match t.curve {
            // (x(Ax+CB)+DE)/(x(Ax+B)+DF) - E/F, times 1/h(peak).
            Curve::Hable => r(
                0.15,
                0.05,
                0.004,
                0.15,
                0.5,
                0.06,
                k0,
                -0.02 / 0.3 * k0,
                0.0,
            ),
            // s/(s+o) * (peak+o)/peak.
            Curve::Reinhard => r(0.0, 1.0, 0.0, 0.0, 1.0, t.param, k0, 0.0, 0.0),
            // s up to j, then k2 (s+a)/(s+b).
            Curve::Mobius => r(0.0, 1.0, k0, 0.0, 1.0, k1, k2, 0.0, t.param),
            // s * param / peak.
            Curve::Linear => r(0.0, 1.0, 0.0, 0.0, 0.0, 1.0, t.param / t.peak, 0.0, 0.0),
            _ => None,
        }
    }
}

/// a * b + c, unfused: `f32::mul_add` is a slow libm call on targets without hardware FMA
/// (the scalar and SSE4.1 builds).
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    a * b + c
}

/// Tables and constants of the fused path for one set of parameters.
pub(super) struct MaxTables {
    /// `pq[k][s]`: coefficient of t^k on segment s (t = position in the segment, 0..1) of
    /// sqrt(linear) of the input transfer: the PQ EOTF, or for HLG the inverse OETF (scene
    /// light E, before the OOTF).
    pub(super) pq: [[f32; PQ_SEGS]; PQ_DEG + 1],
    /// HLG input: after the inverse OETF, every channel is scaled by the OOTF
    /// 10 * Ys^(gamma - 1) (`ootf_*`, 0 for PQ).
    pub(super) hlg: bool,
    /// Q(m) = m^(gamma - 1) on 1..2, coefficients of m^0..m^3.
    pub(super) ootf_p: [f32; 4],
    /// 10 * 2^((gamma - 1) e) = ootf_s1[e_b & 7] * ootf_s2[(e_b >> 3) & 7] (see `pow_tables`).
    pub(super) ootf_s1: [f32; 8],
    pub(super) ootf_s2: [f32; 8],
    pub(super) tone: Box<[f32]>,
    pub(super) tone_base: i32,
    pub(super) tone_last: i32,
    /// P(m) = m^(5/12) on 1..2, coefficients of m^0..m^3.
    pub(super) oetf_p: [f32; 4],
    /// 2^(5e/12) = s1[e_b & 7] * s2[(e_b >> 3) & 7] for the biased exponent e_b.
    pub(super) oetf_s1: [f32; 8],
    pub(super) oetf_s2: [f32; 8],
    pub(super) desat: f32,
    /// The curves that are rational functions, computed instead of looked up by the kernel.
    pub(super) rational: Option<Rational>,
    /// Segment coordinate (E' * PQ_SEGS / cap; cap = 1 for HLG) = y_code * ky + y0
    /// (+ cr * kr_cr, + cb * kb_cb, - ...).
    pub(super) ky: f32,
    pub(super) y0: f32,
    pub(super) kr_cr: f32,
    pub(super) kg_cr: f32,
    pub(super) kg_cb: f32,
    pub(super) kb_cb: f32,
    /// Output Y code = oy0 + Y' * oys (+ 0.5 or the dither threshold, added by the caller).
    pub(super) oy0: f32,
    pub(super) oys: f32,
}

/// Coefficients (t^0..t^d) of the polynomial through f at the d + 1 Chebyshev-Lobatto points
/// of 0..1: near-minimax, and exact at both ends, so neighbouring segments meet (monotonic
/// ramps stay monotonic).
#[allow(clippy::needless_range_loop)]
fn fit_lobatto(f: impl Fn(f64) -> f64, d: usize) -> Vec<f64> {
    let n = d + 1;
    let ts: Vec<f64> = (0..n)
        .map(|k| 0.5 - 0.5 * (k as f64 * std::f64::consts::PI / d as f64).cos())
        .collect();
    // Gauss-Jordan on the (tiny, well-conditioned) Vandermonde system.
    let mut a: Vec<Vec<f64>> = ts
        .iter()
        .map(|&t| {
            let mut row: Vec<f64> = (0..n).map(|j| t.powi(j as i32)).collect();
            row.push(f(t));
            row
        })
        .collect();
    for c in 0..n {
        let piv = (c..n)
            .max_by(|&x, &y| a[x][c].abs().total_cmp(&a[y][c].abs()))
            .unwrap_or(c);
        a.swap(c, piv);
        for r in 0..n {
            if r != c {
                let k = a[r][c] / a[c][c];
                for j in c..=n {
                    a[r][j] -= k * a[c][j];
                }
            }
        }
    }
    (0..n).map(|i| a[i][n] / a[i][i]).collect()
}

/// E' where the PQ EOTF (in units of 100 nits) reaches LIN_MAX.
fn pq_cap() -> f64 {
    let (mut lo, mut hi) = (1.0f64, 2.0f64);
    for _ in 0..60 {
        let m = 0.5 * (lo + hi);
        if pq_eotf(m) / REFERENCE_WHITE >= LIN_MAX {
            hi = m;
        } else {
            lo = m;
        }
    }
    lo
}

/// `pq[k][s]`: coefficient of t^k of sqrt(linear) on PQ segment s of 0..cap.
fn pq_coefficients(cap: f64) -> [[f32; PQ_SEGS]; PQ_DEG + 1] {
    segment_coefficients(cap, |e| (pq_eotf(e) / REFERENCE_WHITE).min(LIN_MAX).sqrt())
}

/// `pq[k][s]` for HLG: sqrt of the inverse OETF on segment s of E' in 0..1. The segments
/// below E' = 1/2 (E = E'^2 / 3, sqrt linear) are exact, and 1/2 is a segment boundary, so
/// the log part starts on a segment of its own.
fn hlg_coefficients() -> [[f32; PQ_SEGS]; PQ_DEG + 1] {
    segment_coefficients(1.0, |e| hlg_inv_oetf(e).sqrt())
}

/// Coefficient of t^k of `f` on each of PQ_SEGS equal segments of 0..cap.
#[allow(clippy::needless_range_loop)]
fn segment_coefficients(cap: f64, f: impl Fn(f64) -> f64) -> [[f32; PQ_SEGS]; PQ_DEG + 1] {
    let w = cap / PQ_SEGS as f64;
    let mut pq = [[0f32; PQ_SEGS]; PQ_DEG + 1];
    for seg in 0..PQ_SEGS {
        let a = seg as f64 * w;
        let c = fit_lobatto(|t| f(a + t * w), PQ_DEG);
        for (k, v) in c.iter().enumerate() {
            pq[k][seg] = *v as f32;
        }
    }
    // Black is exactly black.
    pq[0][0] = 0.0;
    pq
}

/// x^g = s1[e_b & 7] * s2[(e_b >> 3) & 7] * P(m) * scale for x = 2^(e_b - 127) * m with m in
/// 1..2 (the biased exponent e_b in exponent groups e_b >> 3 in `groups`, at most 8 of
/// them; s2 is 0 for the others): P a cubic through the Lobatto points (coefficients of
/// m^0..m^3, the same for every octave), s1 and s2 two 8-entry tables (one `vpermps` each).
fn pow_tables(
    g: f64,
    groups: std::ops::RangeInclusive<usize>,
    scale: f64,
) -> ([f32; 4], [f32; 8], [f32; 8]) {
    // P in t = m - 1, then expanded to powers of m (the kernel has m, not t).
    let pt = fit_lobatto(|t| (1.0 + t).powf(g), 3);
    let p = [
        pt[0] - pt[1] + pt[2] - pt[3],
        pt[1] - 2.0 * pt[2] + 3.0 * pt[3],
        pt[2] - 3.0 * pt[3],
        pt[3],
    ]
    .map(|v| v as f32);
    let s1: [f32; 8] = std::array::from_fn(|b| (g * b as f64).exp2() as f32);
    let mut s2 = [0f32; 8];
    for grp in groups {
        s2[grp & 7] = (scale * (g * (8.0 * grp as f64 - 127.0)).exp2()) as f32;
    }
    (p, s1, s2)
}

/// The PQ EOTF (units of 100 nits, capped at 1e4) as the fused kernel's piecewise polynomial,
/// for the generic pass pipeline of `cpu.rs` under AVX2: no gathers, and accurate above
/// E' = 1 where the steep curve made a nearest-entry table ~1e-3 off.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct PqPoly {
    pq: [[f32; PQ_SEGS]; PQ_DEG + 1],
    /// Segments per unit of E'.
    scale: f32,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl PqPoly {
    pub(super) fn new() -> Self {
        let cap = pq_cap();
        PqPoly {
            pq: pq_coefficients(cap),
            scale: (PQ_SEGS as f64 / cap) as f32,
        }
    }

    /// Scalar model (chunk tails).
    fn eval(&self, e: f32) -> f32 {
        let x = (e * self.scale).clamp(0.0, PQ_SEGS as f32 - 1e-6 * PQ_SEGS as f32);
        let i = (x as usize).min(PQ_SEGS - 1);
        let t = x - i as f32;
        let mut z = self.pq[PQ_DEG][i];
        for k in (0..PQ_DEG).rev() {
            z = fma(z, t, self.pq[k][i]);
        }
        z * z
    }

    /// Non-linear E' -> linear, in place.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn pass_avx2(&self, v: &mut [f32]) {
        use std::arch::x86_64::*;
        // SAFETY: each load reads the 8 f32 of one array.
        let pq: [__m256; PQ_DEG + 1] =
            std::array::from_fn(|k| unsafe { _mm256_loadu_ps(self.pq[k].as_ptr()) });
        let scale = _mm256_set1_ps(self.scale);
        let hi = _mm256_set1_ps(PQ_SEGS as f32 - 1e-6 * PQ_SEGS as f32);
        let mut chunks = v.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` has 8 elements.
            unsafe {
                let x = _mm256_mul_ps(_mm256_loadu_ps(c.as_ptr()), scale);
                let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), hi);
                let i = _mm256_cvttps_epi32(x);
                let t = _mm256_sub_ps(x, _mm256_cvtepi32_ps(i));
                let mut z = _mm256_permutevar8x32_ps(pq[PQ_DEG], i);
                for k in (0..PQ_DEG).rev() {
                    z = _mm256_fmadd_ps(z, t, _mm256_permutevar8x32_ps(pq[k], i));
                }
                _mm256_storeu_ps(c.as_mut_ptr(), _mm256_mul_ps(z, z));
            }
        }
        for x in chunks.into_remainder() {
            *x = self.eval(*x);
        }
    }
}

/// s1[e_b & 7] * s2[(e_b >> 3) & 7] * P(m) for the bits of a positive float (see
/// [`pow_tables`]; scalar model of the kernel's `fused::pow_bits`).
#[inline(always)]
fn pow_bits(bits: u32, p: &[f32; 4], s1: &[f32; 8], s2: &[f32; 8]) -> f32 {
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let pm = fma(fma(fma(p[3], m, p[2]), m, p[1]), m, p[0]);
    pm * s1[((bits >> 23) & 7) as usize] * s2[((bits >> 26) & 7) as usize]
}

fn log_bins(lo: i32, hi: i32, shift: u32) -> (i32, usize) {
    ((lo + 127) << 23, ((hi - lo) as usize) << (23 - shift))
}

/// The value at the centre of bin `i` of a float-bits table.
fn bin_centre(base: i32, shift: u32, i: usize) -> f64 {
    let lo = f32::from_bits((base + ((i as i32) << shift)) as u32) as f64;
    let hi = f32::from_bits((base + ((i as i32 + 1) << shift)) as u32) as f64;
    (lo * hi).sqrt()
}

impl MaxTables {
    /// `None` when the fused path does not cover these parameters (other modes, 10-bit
    /// output): the general passes in `cpu.rs` handle those.
    pub(super) fn new(p: &Params, format: OutputFormat) -> Option<Self> {
        if p.mode != Mode::Max || format.is_10bit() {
            return None;
        }
        let hlg = p.signal.transfer == Transfer::Hlg;
        // HLG: R'G'B' is clipped to 0..1 (as in the reference), which the segment clamp does.
        let (cap, pq) = if hlg {
            (1.0, hlg_coefficients())
        } else {
            let cap = pq_cap();
            (cap, pq_coefficients(cap))
        };
        let (ootf_p, ootf_s1, ootf_s2) = if hlg {
            pow_tables(
                hlg_gamma(HLG_PEAK_NITS) - 1.0,
                OOTF_GROUPS,
                HLG_PEAK_NITS / REFERENCE_WHITE,
            )
        } else {
            ([0.0; 4], [0.0; 8], [0.0; 8])
        };
        let (tone_base, tone_n) = log_bins(TONE_LO, TONE_HI, TONE_SHIFT);
        let tone: Box<[f32]> = (0..tone_n)
            .map(|i| p.tone.apply(bin_centre(tone_base, TONE_SHIFT, i)) as f32)
            .collect();
        // Biased exponents 96 (2^-31) ..= 136 (just below 2^10): groups 12..=17; groups 10
        // and 11 (indices 2, 3) stay 0.
        let (oetf_p, oetf_s1, oetf_s2) = pow_tables(5.0 / 12.0, 96 >> 3..=136 >> 3, 1.0);
        let (yo, ys, _) = p.signal.range10();
        let (oy, sy, _, _, _) = super::image::out_range(format);
        let st = PQ_SEGS as f64 / cap;
        let kr = 2.0 * (1.0 - BT2020_LUMA[0]);
        let kb = 2.0 * (1.0 - BT2020_LUMA[2]);
        let kg = BT2020_LUMA[1];
        Some(MaxTables {
            pq,
            hlg,
            ootf_p,
            ootf_s1,
            ootf_s2,
            tone,
            tone_base,
            tone_last: tone_n as i32 - 1,
            oetf_p,
            oetf_s1,
            oetf_s2,
            desat: p.desat as f32,
            rational: Rational::new(&p.tone),
            ky: (st / ys) as f32,
            y0: (-yo * st / ys) as f32,
            kr_cr: (kr * st) as f32,
            kg_cr: (BT2020_LUMA[0] * kr / kg * st) as f32,
            kg_cb: (BT2020_LUMA[2] * kb / kg * st) as f32,
            kb_cb: (kb * st) as f32,
            oy0: oy as f32,
            oys: sy as f32,
        })
    }

    /// PQ EOTF (HLG: inverse OETF) of a segment coordinate (scalar model of the kernel).
    #[inline(always)]
    fn pq_lin(&self, x: f32) -> f32 {
        let x = x.clamp(0.0, PQ_SEGS as f32 - 1e-6 * PQ_SEGS as f32);
        let i = (x as usize).min(PQ_SEGS - 1);
        let t = x - i as f32;
        let mut z = self.pq[PQ_DEG][i];
        for k in (0..PQ_DEG).rev() {
            z = fma(z, t, self.pq[k][i]);
        }
        z * z
    }

    /// BT.1886 inverse (scalar model of the kernel).
    #[inline(always)]
    fn oetf(&self, l: f32) -> f32 {
        // Not `clamp`: NaN must land on the floor, as in the kernel.
        #[allow(clippy::manual_clamp)]
        let bits = l.max(OETF_FLOOR).min(OETF_MAX).to_bits();
        pow_bits(bits, &self.oetf_p, &self.oetf_s1, &self.oetf_s2)
    }

    /// HLG OOTF: scene-linear BT.2020 E in, display-linear out (scalar model of the kernel).
    #[inline(always)]
    fn ootf(&self, r: f32, g: f32, b: f32) -> (f32, f32, f32) {
        let ys = fma(
            BT2020_LUMA[2] as f32,
            b,
            fma(BT2020_LUMA[1] as f32, g, BT2020_LUMA[0] as f32 * r),
        );
        #[allow(clippy::manual_clamp)]
        let bits = ys.max(OOTF_FLOOR).min(1.0).to_bits();
        let k = pow_bits(bits, &self.ootf_p, &self.ootf_s1, &self.ootf_s2);
        (r * k, g * k, b * k)
    }

    /// One pixel: 10-bit luma code and normalised, upsampled Cb/Cr in; output Y
    /// code before rounding and normalised BT.709 Cb, Cr out.
    #[inline(always)]
    pub(super) fn pixel(&self, y: f32, cb: f32, cr: f32) -> (f32, f32, f32) {
        let yi = fma(y, self.ky, self.y0);
        let ir = fma(cr, self.kr_cr, yi);
        let ig = fma(-cb, self.kg_cb, fma(-cr, self.kg_cr, yi));
        let ib = fma(cb, self.kb_cb, yi);
        let (r, g, b) = (self.pq_lin(ir), self.pq_lin(ig), self.pq_lin(ib));
        let (r, g, b) = if self.hlg {
            self.ootf(r, g, b)
        } else {
            (r, g, b)
        };
        let m = BT2020_TO_BT709.map(|row| row.map(|v| v as f32));
        let mut r7 = fma(m[0][2], b, fma(m[0][1], g, m[0][0] * r));
        let mut g7 = fma(m[1][2], b, fma(m[1][1], g, m[1][0] * r));
        let mut b7 = fma(m[2][2], b, fma(m[2][1], g, m[2][0] * r));
        if self.desat > 0.0 {
            let l = fma(
                BT2020_LUMA[2] as f32,
                b7,
                fma(BT2020_LUMA[1] as f32, g7, BT2020_LUMA[0] as f32 * r7),
            );
            let ob = (l - self.desat).max(1e-6) / l.max(1e-6);
            r7 = fma(ob, l - r7, r7);
            g7 = fma(ob, l - g7, g7);
            b7 = fma(ob, l - b7, b7);
        }
        let sig = r7.max(g7).max(b7).max(1e-6);
        let f = match self.rational {
            Some(q) => {
                let num = fma(fma(q.a, sig, q.b), sig, q.c);
                let den = fma(fma(q.d, sig, q.e), sig, q.g);
                if sig <= q.ident {
                    sig
                } else {
                    fma(num / den, q.mul, q.add)
                }
            }
            _ => {
                let ti = ((sig.to_bits() as i32).wrapping_sub(self.tone_base) >> TONE_SHIFT)
                    .clamp(0, self.tone_last) as usize;
                self.tone[ti.min(self.tone.len() - 1)]
            }
        };
        let k = f / sig;
        let (rv, gv, bv) = (self.oetf(r7 * k), self.oetf(g7 * k), self.oetf(b7 * k));
        self.finish(rv, gv, bv)
    }

    /// V -> output Y code (unrounded), Cb, Cr.
    #[inline(always)]
    fn finish(&self, rv: f32, gv: f32, bv: f32) -> (f32, f32, f32) {
        let yv = fma(
            BT709_LUMA[2] as f32,
            bv,
            fma(BT709_LUMA[1] as f32, gv, BT709_LUMA[0] as f32 * rv),
        );
        let cb = (bv - yv) * (1.0 / 1.8556);
        let cr = (rv - yv) * (1.0 / 1.5748);
        (fma(yv, self.oys, self.oy0), cb, cr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tonemap::{Signal, TonemapOptions};

    /// The fused pixel against the f64 reference pixel over a grid of Y'CbCr codes, PQ and
    /// HLG (limited and full range).
    #[test]
    fn pixel_matches_reference() {
        let hlg_full = Signal {
            full_range: true,
            ..Signal::hlg()
        };
        for (spec, sig) in [
            ("linear:desat=0:peak=10", Signal::pq()),
            ("hable:desat=0:peak=100", Signal::pq()),
            ("bt2390:desat=2", Signal::pq()),
            ("hable:desat=0", Signal::hlg()),
            ("bt2390:desat=2", Signal::hlg()),
            ("reinhard:desat=0", hlg_full),
            ("clip:desat=0:peak=1", hlg_full),
        ] {
            let o: TonemapOptions = spec.parse().unwrap();
            let p = Params::new(&o, sig);
            let (yo, ys, cs) = sig.range10();
            let t = MaxTables::new(&p, OutputFormat::Nv12).unwrap();
            let (mut worst, mut sq, mut count) = (0f64, 0f64, 0usize);
            for y in (64..=940).step_by(12) {
                for cb in (64..=960).step_by(32) {
                    for cr in (64..=960).step_by(32) {
                        let (yn, cbn, crn) = (
                            (y as f64 - yo) / ys,
                            (cb as f64 - 512.0) / cs,
                            (cr as f64 - 512.0) / cs,
                        );
                        let r = super::super::reference::pixel(&p, yn, cbn, crn);
                        let (fy, _, _) = t.pixel(y as f32, cbn as f32, crn as f32);
                        let ry = (16.0 + 219.0 * r[0]).min(255.0);
                        let fy = (fy as f64).min(255.0);
                        let d = (ry - fy).abs();
                        // Outside the R'G'B' cube the PQ extrapolation is so steep that the
                        // 1/16384 input steps show; real pictures only get there through chroma
                        // interpolation next to saturated edges.
                        let rgb = ycbcr_to_rgb(BT2020_LUMA, yn, cbn, crn);
                        let inside = rgb.iter().all(|c| (0.0..=1.0).contains(c));
                        // Inside, the worst spots are where a BT.709 channel crosses zero after
                        // the primaries matrix (V = L^(1/2.4) is infinitely steep there).
                        // Outside, FFmpeg's desaturation has a jump at zero luma that f32 and f64
                        // can land on different sides of: no limit there.
                        let limit = match (inside, p.desat > 0.0) {
                            (true, _) => 1.0,
                            (false, false) => 1.5,
                            (false, true) => f64::INFINITY,
                        };
                        assert!(
                            d < limit,
                            "{spec} {sig:?} y={y} cb={cb} cr={cr}: ref {ry} fast {fy}"
                        );
                        if inside {
                            worst = worst.max(d);
                            sq += d * d;
                            count += 1;
                        }
                    }
                }
            }
            let rms = (sq / count as f64).sqrt();
            eprintln!(
                "{spec} {:?}: inside the cube worst |dY| {worst:.3}, rms {rms:.3} codes",
                sig.transfer
            );
            assert!(rms < 0.2, "{spec} {sig:?}: rms {rms}");
        }
    }

    /// The generic path's PQ EOTF polynomial against the f64 EOTF over 0..1.99, E' = 1..1.42
    /// (the steep part, chroma overshoot) included; AVX2 pass and scalar tail agree.
    #[test]
    fn pq_poly_matches_eotf() {
        let pq = PqPoly::new();
        let n = 2003; // not a multiple of 8
        let e: Vec<f32> = (0..n).map(|i| i as f32 * 1.99 / (n - 1) as f32).collect();
        let mut v = e.clone();
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        if avx2 {
            // SAFETY: AVX2 and FMA were detected above.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                pq.pass_avx2(&mut v)
            };
        } else {
            v.iter_mut().for_each(|x| *x = pq.eval(*x));
        }
        // sqrt(L) is what the segments fit: below 100 nits its absolute error (3e-4 of
        // sqrt(L) is < 0.15 of an output code, as in the fused kernel); above, the relative
        // error (the steep part where a nearest-entry table was 1e-3 off).
        let (mut worst_sqrt, mut worst_rel) = (0f64, 0f64);
        for (x, (&ei, &got)) in e.iter().zip(&v).enumerate() {
            let want = (pq_eotf(ei as f64) / REFERENCE_WHITE).min(LIN_MAX);
            let model = pq.eval(ei);
            assert!(
                (got - model).abs() <= 1e-6 * model + 1e-9,
                "x={x}: AVX2 pass {got}, scalar model {model}"
            );
            if want >= 1.0 {
                worst_rel = worst_rel.max((got as f64 / want - 1.0).abs());
            } else {
                worst_sqrt = worst_sqrt.max(((got as f64).sqrt() - want.sqrt()).abs());
            }
        }
        assert!(
            worst_sqrt < 3e-4 && worst_rel < 1e-4,
            "sqrt error {worst_sqrt:e}, relative error above 100 nits {worst_rel:e}"
        );
    }

    /// The HLG stage 1 (inverse OETF segments, OOTF from the exponent tables and the cubic)
    /// against the f64 chain over E' in 0..1 on grey and on saturated mixes.
    #[test]
    fn hlg_linear_matches_reference() {
        let o: TonemapOptions = "hable".parse().unwrap();
        let sig = Signal::hlg();
        let p = Params::new(&o, sig);
        let t = MaxTables::new(&p, OutputFormat::Nv12).unwrap();
        assert!(t.hlg);
        let n = 4001;
        let mut worst = 0f64;
        for i in 0..n {
            let e = i as f64 / (n - 1) as f64;
            for rgb in [
                [e, e, e],
                [e, 0.1 * e, 0.0],
                [0.02, e, 0.5 * e],
                [1.0, e, 0.0],
            ] {
                let want = super::super::reference::to_linear(&p.signal, rgb);
                let x = rgb.map(|c| (c * PQ_SEGS as f64) as f32);
                let (a, b) = (t.pq_lin(x[0]), t.pq_lin(x[1]));
                let got = t.ootf(a, b, t.pq_lin(x[2]));
                for (g, w) in [got.0, got.1, got.2].into_iter().zip(want) {
                    // Relative error above 1e-4 of SDR white, absolute below (~1e-4 of a
                    // code after the BT.1886 inverse).
                    let err = (g as f64 - w).abs() / w.max(1e-4);
                    worst = worst.max(err);
                }
            }
        }
        eprintln!("HLG inverse OETF + OOTF: worst relative error {worst:e}");
        assert!(worst < 2e-4, "worst relative error {worst:e}");
        // Black stays exactly black.
        assert_eq!(t.ootf(t.pq_lin(0.0), t.pq_lin(0.0), t.pq_lin(0.0)).0, 0.0);
    }
}
