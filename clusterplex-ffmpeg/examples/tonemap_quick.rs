//! Quick iteration timer for the cpu tonemapper: `cargo run --release -p clusterplex-ffmpeg
//! --example tonemap_quick [curve] [width] [height]`. Prints median fps (NV12 out, desat=0,
//! peak=10). The full comparison with FFmpeg lives in `cargo bench --bench tonemap`.

use std::time::Instant;

use clusterplex_ffmpeg::tonemap::image::OwnedImage;
use clusterplex_ffmpeg::tonemap::{
    InputLayout, OutputFormat, Signal, TonemapOptions, TonemapStage,
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let curve = args.get(1).map(String::as_str).unwrap_or("hable");
    let w: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3840);
    let h: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2160);
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
            Signal::pq(),
        )
        .expect("tonemap");
        times.push(t.elapsed().as_secs_f64());
    }
    let cpu_ms = (cpu_ticks() - cpu0) as f64 * 10.0 / times.len() as f64;
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{w}x{h} {curve} {}: median {:.1} fps, best {:.1} fps, {cpu_ms:.0} ms CPU/frame",
        st.implementation(),
        1.0 / times[times.len() / 2],
        1.0 / times[0]
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
