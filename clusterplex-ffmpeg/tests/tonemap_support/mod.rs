//! Shared helpers for the tonemap tests: synthetic HDR images, PSNR, running every
//! implementation.
#![allow(dead_code)]

use clusterplex_ffmpeg::tonemap::cuda::run_kernel_on_host;
use clusterplex_ffmpeg::tonemap::image::{OwnedImage, stress_picture};
use clusterplex_ffmpeg::tonemap::{
    Impl, InputLayout, OutputFormat, Params, Signal, SimdLevel, TonemapOptions, TonemapStage,
};

/// Which implementation a test runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Which {
    Reference,
    Cpu(SimdLevel),
    KernelOnHost,
}

/// Every implementation that can run on this machine.
pub fn all_impls() -> Vec<Which> {
    let mut v = vec![Which::Reference, Which::KernelOnHost];
    v.extend(SimdLevel::available().into_iter().map(Which::Cpu));
    v
}

/// Tonemaps `img` with `opts` (impl overridden by `which`) into a fresh output image.
pub fn run(
    which: Which,
    opts: &TonemapOptions,
    img: &OwnedImage,
    layout: InputLayout,
    signal: Signal,
) -> OwnedImage {
    let mut out = OwnedImage::new_output(img.width, img.height, opts.format);
    let src = img.src(layout);
    match which {
        Which::KernelOnHost => {
            let p = Params::new(opts, signal);
            run_kernel_on_host(&src, &mut out.dst(opts.format), &p).unwrap();
        }
        Which::Reference | Which::Cpu(_) => {
            let mut o = opts.clone();
            o.imp = if which == Which::Reference {
                Impl::Reference
            } else {
                Impl::Cpu
            };
            if let Which::Cpu(l) = which {
                o.simd = Some(l);
            }
            let mut st = TonemapStage::new(&o).unwrap();
            if let Which::Cpu(l) = which {
                assert!(
                    st.implementation().contains(l.name()),
                    "{} vs {l:?}",
                    st.implementation()
                );
            }
            st.process_image(&src, &mut out.dst(opts.format), signal)
                .unwrap();
        }
    }
    out
}

/// Plane `p` of an output image as codes (w x h for Y, w/2 x h/2 per chroma component; for
/// semi-planar formats `p` = 1 is U and 2 is V).
pub fn plane(img: &OwnedImage, format: OutputFormat, p: usize) -> Vec<u16> {
    let (w, h) = if p == 0 {
        (img.width, img.height)
    } else {
        (img.width / 2, img.height / 2)
    };
    let mut v = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            v.push(match (p, format.is_semiplanar()) {
                (0, _) => img.sample(format, 0, x, y),
                (k, true) => img.sample(format, 1, 2 * x + (k - 1), y),
                (k, false) => img.sample(format, k, x, y),
            });
        }
    }
    v
}

/// (PSNR in dB at `max` peak, max |difference|).
pub fn psnr(a: &[u16], b: &[u16], max: f64) -> (f64, u16) {
    assert_eq!(a.len(), b.len());
    let mut se = 0.0;
    let mut md = 0u16;
    for (x, y) in a.iter().zip(b) {
        let d = (*x as i32 - *y as i32).unsigned_abs() as u16;
        md = md.max(d);
        se += (d as f64) * (d as f64);
    }
    let mse = se / a.len() as f64;
    let p = if mse == 0.0 {
        99.0
    } else {
        10.0 * (max * max / mse).log10()
    };
    (p, md)
}

/// A PQ stress image: a neutral ramp 0..10000 nits on top, saturated BT.2020 primaries and
/// secondaries from 0.1 to 10000 nits below.
pub fn stress_image(w: usize, h: usize, layout: InputLayout) -> OwnedImage {
    stress_picture(
        w,
        h,
        layout,
        Signal::pq(),
        |t| 10000.0 * t.powi(3),
        |t| 0.1 * 1e5f64.powf(t),
    )
}
