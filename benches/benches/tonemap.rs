//! `cargo bench --bench tonemap`: tonemapping throughput at 1080p and 4K.
//!
//! Criterion groups time `cpu` for every curve (and every SIMD level for hable), FFmpeg's
//! `zscale,tonemap,zscale` chain run in-process through libavfilter on the same frames, and a
//! streaming P010-read/NV12-write pass (the memory-bandwidth bound). A summary table at the end
//! prints fps, the speed-up over FFmpeg and the fraction of the bandwidth bound. HLG input
//! (the same codes read as HLG) has its own hable rows.

use std::hint::black_box;
use std::time::{Duration, Instant};

use clusterplex_ffmpeg::tonemap::image::OwnedImage;
use clusterplex_ffmpeg::tonemap::{
    Curve, InputLayout, OutputFormat, Signal, SimdLevel, TonemapOptions, TonemapStage,
};
use criterion::{Criterion, Throughput};
use ffmpeg_next as ff;

const SIZES: [(usize, usize, &str); 2] = [(1920, 1080, "1080p"), (3840, 2160, "4k")];

/// A smooth HDR picture: a PQ ramp over most of the range with chroma varying across it.
fn frame(w: usize, h: usize) -> OwnedImage {
    OwnedImage::new_input(w, h, InputLayout::P010, |x, y| {
        (
            64 + (x * 876 / w) as u16,
            512 + ((y * 160 / h) as u16),
            592 - ((x * 160 / w) as u16),
        )
    })
}

fn stage(spec: &str) -> TonemapStage {
    TonemapStage::new(&spec.parse::<TonemapOptions>().expect("bench options")).expect("cpu stage")
}

fn run_cpu(st: &mut TonemapStage, img: &OwnedImage, out: &mut OwnedImage) {
    run_cpu_signal(st, img, out, Signal::pq())
}

fn run_cpu_signal(st: &mut TonemapStage, img: &OwnedImage, out: &mut OwnedImage, sig: Signal) {
    st.process_image(
        &img.src(InputLayout::P010),
        &mut out.dst(OutputFormat::Nv12),
        sig,
    )
    .expect("tonemap");
}

/// FFmpeg's chain as a libavfilter graph fed with P010 frames.
struct FfChain {
    graph: ff::filter::Graph,
    input: ff::frame::Video,
    output: ff::frame::Video,
}

impl FfChain {
    fn new(img: &OwnedImage, curve: &str) -> Self {
        let (w, h) = (img.width, img.height);
        let mut graph = ff::filter::Graph::new();
        let args = format!(
            "video_size={w}x{h}:pix_fmt={}:time_base=1/24:pixel_aspect=1/1",
            ff::ffi::AVPixelFormat::AV_PIX_FMT_P010LE as i32
        );
        graph
            .add(
                &ff::filter::find("buffer").expect("buffer filter"),
                "in",
                &args,
            )
            .expect("buffer");
        graph
            .add(
                &ff::filter::find("buffersink").expect("buffersink filter"),
                "out",
                "",
            )
            .expect("buffersink");
        let spec = format!(
            "setparams=range=tv:color_primaries=bt2020:color_trc=smpte2084:colorspace=bt2020nc,\
zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,\
tonemap=tonemap={curve}:desat=0:peak=10,zscale=t=bt709:m=bt709:r=tv,format=nv12"
        );
        graph
            .output("in", 0)
            .and_then(|p| p.input("out", 0))
            .and_then(|p| p.parse(&spec))
            .expect("parse chain");
        graph.validate().expect("validate chain");
        let mut input = ff::frame::Video::new(ff::format::Pixel::P010LE, w as u32, h as u32);
        for p in 0..2 {
            let rows = if p == 0 { h } else { h / 2 };
            let (src_stride, dst_stride) = (img.strides[p], input.stride(p));
            let data = input.data_mut(p);
            for r in 0..rows {
                data[r * dst_stride..r * dst_stride + w * 2]
                    .copy_from_slice(&img.planes[p][r * src_stride..r * src_stride + w * 2]);
            }
        }
        FfChain {
            graph,
            input,
            output: ff::frame::Video::empty(),
        }
    }

    fn run(&mut self, pts: i64) {
        // buffersrc takes the frame's references, so each push gets its own copy (a memcpy,
        // negligible next to the chain).
        let mut f = self.input.clone();
        f.set_pts(Some(pts));
        self.graph
            .get("in")
            .expect("in")
            .source()
            .add(&f)
            .expect("push frame");
        self.graph
            .get("out")
            .expect("out")
            .sink()
            .frame(&mut self.output)
            .expect("pull frame");
    }
}

/// The bandwidth bound: read a P010 frame, write an NV12 frame, streaming, on all cores.
fn stream_pass(img: &OwnedImage, out: &mut OwnedImage) {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    std::thread::scope(|s| {
        for (src, dst_plane) in img.planes.iter().zip(out.planes.iter_mut()).take(2) {
            let chunk = (dst_plane.len() / threads).max(1);
            for (i, dst) in dst_plane.chunks_mut(chunk).enumerate() {
                let src = &src[i * chunk * 2..];
                s.spawn(move || {
                    for (d, s2) in dst.iter_mut().zip(src.chunks_exact(2)) {
                        *d = s2[1];
                    }
                });
            }
        }
    });
}

fn median_fps(mut f: impl FnMut(), min_runs: usize, budget: Duration) -> f64 {
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < min_runs || (start.elapsed() < budget && times.len() < 200) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    1.0 / times[times.len() / 2]
}

fn main() {
    ff::init().expect("libav init");
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let levels = SimdLevel::available();
    for (w, h, name) in SIZES {
        let img = frame(w, h);
        let mut out = OwnedImage::new_output(w, h, OutputFormat::Nv12);
        let mut g = c.benchmark_group(format!("tonemap_{name}"));
        g.throughput(Throughput::Elements(1));
        for curve in Curve::ALL {
            let mut st = stage(&format!(
                "{}:impl=cpu:format=nv12:desat=0:peak=10",
                curve.name()
            ));
            g.bench_function(format!("cpu/{}", curve.name()), |b| {
                b.iter(|| run_cpu(&mut st, black_box(&img), &mut out))
            });
        }
        for l in &levels {
            let mut st = stage(&format!(
                "hable:impl=cpu:format=nv12:desat=0:peak=10:simd={}",
                l.name()
            ));
            g.bench_function(format!("cpu_{}/hable", l.name()), |b| {
                b.iter(|| run_cpu(&mut st, black_box(&img), &mut out))
            });
        }
        let mut st = stage("hable:impl=cpu:format=nv12:desat=0");
        g.bench_function("cpu_hlg/hable", |b| {
            b.iter(|| run_cpu_signal(&mut st, black_box(&img), &mut out, Signal::hlg()))
        });
        for curve in ["hable", "reinhard", "mobius"] {
            let mut chain = FfChain::new(&img, curve);
            let mut pts = 0;
            g.bench_function(format!("ffmpeg_chain/{curve}"), |b| {
                b.iter(|| {
                    pts += 1;
                    chain.run(pts)
                })
            });
        }
        g.bench_function("bandwidth_bound/p010_to_nv12", |b| {
            b.iter(|| stream_pass(black_box(&img), &mut out))
        });
        g.finish();
    }

    // Summary with ratios measured in this run.
    println!(
        "\n== tonemap summary (fps, median; {} threads) ==",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    for (w, h, name) in SIZES {
        let img = frame(w, h);
        let mut out = OwnedImage::new_output(w, h, OutputFormat::Nv12);
        let bound = median_fps(|| stream_pass(&img, &mut out), 10, Duration::from_secs(2));
        println!("{name}: bandwidth bound (read P010 + write NV12): {bound:.0} fps");
        for curve in ["hable", "reinhard", "mobius"] {
            let mut chain = FfChain::new(&img, curve);
            let mut pts = 0;
            let ffps = median_fps(
                || {
                    pts += 1;
                    chain.run(pts)
                },
                3,
                Duration::from_secs(3),
            );
            let mut st = stage(&format!("{curve}:impl=cpu:format=nv12:desat=0:peak=10"));
            let cpu = median_fps(
                || run_cpu(&mut st, &img, &mut out),
                10,
                Duration::from_secs(2),
            );
            println!(
                "{name} {curve:9}: ffmpeg chain {ffps:7.2} fps | cpu ({}) {cpu:7.1} fps = {:5.1}x ffmpeg, {:4.0}% of bandwidth bound",
                st.implementation(),
                cpu / ffps,
                100.0 * cpu / bound
            );
        }
        for curve in ["bt2390", "clip", "linear", "gamma"] {
            let mut st = stage(&format!("{curve}:impl=cpu:format=nv12:desat=0:peak=10"));
            let cpu = median_fps(
                || run_cpu(&mut st, &img, &mut out),
                10,
                Duration::from_secs(2),
            );
            println!(
                "{name} {curve:9}: cpu {cpu:7.1} fps, {:4.0}% of bandwidth bound",
                100.0 * cpu / bound
            );
        }
        for l in &levels {
            let mut st = stage(&format!(
                "hable:impl=cpu:format=nv12:desat=0:peak=10:simd={}",
                l.name()
            ));
            let cpu = median_fps(
                || run_cpu(&mut st, &img, &mut out),
                5,
                Duration::from_secs(1),
            );
            println!("{name} hable cpu simd={:6}: {cpu:7.1} fps", l.name());
        }
        // HLG (peak 1000 nits; the same codes read as HLG).
        let mut st = stage("hable:impl=cpu:format=nv12:desat=0");
        let cpu = median_fps(
            || run_cpu_signal(&mut st, &img, &mut out, Signal::hlg()),
            10,
            Duration::from_secs(2),
        );
        println!(
            "{name} hable HLG: cpu ({}) {cpu:7.1} fps, {:4.0}% of bandwidth bound",
            st.implementation(),
            100.0 * cpu / bound
        );
        if name == "1080p" {
            let mut st = stage("hable:impl=reference:format=nv12:desat=0:peak=10");
            let r = median_fps(|| run_cpu(&mut st, &img, &mut out), 1, Duration::ZERO);
            println!("{name} hable reference: {r:.2} fps");
        }
        match clusterplex_ffmpeg::tonemap::cuda::probe() {
            Ok(()) => println!("{name}: cuda available: run `tonemap_cuda_bench` for GPU figures"),
            Err(e) => println!("{name}: cuda not measured: {e}"),
        }
    }
    c.final_summary();
}
