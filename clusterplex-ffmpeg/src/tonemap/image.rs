//! Plane views the implementations work on (independent of libav so tests and benchmarks can
//! feed raw buffers), and the row loaders/writers shared by `reference` and `cpu`.

use super::OutputFormat;
use crate::error::{Error, Result, Stage};

/// The HDR transfer function of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    Pq,
    Hlg,
}

/// What the input signal is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signal {
    pub transfer: Transfer,
    /// Full-range (pc/jpeg) input; otherwise limited (tv).
    pub full_range: bool,
    /// Signal peak, linear (1.0 = 100 nits).
    pub peak: f64,
}

impl Signal {
    /// PQ, limited range, with FFmpeg's default peak (10000 nits).
    pub fn pq() -> Self {
        Signal {
            transfer: Transfer::Pq,
            full_range: false,
            peak: 100.0,
        }
    }
    /// HLG, limited range, with FFmpeg's default peak (1000 nits).
    pub fn hlg() -> Self {
        Signal {
            transfer: Transfer::Hlg,
            full_range: false,
            peak: 10.0,
        }
    }
    /// (Y offset, Y scale, C scale) in 10-bit codes.
    pub fn range10(&self) -> (f64, f64, f64) {
        if self.full_range {
            (0.0, 1023.0, 1023.0)
        } else {
            (64.0, 876.0, 896.0)
        }
    }

    /// Codes linear BT.2020 RGB as this signal's 10-bit Y'CbCr, the inverse of what the
    /// tonemapper reads: PQ takes display light in nits, HLG scene light 0..1. For test
    /// pictures, benches and the GPU check.
    pub fn encode10(&self, rgb: [f64; 3]) -> (u16, u16, u16) {
        use super::math::{BT2020_LUMA, hlg_oetf, pq_inv_eotf, rgb_to_ycbcr};
        let e = match self.transfer {
            Transfer::Pq => rgb.map(pq_inv_eotf),
            Transfer::Hlg => rgb.map(hlg_oetf),
        };
        let [y, cb, cr] = rgb_to_ycbcr(BT2020_LUMA, e);
        let (yo, ys, cs) = self.range10();
        let q = |v: f64| v.round().clamp(0.0, 1023.0) as u16;
        (q(yo + ys * y), q(512.0 + cs * cb), q(512.0 + cs * cr))
    }
}

/// The saturated BT.2020 primaries and secondaries that stress pictures are made of.
pub const STRESS_HUES: [[f64; 3]; 6] = [
    [1.0, 0.0, 0.0],
    [0.0, 1.0, 0.0],
    [0.0, 0.0, 1.0],
    [1.0, 1.0, 0.0],
    [0.0, 1.0, 1.0],
    [1.0, 0.0, 1.0],
];

/// A stress picture coded as `signal`: a neutral ramp (`neutral(t)` for t = 0..1 across the
/// picture) on the top third and, below it, one band per [`STRESS_HUES`] entry scaled by
/// `level(t)` (linear light in `signal`'s units, see [`Signal::encode10`]).
pub fn stress_picture(
    w: usize,
    h: usize,
    layout: InputLayout,
    signal: Signal,
    neutral: impl Fn(f64) -> f64,
    level: impl Fn(f64) -> f64,
) -> OwnedImage {
    OwnedImage::new_input(w, h, layout, |x, y| {
        let t = x as f64 / (w.max(2) - 1) as f64;
        if y < h / 3 {
            signal.encode10([neutral(t); 3])
        } else {
            let n = STRESS_HUES.len();
            let band = ((y - h / 3) * n / (h - h / 3)).min(n - 1);
            let l = level(t);
            signal.encode10(STRESS_HUES[band].map(|c| c * l))
        }
    })
}

/// How 10-bit input samples are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputLayout {
    /// yuv420p10le: three planes of little-endian u16 in the low 10 bits.
    Yuv420p10,
    /// p010le: Y plane and interleaved UV plane, u16 with the value in the high 10 bits.
    P010,
}

/// A read-only 4:2:0 10-bit image.
#[derive(Debug, Clone, Copy)]
pub struct SrcImage<'a> {
    pub width: usize,
    pub height: usize,
    pub layout: InputLayout,
    /// Y, U (or UV), V (empty for P010), as bytes.
    pub planes: [&'a [u8]; 3],
    /// Line sizes in bytes.
    pub strides: [usize; 3],
}

fn frame_err(message: String) -> Error {
    Error::Other {
        stage: Stage::Tonemap,
        message,
    }
}

fn check_plane(name: &str, len: usize, stride: usize, row_bytes: usize, rows: usize) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    if stride < row_bytes || len < stride * (rows - 1) + row_bytes {
        return Err(frame_err(format!(
            "plane {name} too small: {len} bytes, stride {stride}, need {rows} rows of {row_bytes}"
        )));
    }
    Ok(())
}

impl<'a> SrcImage<'a> {
    pub fn validate(&self) -> Result<()> {
        let (w, h) = (self.width, self.height);
        if w == 0 || h == 0 || w % 2 != 0 || h % 2 != 0 {
            return Err(Error::Unsupported(format!(
                "tonemap needs even, non-zero dimensions, got {w}x{h}"
            )));
        }
        check_plane("Y", self.planes[0].len(), self.strides[0], w * 2, h)?;
        match self.layout {
            InputLayout::Yuv420p10 => {
                check_plane("U", self.planes[1].len(), self.strides[1], w, h / 2)?;
                check_plane("V", self.planes[2].len(), self.strides[2], w, h / 2)?;
            }
            InputLayout::P010 => {
                check_plane("UV", self.planes[1].len(), self.strides[1], w * 2, h / 2)?
            }
        }
        Ok(())
    }

    /// Luma sample (10-bit code) at (x, y).
    #[inline(always)]
    pub fn y(&self, x: usize, y: usize) -> u16 {
        let o = y * self.strides[0] + 2 * x;
        let v = u16::from_le_bytes([self.planes[0][o], self.planes[0][o + 1]]);
        match self.layout {
            InputLayout::Yuv420p10 => v & 0x3ff,
            InputLayout::P010 => v >> 6,
        }
    }

    /// Chroma samples (10-bit codes) at chroma position (x, y).
    #[inline(always)]
    pub fn uv(&self, x: usize, y: usize) -> (u16, u16) {
        match self.layout {
            InputLayout::Yuv420p10 => {
                let o = y * self.strides[1] + 2 * x;
                let u = u16::from_le_bytes([self.planes[1][o], self.planes[1][o + 1]]);
                let o = y * self.strides[2] + 2 * x;
                let v = u16::from_le_bytes([self.planes[2][o], self.planes[2][o + 1]]);
                (u & 0x3ff, v & 0x3ff)
            }
            InputLayout::P010 => {
                let o = y * self.strides[1] + 4 * x;
                let p = &self.planes[1];
                (
                    u16::from_le_bytes([p[o], p[o + 1]]) >> 6,
                    u16::from_le_bytes([p[o + 2], p[o + 3]]) >> 6,
                )
            }
        }
    }
}

/// A writable 4:2:0 image in one of the output formats.
#[derive(Debug)]
pub struct DstImage<'a> {
    pub format: OutputFormat,
    /// Y, U (or UV), V (empty for semi-planar formats), as bytes.
    pub planes: [&'a mut [u8]; 3],
    pub strides: [usize; 3],
}

impl<'a> DstImage<'a> {
    pub fn validate(&self, w: usize, h: usize) -> Result<()> {
        let bps = if self.format.is_10bit() { 2 } else { 1 };
        check_plane("Y", self.planes[0].len(), self.strides[0], w * bps, h)?;
        if self.format.is_semiplanar() {
            check_plane("UV", self.planes[1].len(), self.strides[1], w * bps, h / 2)?;
        } else {
            check_plane(
                "U",
                self.planes[1].len(),
                self.strides[1],
                w / 2 * bps,
                h / 2,
            )?;
            check_plane(
                "V",
                self.planes[2].len(),
                self.strides[2],
                w / 2 * bps,
                h / 2,
            )?;
        }
        Ok(())
    }

    /// Writes a luma code (8- or 10-bit according to the format).
    #[inline(always)]
    pub fn put_y(&mut self, x: usize, y: usize, code: u16) {
        let s = self.strides[0];
        put(self.format, &mut self.planes[0][y * s..], x, code);
    }

    /// Writes the chroma codes at chroma position (x, y).
    #[inline(always)]
    pub fn put_uv(&mut self, x: usize, y: usize, u: u16, v: u16) {
        if self.format.is_semiplanar() {
            let s = self.strides[1];
            let row = &mut self.planes[1][y * s..];
            put(self.format, row, 2 * x, u);
            put(self.format, row, 2 * x + 1, v);
        } else {
            let s = self.strides[1];
            put(self.format, &mut self.planes[1][y * s..], x, u);
            let s = self.strides[2];
            put(self.format, &mut self.planes[2][y * s..], x, v);
        }
    }
}

#[inline(always)]
fn put(format: OutputFormat, row: &mut [u8], i: usize, code: u16) {
    match format {
        OutputFormat::Yuv420p | OutputFormat::Nv12 => row[i] = code as u8,
        OutputFormat::Yuv420p10 => row[2 * i..2 * i + 2].copy_from_slice(&code.to_le_bytes()),
        OutputFormat::P010 => row[2 * i..2 * i + 2].copy_from_slice(&(code << 6).to_le_bytes()),
    }
}

/// 8x8 ordered-dither (Bayer) thresholds in [0,1); `floor(v + t)` replaces `floor(v + 0.5)`.
pub fn bayer8(x: usize, y: usize) -> f32 {
    const M: [[u8; 8]; 8] = [
        [0, 32, 8, 40, 2, 34, 10, 42],
        [48, 16, 56, 24, 50, 18, 58, 26],
        [12, 44, 4, 36, 14, 46, 6, 38],
        [60, 28, 52, 20, 62, 30, 54, 22],
        [3, 35, 11, 43, 1, 33, 9, 41],
        [51, 19, 59, 27, 49, 17, 57, 25],
        [15, 47, 7, 39, 13, 45, 5, 37],
        [63, 31, 55, 23, 61, 29, 53, 21],
    ];
    (M[y & 7][x & 7] as f32 + 0.5) / 64.0
}

/// (Y offset, Y scale, C offset, C scale, max code) of the output format (always limited range).
pub fn out_range(format: OutputFormat) -> (f64, f64, f64, f64, f64) {
    if format.is_10bit() {
        (64.0, 876.0, 512.0, 896.0, 1023.0)
    } else {
        (16.0, 219.0, 128.0, 224.0, 255.0)
    }
}

/// Owned planes for tests and benchmarks.
#[derive(Debug, Clone)]
pub struct OwnedImage {
    pub width: usize,
    pub height: usize,
    pub planes: [Vec<u8>; 3],
    pub strides: [usize; 3],
}

impl OwnedImage {
    /// An output image of `format`, tightly packed.
    pub fn new_output(width: usize, height: usize, format: OutputFormat) -> Self {
        let bps = if format.is_10bit() { 2 } else { 1 };
        let (s1, s2) = if format.is_semiplanar() {
            (width * bps, 0)
        } else {
            (width / 2 * bps, width / 2 * bps)
        };
        OwnedImage {
            width,
            height,
            planes: [
                vec![0; width * bps * height],
                vec![0; s1 * height / 2],
                vec![0; s2 * height / 2],
            ],
            strides: [width * bps, s1, s2],
        }
    }

    /// An input image of `layout`, tightly packed, filled by `f(x, y) -> (Y, U, V)` 10-bit codes
    /// (U and V are read at even x, y).
    pub fn new_input(
        width: usize,
        height: usize,
        layout: InputLayout,
        f: impl Fn(usize, usize) -> (u16, u16, u16),
    ) -> Self {
        let mut planes = [vec![0u8; width * 2 * height], Vec::new(), Vec::new()];
        let shift = if layout == InputLayout::P010 { 6 } else { 0 };
        let strides = match layout {
            InputLayout::Yuv420p10 => [width * 2, width, width],
            InputLayout::P010 => [width * 2, width * 2, 0],
        };
        planes[1] = vec![0; strides[1] * height / 2];
        planes[2] = vec![0; strides[2] * height / 2];
        for y in 0..height {
            for x in 0..width {
                let (l, u, v) = f(x, y);
                planes[0][y * strides[0] + 2 * x..][..2]
                    .copy_from_slice(&(l << shift).to_le_bytes());
                if x % 2 == 0 && y % 2 == 0 {
                    let (cx, cy) = (x / 2, y / 2);
                    match layout {
                        InputLayout::Yuv420p10 => {
                            planes[1][cy * strides[1] + 2 * cx..][..2]
                                .copy_from_slice(&u.to_le_bytes());
                            planes[2][cy * strides[2] + 2 * cx..][..2]
                                .copy_from_slice(&v.to_le_bytes());
                        }
                        InputLayout::P010 => {
                            let o = cy * strides[1] + 4 * cx;
                            planes[1][o..o + 2].copy_from_slice(&(u << 6).to_le_bytes());
                            planes[1][o + 2..o + 4].copy_from_slice(&(v << 6).to_le_bytes());
                        }
                    }
                }
            }
        }
        OwnedImage {
            width,
            height,
            planes,
            strides,
        }
    }

    pub fn src(&self, layout: InputLayout) -> SrcImage<'_> {
        SrcImage {
            width: self.width,
            height: self.height,
            layout,
            planes: [&self.planes[0], &self.planes[1], &self.planes[2]],
            strides: self.strides,
        }
    }

    pub fn dst(&mut self, format: OutputFormat) -> DstImage<'_> {
        let [a, b, c] = &mut self.planes;
        DstImage {
            format,
            planes: [a, b, c],
            strides: self.strides,
        }
    }

    /// Reads a sample of plane `p` as written by `format` (codes, not shifted).
    pub fn sample(&self, format: OutputFormat, p: usize, i: usize, y: usize) -> u16 {
        let row = &self.planes[p][y * self.strides[p]..];
        match format {
            OutputFormat::Yuv420p | OutputFormat::Nv12 => row[i] as u16,
            OutputFormat::Yuv420p10 => u16::from_le_bytes([row[2 * i], row[2 * i + 1]]),
            OutputFormat::P010 => u16::from_le_bytes([row[2 * i], row[2 * i + 1]]) >> 6,
        }
    }
}
