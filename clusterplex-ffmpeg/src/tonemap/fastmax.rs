//! The default path of `cpu` under AVX2: PQ input, `mode=max`, 8-bit output (what Plex sends).
//!
//! Same chain as [`super::reference`], with no table gathers for the transfer functions (an
//! 8-lane gather costs ~12 cycles on Zen 3, and a pixel needed six):
//! - PQ EOTF: sqrt(linear) as a degree-5 polynomial on each of 8 equal segments of E' in
//!   0..1.419 (where the linear value reaches the 1e4 cap); the segment index is the integer
//!   part of an affine map of the luma code and the upsampled Cb/Cr (the Y'CbCr -> R'G'B'
//!   matrix is folded into it) and each coefficient is picked with one `vpermps`. Squaring at
//!   the end keeps the relative error small over the whole range (< 5e-5 above 100 nits).
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
//! A band is done in one loop over 256-pixel chunks of each luma row ([`MaxTables::band_avx2`]):
//! vertical chroma blend, horizontal upsampling, the pixel kernel (three short passes:
//! Y'CbCr -> linear, primaries + curve, BT.1886 inverse + BT.709 Y'CbCr), the luma store and the
//! horizontal chroma downsampling all stay in L1; the vertical downsampling and the chroma
//! stores run once per output chroma row. Against the f64 reference a pixel's Y is within
//! 0.3-0.45 of a code on top of rounding for legal R'G'B' (0.83 for bt2390, whose looked-up
//! curve is not interpolated). SSE4.1, NEON and the scalar build keep the pass pipeline of
//! `cpu.rs`; [`MaxTables::pixel`] is the scalar model of the kernel (chunk tails, unit tests).

use super::Params;
use super::image::Transfer;
use super::math::*;
use super::{Mode, OutputFormat};

const TONE_SHIFT: u32 = 15; // 23 - 15 = 8 mantissa bits: 256 bins per octave
const TONE_LO: i32 = -20; // the signal is floored at 1e-6 > 2^-20
const TONE_HI: i32 = 14; // linear values are capped at 1e4 < 2^14
/// PQ EOTF: sqrt(linear) as a degree-5 polynomial on each of 8 equal segments of E' in
/// 0..PQ_CAP (where the linear value reaches LIN_MAX); coefficients picked with one
/// `vpermps` each.
const PQ_SEGS: usize = 8;
const PQ_DEG: usize = 5;
/// Linear values are capped here (1e6 nits), as in `cpu.rs`.
const LIN_MAX: f64 = 1e4;
/// BT.1886 inverse: V = 2^(5e/12) * P(m) for L = 2^e * m, P a cubic on m in 1..2 (the same
/// for every octave); 2^(5e/12) = S1(e & 7) * S2(e >> 3) from two 8-entry tables (one
/// `vpermps` each) over the biased exponent. S2 is 0 for the exponent groups just below the
/// ones in use, and L is floored into them: V = 0 for L < 2^-32 (< 0.02 of a code), negative
/// L and NaN, without a compare.
const OETF_FLOOR: f32 = 7.105_427_4e-15; // 2^-47: biased exponent 80, group 10
// Just below 2^10: above it (V > 17.9) the output is saturated whatever the other channels
// are (the smallest luma weight, 0.0722, times 17.9 is past 255).
const OETF_MAX: f32 = 1_023.999_94;

/// f(s) = mul * (s * (a * s + b) + c) / (s * (d * s + e) + g) + add, and f(s) = s below
/// `ident` (mobius): hable, reinhard, mobius and linear in one form. Computing these costs
/// fewer cycles than one gather on Zen 3 (~12 cycles per 8-lane gather).
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Rational {
    a: f32,
    b: f32,
    c: f32,
    d: f32,
    e: f32,
    g: f32,
    mul: f32,
    add: f32,
    ident: f32,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    a * b + c
}

/// Tables and constants of the fused path for one set of parameters.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct MaxTables {
    /// `pq[k][s]`: coefficient of t^k on segment s (t = position in the segment, 0..1).
    pq: [[f32; PQ_SEGS]; PQ_DEG + 1],
    tone: Box<[f32]>,
    tone_base: i32,
    tone_last: i32,
    /// P(m) = m^(5/12) on 1..2, coefficients of m^0..m^3.
    oetf_p: [f32; 4],
    /// 2^(5e/12) = s1[e_b & 7] * s2[(e_b >> 3) & 7] for the biased exponent e_b.
    oetf_s1: [f32; 8],
    oetf_s2: [f32; 8],
    desat: f32,
    /// The curves that are rational functions, computed instead of looked up under AVX2.
    rational: Option<Rational>,
    /// PQ segment coordinate (E' * PQ_SEGS / PQ_CAP) = y_code * ky + y0 (+ cr * kr_cr,
    /// + cb * kb_cb, - ...).
    ky: f32,
    y0: f32,
    kr_cr: f32,
    kg_cr: f32,
    kg_cb: f32,
    kb_cb: f32,
    /// Output Y code = oy0 + Y' * oys (+ 0.5 or the dither threshold, added by the caller).
    oy0: f32,
    oys: f32,
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
#[allow(clippy::needless_range_loop)]
fn pq_coefficients(cap: f64) -> [[f32; PQ_SEGS]; PQ_DEG + 1] {
    let w = cap / PQ_SEGS as f64;
    let mut pq = [[0f32; PQ_SEGS]; PQ_DEG + 1];
    for seg in 0..PQ_SEGS {
        let a = seg as f64 * w;
        let c = fit_lobatto(
            |t| (pq_eotf(a + t * w) / REFERENCE_WHITE).min(LIN_MAX).sqrt(),
            PQ_DEG,
        );
        for (k, v) in c.iter().enumerate() {
            pq[k][seg] = *v as f32;
        }
    }
    // Black is exactly black.
    pq[0][0] = 0.0;
    pq
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

fn log_bins(lo: i32, hi: i32, shift: u32) -> (i32, usize) {
    ((lo + 127) << 23, ((hi - lo) as usize) << (23 - shift))
}

/// The value at the centre of bin `i` of a float-bits table.
fn bin_centre(base: i32, shift: u32, i: usize) -> f64 {
    let lo = f32::from_bits((base + ((i as i32) << shift)) as u32) as f64;
    let hi = f32::from_bits((base + ((i as i32 + 1) << shift)) as u32) as f64;
    (lo * hi).sqrt()
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl MaxTables {
    /// `None` when the fused path does not cover these parameters (HLG, other modes, 10-bit
    /// output): the general passes in `cpu.rs` handle those.
    pub(super) fn new(p: &Params, format: OutputFormat) -> Option<Self> {
        if p.signal.transfer != Transfer::Pq || p.mode != Mode::Max || format.is_10bit() {
            return None;
        }
        let cap = pq_cap();
        let pq = pq_coefficients(cap);
        let (tone_base, tone_n) = log_bins(TONE_LO, TONE_HI, TONE_SHIFT);
        let tone: Box<[f32]> = (0..tone_n)
            .map(|i| p.tone.apply(bin_centre(tone_base, TONE_SHIFT, i)) as f32)
            .collect();
        // P in t = m - 1, then expanded to powers of m (the kernel has m, not t).
        let pt = fit_lobatto(|t| (1.0 + t).powf(5.0 / 12.0), 3);
        let oetf_p = [
            pt[0] - pt[1] + pt[2] - pt[3],
            pt[1] - 2.0 * pt[2] + 3.0 * pt[3],
            pt[2] - 3.0 * pt[3],
            pt[3],
        ]
        .map(|v| v as f32);
        let oetf_s1: [f32; 8] = std::array::from_fn(|b| (5.0 * b as f64 / 12.0).exp2() as f32);
        let mut oetf_s2 = [0f32; 8];
        // Biased exponents 96 (2^-31) ..= 136 (just below 2^10): groups 12..=17; groups 10
        // and 11 (indices 2, 3) stay 0.
        for g in 96 >> 3..=136 >> 3 {
            oetf_s2[g & 7] = (5.0 * (8.0 * g as f64 - 127.0) / 12.0).exp2() as f32;
        }
        let (yo, ys, _) = p.signal.range10();
        let (oy, sy, _, _, _) = super::image::out_range(format);
        let st = PQ_SEGS as f64 / cap;
        let kr = 2.0 * (1.0 - BT2020_LUMA[0]);
        let kb = 2.0 * (1.0 - BT2020_LUMA[2]);
        let kg = BT2020_LUMA[1];
        Some(MaxTables {
            pq,
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

    /// PQ EOTF of a segment coordinate (scalar model of the kernel).
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
        let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
        let q = &self.oetf_p;
        let pm = fma(fma(fma(q[3], m, q[2]), m, q[1]), m, q[0]);
        pm * self.oetf_s1[((bits >> 23) & 7) as usize] * self.oetf_s2[((bits >> 26) & 7) as usize]
    }

    /// One pixel: 10-bit luma code and normalised, upsampled Cb/Cr in; output Y
    /// code before rounding and normalised BT.709 Cb, Cr out.
    #[inline(always)]
    fn pixel(&self, y: f32, cb: f32, cr: f32) -> (f32, f32, f32) {
        let yi = fma(y, self.ky, self.y0);
        let ir = fma(cr, self.kr_cr, yi);
        let ig = fma(-cb, self.kg_cb, fma(-cr, self.kg_cr, yi));
        let ib = fma(cb, self.kb_cb, yi);
        let (r, g, b) = (self.pq_lin(ir), self.pq_lin(ig), self.pq_lin(ib));
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
            Some(q) if cfg!(target_arch = "x86_64") => {
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

/// Chunk width (luma pixels) of the fused band loop: every per-pixel buffer of a chunk stays in L1.
#[cfg(target_arch = "x86_64")]
const BAND_CHUNK: usize = 256;

/// The pixel kernel's intermediate values for one chunk.
#[cfg(target_arch = "x86_64")]
struct ChunkScratch {
    buf: [[f32; BAND_CHUNK]; 3],
}

/// Per-thread buffers of [`MaxTables::band_avx2`].
#[cfg(target_arch = "x86_64")]
struct BandScratch {
    /// Converted input chroma rows (slot j % 3 holds row `crow[slot]`), with 16 spare
    /// entries holding copies of the last column (the horizontal edge clamp, for free).
    cb_rows: [Vec<f32>; 3],
    cr_rows: [Vec<f32>; 3],
    crow: [usize; 3],
    /// Horizontally downsampled output chroma of the last 4 luma rows (slot row % 4).
    ring_b: [Vec<f32>; 4],
    ring_r: [Vec<f32>; 4],
    /// One output chroma row as f32 codes (NV12: interleaved).
    crow_out: Vec<f32>,
}

#[cfg(target_arch = "x86_64")]
impl MaxTables {
    /// The whole band (output chroma rows j0..j1, luma rows 2j0..2j1) in one loop over 256-pixel
    /// chunks of each luma row: vertical chroma blend, horizontal upsampling, the pixel kernel,
    /// the luma store and the horizontal chroma downsampling all run on L1-resident chunk
    /// buffers; the vertical downsampling and the chroma stores run once per output chroma row.
    /// `dst` holds only this band's rows.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn band_avx2(
        &self,
        src: &super::image::SrcImage,
        dst: &mut super::image::DstImage,
        j0: usize,
        j1: usize,
        dither: bool,
        chroma_scale: f32,
    ) {
        use super::image::{InputLayout, bayer8};
        use std::arch::x86_64::*;
        let (w, h) = (src.width, src.height);
        let (cw, ch) = (w / 2, h / 2);
        if cw == 0 || ch == 0 || j0 >= j1 {
            return;
        }
        let pad = cw + 16;
        let mk = |n: usize| vec![0f32; n];
        let mut s = BandScratch {
            cb_rows: [mk(pad), mk(pad), mk(pad)],
            cr_rows: [mk(pad), mk(pad), mk(pad)],
            crow: [usize::MAX; 3],
            ring_b: [mk(cw), mk(cw), mk(cw), mk(cw)],
            ring_r: [mk(cw), mk(cw), mk(cw), mk(cw)],
            crow_out: mk(w),
        };
        let k = Kernel::new(self);
        let mut cs = ChunkScratch {
            buf: [[0f32; BAND_CHUNK]; 3],
        };
        let shift = if src.layout == InputLayout::P010 {
            6
        } else {
            0
        };
        let (ooc, osc) = (128f32, 224f32);
        // Chunk buffers: upsampled input chroma, the vertical blend (+1 for the right
        // neighbour, +8 spare), output Y codes, output chroma with one slot of left context.
        let mut hb = [0f32; BAND_CHUNK / 2 + 16];
        let mut hr = [0f32; BAND_CHUNK / 2 + 16];
        let mut ub = [0f32; BAND_CHUNK];
        let mut ur = [0f32; BAND_CHUNK];
        let mut oy = [0f32; BAND_CHUNK];
        let mut ob = [0f32; BAND_CHUNK + 8];
        let mut or = [0f32; BAND_CHUNK + 8];
        let row_first = (2 * j0).saturating_sub(1);
        let row_last = (2 * j1).min(h - 1);
        let mut next_j = j0;
        for row in row_first..=row_last {
            let yb = &src.planes[0][row * src.strides[0]..][..w * 2];
            let j = row / 2;
            let jn = if row % 2 == 1 {
                (j + 1).min(ch - 1)
            } else {
                j.saturating_sub(1)
            };
            for jj in [j, jn] {
                let slot = jj % 3;
                if s.crow[slot] != jj {
                    convert_chroma_row(
                        src,
                        jj,
                        chroma_scale,
                        &mut s.cb_rows[slot],
                        &mut s.cr_rows[slot],
                    );
                    s.crow[slot] = jj;
                }
            }
            let round: [f32; 8] = if dither {
                std::array::from_fn(|x| bayer8(x, row))
            } else {
                [0.5; 8]
            };
            let own = row >= 2 * j0 && row < 2 * j1;
            let slot = row % 4;
            let mut x0 = 0;
            while x0 < w {
                let n = (w - x0).min(BAND_CHUNK);
                let (c0, cn) = (x0 / 2, n / 2);
                {
                    let (a_b, a_r) = (&s.cb_rows[j % 3], &s.cr_rows[j % 3]);
                    let (b_b, b_r) = (&s.cb_rows[jn % 3], &s.cr_rows[jn % 3]);
                    // Vertical blend of chroma columns c0 ..= c0 + cn (rounded up to 8; past the
                    // last column the rows hold copies of it: the edge clamp).
                    let mut i = 0;
                    while i <= cn {
                        // SAFETY: c0 + i + 8 <= c0 + cn + 8 <= cw + 8 < pad (the row length);
                        // i + 8 <= cn + 8 <= BAND_CHUNK / 2 + 8 < hb.len().
                        unsafe {
                            let v3 = _mm256_set1_ps(0.75);
                            let v1 = _mm256_set1_ps(0.25);
                            let q = c0 + i;
                            let vb = _mm256_fmadd_ps(
                                _mm256_loadu_ps(a_b.as_ptr().add(q)),
                                v3,
                                _mm256_mul_ps(_mm256_loadu_ps(b_b.as_ptr().add(q)), v1),
                            );
                            let vr = _mm256_fmadd_ps(
                                _mm256_loadu_ps(a_r.as_ptr().add(q)),
                                v3,
                                _mm256_mul_ps(_mm256_loadu_ps(b_r.as_ptr().add(q)), v1),
                            );
                            _mm256_storeu_ps(hb.as_mut_ptr().add(i), vb);
                            _mm256_storeu_ps(hr.as_mut_ptr().add(i), vr);
                        }
                        i += 8;
                    }
                }
                upsample_chunk(&hb, &mut ub, cn);
                upsample_chunk(&hr, &mut ur, cn);
                self.chunk_avx2(
                    &k,
                    &mut cs,
                    &yb[2 * x0..2 * (x0 + n)],
                    shift,
                    &ub[..n],
                    &ur[..n],
                    &round,
                    &mut oy[..n],
                    &mut ob[8..8 + n],
                    &mut or[8..8 + n],
                );
                if own {
                    let lr = row - 2 * j0;
                    let out = &mut dst.planes[0][lr * dst.strides[0] + x0..][..n];
                    super::fastmath::rows::store_u8(&oy[..n], out, 255.0);
                }
                // Left context of column 0: the edge clamp (o[-1] = o[0]).
                if x0 == 0 {
                    ob[7] = ob[8];
                    or[7] = or[8];
                }
                downsample_chunk(&ob, &mut s.ring_b[slot][c0..c0 + cn]);
                downsample_chunk(&or, &mut s.ring_r[slot][c0..c0 + cn]);
                // The next chunk's left context.
                ob[7] = ob[8 + n - 1];
                or[7] = or[8 + n - 1];
                x0 += n;
            }
            // Vertical [1/8, 3/8, 3/8, 1/8] over rows 2j-1 ..= 2j+2 once they are all done.
            while next_j < j1 && (2 * next_j + 2 <= row || row == h - 1) {
                let jj = next_j;
                let taps = [
                    (2 * jj).saturating_sub(1) % 4,
                    (2 * jj) % 4,
                    (2 * jj + 1) % 4,
                    (2 * jj + 2).min(h - 1) % 4,
                ];
                let lj = jj - j0;
                let nv12 = dst.format.is_semiplanar();
                let (rb, rr) = (&s.ring_b, &s.ring_r);
                let [ta, tb, tc, td] = taps;
                let (rba, rbb, rbc, rbd) =
                    (&rb[ta][..cw], &rb[tb][..cw], &rb[tc][..cw], &rb[td][..cw]);
                let (rra, rrb, rrc, rrd) =
                    (&rr[ta][..cw], &rr[tb][..cw], &rr[tc][..cw], &rr[td][..cw]);
                let out = &mut s.crow_out[..w];
                let full = cw - cw % 8;
                let mut i = 0;
                while i < full {
                    // SAFETY: i + 8 <= cw: the ring rows hold cw values, `out` 2cw = w.
                    unsafe {
                        let tap = |a: &[f32], b: &[f32], c: &[f32], d: &[f32]| {
                            let ad = _mm256_add_ps(
                                _mm256_loadu_ps(a.as_ptr().add(i)),
                                _mm256_loadu_ps(d.as_ptr().add(i)),
                            );
                            let bc = _mm256_add_ps(
                                _mm256_loadu_ps(b.as_ptr().add(i)),
                                _mm256_loadu_ps(c.as_ptr().add(i)),
                            );
                            let v = _mm256_fmadd_ps(
                                ad,
                                _mm256_set1_ps(0.125),
                                _mm256_mul_ps(bc, _mm256_set1_ps(0.375)),
                            );
                            _mm256_fmadd_ps(v, _mm256_set1_ps(osc), _mm256_set1_ps(ooc + 0.5))
                        };
                        let vb = tap(rba, rbb, rbc, rbd);
                        let vr = tap(rra, rrb, rrc, rrd);
                        if nv12 {
                            let lo = _mm256_unpacklo_ps(vb, vr);
                            let hi = _mm256_unpackhi_ps(vb, vr);
                            let o = out.as_mut_ptr().add(2 * i);
                            _mm256_storeu_ps(o, _mm256_permute2f128_ps::<0x20>(lo, hi));
                            _mm256_storeu_ps(o.add(8), _mm256_permute2f128_ps::<0x31>(lo, hi));
                        } else {
                            _mm256_storeu_ps(out.as_mut_ptr().add(i), vb);
                            _mm256_storeu_ps(out.as_mut_ptr().add(cw + i), vr);
                        }
                    }
                    i += 8;
                }
                for i in full..cw {
                    let vb =
                        ooc + osc * (0.125 * (rba[i] + rbd[i]) + 0.375 * (rbb[i] + rbc[i])) + 0.5;
                    let vr =
                        ooc + osc * (0.125 * (rra[i] + rrd[i]) + 0.375 * (rrb[i] + rrc[i])) + 0.5;
                    if nv12 {
                        out[2 * i] = vb;
                        out[2 * i + 1] = vr;
                    } else {
                        out[i] = vb;
                        out[cw + i] = vr;
                    }
                }
                use super::fastmath::rows::store_u8;
                if nv12 {
                    let out = &mut dst.planes[1][lj * dst.strides[1]..][..w];
                    store_u8(&s.crow_out[..w], out, 255.0);
                } else {
                    let out = &mut dst.planes[1][lj * dst.strides[1]..][..cw];
                    store_u8(&s.crow_out[..cw], out, 255.0);
                    let out = &mut dst.planes[2][lj * dst.strides[2]..][..cw];
                    store_u8(&s.crow_out[cw..w], out, 255.0);
                }
                next_j += 1;
            }
        }
    }

    /// Stage 2 over the first `full` pixels of the chunk buffers, in place.
    #[target_feature(enable = "avx2,fma")]
    fn tone_pass<const DESAT: bool, const RATIONAL: bool>(
        &self,
        k: &Kernel,
        buf: &mut [[f32; BAND_CHUNK]; 3],
        full: usize,
    ) {
        use std::arch::x86_64::*;
        assert!(full <= BAND_CHUNK);
        let mut i = 0;
        while i < full {
            // SAFETY: i + 8 <= full <= BAND_CHUNK, the length of each buffer.
            unsafe {
                let v = k.stage_tone::<DESAT, RATIONAL>(
                    self,
                    [
                        _mm256_loadu_ps(buf[0].as_ptr().add(i)),
                        _mm256_loadu_ps(buf[1].as_ptr().add(i)),
                        _mm256_loadu_ps(buf[2].as_ptr().add(i)),
                    ],
                );
                _mm256_storeu_ps(buf[0].as_mut_ptr().add(i), v[0]);
                _mm256_storeu_ps(buf[1].as_mut_ptr().add(i), v[1]);
                _mm256_storeu_ps(buf[2].as_mut_ptr().add(i), v[2]);
            }
            i += 8;
        }
    }

    /// The pixel kernel over one chunk (n <= BAND_CHUNK): three short passes (each pass's
    /// iterations are independent and short, so the out-of-order core overlaps several; one
    /// chain per 8 pixels through all three stages is ~110 cycles of latency, longer than the
    /// core's window). The last n % 8 pixels go through [`Self::pixel`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    fn chunk_avx2(
        &self,
        k: &Kernel,
        scratch: &mut ChunkScratch,
        y: &[u8],
        shift: u32,
        cb: &[f32],
        cr: &[f32],
        round: &[f32; 8],
        oy: &mut [f32],
        ocb: &mut [f32],
        ocr: &mut [f32],
    ) {
        use std::arch::x86_64::*;
        let n = oy.len();
        assert!(n <= BAND_CHUNK && y.len() >= 2 * n && cb.len() >= n && cr.len() >= n);
        assert!(ocb.len() >= n && ocr.len() >= n);
        let mask = _mm256_set1_epi32(0x3ff);
        let sh = _mm_cvtsi32_si128(shift as i32);
        // SAFETY: 8 f32 from the 8-element array.
        let rnd = unsafe { _mm256_loadu_ps(round.as_ptr()) };
        let buf = &mut scratch.buf;
        let full = n - n % 8;
        let mut i = 0;
        while i < full {
            // SAFETY: i + 8 <= full <= n <= BAND_CHUNK; the slices hold n elements (2n bytes
            // for y).
            unsafe {
                let raw = _mm256_cvtepu16_epi32(_mm_loadu_si128(y.as_ptr().add(2 * i) as _));
                let yv = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(raw, sh), mask));
                let cbv = _mm256_loadu_ps(cb.as_ptr().add(i));
                let crv = _mm256_loadu_ps(cr.as_ptr().add(i));
                let v = k.stage_lin(self, yv, cbv, crv);
                _mm256_storeu_ps(buf[0].as_mut_ptr().add(i), v[0]);
                _mm256_storeu_ps(buf[1].as_mut_ptr().add(i), v[1]);
                _mm256_storeu_ps(buf[2].as_mut_ptr().add(i), v[2]);
            }
            i += 8;
        }
        // The desaturation and curve-kind tests are hoisted out of the loop (the compiler
        // kept them per iteration).
        match (self.desat > 0.0, self.rational.is_some()) {
            (true, true) => self.tone_pass::<true, true>(k, buf, full),
            (true, false) => self.tone_pass::<true, false>(k, buf, full),
            (false, true) => self.tone_pass::<false, true>(k, buf, full),
            (false, false) => self.tone_pass::<false, false>(k, buf, full),
        }
        // Separate passes measured faster than one fused tone + output pass (33 against
        // 37 ms CPU per 4K frame).
        let mut i = 0;
        while i < full {
            // SAFETY: i + 8 <= full <= n <= BAND_CHUNK; oy/ocb/ocr hold n elements.
            unsafe {
                let [code, ocbv, ocrv] = k.stage_out(
                    self,
                    [
                        _mm256_loadu_ps(buf[0].as_ptr().add(i)),
                        _mm256_loadu_ps(buf[1].as_ptr().add(i)),
                        _mm256_loadu_ps(buf[2].as_ptr().add(i)),
                    ],
                );
                _mm256_storeu_ps(oy.as_mut_ptr().add(i), _mm256_add_ps(code, rnd));
                _mm256_storeu_ps(ocb.as_mut_ptr().add(i), ocbv);
                _mm256_storeu_ps(ocr.as_mut_ptr().add(i), ocrv);
            }
            i += 8;
        }
        for x in full..n {
            let v = (u16::from_le_bytes([y[2 * x], y[2 * x + 1]]) >> shift) & 0x3ff;
            let (a, b, c) = self.pixel(v as f32, cb[x], cr[x]);
            oy[x] = a + round[x & 7];
            ocb[x] = b;
            ocr[x] = c;
        }
    }
}

/// Input chroma row `j` as normalised f32 Cb/Cr, padded with copies of the last column.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn convert_chroma_row(
    src: &super::image::SrcImage,
    j: usize,
    cs: f32,
    b: &mut [f32],
    r: &mut [f32],
) {
    use super::image::InputLayout;
    use std::arch::x86_64::*;
    let cw = src.width / 2;
    assert!(b.len() > cw && r.len() > cw);
    let inv = 1.0 / cs;
    let (vinv, v512) = (_mm256_set1_ps(inv), _mm256_set1_ps(512.0));
    let full = cw - cw % 8;
    match src.layout {
        InputLayout::P010 => {
            let uv = &src.planes[1][j * src.strides[1]..][..cw * 4];
            let mut i = 0;
            while i < full {
                // SAFETY: reads uv[4i .. 4i + 32] (i + 8 <= cw), writes b/r[i .. i + 8].
                unsafe {
                    // One u32 per U/V pair: U in bits 6..16, V in bits 22..32.
                    let d = _mm256_loadu_si256(uv.as_ptr().add(4 * i) as *const __m256i);
                    let u = _mm256_srli_epi32::<6>(_mm256_and_si256(d, _mm256_set1_epi32(0xffc0)));
                    let v = _mm256_srli_epi32::<22>(d);
                    let fu = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(u), v512), vinv);
                    let fv = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(v), v512), vinv);
                    _mm256_storeu_ps(b.as_mut_ptr().add(i), fu);
                    _mm256_storeu_ps(r.as_mut_ptr().add(i), fv);
                }
                i += 8;
            }
            for i in full..cw {
                let u = u16::from_le_bytes([uv[4 * i], uv[4 * i + 1]]) >> 6;
                let v = u16::from_le_bytes([uv[4 * i + 2], uv[4 * i + 3]]) >> 6;
                b[i] = (u as f32 - 512.0) * inv;
                r[i] = (v as f32 - 512.0) * inv;
            }
        }
        InputLayout::Yuv420p10 => {
            let ub = &src.planes[1][j * src.strides[1]..][..cw * 2];
            let vb = &src.planes[2][j * src.strides[2]..][..cw * 2];
            let mask = _mm256_set1_epi32(0x3ff);
            let mut i = 0;
            while i < full {
                // SAFETY: reads ub/vb[2i .. 2i + 16] (i + 8 <= cw), writes b/r[i .. i + 8].
                unsafe {
                    let u = _mm256_cvtepu16_epi32(_mm_loadu_si128(ub.as_ptr().add(2 * i) as _));
                    let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(vb.as_ptr().add(2 * i) as _));
                    let u = _mm256_and_si256(u, mask);
                    let v = _mm256_and_si256(v, mask);
                    let fu = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(u), v512), vinv);
                    let fv = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(v), v512), vinv);
                    _mm256_storeu_ps(b.as_mut_ptr().add(i), fu);
                    _mm256_storeu_ps(r.as_mut_ptr().add(i), fv);
                }
                i += 8;
            }
            for i in full..cw {
                let u = u16::from_le_bytes([ub[2 * i], ub[2 * i + 1]]) & 0x3ff;
                let v = u16::from_le_bytes([vb[2 * i], vb[2 * i + 1]]) & 0x3ff;
                b[i] = (u as f32 - 512.0) * inv;
                r[i] = (v as f32 - 512.0) * inv;
            }
        }
    }
    let (lb, lr) = (b[cw - 1], r[cw - 1]);
    b[cw..].fill(lb);
    r[cw..].fill(lr);
}

/// `out[2i] = h[i]`, `out[2i+1] = (h[i] + h[i+1]) / 2` for i < cn (h holds cn + 1 values and
/// 8 spare).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn upsample_chunk(h: &[f32], out: &mut [f32], cn: usize) {
    use std::arch::x86_64::*;
    assert!(h.len() >= cn + 9 && out.len() >= 2 * cn);
    let mut i = 0;
    while i + 8 <= cn {
        // SAFETY: reads h[i .. i + 9] (i + 9 <= cn + 1), writes out[2i .. 2i + 16] (<= 2cn).
        unsafe {
            let a = _mm256_loadu_ps(h.as_ptr().add(i));
            let b = _mm256_loadu_ps(h.as_ptr().add(i + 1));
            let m = _mm256_mul_ps(_mm256_add_ps(a, b), _mm256_set1_ps(0.5));
            // Per 128-bit lane: lo = a0 m0 a1 m1 | a4 m4 a5 m5, hi = a2 m2 a3 m3 | a6 m6 a7 m7.
            let lo = _mm256_unpacklo_ps(a, m);
            let hi = _mm256_unpackhi_ps(a, m);
            _mm256_storeu_ps(
                out.as_mut_ptr().add(2 * i),
                _mm256_permute2f128_ps::<0x20>(lo, hi),
            );
            _mm256_storeu_ps(
                out.as_mut_ptr().add(2 * i + 8),
                _mm256_permute2f128_ps::<0x31>(lo, hi),
            );
        }
        i += 8;
    }
    while i < cn {
        out[2 * i] = h[i];
        out[2 * i + 1] = 0.5 * (h[i] + h[i + 1]);
        i += 1;
    }
}

/// `out[i] = o[2i-1]/4 + o[2i]/2 + o[2i+1]/4` where `o` = `ob[8..]` (`ob[7]` is the left
/// context), for i < out.len().
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn downsample_chunk(ob: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let cn = out.len();
    assert!(ob.len() >= 8 + 2 * cn);
    let mut i = 0;
    while i + 8 <= cn {
        // SAFETY: reads ob[8 + 2i - 1 .. 8 + 2i + 16] (<= 8 + 2cn), writes out[i .. i + 8].
        unsafe {
            let p = ob.as_ptr().add(8 + 2 * i);
            let d1 = _mm256_add_ps(_mm256_loadu_ps(p.sub(1)), _mm256_loadu_ps(p));
            let d2 = _mm256_add_ps(_mm256_loadu_ps(p.add(7)), _mm256_loadu_ps(p.add(8)));
            // hadd pairs (o[2i-1] + o[2i]) + (o[2i] + o[2i+1]) per output.
            let s = _mm256_hadd_ps(d1, d2);
            let s = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(s)));
            _mm256_storeu_ps(
                out.as_mut_ptr().add(i),
                _mm256_mul_ps(s, _mm256_set1_ps(0.25)),
            );
        }
        i += 8;
    }
    while i < cn {
        let q = 8 + 2 * i;
        out[i] = 0.25 * ob[q - 1] + 0.5 * ob[q] + 0.25 * ob[q + 1];
        i += 1;
    }
}

/// The AVX2 kernel's constants in registers (or spilled, as the compiler sees fit).
#[cfg(target_arch = "x86_64")]
struct Kernel {
    pq: [std::arch::x86_64::__m256; PQ_DEG + 1],
    oetf_p: [std::arch::x86_64::__m256; 4],
    oetf_s1: std::arch::x86_64::__m256,
    oetf_s2: std::arch::x86_64::__m256,
    /// BT.2020 -> BT.709.
    m: [[std::arch::x86_64::__m256; 3]; 3],
}

#[cfg(target_arch = "x86_64")]
impl Kernel {
    #[target_feature(enable = "avx2,fma")]
    fn new(t: &MaxTables) -> Self {
        use std::arch::x86_64::*;
        // SAFETY: each load reads the 8 f32 of one array.
        unsafe {
            Kernel {
                pq: std::array::from_fn(|k| _mm256_loadu_ps(t.pq[k].as_ptr())),
                oetf_p: [
                    _mm256_set1_ps(t.oetf_p[0]),
                    _mm256_set1_ps(t.oetf_p[1]),
                    _mm256_set1_ps(t.oetf_p[2]),
                    _mm256_set1_ps(t.oetf_p[3]),
                ],
                oetf_s1: _mm256_loadu_ps(t.oetf_s1.as_ptr()),
                oetf_s2: _mm256_loadu_ps(t.oetf_s2.as_ptr()),
                m: std::array::from_fn(|i| {
                    std::array::from_fn(|j| _mm256_set1_ps(BT2020_TO_BT709[i][j] as f32))
                }),
            }
        }
    }

    /// PQ EOTF of segment coordinates.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn pq(&self, x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_setzero_ps()),
            _mm256_set1_ps(PQ_SEGS as f32 - 1e-6 * PQ_SEGS as f32),
        );
        let i = _mm256_cvttps_epi32(x);
        let t = _mm256_sub_ps(x, _mm256_cvtepi32_ps(i));
        let mut z = _mm256_permutevar8x32_ps(self.pq[PQ_DEG], i);
        for k in (0..PQ_DEG).rev() {
            z = _mm256_fmadd_ps(z, t, _mm256_permutevar8x32_ps(self.pq[k], i));
        }
        _mm256_mul_ps(z, z)
    }

    /// BT.1886 inverse V = max(L, 0)^(1/2.4).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn oetf(&self, l: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let set = _mm256_set1_ps;
        // max(NaN, floor) is the floor.
        let bits = _mm256_castps_si256(_mm256_min_ps(
            _mm256_max_ps(l, set(OETF_FLOOR)),
            set(OETF_MAX),
        ));
        let m = _mm256_castsi256_ps(_mm256_or_si256(
            _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
            _mm256_set1_epi32(0x3f80_0000),
        ));
        let q = &self.oetf_p;
        let pm = _mm256_fmadd_ps(
            _mm256_fmadd_ps(_mm256_fmadd_ps(q[3], m, q[2]), m, q[1]),
            m,
            q[0],
        );
        // vpermps reads the low 3 bits of each index.
        let s1 = _mm256_permutevar8x32_ps(self.oetf_s1, _mm256_srli_epi32::<23>(bits));
        let s2 = _mm256_permutevar8x32_ps(self.oetf_s2, _mm256_srli_epi32::<26>(bits));
        _mm256_mul_ps(_mm256_mul_ps(pm, s1), s2)
    }

    /// Stage 1 of 8 pixels: luma codes and normalised Cb/Cr in, linear BT.2020 R, G, B out.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn stage_lin(
        &self,
        t: &MaxTables,
        yv: std::arch::x86_64::__m256,
        cbv: std::arch::x86_64::__m256,
        crv: std::arch::x86_64::__m256,
    ) -> [std::arch::x86_64::__m256; 3] {
        use std::arch::x86_64::*;
        let set = _mm256_set1_ps;
        let yi = _mm256_fmadd_ps(yv, set(t.ky), set(t.y0));
        let ir = _mm256_fmadd_ps(crv, set(t.kr_cr), yi);
        let ig = _mm256_fnmadd_ps(cbv, set(t.kg_cb), _mm256_fnmadd_ps(crv, set(t.kg_cr), yi));
        let ib = _mm256_fmadd_ps(cbv, set(t.kb_cb), yi);
        [self.pq(ir), self.pq(ig), self.pq(ib)]
    }

    /// Stage 2: BT.709 primaries, desaturation, the curve: display-linear R, G, B.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn stage_tone<const DESAT: bool, const RATIONAL: bool>(
        &self,
        t: &MaxTables,
        [r, g, b]: [std::arch::x86_64::__m256; 3],
    ) -> [std::arch::x86_64::__m256; 3] {
        use std::arch::x86_64::*;
        let set = _mm256_set1_ps;
        let m = &self.m;
        let mut r7 = _mm256_fmadd_ps(
            m[0][2],
            b,
            _mm256_fmadd_ps(m[0][1], g, _mm256_mul_ps(m[0][0], r)),
        );
        let mut g7 = _mm256_fmadd_ps(
            m[1][2],
            b,
            _mm256_fmadd_ps(m[1][1], g, _mm256_mul_ps(m[1][0], r)),
        );
        let mut b7 = _mm256_fmadd_ps(
            m[2][2],
            b,
            _mm256_fmadd_ps(m[2][1], g, _mm256_mul_ps(m[2][0], r)),
        );
        let tiny = set(1e-6);
        let two = set(2.0);
        if DESAT {
            let l = _mm256_fmadd_ps(
                set(BT2020_LUMA[2] as f32),
                b7,
                _mm256_fmadd_ps(
                    set(BT2020_LUMA[1] as f32),
                    g7,
                    _mm256_mul_ps(set(BT2020_LUMA[0] as f32), r7),
                ),
            );
            let ob = _mm256_div_ps(
                _mm256_max_ps(_mm256_sub_ps(l, set(t.desat)), tiny),
                _mm256_max_ps(l, tiny),
            );
            r7 = _mm256_fmadd_ps(ob, _mm256_sub_ps(l, r7), r7);
            g7 = _mm256_fmadd_ps(ob, _mm256_sub_ps(l, g7), g7);
            b7 = _mm256_fmadd_ps(ob, _mm256_sub_ps(l, b7), b7);
        }
        let sig = _mm256_max_ps(_mm256_max_ps(r7, g7), _mm256_max_ps(b7, tiny));
        // k = f(sig) / sig with one reciprocal estimate and one Newton step (~1e-7 relative;
        // a divide costs more here). The rational curve folds both divisions into one:
        // (mul * num / den + add) / sig = (mul * num + add * den) / (den * sig).
        let recip = |d: __m256| {
            let r0 = _mm256_rcp_ps(d);
            _mm256_mul_ps(r0, _mm256_fnmadd_ps(d, r0, two))
        };
        let k = match t.rational.filter(|_| RATIONAL) {
            Some(q) => {
                let num = _mm256_fmadd_ps(_mm256_fmadd_ps(set(q.a), sig, set(q.b)), sig, set(q.c));
                let den = _mm256_fmadd_ps(_mm256_fmadd_ps(set(q.d), sig, set(q.e)), sig, set(q.g));
                let top = _mm256_fmadd_ps(num, set(q.mul), _mm256_mul_ps(den, set(q.add)));
                let k = _mm256_mul_ps(top, recip(_mm256_mul_ps(den, sig)));
                let id = _mm256_cmp_ps::<_CMP_LE_OQ>(sig, set(q.ident));
                _mm256_blendv_ps(k, set(1.0), id)
            }
            None => {
                let ti = _mm256_srai_epi32::<{ TONE_SHIFT as i32 }>(_mm256_sub_epi32(
                    _mm256_castps_si256(sig),
                    _mm256_set1_epi32(t.tone_base),
                ));
                let ti = _mm256_max_epi32(
                    _mm256_min_epi32(ti, _mm256_set1_epi32(t.tone_last)),
                    _mm256_setzero_si256(),
                );
                assert!(t.tone.len() == t.tone_last as usize + 1);
                // SAFETY: 0 <= ti <= tone_last < tone.len().
                let f = unsafe { _mm256_i32gather_ps::<4>(t.tone.as_ptr(), ti) };
                _mm256_mul_ps(f, recip(sig))
            }
        };
        [
            _mm256_mul_ps(r7, k),
            _mm256_mul_ps(g7, k),
            _mm256_mul_ps(b7, k),
        ]
    }

    /// Stage 3: BT.1886 inverse, BT.709 Y'CbCr: output Y code (unrounded), Cb, Cr.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn stage_out(
        &self,
        t: &MaxTables,
        [r, g, b]: [std::arch::x86_64::__m256; 3],
    ) -> [std::arch::x86_64::__m256; 3] {
        use std::arch::x86_64::*;
        let set = _mm256_set1_ps;
        let (rv, gv, bv) = (self.oetf(r), self.oetf(g), self.oetf(b));
        let yv = _mm256_fmadd_ps(
            set(BT709_LUMA[2] as f32),
            bv,
            _mm256_fmadd_ps(
                set(BT709_LUMA[1] as f32),
                gv,
                _mm256_mul_ps(set(BT709_LUMA[0] as f32), rv),
            ),
        );
        let ocb = _mm256_mul_ps(_mm256_sub_ps(bv, yv), set(1.0 / 1.8556));
        let ocr = _mm256_mul_ps(_mm256_sub_ps(rv, yv), set(1.0 / 1.5748));
        let code = _mm256_fmadd_ps(yv, set(t.oys), set(t.oy0));
        [code, ocb, ocr]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tonemap::{Signal, TonemapOptions};

    /// The fused pixel against the f64 reference pixel over a grid of Y'CbCr codes.
    #[test]
    fn pixel_matches_reference() {
        for spec in [
            "linear:desat=0:peak=10",
            "hable:desat=0:peak=100",
            "bt2390:desat=2",
        ] {
            let o: TonemapOptions = spec.parse().unwrap();
            let p = Params::new(&o, Signal::pq());
            let t = MaxTables::new(&p, OutputFormat::Nv12).unwrap();
            let (mut worst, mut sq, mut count) = (0f64, 0f64, 0usize);
            for y in (64..=940).step_by(12) {
                for cb in (64..=960).step_by(32) {
                    for cr in (64..=960).step_by(32) {
                        let (yn, cbn, crn) = (
                            (y as f64 - 64.0) / 876.0,
                            (cb as f64 - 512.0) / 896.0,
                            (cr as f64 - 512.0) / 896.0,
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
                            "{spec} y={y} cb={cb} cr={cr}: ref {ry} fast {fy}"
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
            eprintln!("{spec}: inside the cube worst |dY| {worst:.3}, rms {rms:.3} codes");
            assert!(rms < 0.2, "{spec}: rms {rms}");
        }
    }

    /// The AVX2 chunk kernel against its scalar model, lane by lane, for every curve kind
    /// (rational, looked-up), with and without desaturation, P010 and planar luma.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernel_matches_scalar_model() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            return;
        }
        for spec in [
            "hable:desat=0:peak=10",
            "mobius:desat=2",
            "bt2390:desat=0",
            "clip",
        ] {
            let o: TonemapOptions = spec.parse().unwrap();
            let p = Params::new(&o, Signal::pq());
            let t = MaxTables::new(&p, OutputFormat::Nv12).unwrap();
            // SAFETY: AVX2 and FMA were detected above.
            let k = unsafe { Kernel::new(&t) };
            let mut cs = ChunkScratch {
                buf: [[0f32; BAND_CHUNK]; 3],
            };
            let n = 251; // not a multiple of 8: the scalar tail too
            for shift in [0u32, 6] {
                let codes: Vec<u16> = (0..n).map(|i| 40 + ((i * 397) % 960) as u16).collect();
                let y: Vec<u8> = codes
                    .iter()
                    .flat_map(|c| (c << shift).to_le_bytes())
                    .collect();
                let cb: Vec<f32> = (0..n)
                    .map(|i| ((i * 131) % 97) as f32 / 97.0 - 0.5)
                    .collect();
                let cr: Vec<f32> = (0..n)
                    .map(|i| ((i * 71) % 89) as f32 / 89.0 - 0.5)
                    .collect();
                let round = [0.5f32; 8];
                let (mut oy, mut ob, mut or) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
                // SAFETY: as above.
                unsafe {
                    t.chunk_avx2(
                        &k, &mut cs, &y, shift, &cb, &cr, &round, &mut oy, &mut ob, &mut or,
                    )
                };
                for x in 0..n {
                    let (a, b, c) = t.pixel(codes[x] as f32, cb[x], cr[x]);
                    assert!(
                        (a + 0.5 - oy[x]).abs() < 0.02
                            && (b - ob[x]).abs() < 1e-4
                            && (c - or[x]).abs() < 1e-4,
                        "{spec} x={x}: scalar ({a}, {b}, {c}) avx2 ({}, {}, {})",
                        oy[x] - 0.5,
                        ob[x],
                        or[x]
                    );
                }
            }
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
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: AVX2 and FMA were detected above.
            unsafe { pq.pass_avx2(&mut v) };
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
}
