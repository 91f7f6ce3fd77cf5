//! The fused kernel of the default path (PQ or HLG input, `mode=max`, 8-bit output), written
//! once over [`Lanes`] and compiled per ISA: AVX2 + FMA (8 lanes), SSE4.1 (4 lanes, no FMA) and
//! NEON (4 lanes). The math and its tables are [`MaxTables`]'s (`fastmax`): piecewise
//! polynomials for the PQ EOTF (HLG: inverse OETF, then the OOTF pass) and the BT.1886 inverse
//! with coefficients picked from 8-entry tables ([`Lanes::pick8`]: `vpermps`, two `pshufb` +
//! `por`, `tbl`), the curve computed (rational curves) or looked up (one gather).
//!
//! A band is done in one loop over 256-pixel chunks of each luma row: vertical chroma blend,
//! horizontal upsampling, the pixel kernel (three short passes: Y'CbCr -> linear, primaries +
//! curve, BT.1886 inverse + BT.709 Y'CbCr), the luma store and the horizontal chroma
//! downsampling all stay in L1; the vertical downsampling and the chroma stores run once per
//! output chroma row. Everything here is `#[inline(always)]` down to the [`Lanes`] methods, so
//! each entry point (`band_avx2`, `band_sse4`, `band_neon`) is one function with the
//! intrinsics inlined.

use super::fastmax::{MaxTables, OETF_FLOOR, OETF_MAX, OOTF_FLOOR, PQ_DEG, PQ_SEGS, TONE_SHIFT};
use super::image::{DstImage, InputLayout, SrcImage, bayer8};
use super::lanes::Lanes;
use super::math::{BT709_LUMA, BT2020_LUMA, BT2020_TO_BT709};

/// Chunk width (luma pixels) of the band loop: every per-pixel buffer of a chunk stays in L1.
const BAND_CHUNK: usize = 256;

/// The pixel kernel's intermediate values for one chunk.
struct ChunkScratch {
    buf: [[f32; BAND_CHUNK]; 3],
}

/// Per-thread buffers of the band loop.
struct BandScratch {
    /// Converted input chroma rows (slot j % 3 holds row `crow[slot]`), with 16 spare entries
    /// holding copies of the last column (the horizontal edge clamp, for free).
    cb_rows: [Vec<f32>; 3],
    cr_rows: [Vec<f32>; 3],
    crow: [usize; 3],
    /// Horizontally downsampled output chroma of the last 4 luma rows (slot row % 4).
    ring_b: [Vec<f32>; 4],
    ring_r: [Vec<f32>; 4],
    /// One output chroma row as f32 codes (NV12: interleaved).
    crow_out: Vec<f32>,
}

/// The kernel's constants as vectors (in registers, or spilled, as the compiler sees fit).
struct Kernel<S: Lanes> {
    pq: [S::T8; PQ_DEG + 1],
    oetf_p: [S::F; 4],
    oetf_s1: S::T8,
    oetf_s2: S::T8,
    /// HLG OOTF (unused for PQ).
    ootf_p: [S::F; 4],
    ootf_s1: S::T8,
    ootf_s2: S::T8,
    /// BT.2020 -> BT.709.
    m: [[S::F; 3]; 3],
}

impl<S: Lanes> Kernel<S> {
    #[inline(always)]
    fn new(s: S, t: &MaxTables) -> Self {
        // Loops, not `array::map` / `from_fn`: their closures are separate functions that the
        // compiler left out of line, without the entry point's target features, so every
        // intrinsic in them became a call.
        let mut pq = [s.table8(&t.pq[0]); PQ_DEG + 1];
        for (v, c) in pq.iter_mut().zip(&t.pq) {
            *v = s.table8(c);
        }
        let mut m = [[s.splat(0.0); 3]; 3];
        for (row, src) in m.iter_mut().zip(&BT2020_TO_BT709) {
            for (v, c) in row.iter_mut().zip(src) {
                *v = s.splat(*c as f32);
            }
        }
        let (q, o) = (&t.oetf_p, &t.ootf_p);
        Kernel {
            pq,
            oetf_p: [s.splat(q[0]), s.splat(q[1]), s.splat(q[2]), s.splat(q[3])],
            oetf_s1: s.table8(&t.oetf_s1),
            oetf_s2: s.table8(&t.oetf_s2),
            ootf_p: [s.splat(o[0]), s.splat(o[1]), s.splat(o[2]), s.splat(o[3])],
            ootf_s1: s.table8(&t.ootf_s1),
            ootf_s2: s.table8(&t.ootf_s2),
            m,
        }
    }

    /// PQ EOTF of segment coordinates.
    #[inline(always)]
    fn pq(&self, s: S, x: S::F) -> S::F {
        let x = s.min(
            s.max(x, s.splat(0.0)),
            s.splat(PQ_SEGS as f32 - 1e-6 * PQ_SEGS as f32),
        );
        let i = s.trunc_i(x);
        let t = s.sub(x, s.to_f(i));
        let i = s.index8(i);
        let mut z = s.pick8(self.pq[PQ_DEG], i);
        for k in (0..PQ_DEG).rev() {
            z = s.mul_add(z, t, s.pick8(self.pq[k], i));
        }
        s.mul(z, z)
    }

    /// BT.1886 inverse V = max(L, 0)^(1/2.4).
    #[inline(always)]
    fn oetf(&self, s: S, l: S::F) -> S::F {
        // max(NaN, floor) is the floor.
        let bits = s.cast_i(s.min(s.max(l, s.splat(OETF_FLOOR)), s.splat(OETF_MAX)));
        pow_bits(s, bits, &self.oetf_p, self.oetf_s1, self.oetf_s2)
    }

    /// HLG OOTF: scene-linear BT.2020 E in, display-linear out: every channel times
    /// 10 * Ys^(gamma - 1).
    #[inline(always)]
    fn ootf(&self, s: S, [r, g, b]: [S::F; 3]) -> [S::F; 3] {
        let set = |v: f32| s.splat(v);
        let ys = s.mul_add(
            set(BT2020_LUMA[2] as f32),
            b,
            s.mul_add(
                set(BT2020_LUMA[1] as f32),
                g,
                s.mul(set(BT2020_LUMA[0] as f32), r),
            ),
        );
        let bits = s.cast_i(s.min(s.max(ys, set(OOTF_FLOOR)), set(1.0)));
        let k = pow_bits(s, bits, &self.ootf_p, self.ootf_s1, self.ootf_s2);
        [s.mul(r, k), s.mul(g, k), s.mul(b, k)]
    }

    /// Stage 1: luma codes and normalised Cb/Cr in, linear BT.2020 R, G, B out.
    #[inline(always)]
    fn stage_lin(&self, s: S, t: &MaxTables, yv: S::F, cbv: S::F, crv: S::F) -> [S::F; 3] {
        let set = |v: f32| s.splat(v);
        let yi = s.mul_add(yv, set(t.ky), set(t.y0));
        let ir = s.mul_add(crv, set(t.kr_cr), yi);
        let ig = s.neg_mul_add(cbv, set(t.kg_cb), s.neg_mul_add(crv, set(t.kg_cr), yi));
        let ib = s.mul_add(cbv, set(t.kb_cb), yi);
        [self.pq(s, ir), self.pq(s, ig), self.pq(s, ib)]
    }

    /// Stage 2: BT.709 primaries, desaturation, the curve: display-linear R, G, B.
    #[inline(always)]
    fn stage_tone<const DESAT: bool, const RATIONAL: bool>(
        &self,
        s: S,
        t: &MaxTables,
        [r, g, b]: [S::F; 3],
    ) -> [S::F; 3] {
        let set = |v: f32| s.splat(v);
        let m = &self.m;
        let row = |k: usize| s.mul_add(m[k][2], b, s.mul_add(m[k][1], g, s.mul(m[k][0], r)));
        let (mut r7, mut g7, mut b7) = (row(0), row(1), row(2));
        let tiny = set(1e-6);
        if DESAT {
            let l = s.mul_add(
                set(BT2020_LUMA[2] as f32),
                b7,
                s.mul_add(
                    set(BT2020_LUMA[1] as f32),
                    g7,
                    s.mul(set(BT2020_LUMA[0] as f32), r7),
                ),
            );
            let ob = s.div(s.max(s.sub(l, set(t.desat)), tiny), s.max(l, tiny));
            r7 = s.mul_add(ob, s.sub(l, r7), r7);
            g7 = s.mul_add(ob, s.sub(l, g7), g7);
            b7 = s.mul_add(ob, s.sub(l, b7), b7);
        }
        let sig = s.max(s.max(r7, g7), s.max(b7, tiny));
        // k = f(sig) / sig with a refined reciprocal estimate (a divide costs more here). The
        // rational curve folds both divisions into one:
        // (mul * num / den + add) / sig = (mul * num + add * den) / (den * sig).
        let k = match t.rational.filter(|_| RATIONAL) {
            Some(q) => {
                let num = s.mul_add(s.mul_add(set(q.a), sig, set(q.b)), sig, set(q.c));
                let den = s.mul_add(s.mul_add(set(q.d), sig, set(q.e)), sig, set(q.g));
                let top = s.mul_add(num, set(q.mul), s.mul(den, set(q.add)));
                let k = s.mul(top, s.recip(s.mul(den, sig)));
                s.select(s.le(sig, set(q.ident)), set(1.0), k)
            }
            None => {
                let ti = s
                    .shr_s::<{ TONE_SHIFT as i32 }>(s.sub_i(s.cast_i(sig), s.splat_i(t.tone_base)));
                let ti = s.max_i(s.min_i(ti, s.splat_i(t.tone_last)), s.splat_i(0));
                assert!(t.tone.len() == t.tone_last as usize + 1);
                // SAFETY: 0 <= ti <= tone_last < tone.len().
                let f = unsafe { s.gather(t.tone.as_ptr(), ti) };
                s.mul(f, s.recip(sig))
            }
        };
        [s.mul(r7, k), s.mul(g7, k), s.mul(b7, k)]
    }

    /// Stage 3: BT.1886 inverse, BT.709 Y'CbCr: output Y code (unrounded), Cb, Cr.
    #[inline(always)]
    fn stage_out(&self, s: S, t: &MaxTables, [r, g, b]: [S::F; 3]) -> [S::F; 3] {
        let set = |v: f32| s.splat(v);
        let (rv, gv, bv) = (self.oetf(s, r), self.oetf(s, g), self.oetf(s, b));
        let yv = s.mul_add(
            set(BT709_LUMA[2] as f32),
            bv,
            s.mul_add(
                set(BT709_LUMA[1] as f32),
                gv,
                s.mul(set(BT709_LUMA[0] as f32), rv),
            ),
        );
        let ocb = s.mul(s.sub(bv, yv), set(1.0 / 1.8556));
        let ocr = s.mul(s.sub(rv, yv), set(1.0 / 1.5748));
        let code = s.mul_add(yv, set(t.oys), set(t.oy0));
        [code, ocb, ocr]
    }
}

/// s1[e_b & 7] * s2[(e_b >> 3) & 7] * P(m) for the bits of positive floats (see
/// `fastmax::pow_tables`): the BT.1886 inverse and the HLG OOTF.
#[inline(always)]
fn pow_bits<S: Lanes>(s: S, bits: S::I, q: &[S::F; 4], s1: S::T8, s2: S::T8) -> S::F {
    let m = s.cast_f(s.or_i(
        s.and_i(bits, s.splat_i(0x007f_ffff)),
        s.splat_i(0x3f80_0000),
    ));
    let pm = s.mul_add(s.mul_add(s.mul_add(q[3], m, q[2]), m, q[1]), m, q[0]);
    // The exponent's low 3 bits, then the next 3 (pick8 reads the low 3 bits).
    let s1 = s.pick8(s1, s.index8(s.shr_u::<23>(bits)));
    let s2 = s.pick8(s2, s.index8(s.shr_u::<26>(bits)));
    s.mul(s.mul(pm, s1), s2)
}

/// Entry point under AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) fn band_avx2(
    t: &MaxTables,
    src: &SrcImage,
    dst: &mut DstImage,
    j0: usize,
    j1: usize,
    dither: bool,
    chroma_scale: f32,
) {
    // SAFETY: this function only runs on CPUs with AVX2 and FMA (its target features).
    let s = unsafe { super::lanes::Avx2::new_unchecked() };
    band(s, t, src, dst, j0, j1, dither, chroma_scale)
}

/// Entry point under SSE4.1.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
#[allow(clippy::too_many_arguments)]
pub(super) fn band_sse4(
    t: &MaxTables,
    src: &SrcImage,
    dst: &mut DstImage,
    j0: usize,
    j1: usize,
    dither: bool,
    chroma_scale: f32,
) {
    // SAFETY: this function only runs on CPUs with SSE4.1 (its target feature).
    let s = unsafe { super::lanes::Sse4::new_unchecked() };
    band(s, t, src, dst, j0, j1, dither, chroma_scale)
}

/// Entry point under NEON.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
pub(super) fn band_neon(
    t: &MaxTables,
    src: &SrcImage,
    dst: &mut DstImage,
    j0: usize,
    j1: usize,
    dither: bool,
    chroma_scale: f32,
) {
    // SAFETY: this function only runs on CPUs with NEON (its target feature).
    let s = unsafe { super::lanes::Neon::new_unchecked() };
    band(s, t, src, dst, j0, j1, dither, chroma_scale)
}

/// The whole band (output chroma rows j0..j1, luma rows 2j0..2j1) in one loop over 256-pixel
/// chunks of each luma row. `dst` holds only this band's rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn band<S: Lanes>(
    s: S,
    t: &MaxTables,
    src: &SrcImage,
    dst: &mut DstImage,
    j0: usize,
    j1: usize,
    dither: bool,
    chroma_scale: f32,
) {
    let n_ = S::N;
    let (w, h) = (src.width, src.height);
    let (cw, ch) = (w / 2, h / 2);
    if cw == 0 || ch == 0 || j0 >= j1 {
        return;
    }
    let pad = cw + 16;
    let mk = |n: usize| vec![0f32; n];
    let mut sc = BandScratch {
        cb_rows: [mk(pad), mk(pad), mk(pad)],
        cr_rows: [mk(pad), mk(pad), mk(pad)],
        crow: [usize::MAX; 3],
        ring_b: [mk(cw), mk(cw), mk(cw), mk(cw)],
        ring_r: [mk(cw), mk(cw), mk(cw), mk(cw)],
        crow_out: mk(w),
    };
    let k = Kernel::new(s, t);
    let mut cs = ChunkScratch {
        buf: [[0f32; BAND_CHUNK]; 3],
    };
    let shift = if src.layout == InputLayout::P010 {
        6
    } else {
        0
    };
    let (ooc, osc) = (128f32, 224f32);
    // Chunk buffers: the vertical blend (+1 for the right neighbour, + spare for the last
    // vector), upsampled input chroma, output Y codes, output chroma with 8 slots of left
    // context (slot 7 used).
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
            if sc.crow[slot] != jj {
                convert_chroma_row(
                    s,
                    src,
                    jj,
                    chroma_scale,
                    &mut sc.cb_rows[slot],
                    &mut sc.cr_rows[slot],
                );
                sc.crow[slot] = jj;
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
                let (a_b, a_r) = (&sc.cb_rows[j % 3], &sc.cr_rows[j % 3]);
                let (b_b, b_r) = (&sc.cb_rows[jn % 3], &sc.cr_rows[jn % 3]);
                assert!(a_b.len() == pad && a_r.len() == pad && b_b.len() == pad);
                assert!(b_r.len() == pad && c0 + cn <= cw);
                // Vertical blend of chroma columns c0 ..= c0 + cn (rounded up to N; past the
                // last column the rows hold copies of it: the edge clamp).
                let (v3, v1) = (s.splat(0.75), s.splat(0.25));
                let mut i = 0;
                while i <= cn {
                    // SAFETY: c0 + i + N <= c0 + cn + 8 <= cw + 8 < pad (the row length);
                    // i + N <= cn + 8 <= BAND_CHUNK / 2 + 8 < hb.len().
                    unsafe {
                        let q = c0 + i;
                        let vb = s.mul_add(
                            s.load(a_b.as_ptr().add(q)),
                            v3,
                            s.mul(s.load(b_b.as_ptr().add(q)), v1),
                        );
                        let vr = s.mul_add(
                            s.load(a_r.as_ptr().add(q)),
                            v3,
                            s.mul(s.load(b_r.as_ptr().add(q)), v1),
                        );
                        s.store(hb.as_mut_ptr().add(i), vb);
                        s.store(hr.as_mut_ptr().add(i), vr);
                    }
                    i += n_;
                }
            }
            upsample_chunk(s, &hb, &mut ub, cn);
            upsample_chunk(s, &hr, &mut ur, cn);
            chunk(
                s,
                t,
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
                store_u8(s, &oy[..n], out);
            }
            // Left context of column 0: the edge clamp (o[-1] = o[0]).
            if x0 == 0 {
                ob[7] = ob[8];
                or[7] = or[8];
            }
            downsample_chunk(s, &ob, &mut sc.ring_b[slot][c0..c0 + cn]);
            downsample_chunk(s, &or, &mut sc.ring_r[slot][c0..c0 + cn]);
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
            let (rb, rr) = (&sc.ring_b, &sc.ring_r);
            let [ta, tb, tc, td] = taps;
            let (rba, rbb, rbc, rbd) = (&rb[ta][..cw], &rb[tb][..cw], &rb[tc][..cw], &rb[td][..cw]);
            let (rra, rrb, rrc, rrd) = (&rr[ta][..cw], &rr[tb][..cw], &rr[tc][..cw], &rr[td][..cw]);
            let out = &mut sc.crow_out[..w];
            let full = cw - cw % n_;
            let (c1, c3) = (s.splat(0.125), s.splat(0.375));
            let (vosc, vooc) = (s.splat(osc), s.splat(ooc + 0.5));
            let mut i = 0;
            while i < full {
                // SAFETY: i + N <= cw: the ring rows hold cw values, `out` 2cw = w.
                unsafe {
                    let tap = |a: &[f32], b: &[f32], c: &[f32], d: &[f32]| {
                        let ad = s.add(s.load(a.as_ptr().add(i)), s.load(d.as_ptr().add(i)));
                        let bc = s.add(s.load(b.as_ptr().add(i)), s.load(c.as_ptr().add(i)));
                        let v = s.mul_add(ad, c1, s.mul(bc, c3));
                        s.mul_add(v, vosc, vooc)
                    };
                    let vb = tap(rba, rbb, rbc, rbd);
                    let vr = tap(rra, rrb, rrc, rrd);
                    if nv12 {
                        let (lo, hi) = s.zip(vb, vr);
                        let o = out.as_mut_ptr().add(2 * i);
                        s.store(o, lo);
                        s.store(o.add(n_), hi);
                    } else {
                        s.store(out.as_mut_ptr().add(i), vb);
                        s.store(out.as_mut_ptr().add(cw + i), vr);
                    }
                }
                i += n_;
            }
            for i in full..cw {
                let vb = ooc + osc * (0.125 * (rba[i] + rbd[i]) + 0.375 * (rbb[i] + rbc[i])) + 0.5;
                let vr = ooc + osc * (0.125 * (rra[i] + rrd[i]) + 0.375 * (rrb[i] + rrc[i])) + 0.5;
                if nv12 {
                    out[2 * i] = vb;
                    out[2 * i + 1] = vr;
                } else {
                    out[i] = vb;
                    out[cw + i] = vr;
                }
            }
            if nv12 {
                let out = &mut dst.planes[1][lj * dst.strides[1]..][..w];
                store_u8(s, &sc.crow_out[..w], out);
            } else {
                let out = &mut dst.planes[1][lj * dst.strides[1]..][..cw];
                store_u8(s, &sc.crow_out[..cw], out);
                let out = &mut dst.planes[2][lj * dst.strides[2]..][..cw];
                store_u8(s, &sc.crow_out[cw..w], out);
            }
            next_j += 1;
        }
    }
}

/// The pixel kernel over one chunk (n <= BAND_CHUNK): three short passes (each pass's
/// iterations are independent and short, so the out-of-order core overlaps several; one chain
/// per vector through all three stages is ~110 cycles of latency, longer than the core's
/// window). The last n % N pixels go through the scalar model [`MaxTables::pixel`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn chunk<S: Lanes>(
    s: S,
    t: &MaxTables,
    k: &Kernel<S>,
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
    let n_ = S::N;
    let n = oy.len();
    assert!(n <= BAND_CHUNK && y.len() >= 2 * n && cb.len() >= n && cr.len() >= n);
    assert!(ocb.len() >= n && ocr.len() >= n);
    let mask = s.splat_i(0x3ff);
    let buf = &mut scratch.buf;
    let full = n - n % n_;
    let mut i = 0;
    while i < full {
        // SAFETY: i + N <= full <= n <= BAND_CHUNK; the slices hold n elements (2n bytes for y).
        unsafe {
            let raw = s.load_u16(y.as_ptr().add(2 * i));
            let yv = s.to_f(s.and_i(s.shr_u_var(raw, shift), mask));
            let cbv = s.load(cb.as_ptr().add(i));
            let crv = s.load(cr.as_ptr().add(i));
            let v = k.stage_lin(s, t, yv, cbv, crv);
            s.store(buf[0].as_mut_ptr().add(i), v[0]);
            s.store(buf[1].as_mut_ptr().add(i), v[1]);
            s.store(buf[2].as_mut_ptr().add(i), v[2]);
        }
        i += n_;
    }
    // HLG: the OOTF as a pass of its own (2 ms CPU per 4K frame under AVX2; 5 ms inside
    // stage 1, whose dependency chain is long already).
    if t.hlg {
        ootf_pass(s, k, buf, full);
    }
    // The desaturation and curve-kind tests are hoisted out of the loop (the compiler kept
    // them per iteration).
    match (t.desat > 0.0, t.rational.is_some()) {
        (true, true) => tone_pass::<S, true, true>(s, t, k, buf, full),
        (true, false) => tone_pass::<S, true, false>(s, t, k, buf, full),
        (false, true) => tone_pass::<S, false, true>(s, t, k, buf, full),
        (false, false) => tone_pass::<S, false, false>(s, t, k, buf, full),
    }
    // Separate passes measured faster than one fused tone + output pass (33 against 37 ms CPU
    // per 4K frame under AVX2).
    let mut i = 0;
    while i < full {
        // SAFETY: i + N <= full <= n <= BAND_CHUNK; oy/ocb/ocr hold n elements; the dither row
        // holds 8 values and i % 8 + N <= 8 (N divides 8).
        unsafe {
            let [code, ocbv, ocrv] = k.stage_out(
                s,
                t,
                [
                    s.load(buf[0].as_ptr().add(i)),
                    s.load(buf[1].as_ptr().add(i)),
                    s.load(buf[2].as_ptr().add(i)),
                ],
            );
            let rnd = s.load(round.as_ptr().add(i % 8));
            s.store(oy.as_mut_ptr().add(i), s.add(code, rnd));
            s.store(ocb.as_mut_ptr().add(i), ocbv);
            s.store(ocr.as_mut_ptr().add(i), ocrv);
        }
        i += n_;
    }
    for x in full..n {
        let v = (u16::from_le_bytes([y[2 * x], y[2 * x + 1]]) >> shift) & 0x3ff;
        let (a, b, c) = t.pixel(v as f32, cb[x], cr[x]);
        oy[x] = a + round[x & 7];
        ocb[x] = b;
        ocr[x] = c;
    }
}

/// The HLG OOTF over the first `full` pixels of the chunk buffers, in place.
#[inline(always)]
fn ootf_pass<S: Lanes>(s: S, k: &Kernel<S>, buf: &mut [[f32; BAND_CHUNK]; 3], full: usize) {
    assert!(full <= BAND_CHUNK);
    let mut i = 0;
    while i < full {
        // SAFETY: i + N <= full <= BAND_CHUNK, the length of each buffer.
        unsafe {
            let v = k.ootf(
                s,
                [
                    s.load(buf[0].as_ptr().add(i)),
                    s.load(buf[1].as_ptr().add(i)),
                    s.load(buf[2].as_ptr().add(i)),
                ],
            );
            s.store(buf[0].as_mut_ptr().add(i), v[0]);
            s.store(buf[1].as_mut_ptr().add(i), v[1]);
            s.store(buf[2].as_mut_ptr().add(i), v[2]);
        }
        i += S::N;
    }
}

/// Stage 2 over the first `full` pixels of the chunk buffers, in place.
#[inline(always)]
fn tone_pass<S: Lanes, const DESAT: bool, const RATIONAL: bool>(
    s: S,
    t: &MaxTables,
    k: &Kernel<S>,
    buf: &mut [[f32; BAND_CHUNK]; 3],
    full: usize,
) {
    assert!(full <= BAND_CHUNK);
    let mut i = 0;
    while i < full {
        // SAFETY: i + N <= full <= BAND_CHUNK, the length of each buffer.
        unsafe {
            let v = k.stage_tone::<DESAT, RATIONAL>(
                s,
                t,
                [
                    s.load(buf[0].as_ptr().add(i)),
                    s.load(buf[1].as_ptr().add(i)),
                    s.load(buf[2].as_ptr().add(i)),
                ],
            );
            s.store(buf[0].as_mut_ptr().add(i), v[0]);
            s.store(buf[1].as_mut_ptr().add(i), v[1]);
            s.store(buf[2].as_mut_ptr().add(i), v[2]);
        }
        i += S::N;
    }
}

/// Input chroma row `j` as normalised f32 Cb/Cr, padded with copies of the last column.
#[inline(always)]
fn convert_chroma_row<S: Lanes>(
    s: S,
    src: &SrcImage,
    j: usize,
    cs: f32,
    b: &mut [f32],
    r: &mut [f32],
) {
    let n_ = S::N;
    let cw = src.width / 2;
    assert!(b.len() > cw && r.len() > cw);
    let inv = 1.0 / cs;
    let (vinv, v512) = (s.splat(inv), s.splat(512.0));
    let full = cw - cw % n_;
    let norm = |v: S::I| s.mul(s.sub(s.to_f(v), v512), vinv);
    match src.layout {
        InputLayout::P010 => {
            let uv = &src.planes[1][j * src.strides[1]..][..cw * 4];
            let mut i = 0;
            while i < full {
                // SAFETY: reads uv[4i .. 4i + 4N] (i + N <= cw), writes b/r[i .. i + N].
                unsafe {
                    // One u32 per U/V pair: U in bits 6..16, V in bits 22..32.
                    let d = s.load_u32(uv.as_ptr().add(4 * i));
                    let u = s.shr_u::<6>(s.and_i(d, s.splat_i(0xffc0)));
                    let v = s.shr_u::<22>(d);
                    s.store(b.as_mut_ptr().add(i), norm(u));
                    s.store(r.as_mut_ptr().add(i), norm(v));
                }
                i += n_;
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
            let mask = s.splat_i(0x3ff);
            let mut i = 0;
            while i < full {
                // SAFETY: reads ub/vb[2i .. 2i + 2N] (i + N <= cw), writes b/r[i .. i + N].
                unsafe {
                    let u = s.and_i(s.load_u16(ub.as_ptr().add(2 * i)), mask);
                    let v = s.and_i(s.load_u16(vb.as_ptr().add(2 * i)), mask);
                    s.store(b.as_mut_ptr().add(i), norm(u));
                    s.store(r.as_mut_ptr().add(i), norm(v));
                }
                i += n_;
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
#[inline(always)]
fn upsample_chunk<S: Lanes>(s: S, h: &[f32], out: &mut [f32], cn: usize) {
    let n_ = S::N;
    assert!(h.len() >= cn + 9 && out.len() >= 2 * cn);
    let half = s.splat(0.5);
    let mut i = 0;
    while i + n_ <= cn {
        // SAFETY: reads h[i .. i + N + 1] (i + N + 1 <= cn + 1), writes out[2i .. 2i + 2N]
        // (<= 2cn).
        unsafe {
            let a = s.load(h.as_ptr().add(i));
            let b = s.load(h.as_ptr().add(i + 1));
            let (lo, hi) = s.zip(a, s.mul(s.add(a, b), half));
            s.store(out.as_mut_ptr().add(2 * i), lo);
            s.store(out.as_mut_ptr().add(2 * i + n_), hi);
        }
        i += n_;
    }
    while i < cn {
        out[2 * i] = h[i];
        out[2 * i + 1] = 0.5 * (h[i] + h[i + 1]);
        i += 1;
    }
}

/// `out[i] = o[2i-1]/4 + o[2i]/2 + o[2i+1]/4` where `o` = `ob[8..]` (`ob[7]` is the left
/// context), for i < out.len().
#[inline(always)]
fn downsample_chunk<S: Lanes>(s: S, ob: &[f32], out: &mut [f32]) {
    let n_ = S::N;
    let cn = out.len();
    assert!(ob.len() >= 8 + 2 * cn);
    let quarter = s.splat(0.25);
    let mut i = 0;
    while i + n_ <= cn {
        // SAFETY: reads ob[8 + 2i - 1 .. 8 + 2i + 2N] (<= 8 + 2cn), writes out[i .. i + N].
        unsafe {
            let p = ob.as_ptr().add(8 + 2 * i);
            let d1 = s.add(s.load(p.sub(1)), s.load(p));
            let d2 = s.add(s.load(p.add(n_ - 1)), s.load(p.add(n_)));
            // (o[2i-1] + o[2i]) + (o[2i] + o[2i+1]) per output.
            let v = s.mul(s.pair_sums(d1, d2), quarter);
            s.store(out.as_mut_ptr().add(i), v);
        }
        i += n_;
    }
    while i < cn {
        let q = 8 + 2 * i;
        out[i] = 0.25 * ob[q - 1] + 0.5 * ob[q] + 0.25 * ob[q + 1];
        i += 1;
    }
}

/// Stores `clamp(v, 0, 255)` truncated to u8.
#[inline(always)]
fn store_u8<S: Lanes>(s: S, v: &[f32], out: &mut [u8]) {
    let n = v.len().min(out.len());
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: reads v[i .. i + 16], writes out[i .. i + 16], both within n.
        unsafe { s.store_u8x16(out.as_mut_ptr().add(i), v.as_ptr().add(i)) };
        i += 16;
    }
    while i < n {
        out[i] = v[i].clamp(0.0, 255.0) as u8;
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tonemap::{OutputFormat, Params, Signal, TonemapOptions};

    /// The chunk kernel at one ISA against the scalar model, lane by lane, for every curve
    /// kind (rational, looked-up), with and without desaturation, P010 and planar luma.
    fn kernel_matches_scalar_model<S: Lanes>(s: S) {
        for (spec, sig) in [
            ("hable:desat=0:peak=10", Signal::pq()),
            ("mobius:desat=2", Signal::pq()),
            ("bt2390:desat=0", Signal::pq()),
            ("clip", Signal::pq()),
            ("hable:desat=0", Signal::hlg()),
            ("gamma:desat=2", Signal::hlg()),
        ] {
            let o: TonemapOptions = spec.parse().unwrap();
            let p = Params::new(&o, sig);
            let t = MaxTables::new(&p, OutputFormat::Nv12).unwrap();
            let k = Kernel::new(s, &t);
            let mut cs = ChunkScratch {
                buf: [[0f32; BAND_CHUNK]; 3],
            };
            let n = 251; // not a multiple of 8 or 4: the scalar tail too
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
                let round: [f32; 8] = std::array::from_fn(|x| 0.1 * x as f32);
                let (mut oy, mut ob, mut or) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
                chunk(
                    s, &t, &k, &mut cs, &y, shift, &cb, &cr, &round, &mut oy, &mut ob, &mut or,
                );
                for x in 0..n {
                    let (a, b, c) = t.pixel(codes[x] as f32, cb[x], cr[x]);
                    let a = a + round[x % 8];
                    assert!(
                        (a - oy[x]).abs() < 0.02
                            && (b - ob[x]).abs() < 1e-4
                            && (c - or[x]).abs() < 1e-4,
                        "{spec} {:?} x={x}: scalar ({a}, {b}, {c}) simd ({}, {}, {})",
                        sig.transfer,
                        oy[x],
                        ob[x],
                        or[x]
                    );
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernel_matches_scalar_model() {
        if let Some(s) = super::super::lanes::Avx2::detect() {
            kernel_matches_scalar_model(s);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sse4_kernel_matches_scalar_model() {
        if let Some(s) = super::super::lanes::Sse4::detect() {
            kernel_matches_scalar_model(s);
        }
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn neon_kernel_matches_scalar_model() {
        if let Some(s) = super::super::lanes::Neon::detect() {
            kernel_matches_scalar_model(s);
        }
    }
}
