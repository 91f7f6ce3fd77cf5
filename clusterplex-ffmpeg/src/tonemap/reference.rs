//! The reference implementation: scalar f64, pixel by pixel, reproducing FFmpeg's
//! `zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=..,zscale=t=bt709:m=bt709:r=tv,format=yuv420p`
//! chain, including zimg's chroma siting (4:2:0 "left": co-sited horizontally, centred
//! vertically; bilinear up- and downsampling, edges clamped).

use super::image::{DstImage, Signal, SrcImage, Transfer, bayer8, out_range};
use super::math::*;
use super::{Mode, Params};
use crate::error::Result;

/// Non-linear BT.2020 R'G'B' -> linear BT.2020 RGB, 1.0 = 100 nits.
pub fn to_linear(sig: &Signal, rgb: [f64; 3]) -> [f64; 3] {
    match sig.transfer {
        Transfer::Pq => rgb.map(|c| (pq_eotf(c.min(1.99)) / REFERENCE_WHITE).min(1e4)),
        Transfer::Hlg => {
            let e = rgb.map(|c| hlg_inv_oetf(c.clamp(0.0, 1.0)));
            let ys = BT2020_LUMA[0] * e[0] + BT2020_LUMA[1] * e[1] + BT2020_LUMA[2] * e[2];
            let scale =
                HLG_PEAK_NITS / REFERENCE_WHITE * ys.max(0.0).powf(hlg_gamma(HLG_PEAK_NITS) - 1.0);
            e.map(|c| c * scale)
        }
    }
}

/// Linear BT.2020 (1.0 = 100 nits) -> tonemapped linear BT.709 (1.0 = SDR white).
pub fn tonemap_linear(p: &Params, rgb2020: [f64; 3]) -> [f64; 3] {
    let t = &p.tone;
    match p.mode {
        Mode::Max => {
            let mut c = mat3(&BT2020_TO_BT709, rgb2020);
            if p.desat > 0.0 {
                // FFmpeg's desaturation uses the frame's matrix coefficients, which are still
                // BT.2020 after `zscale=p=bt709` in the chain.
                let luma = BT2020_LUMA[0] * c[0] + BT2020_LUMA[1] * c[1] + BT2020_LUMA[2] * c[2];
                let ob = (luma - p.desat).max(1e-6) / luma.max(1e-6);
                c = c.map(|v| (1.0 - ob) * v + ob * luma);
            }
            let sig = c[0].max(c[1]).max(c[2]).max(1e-6);
            let ratio = t.apply(sig) / sig;
            c.map(|v| v * ratio)
        }
        Mode::Rgb => mat3(&BT2020_TO_BT709, rgb2020).map(|v| t.apply(v).min(1.0)),
        Mode::Lum => {
            let c = mat3(&BT2020_TO_BT709, rgb2020);
            let l = (BT709_LUMA[0] * c[0] + BT709_LUMA[1] * c[1] + BT709_LUMA[2] * c[2]).max(1e-6);
            let ratio = t.apply(l) / l;
            gamut_compress(c.map(|v| v * ratio))
        }
        Mode::Itp => {
            let lms = mat3(
                &RGB2020_TO_LMS,
                rgb2020.map(|v| v.max(0.0) * REFERENCE_WHITE),
            );
            let lms_pq = lms.map(pq_inv_eotf);
            let [i, ct, cp] = mat3(&LMS_TO_ICTCP, lms_pq);
            let lin = pq_eotf(i) / REFERENCE_WHITE;
            let out = t.apply(lin);
            let i2 = pq_inv_eotf(out * REFERENCE_WHITE);
            let mut cs = if i > 1e-9 && i2 > 1e-9 {
                (i2 / i).min(i / i2)
            } else {
                0.0
            };
            if p.desat > 0.0 {
                // Pull the chroma of highlights towards white above `desat` (in output units).
                cs *= 1.0 / (1.0 + (out - p.desat).max(0.0));
            }
            let lms2 = mat3(&mat3_inv(&LMS_TO_ICTCP), [i2, ct * cs, cp * cs]).map(pq_eotf);
            let rgb = mat3(&mat3_inv(&RGB2020_TO_LMS), lms2).map(|v| v / REFERENCE_WHITE);
            gamut_compress(mat3(&BT2020_TO_BT709, rgb))
        }
    }
}

/// Full per-pixel chain from normalised BT.2020 Y'CbCr to BT.709 Y'CbCr (normalised, unquantised).
pub fn pixel(p: &Params, y: f64, cb: f64, cr: f64) -> [f64; 3] {
    let rgb = ycbcr_to_rgb(BT2020_LUMA, y, cb, cr);
    let lin = to_linear(&p.signal, rgb);
    let out = tonemap_linear(p, lin);
    rgb_to_ycbcr(BT709_LUMA, out.map(bt1886_inv))
}

/// zimg-sited 4:2:0 -> 4:4:4 chroma upsampling of one plane (bilinear, edges clamped).
pub fn upsample(c: &[f64], cw: usize, ch: usize) -> Vec<f64> {
    let (w, h) = (cw * 2, ch * 2);
    let mut out = vec![0.0; w * h];
    let at = |x: isize, y: isize| {
        c[(y.clamp(0, ch as isize - 1) as usize) * cw + x.clamp(0, cw as isize - 1) as usize]
    };
    for y in 0..h {
        let j = (y / 2) as isize;
        // Chroma rows sit halfway between luma rows 2j and 2j+1.
        let (j0, j1, f) = if y % 2 == 0 {
            (j - 1, j, 0.75)
        } else {
            (j + 1, j, 0.75)
        };
        for x in 0..w {
            let i = (x / 2) as isize;
            let col = |i: isize| (1.0 - f) * at(i, j0) + f * at(i, j1);
            out[y * w + x] = if x % 2 == 0 {
                col(i)
            } else {
                0.5 * (col(i) + col(i + 1))
            };
        }
    }
    out
}

/// zimg-sited 4:4:4 -> 4:2:0 downsampling: taps [1/4,1/2,1/4] horizontally at 2i-1..2i+1 and
/// [1/8,3/8,3/8,1/8] vertically at 2j-1..2j+2, edges clamped.
pub fn downsample(c: &[f64], w: usize, h: usize) -> Vec<f64> {
    let (cw, ch) = (w / 2, h / 2);
    let at = |x: isize, y: isize| {
        c[(y.clamp(0, h as isize - 1) as usize) * w + x.clamp(0, w as isize - 1) as usize]
    };
    let mut out = vec![0.0; cw * ch];
    for j in 0..ch {
        for i in 0..cw {
            let x = 2 * i as isize;
            let y = 2 * j as isize;
            let row = |yy: isize| 0.25 * at(x - 1, yy) + 0.5 * at(x, yy) + 0.25 * at(x + 1, yy);
            out[j * cw + i] =
                0.125 * row(y - 1) + 0.375 * row(y) + 0.375 * row(y + 1) + 0.125 * row(y + 2);
        }
    }
    out
}

pub(crate) fn quantise(v: f64, max: f64) -> u16 {
    v.floor().clamp(0.0, max) as u16
}

/// Runs the reference over a whole image.
pub fn run(src: &SrcImage, dst: &mut DstImage, p: &Params) -> Result<()> {
    let (w, h) = (src.width, src.height);
    let (cw, ch) = (w / 2, h / 2);
    let (yo, ys, cs) = p.signal.range10();
    let mut cb = vec![0.0; cw * ch];
    let mut cr = vec![0.0; cw * ch];
    for j in 0..ch {
        for i in 0..cw {
            let (u, v) = src.uv(i, j);
            cb[j * cw + i] = (u as f64 - 512.0) / cs;
            cr[j * cw + i] = (v as f64 - 512.0) / cs;
        }
    }
    let cbf = upsample(&cb, cw, ch);
    let crf = upsample(&cr, cw, ch);
    let (oy, sy, oc, sc, max) = out_range(dst.format);
    let mut ocb = vec![0.0; w * h];
    let mut ocr = vec![0.0; w * h];
    for y in 0..h {
        for x in 0..w {
            let yn = (src.y(x, y) as f64 - yo) / ys;
            let [ly, lb, lr] = pixel(p, yn, cbf[y * w + x], crf[y * w + x]);
            let t = if p.dither { bayer8(x, y) as f64 } else { 0.5 };
            dst.put_y(x, y, quantise(oy + sy * ly + t, max));
            ocb[y * w + x] = lb;
            ocr[y * w + x] = lr;
        }
    }
    let db = downsample(&ocb, w, h);
    let dr = downsample(&ocr, w, h);
    for j in 0..ch {
        for i in 0..cw {
            let u = quantise(oc + sc * db[j * cw + i] + 0.5, max);
            let v = quantise(oc + sc * dr[j * cw + i] + 0.5, max);
            dst.put_uv(i, j, u, v);
        }
    }
    Ok(())
}
