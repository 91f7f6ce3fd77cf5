//! Quick iteration timer for the cpu tonemapper: `cargo run --release -p clusterplex-ffmpeg
//! --example tonemap_quick [curve] [width] [height] [--hlg] [--accuracy]`. Prints median fps
//! (NV12 out, desat=0, peak=10; PQ input, or HLG with `--hlg`). The full comparison with
//! FFmpeg lives in `cargo bench --bench tonemap`.

use std::time::Instant;

use clusterplex_ffmpeg::tonemap::image::{OwnedImage, stress_picture};
use clusterplex_ffmpeg::tonemap::{
    InputLayout, OutputFormat, Signal, TonemapOptions, TonemapStage, Transfer,
};

fn main() {
    let flag = |f: &str| std::env::args().any(|a| a == f);
    // Positional arguments are the ones that are not flags.
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let curve = args.get(1).map(String::as_str).unwrap_or("hable");
    let w: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3840);
    let h: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2160);
    let hlg = flag("--hlg");
    let signal = if hlg { Signal::hlg() } else { Signal::pq() };
    let img = OwnedImage::new_input(w, h, InputLayout::P010, |x, y| {
        (
            64 + (x * 876 / w) as u16,
            512 + ((y * 160 / h) as u16),
            592 - ((x * 160 / w) as u16),
        )
    });
    let mut out = OwnedImage::new_output(w, h, OutputFormat::Nv12);
    let opts: TonemapOptions = format!("{curve}:impl=cpu:format=nv12:desat=0:peak=10")
        .parse()
        .expect("options");
    let mut st = TonemapStage::new(&opts).expect("stage");
    let mut times = Vec::new();
    let cpu0 = cpu_ticks();
    for _ in 0..15 {
        let t = Instant::now();
        st.process_image(
            &img.src(InputLayout::P010),
            &mut out.dst(OutputFormat::Nv12),
            signal,
        )
        .expect("tonemap");
        times.push(t.elapsed().as_secs_f64());
    }
    let cpu_ms = (cpu_ticks() - cpu0) as f64 * 10.0 / times.len() as f64;
    times.sort_by(|a, b| a.total_cmp(b));
    if flag("--accuracy") {
        accuracy(curve, signal);
    }
    println!(
        "{w}x{h} {curve}{} {}: median {:.1} fps, best {:.1} fps, {cpu_ms:.0} ms CPU/frame",
        if hlg { " hlg" } else { "" },
        st.implementation(),
        1.0 / times[times.len() / 2],
        1.0 / times[0],
    );
}

/// User + system CPU time of this process (threads included), in clock ticks (1/100 s):
/// steadier than wall time on a loaded machine.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the ")".
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// Y PSNR and max |dY| of `cpu` against `reference` on the bench ramp and on saturated
/// BT.2020 hue ramps under a neutral ramp (`stress_picture`; PQ: 0.1 to 10000 nits, HLG: scene
/// light 1e-5 to 1), 8-bit NV12 out.
fn accuracy(curve: &str, signal: Signal) {
    let (w, h) = (960, 540);
    let ramp = OwnedImage::new_input(w, h, InputLayout::P010, |x, y| {
        (
            64 + (x * 876 / w) as u16,
            512 + ((y * 160 / h) as u16),
            592 - ((x * 160 / w) as u16),
        )
    });
    let hues = if signal.transfer == Transfer::Hlg {
        stress_picture(
            w,
            h,
            InputLayout::P010,
            signal,
            clusterplex_ffmpeg::tonemap::math::hlg_inv_oetf,
            |t| 1e-5 * 1e5f64.powf(t),
        )
    } else {
        stress_picture(
            w,
            h,
            InputLayout::P010,
            signal,
            |t| 10000.0 * t.powi(3),
            |t| 0.1 * 1e5f64.powf(t),
        )
    };
    for (name, img) in [("ramp", &ramp), ("hues", &hues)] {
        for desat in ["0", "2"] {
            let mut outs = Vec::new();
            for imp in ["cpu", "reference"] {
                let o: TonemapOptions =
                    format!("{curve}:impl={imp}:format=nv12:desat={desat}:peak=10")
                        .parse()
                        .expect("options");
                let mut st = TonemapStage::new(&o).expect("stage");
                let mut out = OwnedImage::new_output(w, h, OutputFormat::Nv12);
                st.process_image(
                    &img.src(InputLayout::P010),
                    &mut out.dst(OutputFormat::Nv12),
                    signal,
                )
                .expect("tonemap");
                outs.push(out);
            }
            let (a, b) = (&outs[0].planes[0][..w * h], &outs[1].planes[0][..w * h]);
            let (mut se, mut md) = (0f64, 0i32);
            for (p, q) in a.iter().zip(b) {
                let d = *p as i32 - *q as i32;
                se += (d * d) as f64;
                md = md.max(d.abs());
            }
            let mse = se / (w * h) as f64;
            let psnr = if mse == 0.0 {
                f64::INFINITY
            } else {
                10.0 * (255.0f64 * 255.0 / mse).log10()
            };
            println!("accuracy {curve} {name} desat={desat}: Y PSNR {psnr:.1} dB, max |dY| {md}");
        }
    }
}
