//! The default path of `cpu` in one pass per pixel: PQ input, `mode=max`, 8-bit output.
//!
//! Same chain as [`super::reference`], fused so that every pixel is loaded once, converted
//! once and its results written once (no intermediate f32 passes), with three small tables and
//! one lookup each, no interpolation:
//! - `lin`: PQ EOTF over R'G'B' 0..2 in steps of 1/16384, indexed directly by an affine map of
//!   the luma code and the upsampled Cb/Cr (the Y'CbCr -> R'G'B' matrix is folded into it);
//! - `tone`: the curve output f(s) (not the ratio) at bin centres, 256 bins per octave from
//!   2^-20 to 2^14, indexed by the float's exponent and top 8 mantissa bits; the ratio is
//!   f(s)/s. Storing f keeps neutral ramps monotonic without interpolation (a stored ratio
//!   would step down at each bin edge). Under AVX2, hable, reinhard, mobius and linear are
//!   computed in registers instead ([`Rational`]);
//! - `gamma`: BT.1886 inverse V = L^(1/2.4) as u16 (units of 1/2048) at bin centres, 512 bins
//!   per octave from 2^-24 to 2^10 (35 KB); below 2^-24 it is 0.
//!
//! That is six or seven lookups per pixel (AVX2: 8-lane gathers, in three short passes over
//! 256-pixel chunks so that independent gathers overlap) and about 60 vector operations.
//! Against the f64 reference a pixel's Y is within 0.26 of a code on top of rounding for legal
//! R'G'B' (up to 0.84 where a BT.709 channel crosses zero after the primaries matrix, the
//! steepest spot of the 1/2.4 power). It runs under AVX2 only: without gathers the per-pixel
//! lookups measured about twice as slow as the pass pipeline of `cpu.rs`, which the SSE4.1,
//! NEON and scalar builds keep. [`MaxTables::pixel`] is the scalar model of the kernel (row tails, unit test).

use super::Params;
use super::image::Transfer;
use super::math::*;
use super::{Mode, OutputFormat};

const LIN_STEPS: f32 = 16384.0;
const LIN_LEN: usize = 32768; // R'G'B' 0..2
const TONE_SHIFT: u32 = 15; // 23 - 15 = 8 mantissa bits: 256 bins per octave
const TONE_LO: i32 = -20; // the signal is floored at 1e-6 > 2^-20
const TONE_HI: i32 = 14; // linear values are capped at 1e4 < 2^14
const GAMMA_SHIFT: u32 = 14; // 512 bins per octave
const GAMMA_LO: i32 = -24;
// 2^10: above it (V > 17.9) the output is saturated whatever the other channels are (the
// smallest luma weight, 0.0722, times 17.9 is past 255).
const GAMMA_HI: i32 = 10;
const GAMMA_SCALE: f32 = 2048.0;

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
    lin: Box<[f32]>,
    tone: Box<[f32]>,
    tone_base: i32,
    tone_last: i32,
    /// One spare entry: the AVX2 gather reads 32 bits at u16 positions.
    gamma: Box<[u16]>,
    gamma_base: i32,
    gamma_last: i32,
    desat: f32,
    /// The curves that are rational functions, computed instead of looked up under AVX2.
    rational: Option<Rational>,
    /// lin index = y_code * ky + y0 (+ cr * kr_cr, + cb * kb_cb, - ...), rounding included.
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
        let lin: Box<[f32]> = (0..LIN_LEN)
            .map(|i| (pq_eotf(i as f64 / LIN_STEPS as f64) / REFERENCE_WHITE).min(1e4) as f32)
            .collect();
        let (tone_base, tone_n) = log_bins(TONE_LO, TONE_HI, TONE_SHIFT);
        let tone: Box<[f32]> = (0..tone_n)
            .map(|i| p.tone.apply(bin_centre(tone_base, TONE_SHIFT, i)) as f32)
            .collect();
        let (gamma_base, gamma_n) = log_bins(GAMMA_LO, GAMMA_HI, GAMMA_SHIFT);
        let gamma: Box<[u16]> = (0..gamma_n + 1)
            .map(|i| {
                if i == 0 || i == gamma_n {
                    // 0: everything below 2^-24 (and the bin above it) is black; the spare
                    // entry only pads the 32-bit gather.
                    return if i == 0 { 0 } else { u16::MAX };
                }
                let v = bt1886_inv(bin_centre(gamma_base, GAMMA_SHIFT, i)) * GAMMA_SCALE as f64;
                v.round().min(u16::MAX as f64) as u16
            })
            .collect();
        let (yo, ys, _) = p.signal.range10();
        let (oy, sy, _, _, _) = super::image::out_range(format);
        let st = LIN_STEPS as f64;
        let kr = 2.0 * (1.0 - BT2020_LUMA[0]);
        let kb = 2.0 * (1.0 - BT2020_LUMA[2]);
        let kg = BT2020_LUMA[1];
        Some(MaxTables {
            lin,
            tone,
            tone_base,
            tone_last: tone_n as i32 - 1,
            gamma,
            gamma_base,
            gamma_last: gamma_n as i32 - 1,
            desat: p.desat as f32,
            rational: Rational::new(&p.tone),
            ky: (st / ys) as f32,
            y0: (0.5 - yo * st / ys) as f32,
            kr_cr: (kr * st) as f32,
            kg_cr: (BT2020_LUMA[0] * kr / kg * st) as f32,
            kg_cb: (BT2020_LUMA[2] * kb / kg * st) as f32,
            kb_cb: (kb * st) as f32,
            oy0: oy as f32,
            oys: sy as f32,
        })
    }

    /// One pixel: 10-bit luma code and normalised, upsampled Cb/Cr in; output Y
    /// code before rounding and normalised BT.709 Cb, Cr out.
    #[inline(always)]
    fn pixel(&self, y: f32, cb: f32, cr: f32) -> (f32, f32, f32) {
        let yi = fma(y, self.ky, self.y0);
        let ir = fma(cr, self.kr_cr, yi);
        let ig = fma(-cb, self.kg_cb, fma(-cr, self.kg_cr, yi));
        let ib = fma(cb, self.kb_cb, yi);
        let top = (LIN_LEN - 1) as f32;
        let lin = |i: f32| self.lin[(i.clamp(0.0, top) as usize) & (LIN_LEN - 1)];
        let (r, g, b) = (lin(ir), lin(ig), lin(ib));
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
        let ti = ((sig.to_bits() as i32).wrapping_sub(self.tone_base) >> TONE_SHIFT)
            .clamp(0, self.tone_last) as usize;
        let k = self.tone[ti.min(self.tone.len() - 1)] / sig;
        let gam = |l: f32| {
            let d = (l * k).to_bits() as i32;
            let gi = (d.wrapping_sub(self.gamma_base) >> GAMMA_SHIFT).clamp(0, self.gamma_last);
            // Negative L has the sign bit set: d < 0, so the index clamps to the black bin.
            let gi = if d < 0 { 0 } else { gi as usize };
            self.gamma[gi.min(self.gamma.len() - 1)] as f32
        };
        let (rv, gv, bv) = (gam(r7), gam(g7), gam(b7));
        self.finish(rv, gv, bv)
    }

    /// V (units of 1/GAMMA_SCALE) -> output Y code (unrounded), Cb, Cr.
    #[inline(always)]
    fn finish(&self, rv: f32, gv: f32, bv: f32) -> (f32, f32, f32) {
        let s = 1.0 / GAMMA_SCALE;
        let yv = fma(
            BT709_LUMA[2] as f32 * s,
            bv,
            fma(BT709_LUMA[1] as f32 * s, gv, BT709_LUMA[0] as f32 * s * rv),
        );
        let cb = (bv * s - yv) * (1.0 / 1.8556);
        let cr = (rv * s - yv) * (1.0 / 1.5748);
        (fma(yv, self.oys, self.oy0), cb, cr)
    }

    /// One row: `y` raw luma samples (little-endian u16, value in bits `shift`..), `cb`/`cr`
    /// normalised upsampled chroma; writes the Y code plus `round[x % 8]` (0.5, or the dither
    /// thresholds) and the normalised output Cb/Cr. 8 pixels per step, the lookups as gathers;
    /// the last `n % 8` pixels go through [`Self::pixel`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_avx2(
        &self,
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
        assert!(y.len() >= 2 * n && cb.len() >= n && cr.len() >= n);
        assert!(ocb.len() >= n && ocr.len() >= n);
        assert!(self.lin.len() == LIN_LEN && self.tone.len() == self.tone_last as usize + 1);
        assert!(self.gamma.len() == self.gamma_last as usize + 2);
        let set = _mm256_set1_ps;
        let seti = _mm256_set1_epi32;
        let m = BT2020_TO_BT709.map(|row| row.map(|v| set(v as f32)));
        let (ky, y0) = (set(self.ky), set(self.y0));
        let (kr_cr, kg_cr, kg_cb, kb_cb) = (
            set(self.kr_cr),
            set(self.kg_cr),
            set(self.kg_cb),
            set(self.kb_cb),
        );
        let top = set((LIN_LEN - 1) as f32);
        let zero = _mm256_setzero_ps();
        let zi = _mm256_setzero_si256();
        let desat = set(self.desat);
        let (l0, l1, l2) = (
            set(BT2020_LUMA[0] as f32),
            set(BT2020_LUMA[1] as f32),
            set(BT2020_LUMA[2] as f32),
        );
        let tiny = set(1e-6);
        let two = set(2.0);
        let (tone_base, tone_last) = (seti(self.tone_base), seti(self.tone_last));
        let (gamma_base, gamma_last) = (seti(self.gamma_base), seti(self.gamma_last));
        let low16 = seti(0xffff);
        let s = 1.0 / GAMMA_SCALE;
        let (c0, c1, c2) = (
            set(BT709_LUMA[0] as f32 * s),
            set(BT709_LUMA[1] as f32 * s),
            set(BT709_LUMA[2] as f32 * s),
        );
        let vs = set(s);
        let (icb, icr) = (set(1.0 / 1.8556), set(1.0 / 1.5748));
        let (oys, oy0) = (set(self.oys), set(self.oy0));
        let mask = seti(0x3ff);
        let sh = _mm_cvtsi32_si128(shift as i32);
        let do_desat = self.desat > 0.0;
        let rat = self.rational;
        let lin = self.lin.as_ptr();
        let tone = self.tone.as_ptr();
        let gamma = self.gamma.as_ptr() as *const i32;
        // SAFETY: 8 f32 from the 8-element array.
        let rnd = unsafe { _mm256_loadu_ps(round.as_ptr()) };
        let gam = |l: __m256| {
            let d = _mm256_castps_si256(l);
            let i = _mm256_srai_epi32::<{ GAMMA_SHIFT as i32 }>(_mm256_sub_epi32(d, gamma_base));
            let i = _mm256_max_epi32(_mm256_min_epi32(i, gamma_last), zi);
            // Negative L (sign bit set): black.
            let i = _mm256_andnot_si256(_mm256_cmpgt_epi32(zi, d), i);
            // SAFETY: 0 <= i <= gamma_last and the table has gamma_last + 2 u16 entries, so
            // the 4-byte read at 2 * i stays inside it.
            let v = unsafe { _mm256_i32gather_epi32::<2>(gamma, i) };
            _mm256_cvtepi32_ps(_mm256_and_si256(v, low16))
        };
        // Three short passes over chunks of CHUNK pixels instead of one long chain per 8
        // pixels: each pass's iterations are independent, so the out-of-order core overlaps
        // many gathers (one fused chain of three dependent gathers was latency-bound).
        const CHUNK: usize = 256;
        let mut br = [0f32; CHUNK];
        let mut bg = [0f32; CHUNK];
        let mut bb = [0f32; CHUNK];
        let full = n - n % 8;
        let mut x0 = 0;
        while x0 < full {
            let len = (full - x0).min(CHUNK);
            // Pass 1: Y'CbCr -> linear BT.2020 (three gathers).
            let mut i = 0;
            while i < len {
                let x = x0 + i;
                // SAFETY: x + 8 <= full <= n; the slices hold n elements (2n bytes for y) and
                // the buffers CHUNK >= i + 8; lin indices are clamped to 0..LIN_LEN-1.
                unsafe {
                    let raw = _mm256_cvtepu16_epi32(_mm_loadu_si128(y.as_ptr().add(2 * x) as _));
                    let yv = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srl_epi32(raw, sh), mask));
                    let cbv = _mm256_loadu_ps(cb.as_ptr().add(x));
                    let crv = _mm256_loadu_ps(cr.as_ptr().add(x));
                    let yi = _mm256_fmadd_ps(yv, ky, y0);
                    let ir = _mm256_fmadd_ps(crv, kr_cr, yi);
                    let ig = _mm256_fnmadd_ps(cbv, kg_cb, _mm256_fnmadd_ps(crv, kg_cr, yi));
                    let ib = _mm256_fmadd_ps(cbv, kb_cb, yi);
                    let idx =
                        |v: __m256| _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(v, zero), top));
                    let r = _mm256_i32gather_ps::<4>(lin, idx(ir));
                    let g = _mm256_i32gather_ps::<4>(lin, idx(ig));
                    let b = _mm256_i32gather_ps::<4>(lin, idx(ib));
                    _mm256_storeu_ps(br.as_mut_ptr().add(i), r);
                    _mm256_storeu_ps(bg.as_mut_ptr().add(i), g);
                    _mm256_storeu_ps(bb.as_mut_ptr().add(i), b);
                }
                i += 8;
            }
            // Pass 2: BT.709 primaries, desaturation, the curve (one gather), display linear.
            let mut i = 0;
            while i < len {
                // SAFETY: i + 8 <= len <= CHUNK; the tone index is clamped to 0..=tone_last.
                unsafe {
                    let r = _mm256_loadu_ps(br.as_ptr().add(i));
                    let g = _mm256_loadu_ps(bg.as_ptr().add(i));
                    let b = _mm256_loadu_ps(bb.as_ptr().add(i));
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
                    if do_desat {
                        let l =
                            _mm256_fmadd_ps(l2, b7, _mm256_fmadd_ps(l1, g7, _mm256_mul_ps(l0, r7)));
                        let ob = _mm256_div_ps(
                            _mm256_max_ps(_mm256_sub_ps(l, desat), tiny),
                            _mm256_max_ps(l, tiny),
                        );
                        r7 = _mm256_fmadd_ps(ob, _mm256_sub_ps(l, r7), r7);
                        g7 = _mm256_fmadd_ps(ob, _mm256_sub_ps(l, g7), g7);
                        b7 = _mm256_fmadd_ps(ob, _mm256_sub_ps(l, b7), b7);
                    }
                    let sig = _mm256_max_ps(_mm256_max_ps(r7, g7), _mm256_max_ps(b7, tiny));
                    let ti = _mm256_srai_epi32::<{ TONE_SHIFT as i32 }>(_mm256_sub_epi32(
                        _mm256_castps_si256(sig),
                        tone_base,
                    ));
                    let ti = _mm256_max_epi32(_mm256_min_epi32(ti, tone_last), zi);
                    let f = match rat {
                        Some(q) => {
                            let num = _mm256_fmadd_ps(
                                _mm256_fmadd_ps(set(q.a), sig, set(q.b)),
                                sig,
                                set(q.c),
                            );
                            let den = _mm256_fmadd_ps(
                                _mm256_fmadd_ps(set(q.d), sig, set(q.e)),
                                sig,
                                set(q.g),
                            );
                            let d0 = _mm256_rcp_ps(den);
                            let d1 = _mm256_mul_ps(d0, _mm256_fnmadd_ps(den, d0, two));
                            let f = _mm256_fmadd_ps(_mm256_mul_ps(num, d1), set(q.mul), set(q.add));
                            let id = _mm256_cmp_ps::<_CMP_LE_OQ>(sig, set(q.ident));
                            _mm256_blendv_ps(f, sig, id)
                        }
                        None => _mm256_i32gather_ps::<4>(tone, ti),
                    };
                    // f / sig with a reciprocal estimate and one Newton step (~1e-7
                    // relative; a divide costs more here).
                    let r0 = _mm256_rcp_ps(sig);
                    let r1 = _mm256_mul_ps(r0, _mm256_fnmadd_ps(sig, r0, two));
                    let k = _mm256_mul_ps(f, r1);
                    _mm256_storeu_ps(br.as_mut_ptr().add(i), _mm256_mul_ps(r7, k));
                    _mm256_storeu_ps(bg.as_mut_ptr().add(i), _mm256_mul_ps(g7, k));
                    _mm256_storeu_ps(bb.as_mut_ptr().add(i), _mm256_mul_ps(b7, k));
                }
                i += 8;
            }
            // Pass 3: BT.1886 inverse (three gathers), BT.709 Y'CbCr, stores.
            let mut i = 0;
            while i < len {
                let x = x0 + i;
                // SAFETY: as in pass 1; the gamma gathers are bounded inside `gam`.
                unsafe {
                    let rv = gam(_mm256_loadu_ps(br.as_ptr().add(i)));
                    let gv = gam(_mm256_loadu_ps(bg.as_ptr().add(i)));
                    let bv = gam(_mm256_loadu_ps(bb.as_ptr().add(i)));
                    let yv =
                        _mm256_fmadd_ps(c2, bv, _mm256_fmadd_ps(c1, gv, _mm256_mul_ps(c0, rv)));
                    let ocbv = _mm256_mul_ps(_mm256_fmsub_ps(bv, vs, yv), icb);
                    let ocrv = _mm256_mul_ps(_mm256_fmsub_ps(rv, vs, yv), icr);
                    let code = _mm256_add_ps(_mm256_fmadd_ps(yv, oys, oy0), rnd);
                    _mm256_storeu_ps(oy.as_mut_ptr().add(x), code);
                    _mm256_storeu_ps(ocb.as_mut_ptr().add(x), ocbv);
                    _mm256_storeu_ps(ocr.as_mut_ptr().add(x), ocrv);
                }
                i += 8;
            }
            x0 += len;
        }
        let mut x = full;
        while x < n {
            let v = (u16::from_le_bytes([y[2 * x], y[2 * x + 1]]) >> shift) & 0x3ff;
            let (a, b, c) = self.pixel(v as f32, cb[x], cr[x]);
            oy[x] = a + round[x & 7];
            ocb[x] = b;
            ocr[x] = c;
            x += 1;
        }
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
}
