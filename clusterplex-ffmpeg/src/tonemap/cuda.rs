//! The CUDA path: `cuda/tonemap.cu` compiled to PTX at build time (clang, no CUDA SDK),
//! embedded, and loaded at run time through the driver API (`cudarc` with dynamic loading, so
//! machines without an NVIDIA driver build and run; they get a clear error here).
//!
//! Two entry points:
//! - [`CudaTonemapper::run_host`]: planes in host memory are copied up, tonemapped, copied back;
//! - [`CudaTonemapper::run_hw_frame`]: frames already on the GPU (`AV_PIX_FMT_CUDA`, e.g. from
//!   nvdec) stay there: the kernel reads the decoder's device planes and writes into a new CUDA
//!   frame allocated from a hw frames context on the same device (sw_format = the output
//!   format), running in FFmpeg's CUDA context.
//!
//! [`run_kernel_on_host`] runs the same kernel source compiled as C++ on the CPU (tests).

use std::ffi::{CString, c_void};
use std::sync::Arc;

use cudarc::driver::{CudaContext, result, sys};

use super::image::{DstImage, InputLayout, SrcImage, Transfer, out_range};
use super::{Curve, Mode, OutputFormat, Params, TonemapOptions};
use crate::error::{Error, Result, Stage};

/// The embedded PTX (empty when the build had no CUDA-capable clang).
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/tonemap.ptx"));
/// How the PTX was built ("clang-19 sm_90"), or "none".
pub const PTX_BUILD: &str = env!("CLUSTERPLEX_TONEMAP_PTX_BUILD");

/// The embedded PTX text, if the build produced one.
pub fn ptx() -> Option<&'static str> {
    (cfg!(clusterplex_tonemap_ptx) && !PTX.is_empty()).then_some(PTX)
}

/// Block shape: 32x8 threads, each thread one 2x2 luma block.
pub const BLOCK: (u32, u32) = (32, 8);

/// Kernel parameter block; must match `struct TmParams` in cuda/tonemap.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TmParams {
    pub width: i32,
    pub height: i32,
    pub in_layout: i32,
    pub out_format: i32,
    pub in_stride: [i32; 3],
    pub out_stride: [i32; 3],
    pub transfer: i32,
    pub curve: i32,
    pub mode: i32,
    pub dither: i32,
    pub in_y_off: f32,
    pub in_y_scale: f32,
    pub in_c_scale: f32,
    pub peak: f32,
    pub param: f32,
    pub k0: f32,
    pub k1: f32,
    pub k2: f32,
    pub target_nits: f32,
    pub desat: f32,
    pub out_y_off: f32,
    pub out_y_scale: f32,
    pub out_c_off: f32,
    pub out_c_scale: f32,
    pub out_max: f32,
}

// SAFETY: `TmParams` is `repr(C)`, plain old data, and matches the kernel's by-value parameter.
unsafe impl cudarc::driver::DeviceRepr for TmParams {}

fn err(message: impl Into<String>) -> Error {
    Error::Other {
        stage: Stage::Cuda,
        message: message.into(),
    }
}

fn drv(context: &str, e: impl std::fmt::Debug) -> Error {
    err(format!("{context}: {e:?}"))
}

impl TmParams {
    /// The parameter block for a host source image and destination image.
    pub fn for_images(p: &Params, src: &SrcImage, dst: &DstImage) -> Result<Self> {
        Self::new(
            p,
            src.width,
            src.height,
            src.layout,
            src.strides,
            dst.format,
            dst.strides,
        )
    }

    /// Builds the parameter block (errors when the frame is too large for i32 indexing).
    pub fn new(
        p: &Params,
        width: usize,
        height: usize,
        layout: InputLayout,
        in_strides: [usize; 3],
        format: OutputFormat,
        out_strides: [usize; 3],
    ) -> Result<Self> {
        let mode = match p.mode {
            Mode::Max => 0,
            Mode::Rgb => 1,
            Mode::Lum => 2,
            Mode::Itp => 3,
        };
        let curve = match p.tone.curve {
            Curve::Clip => 0,
            Curve::Linear => 1,
            Curve::Gamma => 2,
            Curve::Reinhard => 3,
            Curve::Hable => 4,
            Curve::Mobius => 5,
            Curve::Bt2390 => 6,
        };
        let (yo, ys, cs) = p.signal.range10();
        let (oy, sy, oc, sc, max) = out_range(format);
        let [k0, k1, k2] = p.tone.constants();
        let i = |v: usize| i32::try_from(v).map_err(|_| err("frame too large"));
        Ok(TmParams {
            width: i(width)?,
            height: i(height)?,
            in_layout: (layout == InputLayout::P010) as i32,
            out_format: match format {
                OutputFormat::Yuv420p => 0,
                OutputFormat::Nv12 => 1,
                OutputFormat::Yuv420p10 => 2,
                OutputFormat::P010 => 3,
            },
            in_stride: [i(in_strides[0])?, i(in_strides[1])?, i(in_strides[2])?],
            out_stride: [i(out_strides[0])?, i(out_strides[1])?, i(out_strides[2])?],
            transfer: (p.signal.transfer == Transfer::Hlg) as i32,
            curve,
            mode,
            dither: p.dither as i32,
            in_y_off: yo as f32,
            in_y_scale: ys as f32,
            in_c_scale: cs as f32,
            peak: p.tone.peak as f32,
            param: p.tone.param as f32,
            k0: k0 as f32,
            k1: k1 as f32,
            k2: k2 as f32,
            target_nits: p.tone.target_nits as f32,
            desat: p.desat as f32,
            out_y_off: oy as f32,
            out_y_scale: sy as f32,
            out_c_off: oc as f32,
            out_c_scale: sc as f32,
            out_max: max as f32,
        })
    }

    fn grid(&self) -> (u32, u32, u32) {
        let cw = (self.width / 2) as u32;
        let ch = (self.height / 2) as u32;
        (cw.div_ceil(BLOCK.0), ch.div_ceil(BLOCK.1), 1)
    }
}

unsafe extern "C" {
    fn clusterplex_tonemap_host_run(
        in0: *const u8,
        in1: *const u8,
        in2: *const u8,
        out0: *mut u8,
        out1: *mut u8,
        out2: *mut u8,
        p: *const TmParams,
    );
}

/// Runs the CUDA kernel source, compiled as host C++, over the same grid on the CPU.
pub fn run_kernel_on_host(src: &SrcImage, dst: &mut DstImage, p: &Params) -> Result<()> {
    src.validate()?;
    dst.validate(src.width, src.height)?;
    let tp = TmParams::for_images(p, src, dst)?;
    // SAFETY: both images were validated above: every plane the kernel touches holds at least
    // `stride * (rows - 1) + row_bytes` bytes for the given layout/format, and the kernel only
    // addresses samples inside width x height (planes it does not use are never read/written).
    unsafe {
        clusterplex_tonemap_host_run(
            src.planes[0].as_ptr(),
            src.planes[1].as_ptr(),
            src.planes[2].as_ptr(),
            dst.planes[0].as_mut_ptr(),
            dst.planes[1].as_mut_ptr(),
            dst.planes[2].as_mut_ptr(),
            &tp,
        );
    }
    Ok(())
}

/// Why CUDA cannot be used here, or `Ok` when a device is usable.
pub fn probe() -> Result<()> {
    if ptx().is_none() {
        return Err(err(
            "cuda tonemapper built without PTX (no CUDA-capable clang at build time)",
        ));
    }
    // SAFETY: only tries to dlopen libcuda; no CUDA call is made.
    if !unsafe { sys::is_culib_present() } {
        return Err(err(
            "libcuda.so not found: no NVIDIA driver on this machine",
        ));
    }
    Ok(())
}

struct Loaded {
    ctx: sys::CUcontext,
    module: sys::CUmodule,
    func: sys::CUfunction,
}

/// The CUDA tonemapper.
pub struct CudaTonemapper {
    ctx: Arc<CudaContext>,
    /// Modules per CUDA context (cudarc's own, and FFmpeg's for hw frames).
    loaded: Vec<Loaded>,
    /// Output hw frames context for `run_hw_frame`, with its (device ref, w, h, format).
    out_frames: Option<(
        *mut ffmpeg_next::sys::AVBufferRef,
        usize,
        u32,
        u32,
        OutputFormat,
    )>,
}

// SAFETY: the raw CUDA handles are only used from the thread that currently owns the
// tonemapper (`&mut self` methods), after binding/pushing their context.
unsafe impl Send for CudaTonemapper {}

impl Drop for CudaTonemapper {
    fn drop(&mut self) {
        if let Some((mut r, ..)) = self.out_frames.take() {
            // SAFETY: `r` is a reference we own from av_hwframe_ctx_alloc.
            unsafe { ffmpeg_next::sys::av_buffer_unref(&mut r) };
        }
        for l in self.loaded.drain(..) {
            // SAFETY: the module was loaded in `l.ctx`, which is still alive (cudarc's context is
            // held by `self.ctx`; FFmpeg's by the frames we were given) when unloading here.
            unsafe {
                if sys::cuCtxPushCurrent_v2(l.ctx) == sys::CUresult::CUDA_SUCCESS {
                    let _ = result::module::unload(l.module);
                    let mut old = std::ptr::null_mut();
                    let _ = sys::cuCtxPopCurrent_v2(&mut old);
                }
            }
        }
    }
}

impl CudaTonemapper {
    pub fn new(_opts: &TonemapOptions) -> Result<Self> {
        probe()?;
        // cudarc panics instead of erroring when the library cannot be loaded; `probe` checked
        // that, and catch_unwind keeps any other loader panic from escaping.
        let ctx = std::panic::catch_unwind(|| CudaContext::new(0))
            .map_err(|_| err("CUDA driver could not be loaded"))?
            .map_err(|e| drv("cuda init (no usable GPU?)", e))?;
        ctx.bind_to_thread().map_err(|e| drv("cuda bind", e))?;
        let mut t = CudaTonemapper {
            ctx,
            loaded: Vec::new(),
            out_frames: None,
        };
        let cu = t.ctx.cu_ctx();
        t.function_for(cu)?;
        Ok(t)
    }

    /// Device name and peak memory bandwidth in GB/s (for the benchmark's fraction).
    pub fn device_info(&self) -> Result<(String, f64)> {
        let name = self.ctx.name().map_err(|e| drv("device name", e))?;
        let clock_khz = self
            .ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)
            .map_err(|e| drv("memory clock", e))?;
        let bus = self
            .ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)
            .map_err(|e| drv("bus width", e))?;
        // DDR: two transfers per clock.
        Ok((
            name,
            2.0 * clock_khz as f64 * 1e3 * (bus as f64 / 8.0) / 1e9,
        ))
    }

    /// Loads the module into `cu` (once) and returns the kernel. `cu` must be current.
    fn function_for(&mut self, cu: sys::CUcontext) -> Result<sys::CUfunction> {
        if let Some(l) = self.loaded.iter().find(|l| l.ctx == cu) {
            return Ok(l.func);
        }
        let text = ptx().ok_or_else(|| err("built without PTX"))?;
        let c = CString::new(text).map_err(|_| err("PTX contains NUL"))?;
        // SAFETY: `c` is a NUL-terminated PTX image; the context `cu` is current on this thread.
        let module = unsafe { result::module::load_data(c.as_ptr() as *const c_void) }
            .map_err(|e| drv("load PTX", e))?;
        let name = CString::new("tonemap_kernel").map_err(|_| err("kernel name"))?;
        // SAFETY: `module` was just loaded and is alive.
        let func = unsafe { result::module::get_function(module, name) }
            .map_err(|e| drv("kernel lookup", e))?;
        self.loaded.push(Loaded {
            ctx: cu,
            module,
            func,
        });
        Ok(func)
    }

    /// Launches the kernel on device pointers. The context owning them must be current.
    fn launch(
        &mut self,
        cu: sys::CUcontext,
        stream: sys::CUstream,
        ins: [u64; 3],
        outs: [u64; 3],
        tp: &TmParams,
    ) -> Result<()> {
        let func = self.function_for(cu)?;
        let (mut i0, mut i1, mut i2, mut o0, mut o1, mut o2, mut pp) =
            (ins[0], ins[1], ins[2], outs[0], outs[1], outs[2], *tp);
        let mut args: [*mut c_void; 7] = [
            (&mut i0) as *mut u64 as *mut c_void,
            (&mut i1) as *mut u64 as *mut c_void,
            (&mut i2) as *mut u64 as *mut c_void,
            (&mut o0) as *mut u64 as *mut c_void,
            (&mut o1) as *mut u64 as *mut c_void,
            (&mut o2) as *mut u64 as *mut c_void,
            (&mut pp) as *mut TmParams as *mut c_void,
        ];
        // SAFETY: the argument list matches the kernel signature (6 pointers, then TmParams by
        // value); the device buffers cover the planes described by `tp` (checked by the callers);
        // the locals outlive the launch because we synchronise before returning.
        unsafe {
            result::launch_kernel(func, tp.grid(), (BLOCK.0, BLOCK.1, 1), 0, stream, &mut args)
                .map_err(|e| drv("kernel launch", e))?;
            sys::cuStreamSynchronize(stream)
                .result()
                .map_err(|e| drv("kernel run", e))?;
        }
        Ok(())
    }

    /// Host planes in, host planes out (copies to and from the device).
    pub fn run_host(&mut self, src: &SrcImage, dst: &mut DstImage, p: &Params) -> Result<()> {
        let tp = TmParams::for_images(p, src, dst)?;
        self.ctx.bind_to_thread().map_err(|e| drv("cuda bind", e))?;
        let mut bufs: Vec<u64> = Vec::with_capacity(6);
        let res = (|| -> Result<()> {
            for pl in src
                .planes
                .iter()
                .map(|p| &p[..])
                .chain(dst.planes.iter().map(|p| &p[..]))
            {
                // SAFETY: plain device allocation of at least one byte in the bound context.
                let d = unsafe { result::malloc_sync(pl.len().max(1)) }
                    .map_err(|e| drv("cuda alloc", e))?;
                bufs.push(d);
            }
            for (k, pl) in src.planes.iter().enumerate() {
                if !pl.is_empty() {
                    // SAFETY: bufs[k] holds at least pl.len() bytes.
                    unsafe { result::memcpy_htod_sync(bufs[k], pl) }
                        .map_err(|e| drv("upload", e))?;
                }
            }
            let cu = self.ctx.cu_ctx();
            self.launch(
                cu,
                std::ptr::null_mut(),
                [bufs[0], bufs[1], bufs[2]],
                [bufs[3], bufs[4], bufs[5]],
                &tp,
            )?;
            for (k, pl) in dst.planes.iter_mut().enumerate() {
                if !pl.is_empty() {
                    // SAFETY: bufs[3 + k] holds at least pl.len() bytes.
                    unsafe { result::memcpy_dtoh_sync(pl, bufs[3 + k]) }
                        .map_err(|e| drv("download", e))?;
                }
            }
            Ok(())
        })();
        for b in bufs {
            // SAFETY: allocated above with malloc_sync in this context and not freed yet.
            unsafe {
                let _ = result::free_sync(b);
            }
        }
        res
    }

    /// Tonemaps an `AV_PIX_FMT_CUDA` frame on the GPU into a new CUDA frame.
    pub fn run_hw_frame(
        &mut self,
        frame: &ffmpeg_next::frame::Video,
        p: &Params,
        format: OutputFormat,
    ) -> Result<ffmpeg_next::frame::Video> {
        use ffmpeg_next::sys as ff;
        // SAFETY: `frame` is a valid AVFrame; for AV_PIX_FMT_CUDA frames libav guarantees
        // hw_frames_ctx points to an AVHWFramesContext whose device is a CUDA device context
        // (hwctx = AVCUDADeviceContext). All pointers are checked for null before use.
        unsafe {
            let f = frame.as_ptr();
            let hwref = (*f).hw_frames_ctx;
            if hwref.is_null() {
                return Err(err("CUDA frame without hw_frames_ctx"));
            }
            let fc = (*hwref).data as *mut ff::AVHWFramesContext;
            let layout = match (*fc).sw_format {
                ff::AVPixelFormat::AV_PIX_FMT_P010LE => InputLayout::P010,
                ff::AVPixelFormat::AV_PIX_FMT_YUV420P10LE => InputLayout::Yuv420p10,
                other => {
                    return Err(Error::Unsupported(format!(
                        "tonemap: CUDA frames of sw_format {other:?}"
                    )));
                }
            };
            let devctx = (*fc).device_ctx;
            let cuda = (*devctx).hwctx as *mut ff::AVCUDADeviceContext;
            if cuda.is_null() {
                return Err(err("CUDA device context missing"));
            }
            let cu = (*cuda).cuda_ctx as sys::CUcontext;
            let stream = (*cuda).stream as sys::CUstream;
            let (w, h) = ((*f).width as u32, (*f).height as u32);
            if w == 0 || h == 0 || w % 2 != 0 || h % 2 != 0 {
                return Err(Error::Unsupported(format!(
                    "tonemap needs even dimensions, got {w}x{h}"
                )));
            }
            // Output frames context on the same device, sw_format = the output format.
            let key_dev = (*fc).device_ref as usize;
            let reuse = matches!(self.out_frames, Some((_, d, ow, oh, of)) if d == key_dev && ow == w && oh == h && of == format);
            if !reuse {
                if let Some((mut r, ..)) = self.out_frames.take() {
                    ff::av_buffer_unref(&mut r);
                }
                let mut r = ff::av_hwframe_ctx_alloc((*fc).device_ref);
                if r.is_null() {
                    return Err(err("av_hwframe_ctx_alloc failed"));
                }
                let oc = (*r).data as *mut ff::AVHWFramesContext;
                (*oc).format = ff::AVPixelFormat::AV_PIX_FMT_CUDA;
                (*oc).sw_format = format.pixel().into();
                (*oc).width = w as i32;
                (*oc).height = h as i32;
                let rc = ff::av_hwframe_ctx_init(r);
                if rc < 0 {
                    ff::av_buffer_unref(&mut r);
                    return Err(Error::Av {
                        stage: Stage::Cuda,
                        context: "av_hwframe_ctx_init".into(),
                        source: rc.into(),
                    });
                }
                self.out_frames = Some((r, key_dev, w, h, format));
            }
            let Some((oref, ..)) = self.out_frames else {
                return Err(err("no output frames context"));
            };
            let mut out = ffmpeg_next::frame::Video::empty();
            let rc = ff::av_hwframe_get_buffer(oref, out.as_mut_ptr(), 0);
            if rc < 0 {
                return Err(Error::Av {
                    stage: Stage::Cuda,
                    context: "av_hwframe_get_buffer".into(),
                    source: rc.into(),
                });
            }
            let o = out.as_mut_ptr();
            let ins = [
                (*f).data[0] as u64,
                (*f).data[1] as u64,
                (*f).data[2] as u64,
            ];
            let outs = [
                (*o).data[0] as u64,
                (*o).data[1] as u64,
                (*o).data[2] as u64,
            ];
            let ls = |fr: *const ff::AVFrame, k: usize| (*fr).linesize[k].max(0) as usize;
            let tp = TmParams::new(
                p,
                w as usize,
                h as usize,
                layout,
                [ls(f, 0), ls(f, 1), ls(f, 2)],
                format,
                [ls(o, 0), ls(o, 1), ls(o, 2)],
            )?;
            if sys::cuCtxPushCurrent_v2(cu) != sys::CUresult::CUDA_SUCCESS {
                return Err(err("cuCtxPushCurrent failed"));
            }
            let res = self.launch(cu, stream, ins, outs, &tp);
            let mut old = std::ptr::null_mut();
            let _ = sys::cuCtxPopCurrent_v2(&mut old);
            res?;
            (*o).pts = (*f).pts;
            (*o).color_primaries = ff::AVColorPrimaries::AVCOL_PRI_BT709;
            (*o).color_trc = ff::AVColorTransferCharacteristic::AVCOL_TRC_BT709;
            (*o).colorspace = ff::AVColorSpace::AVCOL_SPC_BT709;
            (*o).color_range = ff::AVColorRange::AVCOL_RANGE_MPEG;
            Ok(out)
        }
    }
}

impl CudaTonemapper {
    /// Times the kernel alone on device-resident planes: uploads `src` once, launches `iters`
    /// times, and returns (seconds per frame, bytes read + written per frame).
    pub fn bench_device(
        &mut self,
        src: &SrcImage,
        format: OutputFormat,
        p: &Params,
        iters: usize,
    ) -> Result<(f64, usize)> {
        src.validate()?;
        let mut out = super::image::OwnedImage::new_output(src.width, src.height, format);
        let dst = out.dst(format);
        let tp = TmParams::for_images(p, src, &dst)?;
        let (w, h) = (src.width, src.height);
        let in_bytes = w * h * 2 + w * h; // 10-bit 4:2:0: Y + UV, 2 bytes each
        let out_bytes = if format.is_10bit() {
            w * h * 3
        } else {
            w * h * 3 / 2
        };
        self.ctx.bind_to_thread().map_err(|e| drv("cuda bind", e))?;
        let lens: Vec<usize> = src
            .planes
            .iter()
            .map(|p| p.len())
            .chain(dst.planes.iter().map(|p| p.len()))
            .collect();
        let mut bufs = Vec::new();
        let res = (|| -> Result<f64> {
            for l in &lens {
                // SAFETY: plain device allocation in the bound context.
                bufs.push(
                    unsafe { result::malloc_sync((*l).max(1)) }
                        .map_err(|e| drv("cuda alloc", e))?,
                );
            }
            for (k, pl) in src.planes.iter().enumerate() {
                if !pl.is_empty() {
                    // SAFETY: bufs[k] holds pl.len() bytes.
                    unsafe { result::memcpy_htod_sync(bufs[k], pl) }
                        .map_err(|e| drv("upload", e))?;
                }
            }
            let cu = self.ctx.cu_ctx();
            let (ins, outs) = ([bufs[0], bufs[1], bufs[2]], [bufs[3], bufs[4], bufs[5]]);
            self.launch(cu, std::ptr::null_mut(), ins, outs, &tp)?; // warm-up
            let t = std::time::Instant::now();
            for _ in 0..iters.max(1) {
                self.launch(cu, std::ptr::null_mut(), ins, outs, &tp)?;
            }
            Ok(t.elapsed().as_secs_f64() / iters.max(1) as f64)
        })();
        for b in bufs {
            // SAFETY: allocated above and not freed yet.
            unsafe {
                let _ = result::free_sync(b);
            }
        }
        Ok((res?, in_bytes + out_bytes))
    }
}

/// One row of [`check_against_reference`].
#[derive(Debug, Clone)]
pub struct CheckRow {
    pub case: String,
    pub y_psnr: f64,
    pub max_diff: u16,
}

/// Runs the GPU kernel against the reference on a synthetic PQ stress picture (ramp plus
/// saturated BT.2020 colours) for several curves, modes and formats. Errors when no GPU is
/// usable; the caller decides whether that is a skip.
pub fn check_against_reference(width: usize, height: usize) -> Result<Vec<CheckRow>> {
    use super::image::{OwnedImage, Signal, stress_picture};
    let mut rows = Vec::new();
    let img = stress_picture(
        width,
        height,
        InputLayout::P010,
        Signal::pq(),
        |t| 10000.0 * t.powi(3),
        |t| 0.1 * 1e5f64.powf(t),
    );
    for spec in [
        "hable:desat=0:peak=10",
        "reinhard:peak=10",
        "mobius:desat=0:peak=10:format=nv12",
        "bt2390:mode=lum",
        "bt2390:mode=itp:desat=1",
        "bt2390:mode=rgb:format=p010",
        "hable:dither=1:peak=40",
    ] {
        let mut o: TonemapOptions = spec.parse()?;
        o.imp = super::Impl::Reference;
        let mut reference = super::TonemapStage::new(&o)?;
        let mut a = OwnedImage::new_output(width, height, o.format);
        reference.process_image(
            &img.src(InputLayout::P010),
            &mut a.dst(o.format),
            Signal::pq(),
        )?;
        o.imp = super::Impl::Cuda;
        let mut gpu = super::TonemapStage::new(&o)?;
        let mut b = OwnedImage::new_output(width, height, o.format);
        gpu.process_image(
            &img.src(InputLayout::P010),
            &mut b.dst(o.format),
            Signal::pq(),
        )?;
        let max = if o.format.is_10bit() { 1023.0 } else { 255.0 };
        let (mut se, mut n, mut md) = (0.0, 0usize, 0u16);
        for (pl, bp) in [(0usize, width), (1, width / 2), (2, width / 2)] {
            let rows_n = if pl == 0 { height } else { height / 2 };
            if pl == 2 && o.format.is_semiplanar() {
                continue;
            }
            let cols = if pl == 1 && o.format.is_semiplanar() {
                width
            } else {
                bp
            };
            for y in 0..rows_n {
                for x in 0..cols {
                    let d = a
                        .sample(o.format, pl, x, y)
                        .abs_diff(b.sample(o.format, pl, x, y));
                    md = md.max(d);
                    if pl == 0 {
                        se += (d as f64).powi(2);
                        n += 1;
                    }
                }
            }
        }
        let mse = se / n as f64;
        let y_psnr = if mse == 0.0 {
            99.0
        } else {
            10.0 * (max * max / mse).log10()
        };
        rows.push(CheckRow {
            case: spec.to_string(),
            y_psnr,
            max_diff: md,
        });
    }
    Ok(rows)
}
