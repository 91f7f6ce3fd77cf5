//! CUDA tonemap benchmark: kernel fps on device-resident frames at 1080p and 4K, and the fraction
//! of the GPU's peak memory bandwidth (bytes read + written per frame x fps / peak).
//! `tonemap_cuda_bench [ITERATIONS]`. Prints SKIP and exits 0 where no GPU is usable.

use clusterplex_ffmpeg::tonemap::cuda::CudaTonemapper;
use clusterplex_ffmpeg::tonemap::image::OwnedImage;
use clusterplex_ffmpeg::tonemap::{InputLayout, Params, Signal, TonemapOptions};

fn main() {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let opts: TonemapOptions = "hable:impl=cuda:desat=0:peak=10"
        .parse()
        .expect("static options");
    let mut t = match CudaTonemapper::new(&opts) {
        Ok(t) => t,
        Err(e) => {
            println!("SKIP: {e}");
            return;
        }
    };
    let (name, peak_gbs) = t
        .device_info()
        .unwrap_or_else(|_| ("unknown GPU".into(), f64::NAN));
    println!("device: {name}, peak memory bandwidth {peak_gbs:.0} GB/s");
    for (w, h) in [(1920usize, 1080usize), (3840, 2160)] {
        let img = OwnedImage::new_input(w, h, InputLayout::P010, |x, y| {
            (
                64 + (x * 876 / w) as u16,
                512 + ((y * 200 / h) as u16),
                512 - ((x * 200 / w) as u16),
            )
        });
        for spec in [
            "hable:desat=0:peak=10",
            "bt2390",
            "mobius:format=nv12",
            "bt2390:mode=lum",
            "bt2390:mode=itp",
        ] {
            let o: TonemapOptions = spec.parse().expect("static options");
            let p = Params::new(&o, Signal::pq());
            match t.bench_device(&img.src(InputLayout::P010), o.format, &p, iters) {
                Ok((spf, bytes)) => {
                    let fps = 1.0 / spf;
                    let gbs = bytes as f64 * fps / 1e9;
                    println!(
                        "{w}x{h} {spec:24} {fps:9.0} fps  {gbs:7.1} GB/s  {:5.1}% of peak bandwidth",
                        100.0 * gbs / peak_gbs
                    );
                }
                Err(e) => println!("{w}x{h} {spec}: error: {e}"),
            }
        }
    }
}
