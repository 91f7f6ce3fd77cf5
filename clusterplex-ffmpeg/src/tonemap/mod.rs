//! HDR to SDR tonemapping.
//!
//! [`TonemapStage`] takes decoded HDR frames (yuv420p10le or p010le, PQ or HLG, BT.2020, limited
//! or full range) and returns SDR BT.709 frames (yuv420p by default; nv12, yuv420p10le or p010le
//! on request). Three implementations share one interface ([`Impl`]):
//! - `reference`: scalar f64 math that reproduces FFmpeg's `zscale,tonemap,zscale` chain,
//!   zimg's chroma siting included;
//! - `cpu`: tables, f32 SIMD passes with runtime dispatch, slice threads;
//! - `cuda`: the kernels in `cuda/tonemap.cu`, loaded at run time through the driver API.
//!
//! The math choices and the options are documented in docs/tonemap.md.

pub mod cpu;
pub mod cuda;
pub mod curve;
mod fastmath;
mod fastmax;
mod frame;
mod fused;
pub mod image;
mod lanes;
pub mod math;
pub mod reference;

use std::str::FromStr;

pub use cpu::SimdLevel;
pub use curve::{Curve, ToneCurve};
pub use image::{DstImage, InputLayout, Signal, SrcImage, Transfer};

use crate::error::{Error, Result, Stage};

/// Where the curve is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On max(R,G,B), the ratio applied to all channels (FFmpeg vf_tonemap).
    Max,
    /// On each channel separately.
    Rgb,
    /// On BT.709 luminance, then gamut compression.
    Lum,
    /// On ICtCp intensity, chroma scaled to match, then gamut compression.
    Itp,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "max" | "auto" => Mode::Max,
            "rgb" => Mode::Rgb,
            "lum" => Mode::Lum,
            "itp" => Mode::Itp,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Mode::Max => "max",
            Mode::Rgb => "rgb",
            Mode::Lum => "lum",
            Mode::Itp => "itp",
        }
    }
}

/// Which implementation runs the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// CUDA when the frame is on a GPU or a CUDA device is usable, else `cpu`.
    Auto,
    Cpu,
    Cuda,
    Reference,
}

impl Impl {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "auto" => Impl::Auto,
            "cpu" => Impl::Cpu,
            "cuda" => Impl::Cuda,
            "reference" | "ref" => Impl::Reference,
            _ => return None,
        })
    }
}

/// Output pixel format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Yuv420p,
    Nv12,
    Yuv420p10,
    P010,
}

impl OutputFormat {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "yuv420p" => OutputFormat::Yuv420p,
            "nv12" => OutputFormat::Nv12,
            "yuv420p10le" | "yuv420p10" => OutputFormat::Yuv420p10,
            "p010le" | "p010" => OutputFormat::P010,
            _ => return None,
        })
    }
    pub fn is_10bit(self) -> bool {
        matches!(self, OutputFormat::Yuv420p10 | OutputFormat::P010)
    }
    pub fn is_semiplanar(self) -> bool {
        matches!(self, OutputFormat::Nv12 | OutputFormat::P010)
    }
    pub fn pixel(self) -> ffmpeg_next::format::Pixel {
        use ffmpeg_next::format::Pixel;
        match self {
            OutputFormat::Yuv420p => Pixel::YUV420P,
            OutputFormat::Nv12 => Pixel::NV12,
            OutputFormat::Yuv420p10 => Pixel::YUV420P10LE,
            OutputFormat::P010 => Pixel::P010LE,
        }
    }
}

/// Options of the `tonemap` filter (`tonemap=<curve>:param=..:desat=..`).
#[derive(Debug, Clone, PartialEq)]
pub struct TonemapOptions {
    pub curve: Curve,
    /// Curve parameter; `None` takes the curve's default.
    pub param: Option<f64>,
    /// FFmpeg-style desaturation strength (0 disables); default 2 as in FFmpeg.
    pub desat: f64,
    /// Source peak, linear (1.0 = 100 nits); `None` (or `peak=0`) reads MaxCLL / mastering
    /// metadata, else 100 for PQ and 10 for HLG.
    pub peak: Option<f64>,
    pub mode: Mode,
    pub imp: Impl,
    /// Ordered dither of the output luma.
    pub dither: bool,
    pub format: OutputFormat,
    /// BT.2390 target (SDR) peak in nits.
    pub target_nits: f64,
    /// Worker threads for `cpu` (0 = one per core).
    pub threads: usize,
    /// Highest SIMD level `cpu` may use (it never goes above what the CPU has, nor above
    /// `CLUSTERPLEX_SIMD`).
    pub simd: Option<SimdLevel>,
}

impl Default for TonemapOptions {
    fn default() -> Self {
        TonemapOptions {
            curve: Curve::Bt2390,
            param: None,
            desat: 2.0,
            peak: None,
            mode: Mode::Max,
            imp: Impl::Auto,
            dither: false,
            format: OutputFormat::Yuv420p,
            target_nits: 100.0,
            threads: 0,
            simd: None,
        }
    }
}

fn bad(msg: String) -> Error {
    Error::Unsupported(format!("tonemap options: {msg}"))
}

fn num(key: &str, v: &str) -> Result<f64> {
    let x: f64 = v
        .trim()
        .parse()
        .map_err(|_| bad(format!("{key}={v:?} is not a number")))?;
    if !x.is_finite() {
        return Err(bad(format!("{key}={v:?} is not finite")));
    }
    Ok(x)
}

fn boolean(key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" | "ordered" => Ok(true),
        "0" | "false" | "no" | "off" | "none" => Ok(false),
        _ => Err(bad(format!("{key}={v:?} is not a boolean"))),
    }
}

impl FromStr for TonemapOptions {
    type Err = Error;

    /// Parses the arguments after `tonemap=`: `bt2390:peak=10:desat=0:impl=cpu`,
    /// FFmpeg's key form `tonemap=hable`, or just `mobius`. An empty string gives the defaults.
    fn from_str(s: &str) -> Result<Self> {
        let mut o = TonemapOptions::default();
        let s = s.trim();
        for (i, part) in s.split(':').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let Some((k, v)) = part.split_once('=') else {
                if i == 0 {
                    o.curve =
                        Curve::parse(part).ok_or_else(|| bad(format!("unknown curve {part:?}")))?;
                    continue;
                }
                return Err(bad(format!("expected key=value, got {part:?}")));
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "tonemap" | "curve" => {
                    o.curve = Curve::parse(v).ok_or_else(|| bad(format!("unknown curve {v:?}")))?
                }
                "param" => {
                    let x = num(&k, v)?;
                    // FFmpeg: NAN means "default"; accept "nan" as the same.
                    o.param = if x.is_nan() { None } else { Some(x) };
                }
                "desat" => {
                    let x = num(&k, v)?;
                    if x < 0.0 {
                        return Err(bad(format!("desat={v} must be >= 0")));
                    }
                    o.desat = x;
                }
                "peak" => {
                    let x = num(&k, v)?;
                    if x < 0.0 {
                        return Err(bad(format!("peak={v} must be >= 0")));
                    }
                    o.peak = if x == 0.0 { None } else { Some(x) };
                }
                "knee" => {
                    let x = num(&k, v)?;
                    if !(0.0..=2.0).contains(&x) {
                        return Err(bad(format!("knee={v} must be in 0..2")));
                    }
                    o.param = Some(x);
                }
                "target" | "target_peak" | "tpeak" => {
                    let x = num(&k, v)?;
                    if x <= 0.0 {
                        return Err(bad(format!("{k}={v} must be > 0 nits")));
                    }
                    o.target_nits = x;
                }
                "mode" => {
                    o.mode = Mode::parse(v).ok_or_else(|| bad(format!("unknown mode {v:?}")))?
                }
                "impl" => {
                    o.imp = Impl::parse(v).ok_or_else(|| bad(format!("unknown impl {v:?}")))?
                }
                "dither" => o.dither = boolean(&k, v)?,
                "format" => {
                    o.format = OutputFormat::parse(v)
                        .ok_or_else(|| bad(format!("unknown output format {v:?}")))?
                }
                "threads" => {
                    o.threads = v
                        .parse()
                        .map_err(|_| bad(format!("threads={v:?} is not a count")))?
                }
                "simd" => {
                    o.simd = Some(
                        SimdLevel::parse(v)
                            .ok_or_else(|| bad(format!("unknown simd level {v:?}")))?,
                    )
                }
                _ => return Err(bad(format!("unknown option {k:?}"))),
            }
        }
        Ok(o)
    }
}

/// Per-frame parameters, resolved from the options and the frame's signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub tone: ToneCurve,
    pub mode: Mode,
    pub desat: f64,
    pub dither: bool,
    pub signal: Signal,
}

impl Params {
    pub fn new(opts: &TonemapOptions, signal: Signal) -> Self {
        let peak = opts.peak.unwrap_or(signal.peak);
        Params {
            tone: ToneCurve::new(opts.curve, opts.param, peak, opts.target_nits),
            mode: opts.mode,
            desat: opts.desat,
            dither: opts.dither,
            signal: Signal { peak, ..signal },
        }
    }
}

/// The peak a frame's side data gives (MaxCLL, else mastering max luminance; 1.0 = 100 nits),
/// `None` when it has neither.
pub fn frame_peak(frame: &ffmpeg_next::frame::Video) -> Option<f64> {
    frame::side_data_peak(frame)
}

enum Backend {
    Reference,
    Cpu(cpu::CpuTonemapper),
    Cuda(Box<cuda::CudaTonemapper>),
}

/// The tonemapping stage of a filter chain.
pub struct TonemapStage {
    opts: TonemapOptions,
    backend: Backend,
}

impl TonemapStage {
    pub fn new(opts: &TonemapOptions) -> Result<Self> {
        let backend = match opts.imp {
            Impl::Reference => Backend::Reference,
            Impl::Cpu => Backend::Cpu(cpu::CpuTonemapper::new(opts.threads, opts.simd)),
            Impl::Cuda => Backend::Cuda(Box::new(cuda::CudaTonemapper::new(opts)?)),
            Impl::Auto => match cuda::CudaTonemapper::new(opts) {
                Ok(c) => Backend::Cuda(Box::new(c)),
                Err(e) => {
                    tracing::debug!(reason = %e, "tonemap impl=auto: using cpu");
                    Backend::Cpu(cpu::CpuTonemapper::new(opts.threads, opts.simd))
                }
            },
        };
        Ok(TonemapStage {
            opts: opts.clone(),
            backend,
        })
    }

    /// The implementation chosen ("reference", "cpu (avx2)", "cuda").
    pub fn implementation(&self) -> String {
        match &self.backend {
            Backend::Reference => "reference".into(),
            Backend::Cpu(c) => format!("cpu ({})", c.level().name()),
            Backend::Cuda(_) => "cuda".into(),
        }
    }

    pub fn options(&self) -> &TonemapOptions {
        &self.opts
    }

    /// Tonemaps planes in memory (what `process` does after unpacking the frame).
    pub fn process_image(
        &mut self,
        src: &SrcImage,
        dst: &mut DstImage,
        signal: Signal,
    ) -> Result<()> {
        src.validate()?;
        dst.validate(src.width, src.height)?;
        let params = Params::new(&self.opts, signal);
        match &mut self.backend {
            Backend::Reference => reference::run(src, dst, &params),
            Backend::Cpu(c) => c.run(src, dst, &params),
            Backend::Cuda(c) => c.run_host(src, dst, &params),
        }
    }

    /// HDR frame in, SDR frame out (tagged BT.709 / tv). See the module docs for the formats.
    pub fn process(
        &mut self,
        frame: &ffmpeg_next::frame::Video,
    ) -> Result<ffmpeg_next::frame::Video> {
        if frame.format() == ffmpeg_next::format::Pixel::CUDA {
            return match &mut self.backend {
                Backend::Cuda(c) => {
                    let signal = frame::signal_of(frame)?;
                    let params = Params::new(&self.opts, signal);
                    c.run_hw_frame(frame, &params, self.opts.format)
                }
                _ => Err(Error::Other {
                    stage: Stage::Tonemap,
                    message:
                        "frame is a CUDA hw frame but the tonemap stage is not using impl=cuda"
                            .into(),
                }),
            };
        }
        let signal = frame::signal_of(frame)?;
        let mut out = frame::new_output(frame, self.opts.format)?;
        {
            let src = frame::src_image(frame)?;
            let mut dst = frame::dst_image(&mut out, self.opts.format);
            self.process_image(&src, &mut dst, signal)?;
        }
        Ok(out)
    }
}
