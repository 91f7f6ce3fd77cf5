//! The fast CPU path.
//!
//! Same chain and chroma siting as [`super::reference`], in f32 with lookup tables:
//! - non-linear -> linear: under AVX2 with PQ input the fused path's piecewise polynomial
//!   (`fastmax::PqPoly`), otherwise a 32768-entry table over 0..2, read at the nearest entry,
//!   or linearly interpolated for the per-channel modes (see `lin_lookup`);
//! - the curve as a ratio f(s)/s, the BT.1886 inverse and the HLG OOTF as "log-domain" tables
//!   indexed by the float's exponent and top mantissa bits (128 bins per octave, linearly
//!   interpolated; small enough to stay in L1, and continuous so ramps stay monotonic); under
//!   AVX2 the BT.1886 inverse is computed instead (`fastmath`), as are the chroma resampling
//!   rows and the 8-bit stores;
//! - everything else is straight f32 arithmetic in short passes over 256-pixel chunks, which the
//!   compiler vectorises (passes beat one fused kernel here: independent gathers overlap); the
//!   whole row pipeline is compiled once per SIMD level (`#[target_feature]`) and picked at run
//!   time;
//! - rows are split into bands processed on scoped threads.
//!
//! At every SIMD level (AVX2, SSE4.1, NEON) the default case (PQ or HLG input, `mode=max`,
//! 8-bit output) runs a whole band in the fused kernel instead (`fused`, one source over the
//! `lanes` abstraction, tables in `fastmax`: transfer functions as piecewise polynomials,
//! chroma resampling fused into 256-pixel chunks); everything else, and the scalar build,
//! comes here.

// Index loops over several parallel arrays are the clearest form of the vectorisable passes.
#![allow(clippy::needless_range_loop)]

use std::sync::Arc;

#[cfg(target_arch = "x86_64")]
use super::fastmath::rows;
use super::fastmax::{MaxTables, PqPoly};
use super::fused;
use super::image::{DstImage, InputLayout, SrcImage, Transfer, bayer8, out_range};
use super::math::*;
use super::{Mode, OutputFormat, Params, reference};
use crate::error::Result;

/// SIMD level of the CPU path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Portable code compiled for the baseline target.
    Scalar,
    /// x86-64 SSE4.1.
    Sse4,
    /// aarch64 NEON (the aarch64 baseline).
    Neon,
    /// x86-64 AVX2 + FMA.
    Avx2,
}

impl SimdLevel {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" | "c" => SimdLevel::Scalar,
            "sse4" | "sse4.1" | "sse41" => SimdLevel::Sse4,
            "neon" => SimdLevel::Neon,
            "avx2" => SimdLevel::Avx2,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Sse4 => "sse4",
            SimdLevel::Neon => "neon",
            SimdLevel::Avx2 => "avx2",
        }
    }

    /// The levels this machine can run, lowest first.
    pub fn available() -> Vec<SimdLevel> {
        #[allow(unused_mut)]
        let mut v = vec![SimdLevel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("sse4.1") {
                v.push(SimdLevel::Sse4);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                v.push(SimdLevel::Avx2);
            }
        }
        #[cfg(target_arch = "aarch64")]
        v.push(SimdLevel::Neon);
        v
    }

    /// The level to use: the best available, lowered by `CLUSTERPLEX_SIMD` and by `cap`
    /// (neither can raise it).
    pub fn select(cap: Option<SimdLevel>) -> SimdLevel {
        let env = std::env::var("CLUSTERPLEX_SIMD").ok().and_then(|s| {
            let l = SimdLevel::parse(&s);
            if l.is_none() {
                tracing::warn!(value = %s, "CLUSTERPLEX_SIMD not one of avx2|sse4|neon|scalar; ignored");
            }
            l
        });
        let limit = [env, cap]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(SimdLevel::Avx2);
        SimdLevel::available()
            .into_iter()
            .filter(|l| *l <= limit)
            .max()
            .unwrap_or(SimdLevel::Scalar)
    }
}

const CHUNK: usize = 256;
const LIN_STEPS: f32 = 16384.0;
const LIN_SIZE: usize = 32768; // 0..2 in steps of 1/16384; a power of two so a mask removes bounds checks
/// Linear values are capped here (1e6 nits) so f32 stays finite for wild overshoots.
const LIN_MAX: f64 = 1e4;
const LOG_SIZE: usize = 8192;
const LOG_SHIFT: u32 = 16; // 23 - 16 = 7 mantissa bits: 128 bins per octave, interpolated

/// A table over x > 0 indexed by the float bits, i.e. uniform in log2(x).
struct LogLut {
    base: i32,
    last: i32,
    v: Box<[f32; LOG_SIZE]>,
}

impl LogLut {
    fn new(lo_exp: i32, hi_exp: i32, f: impl Fn(f64) -> f64) -> Self {
        let base = (lo_exp + 127) << 23;
        // One spare entry so interpolation can read i + 1.
        let bins = (((hi_exp - lo_exp) as usize) << (23 - LOG_SHIFT)) + 1;
        assert!(bins < LOG_SIZE);
        let mut v = Box::new([0f32; LOG_SIZE]);
        for (i, e) in v.iter_mut().enumerate().take(bins) {
            *e = f(f32::from_bits((base + ((i as i32) << LOG_SHIFT)) as u32) as f64) as f32;
        }
        for i in bins..LOG_SIZE {
            v[i] = v[bins - 1];
        }
        LogLut {
            base,
            last: bins as i32 - 2,
            v,
        }
    }

    /// Linearly interpolated value: keeps s * f(s)/s
    /// continuous and monotonic across bins.
    #[inline(always)]
    fn lerp(&self, x: f32) -> f32 {
        let d = (x.to_bits() as i32).wrapping_sub(self.base);
        let i = (d >> LOG_SHIFT).clamp(0, self.last);
        let frac = if d < 0 {
            0.0
        } else {
            (d & ((1 << LOG_SHIFT) - 1)) as f32 * (1.0 / (1 << LOG_SHIFT) as f32)
        };
        let frac = if (d >> LOG_SHIFT) > self.last {
            1.0
        } else {
            frac
        };
        let i = (i as usize).min(LOG_SIZE - 2);
        let (a, b) = (self.v[i], self.v[i + 1]);
        a + frac * (b - a)
    }
}

/// Tables for one set of parameters.
struct Tables {
    params: Params,
    lin: Box<[f32; LIN_SIZE]>,
    ratio: LogLut,
    gamma: LogLut,
    /// HLG: 10 * Ys^(gamma-1).
    ootf: Option<LogLut>,
    /// The fused default path (PQ or HLG, mode=max), used for 8-bit output.
    fast: Option<MaxTables>,
    /// PQ input: the EOTF as a polynomial for the AVX2 passes (instead of gathers). Not built
    /// elsewhere: the fused kernel has its own copy in `fast`, the other passes use `lin`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pq_poly: Option<PqPoly>,
    /// Interpolate the linearisation table (see `lin_lookup`).
    lin_interp: bool,
}

impl Tables {
    fn new(p: &Params) -> Self {
        let mut lin = Box::new([0f32; LIN_SIZE]);
        // Covers non-linear values 0..2: chroma interpolation between saturated colours
        // overshoots 1, and zimg extrapolates PQ there (HLG is clipped at 1).
        for (i, e) in lin.iter_mut().enumerate() {
            let x = i as f64 / LIN_STEPS as f64;
            *e = match p.signal.transfer {
                Transfer::Pq => (pq_eotf(x) / REFERENCE_WHITE).min(LIN_MAX),
                Transfer::Hlg => hlg_inv_oetf(x.min(1.0)),
            } as f32;
        }
        let tone = p.tone;
        let ratio = LogLut::new(-20, 14, |s| tone.apply(s) / s);
        let gamma = LogLut::new(-30, 10, bt1886_inv);
        let ootf = (p.signal.transfer == Transfer::Hlg).then(|| {
            let g = hlg_gamma(HLG_PEAK_NITS) - 1.0;
            LogLut::new(-30, 1, move |y| HLG_PEAK_NITS / REFERENCE_WHITE * y.powf(g))
        });
        Tables {
            params: *p,
            lin,
            ratio,
            gamma,
            ootf,
            // The fused kernel's tables (AVX2, SSE4.1 and NEON run it).
            fast: MaxTables::new(p, OutputFormat::Yuv420p),
            pq_poly: (cfg!(target_arch = "x86_64") && p.signal.transfer == Transfer::Pq)
                .then(PqPoly::new),
            lin_interp: matches!(p.mode, Mode::Rgb | Mode::Itp),
        }
    }
}

/// The CPU tonemapper: tables cached across frames, SIMD level and threads fixed at creation.
pub struct CpuTonemapper {
    level: SimdLevel,
    threads: usize,
    tables: Option<Arc<Tables>>,
}

impl CpuTonemapper {
    /// `threads = 0`: one per available core.
    pub fn new(threads: usize, simd: Option<SimdLevel>) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            threads
        };
        CpuTonemapper {
            level: SimdLevel::select(simd),
            threads,
            tables: None,
        }
    }

    pub fn level(&self) -> SimdLevel {
        self.level
    }

    /// Whether frames with these parameters, written as `format`, run the fused kernel (the
    /// test that HLG really takes it asks this; it is what `run_band` dispatches on).
    #[doc(hidden)]
    pub fn runs_fused_kernel(&self, p: &Params, format: OutputFormat) -> bool {
        fused_kernel(self.level, &Tables::new(p), format).is_some()
    }

    pub fn run(&mut self, src: &SrcImage, dst: &mut DstImage, p: &Params) -> Result<()> {
        let tables = match &self.tables {
            Some(t) if t.params == *p => t.clone(),
            _ => {
                let t = Arc::new(Tables::new(p));
                self.tables = Some(t.clone());
                t
            }
        };
        let ch = src.height / 2;
        let bands = self.threads.clamp(1, ch.div_ceil(8).max(1));
        let per = ch.div_ceil(bands);
        let format = dst.format;
        // Split the output planes into disjoint row bands, one per thread.
        let mut parts: Vec<(usize, usize, DstImage)> = Vec::with_capacity(bands);
        let strides = dst.strides;
        let [p0, p1, p2] = &mut dst.planes;
        let mut rest: [&mut [u8]; 3] = [&mut p0[..], &mut p1[..], &mut p2[..]];
        let mut j0 = 0;
        while j0 < ch {
            let j1 = (j0 + per).min(ch);
            let rows = [2 * (j1 - j0), j1 - j0, j1 - j0];
            let mut band: [&mut [u8]; 3] = [&mut [], &mut [], &mut []];
            for k in 0..3 {
                let n = (strides[k] * rows[k]).min(rest[k].len());
                let (a, b) = std::mem::take(&mut rest[k]).split_at_mut(n);
                band[k] = a;
                rest[k] = b;
            }
            parts.push((
                j0,
                j1,
                DstImage {
                    format,
                    planes: band,
                    strides,
                },
            ));
            j0 = j1;
        }
        let level = self.level;
        if parts.len() == 1 {
            let (j0, j1, mut d) = parts.pop().expect("one band");
            run_band(level, &tables, src, &mut d, j0, j1);
        } else {
            std::thread::scope(|s| {
                for (j0, j1, mut d) in parts {
                    let t = &tables;
                    s.spawn(move || run_band(level, t, src, &mut d, j0, j1));
                }
            });
        }
        Ok(())
    }
}

/// The fused kernel's tables when bands at `level` writing `format` run it.
fn fused_kernel(level: SimdLevel, t: &Tables, format: OutputFormat) -> Option<&MaxTables> {
    match level {
        SimdLevel::Avx2 | SimdLevel::Sse4 | SimdLevel::Neon => {
            t.fast.as_ref().filter(|_| !format.is_10bit())
        }
        SimdLevel::Scalar => None,
    }
}

fn run_band(
    level: SimdLevel,
    t: &Tables,
    src: &SrcImage,
    dst: &mut DstImage,
    j0: usize,
    j1: usize,
) {
    let fast = fused_kernel(level, t, dst.format);
    let (dither, cs) = (t.params.dither, t.params.signal.range10().2 as f32);
    match (level, fast) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `SimdLevel::select` only returns Avx2 when the CPU reports avx2 and fma.
        (SimdLevel::Avx2, Some(f)) => unsafe { fused::band_avx2(f, src, dst, j0, j1, dither, cs) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (SimdLevel::Avx2, None) => unsafe { band_avx2(t, src, dst, j0, j1) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `SimdLevel::select` only returns Sse4 when the CPU reports sse4.1.
        (SimdLevel::Sse4, Some(f)) => unsafe { fused::band_sse4(f, src, dst, j0, j1, dither, cs) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (SimdLevel::Sse4, None) => unsafe { band_sse4(t, src, dst, j0, j1) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every aarch64 target this builds for.
        (SimdLevel::Neon, Some(f)) => unsafe { fused::band_neon(f, src, dst, j0, j1, dither, cs) },
        _ => band_body::<false>(t, src, dst, j0, j1),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn band_avx2(t: &Tables, src: &SrcImage, dst: &mut DstImage, j0: usize, j1: usize) {
    band_body::<true>(t, src, dst, j0, j1)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
fn band_sse4(t: &Tables, src: &SrcImage, dst: &mut DstImage, j0: usize, j1: usize) {
    band_body::<false>(t, src, dst, j0, j1)
}

/// Per-thread scratch rows.
struct Scratch {
    y: Vec<f32>,
    cb: Vec<f32>,
    cr: Vec<f32>,
    oy: Vec<f32>,
    ocb: Vec<f32>,
    ocr: Vec<f32>,
    half_b: Vec<f32>,
    half_r: Vec<f32>,
    /// Converted chroma rows, slot j % 3 holds row `crow[j % 3]`: each input chroma row is
    /// converted once per band, not once for each of the four luma rows that use it.
    cb_rows: [Vec<f32>; 3],
    cr_rows: [Vec<f32>; 3],
    crow: [usize; 3],
    /// Horizontally downsampled output chroma of the last 4 luma rows (ring by row % 4).
    ring_b: [Vec<f32>; 4],
    ring_r: [Vec<f32>; 4],
}

#[inline(always)]
fn load_chroma_row(src: &SrcImage, j: usize, cs: f32, b: &mut [f32], r: &mut [f32]) {
    let cw = src.width / 2;
    let inv = 1.0 / cs;
    match src.layout {
        InputLayout::Yuv420p10 => {
            let ub = &src.planes[1][j * src.strides[1]..][..cw * 2];
            let vb = &src.planes[2][j * src.strides[2]..][..cw * 2];
            for i in 0..cw {
                let u = u16::from_le_bytes([ub[2 * i], ub[2 * i + 1]]) & 0x3ff;
                let v = u16::from_le_bytes([vb[2 * i], vb[2 * i + 1]]) & 0x3ff;
                b[i] = (u as f32 - 512.0) * inv;
                r[i] = (v as f32 - 512.0) * inv;
            }
        }
        InputLayout::P010 => {
            let uv = &src.planes[1][j * src.strides[1]..][..cw * 4];
            for i in 0..cw {
                let u = u16::from_le_bytes([uv[4 * i], uv[4 * i + 1]]) >> 6;
                let v = u16::from_le_bytes([uv[4 * i + 2], uv[4 * i + 3]]) >> 6;
                b[i] = (u as f32 - 512.0) * inv;
                r[i] = (v as f32 - 512.0) * inv;
            }
        }
    }
}

#[inline(always)]
fn band_body<const GATHER: bool>(
    t: &Tables,
    src: &SrcImage,
    dst: &mut DstImage,
    j0: usize,
    j1: usize,
) {
    let p = &t.params;
    let (w, h) = (src.width, src.height);
    let (cw, ch) = (w / 2, h / 2);
    let (yo, ys, cs) = p.signal.range10();
    let (yo, iys, cs) = (yo as f32, 1.0 / ys as f32, cs as f32);
    let (ooy, osy, ooc, osc, omax) = out_range(dst.format);
    let (ooy, osy, ooc, osc, omax) = (ooy as f32, osy as f32, ooc as f32, osc as f32, omax as f32);
    let mk = |n: usize| vec![0f32; n];
    let mut s = Scratch {
        y: mk(w),
        cb: mk(w),
        cr: mk(w),
        oy: mk(w),
        ocb: mk(w),
        ocr: mk(w),
        half_b: mk(cw),
        half_r: mk(cw),
        cb_rows: [mk(cw), mk(cw), mk(cw)],
        cr_rows: [mk(cw), mk(cw), mk(cw)],
        crow: [usize::MAX; 3],
        ring_b: [mk(cw), mk(cw), mk(cw), mk(cw)],
        ring_r: [mk(cw), mk(cw), mk(cw), mk(cw)],
    };
    let row_first = (2 * j0).saturating_sub(1);
    let row_last = (2 * j1 + 1).min(h - 1);
    let mut next_j = j0;
    for row in row_first..=row_last {
        // 1. Inputs: luma, and chroma upsampled with zimg siting.
        let yb = &src.planes[0][row * src.strides[0]..][..w * 2];
        let shift = if src.layout == InputLayout::P010 {
            6
        } else {
            0
        };
        for x in 0..w {
            let v = (u16::from_le_bytes([yb[2 * x], yb[2 * x + 1]]) >> shift) & 0x3ff;
            s.y[x] = (v as f32 - yo) * iys;
        }
        let j = row / 2;
        let jn = if row % 2 == 1 {
            (j + 1).min(ch - 1)
        } else {
            j.saturating_sub(1)
        };
        for jj in [j, jn] {
            let k = jj % 3;
            if s.crow[k] != jj {
                load_chroma_row(src, jj, cs, &mut s.cb_rows[k], &mut s.cr_rows[k]);
                s.crow[k] = jj;
            }
        }
        let (c0b, c0r) = (&s.cb_rows[j % 3][..cw], &s.cr_rows[j % 3][..cw]);
        let (c1b, c1r) = (&s.cb_rows[jn % 3][..cw], &s.cr_rows[jn % 3][..cw]);
        for i in 0..cw {
            s.half_b[i] = 0.75 * c0b[i] + 0.25 * c1b[i];
            s.half_r[i] = 0.75 * c0r[i] + 0.25 * c1r[i];
        }
        #[cfg(target_arch = "x86_64")]
        if GATHER {
            // SAFETY: GATHER is only true in code compiled for and dispatched to AVX2+FMA CPUs.
            unsafe {
                rows::upsample_h(&s.half_b, &mut s.cb[..2 * cw]);
                rows::upsample_h(&s.half_r, &mut s.cr[..2 * cw]);
            }
        }
        if !(cfg!(target_arch = "x86_64") && GATHER) {
            for i in 0..cw {
                let i1 = (i + 1).min(cw - 1);
                s.cb[2 * i] = s.half_b[i];
                s.cr[2 * i] = s.half_r[i];
                s.cb[2 * i + 1] = 0.5 * (s.half_b[i] + s.half_b[i1]);
                s.cr[2 * i + 1] = 0.5 * (s.half_r[i] + s.half_r[i1]);
            }
        }
        // 2. The pixel chain, chunk by chunk in passes.
        let mut x0 = 0;
        while x0 < w {
            let x1 = (x0 + CHUNK).min(w);
            kernel_chunk::<GATHER>(
                t,
                &s.y[x0..x1],
                &s.cb[x0..x1],
                &s.cr[x0..x1],
                &mut s.oy[x0..x1],
                &mut s.ocb[x0..x1],
                &mut s.ocr[x0..x1],
            );
            x0 = x1;
        }
        // 3. Luma out, for the rows this band owns.
        if row >= 2 * j0 && row < 2 * j1 {
            let lr = row - 2 * j0;
            let out = &mut dst.planes[0][lr * dst.strides[0]..];
            if p.dither {
                for x in 0..w {
                    s.oy[x] = ooy + osy * s.oy[x] + bayer8(x, row);
                }
            } else {
                for x in 0..w {
                    s.oy[x] = ooy + osy * s.oy[x] + 0.5;
                }
            }
            store_row(dst.format, out, &s.oy, omax, GATHER);
        }
        // 4. Horizontal chroma downsample [1/4, 1/2, 1/4] at even columns.
        let slot = row % 4;
        let (rb, rr) = (&mut s.ring_b[slot], &mut s.ring_r[slot]);
        #[cfg(target_arch = "x86_64")]
        if GATHER {
            // SAFETY: as for the upsampling.
            unsafe {
                rows::downsample_h(&s.ocb[..2 * cw], rb);
                rows::downsample_h(&s.ocr[..2 * cw], rr);
            }
        }
        if !(cfg!(target_arch = "x86_64") && GATHER) {
            for i in 0..cw {
                let xm = (2 * i).saturating_sub(1);
                let xp = 2 * i + 1;
                rb[i] = 0.25 * s.ocb[xm] + 0.5 * s.ocb[2 * i] + 0.25 * s.ocb[xp];
                rr[i] = 0.25 * s.ocr[xm] + 0.5 * s.ocr[2 * i] + 0.25 * s.ocr[xp];
            }
        }
        // 5. Vertical [1/8, 3/8, 3/8, 1/8] over rows 2j-1..2j+2 once they are all done.
        while next_j < j1 && (2 * next_j + 2 <= row || row == h - 1) {
            let jj = next_j;
            let rows = [
                (2 * jj).saturating_sub(1),
                2 * jj,
                2 * jj + 1,
                (2 * jj + 2).min(h - 1),
            ];
            let [a, b, c, d] = rows.map(|r| r % 4);
            for (ring, out) in [(&s.ring_b, &mut s.half_b), (&s.ring_r, &mut s.half_r)] {
                let (ra, rb, rc, rd) = (
                    &ring[a][..cw],
                    &ring[b][..cw],
                    &ring[c][..cw],
                    &ring[d][..cw],
                );
                for ((((o, a), b), c), d) in out[..cw].iter_mut().zip(ra).zip(rb).zip(rc).zip(rd) {
                    *o = ooc + osc * (0.125 * a + 0.375 * b + 0.375 * c + 0.125 * d) + 0.5;
                }
            }
            let lj = jj - j0;
            if dst.format.is_semiplanar() {
                for i in 0..cw {
                    s.oy[2 * i] = s.half_b[i];
                    s.oy[2 * i + 1] = s.half_r[i];
                }
                let out = &mut dst.planes[1][lj * dst.strides[1]..];
                store_row(dst.format, out, &s.oy[..w], omax, GATHER);
            } else {
                let out = &mut dst.planes[1][lj * dst.strides[1]..];
                store_row(dst.format, out, &s.half_b, omax, GATHER);
                let out = &mut dst.planes[2][lj * dst.strides[2]..];
                store_row(dst.format, out, &s.half_r, omax, GATHER);
            }
            next_j += 1;
        }
    }
}

/// Quantises (floor, clamp) and stores a row of values in the output format.
#[inline(always)]
fn store_row(format: OutputFormat, out: &mut [u8], v: &[f32], max: f32, simd: bool) {
    // Only the x86-64 arm reads `simd`; other targets always take the portable store.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    match format {
        #[cfg(target_arch = "x86_64")]
        OutputFormat::Yuv420p | OutputFormat::Nv12 if simd => {
            // SAFETY: `simd` is only true in code compiled for and dispatched to AVX2+FMA CPUs.
            unsafe { rows::store_u8(v, out, max) }
        }
        OutputFormat::Yuv420p | OutputFormat::Nv12 => {
            let out = &mut out[..v.len()];
            for (o, x) in out.iter_mut().zip(v) {
                *o = x.clamp(0.0, max) as u8;
            }
        }
        OutputFormat::Yuv420p10 | OutputFormat::P010 => {
            let sh = if format == OutputFormat::P010 { 6 } else { 0 };
            let out = &mut out[..v.len() * 2];
            for (o, x) in out.chunks_exact_mut(2).zip(v) {
                let c = (x.clamp(0.0, max) as u16) << sh;
                o.copy_from_slice(&c.to_le_bytes());
            }
        }
    }
}

/// Non-linear -> linear at the nearest table entry.
#[inline(always)]
fn lin_nearest(lin: &[f32; LIN_SIZE], v: f32) -> f32 {
    lin[((v.clamp(0.0, 1.99) * LIN_STEPS + 0.5) as usize) & (LIN_SIZE - 1)]
}

/// Non-linear -> linear, linearly interpolated between table entries. The nearest entry is
/// not enough where each channel is mapped on its own (`mode=rgb`, `itp`): between E' = 1 and
/// the 1e4 cap PQ is so steep (d ln L / dE' ~ 40) that half a step is ~1e-3 relative, and
/// saturated BT.2020 colours whose BT.709 components are the small difference of two large
/// ones (R ~ 5000, G709 = -0.12 R + 1.13 G) turned that into 3 codes of Y. `max` and `lum`
/// scale every channel by one ratio of a large signal, which hides it, and keep the cheaper
/// nearest entry (interpolating cost 18 % of the frame time of the SSE4.1 build).
#[inline(always)]
fn lin_lookup(lin: &[f32; LIN_SIZE], v: f32) -> f32 {
    let f = v.clamp(0.0, 1.99) * LIN_STEPS;
    let i = (f as usize).min(LIN_SIZE - 2);
    let frac = f - i as f32;
    let (a, b) = (lin[i], lin[i + 1]);
    a + frac * (b - a)
}

/// Table lookups over a chunk, in place. The generic versions are scalar; with `GATHER` (only
/// instantiated under AVX2) they use 8-lane gathers.
#[inline(always)]
fn lin_pass<const GATHER: bool>(t: &Tables, v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if GATHER {
        match &t.pq_poly {
            // SAFETY: GATHER is only true in code compiled for and dispatched to AVX2+FMA CPUs.
            Some(pq) => unsafe { pq.pass_avx2(v) },
            // SAFETY: as above.
            None => unsafe { avx2::lin_pass(&t.lin, v, t.lin_interp) },
        }
        return;
    }
    if t.lin_interp {
        for x in v.iter_mut() {
            *x = lin_lookup(&t.lin, *x);
        }
    } else {
        for x in v.iter_mut() {
            *x = lin_nearest(&t.lin, *x);
        }
    }
}

#[inline(always)]
fn lerp_pass<const GATHER: bool>(lut: &LogLut, v: &mut [f32], zero_below: bool) {
    #[cfg(target_arch = "x86_64")]
    if GATHER {
        // SAFETY: as in `lin_pass`.
        unsafe { avx2::lerp_pass(lut, v, zero_below) };
        return;
    }
    for x in v.iter_mut() {
        *x = if zero_below && *x <= 0.0 {
            0.0
        } else {
            lut.lerp(*x)
        };
    }
}

/// BT.1886 inverse in place: polynomial under AVX2, the log table otherwise.
#[inline(always)]
fn inv_gamma_pass<const GATHER: bool>(t: &Tables, v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if GATHER {
        let tail = |x: f32| if x <= 0.0 { 0.0 } else { t.gamma.lerp(x) };
        // SAFETY: as in `lin_pass`.
        unsafe { super::fastmath::avx2::inv_gamma_pass(v, tail) };
        return;
    }
    lerp_pass::<GATHER>(&t.gamma, v, true);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{LIN_SIZE, LIN_STEPS, LOG_SHIFT, LogLut};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn lin_pass(lin: &[f32; LIN_SIZE], v: &mut [f32], interp: bool) {
        if !interp {
            let mut chunks = v.chunks_exact_mut(8);
            for c in &mut chunks {
                // SAFETY: `c` has 8 elements; indices are at most 1.99 * LIN_STEPS + 0.5 <
                // LIN_SIZE, the length of `lin`.
                unsafe {
                    let x = _mm256_loadu_ps(c.as_ptr());
                    let x =
                        _mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), _mm256_set1_ps(1.99));
                    let i = _mm256_cvttps_epi32(_mm256_fmadd_ps(
                        x,
                        _mm256_set1_ps(LIN_STEPS),
                        _mm256_set1_ps(0.5),
                    ));
                    _mm256_storeu_ps(c.as_mut_ptr(), _mm256_i32gather_ps::<4>(lin.as_ptr(), i));
                }
            }
            for x in chunks.into_remainder() {
                *x = super::lin_nearest(lin, *x);
            }
            return;
        }
        let mut chunks = v.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` has 8 elements; indices are at most 1.99 * LIN_STEPS < LIN_SIZE - 1, so
            // both gathers (i and i + 1) stay inside `lin`, which holds LIN_SIZE entries.
            unsafe {
                let x = _mm256_loadu_ps(c.as_ptr());
                let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), _mm256_set1_ps(1.99));
                let f = _mm256_mul_ps(x, _mm256_set1_ps(LIN_STEPS));
                let i = _mm256_cvttps_epi32(f);
                let frac = _mm256_sub_ps(f, _mm256_cvtepi32_ps(i));
                let a = _mm256_i32gather_ps::<4>(lin.as_ptr(), i);
                let b = _mm256_i32gather_ps::<4>(lin.as_ptr().add(1), i);
                _mm256_storeu_ps(
                    c.as_mut_ptr(),
                    _mm256_fmadd_ps(frac, _mm256_sub_ps(b, a), a),
                );
            }
        }
        for x in chunks.into_remainder() {
            *x = super::lin_lookup(lin, *x);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn lerp_pass(lut: &LogLut, v: &mut [f32], zero_below: bool) {
        let mut chunks = v.chunks_exact_mut(8);
        let tab = lut.v.as_ptr();
        for c in &mut chunks {
            // SAFETY: `c` has 8 elements; gather indices are clamped to 0..=last and last + 1 <
            // LOG_SIZE (the table length), so both gathers stay inside the table.
            unsafe {
                let x = _mm256_loadu_ps(c.as_ptr());
                let d = _mm256_sub_epi32(_mm256_castps_si256(x), _mm256_set1_epi32(lut.base));
                let raw = _mm256_srai_epi32::<{ LOG_SHIFT as i32 }>(d);
                let last = _mm256_set1_epi32(lut.last);
                let i = _mm256_max_epi32(_mm256_min_epi32(raw, last), _mm256_setzero_si256());
                let f = _mm256_mul_ps(
                    _mm256_cvtepi32_ps(_mm256_and_si256(
                        d,
                        _mm256_set1_epi32((1 << LOG_SHIFT) - 1),
                    )),
                    _mm256_set1_ps(1.0 / (1 << LOG_SHIFT) as f32),
                );
                let neg = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_setzero_si256(), d));
                let over = _mm256_castsi256_ps(_mm256_cmpgt_epi32(raw, last));
                let f = _mm256_blendv_ps(f, _mm256_setzero_ps(), neg);
                let f = _mm256_blendv_ps(f, _mm256_set1_ps(1.0), over);
                let a = _mm256_i32gather_ps::<4>(tab, i);
                let b = _mm256_i32gather_ps::<4>(tab.add(1), i);
                let mut r = _mm256_fmadd_ps(f, _mm256_sub_ps(b, a), a);
                if zero_below {
                    let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_setzero_ps());
                    r = _mm256_and_ps(r, pos);
                }
                _mm256_storeu_ps(c.as_mut_ptr(), r);
            }
        }
        for x in chunks.into_remainder() {
            *x = if zero_below && *x <= 0.0 {
                0.0
            } else {
                lut.lerp(*x)
            };
        }
    }
}

/// The per-pixel chain over one chunk: BT.2020 Y'CbCr (normalised) in, BT.709 Y' and Cb/Cr out.
#[inline(always)]
fn kernel_chunk<const GATHER: bool>(
    t: &Tables,
    y: &[f32],
    cb: &[f32],
    cr: &[f32],
    oy: &mut [f32],
    ocb: &mut [f32],
    ocr: &mut [f32],
) {
    let n = y.len();
    let p = &t.params;
    let mut r = [0f32; CHUNK];
    let mut g = [0f32; CHUNK];
    let mut b = [0f32; CHUNK];
    let (cb, cr) = (&cb[..n], &cr[..n]);
    for i in 0..n {
        r[i] = y[i] + 1.4746 * cr[i];
        b[i] = y[i] + 1.8814 * cb[i];
        g[i] = (y[i] - 0.2627 * r[i] - 0.0593 * b[i]) * (1.0 / 0.678);
    }
    lin_pass::<GATHER>(t, &mut r[..n]);
    lin_pass::<GATHER>(t, &mut g[..n]);
    lin_pass::<GATHER>(t, &mut b[..n]);
    let mut k = [0f32; CHUNK];
    if let Some(ootf) = &t.ootf {
        for i in 0..n {
            k[i] = (0.2627 * r[i] + 0.678 * g[i] + 0.0593 * b[i]).max(0.0);
        }
        lerp_pass::<GATHER>(ootf, &mut k[..n], false);
        for i in 0..n {
            r[i] *= k[i];
            g[i] *= k[i];
            b[i] *= k[i];
        }
    }
    // BT.2020 -> BT.709 primaries.
    let m = BT2020_TO_BT709.map(|row| row.map(|v| v as f32));
    for i in 0..n {
        let (r0, g0, b0) = (r[i], g[i], b[i]);
        r[i] = m[0][0] * r0 + m[0][1] * g0 + m[0][2] * b0;
        g[i] = m[1][0] * r0 + m[1][1] * g0 + m[1][2] * b0;
        b[i] = m[2][0] * r0 + m[2][1] * g0 + m[2][2] * b0;
    }
    match p.mode {
        Mode::Max => {
            if p.desat > 0.0 {
                let d = p.desat as f32;
                for i in 0..n {
                    let luma = 0.2627 * r[i] + 0.678 * g[i] + 0.0593 * b[i];
                    let ob = (luma - d).max(1e-6) / luma.max(1e-6);
                    r[i] = (1.0 - ob) * r[i] + ob * luma;
                    g[i] = (1.0 - ob) * g[i] + ob * luma;
                    b[i] = (1.0 - ob) * b[i] + ob * luma;
                }
            }
            for i in 0..n {
                k[i] = r[i].max(g[i]).max(b[i]).max(1e-6);
            }
            lerp_pass::<GATHER>(&t.ratio, &mut k[..n], false);
            for i in 0..n {
                r[i] *= k[i];
                g[i] *= k[i];
                b[i] *= k[i];
            }
        }
        Mode::Rgb => {
            for c in [&mut r, &mut g, &mut b] {
                for i in 0..n {
                    k[i] = c[i].max(1e-6);
                }
                lerp_pass::<GATHER>(&t.ratio, &mut k[..n], false);
                for i in 0..n {
                    c[i] = (c[i].max(0.0) * k[i]).min(1.0);
                }
            }
        }
        Mode::Lum => {
            for i in 0..n {
                k[i] = (0.2126 * r[i] + 0.7152 * g[i] + 0.0722 * b[i]).max(1e-6);
            }
            lerp_pass::<GATHER>(&t.ratio, &mut k[..n], false);
            for i in 0..n {
                let s = k[i];
                let c = gamut_compress([(r[i] * s) as f64, (g[i] * s) as f64, (b[i] * s) as f64]);
                r[i] = c[0] as f32;
                g[i] = c[1] as f32;
                b[i] = c[2] as f32;
            }
        }
        Mode::Itp => {
            // ICtCp needs per-pixel PQ round trips; this mode runs the reference math on the
            // (table-linearised) pixels. Undo the primaries conversion first.
            let inv = mat3_inv(&BT2020_TO_BT709);
            for i in 0..n {
                let c2020 = mat3(&inv, [r[i] as f64, g[i] as f64, b[i] as f64]);
                let c = reference::tonemap_linear(p, c2020);
                r[i] = c[0] as f32;
                g[i] = c[1] as f32;
                b[i] = c[2] as f32;
            }
        }
    }
    // BT.1886 inverse EOTF via the log table, then BT.709 Y'CbCr.
    inv_gamma_pass::<GATHER>(t, &mut r[..n]);
    inv_gamma_pass::<GATHER>(t, &mut g[..n]);
    inv_gamma_pass::<GATHER>(t, &mut b[..n]);
    let (oy, ocb, ocr) = (&mut oy[..n], &mut ocb[..n], &mut ocr[..n]);
    for i in 0..n {
        let yy = 0.2126 * r[i] + 0.7152 * g[i] + 0.0722 * b[i];
        oy[i] = yy;
        ocb[i] = (b[i] - yy) * (1.0 / 1.8556);
        ocr[i] = (r[i] - yy) * (1.0 / 1.5748);
    }
}
