//! Engine vs ffmpeg CLI on the same job: 1080p H.264 -> 720p libx264 veryfast + AAC, HLS with
//! 2 s segments. Both runs take the very same ffmpeg-style arguments (the engine's through
//! `clusterplex_core::parse::parse_args`), run alternately for several iterations, and are
//! timed the same way from outside: wall time to the end, and time until the first segment
//! is listed in the playlist on disk.
//!
//! Engine runs: in-process (`Engine::run` on a thread), and, when a release build of
//! `clusterplex-worker` exists in target/release, through `clusterplex-worker run` as well.
//!
//! `cargo bench -p clusterplex-benches --bench engine_hls` (env: ENGINE_BENCH_ITERS, default 3;
//! ENGINE_BENCH_SECS, source length, default 8).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use clusterplex_core::{CancelToken, parse::parse_args};
use clusterplex_ffmpeg::engine::Engine;

struct Sample {
    total: f64,
    first_segment: f64,
}

fn args(src: &Path, out: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec!["-y".into(), "-i".into(), src.to_string_lossy().into()];
    for s in [
        "-map",
        "0:v:0",
        "-map",
        "0:a:0",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-s",
        "1280x720",
        "-force_key_frames",
        "expr:gte(t,n_forced*2)",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-f",
        "hls",
        "-hls_time",
        "2",
        "-hls_list_size",
        "0",
    ] {
        a.push(s.into());
    }
    a.push(out.join("index.m3u8").to_string_lossy().into());
    a
}

/// Polls the playlist until it lists a segment; returns seconds since `t0`.
fn wait_first_segment(dir: &Path, t0: Instant, done: &dyn Fn() -> bool) -> Option<f64> {
    loop {
        if let Ok(pl) = std::fs::read_to_string(dir.join("index.m3u8"))
            && pl.lines().any(|l| l.ends_with(".ts"))
        {
            return Some(t0.elapsed().as_secs_f64());
        }
        if done() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run_cli(program: &Path, pre: &[&str], src: &Path) -> Sample {
    let dir = tempfile_dir();
    let t0 = Instant::now();
    let mut child = Command::new(program)
        .args(pre)
        .args(args(src, &dir))
        .env("CLUSTERPLEX_PROGRESS", "none")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let first = wait_first_segment(&dir, t0, &|| false).unwrap_or(f64::NAN);
    let st = child.wait().expect("wait");
    let total = t0.elapsed().as_secs_f64();
    assert!(st.success(), "{} failed", program.display());
    let _ = std::fs::remove_dir_all(&dir);
    Sample {
        total,
        first_segment: first,
    }
}

fn run_engine(src: &Path) -> Sample {
    let dir = tempfile_dir();
    let job = parse_args(&args(src, &dir)).expect("parse").job;
    let t0 = Instant::now();
    let handle = std::thread::spawn(move || {
        Engine::new()
            .run(&job, &CancelToken::new(), &mut |_| {})
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let first = wait_first_segment(&dir, t0, &|| handle.is_finished()).unwrap_or(f64::NAN);
    let r = handle.join().expect("engine thread");
    let total = t0.elapsed().as_secs_f64();
    r.expect("engine run");
    let _ = std::fs::remove_dir_all(&dir);
    Sample {
        total,
        first_segment: first,
    }
}

fn tempfile_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "cpx-bench-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let iters: usize = std::env::var("ENGINE_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let secs: f64 = std::env::var("ENGINE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8.0);
    let src = clusterplex_testkit::h264_aac_1080p(secs);
    let worker = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/clusterplex-worker");
    let ffmpeg = PathBuf::from("ffmpeg");
    let mut cli = Vec::new();
    let mut eng = Vec::new();
    let mut wrk = Vec::new();
    // Warm-up (page cache, first-run costs) for both, not counted.
    run_cli(
        &ffmpeg,
        &["-hide_banner", "-loglevel", "error", "-nostdin"],
        &src,
    );
    run_engine(&src);
    for i in 0..iters {
        let c = run_cli(
            &ffmpeg,
            &["-hide_banner", "-loglevel", "error", "-nostdin"],
            &src,
        );
        let e = run_engine(&src);
        println!(
            "iter {i}: ffmpeg {:.2}s (first segment {:.2}s) | engine {:.2}s (first segment {:.2}s)",
            c.total, c.first_segment, e.total, e.first_segment
        );
        cli.push(c);
        eng.push(e);
        if worker.exists() {
            let w = run_cli(&worker, &["run", "--"], &src);
            println!(
                "        clusterplex-worker run {:.2}s (first segment {:.2}s)",
                w.total, w.first_segment
            );
            wrk.push(w);
        }
    }
    let (ct, cf) = (
        median(cli.iter().map(|s| s.total).collect()),
        median(cli.iter().map(|s| s.first_segment).collect()),
    );
    let (et, ef) = (
        median(eng.iter().map(|s| s.total).collect()),
        median(eng.iter().map(|s| s.first_segment).collect()),
    );
    println!(
        "source: {secs} s of 1080p25 H.264 + AAC -> 720p libx264 veryfast + AAC, HLS 2 s segments; {iters} iterations, medians"
    );
    println!(
        "ffmpeg CLI:          total {ct:.2}s  first segment {cf:.2}s  ({:.2}x realtime)",
        secs / ct
    );
    println!(
        "engine (in-process): total {et:.2}s  first segment {ef:.2}s  ({:.2}x realtime)",
        secs / et
    );
    println!(
        "throughput ratio engine/ffmpeg: {:.3} (>= 1.0 means the engine is at least as fast)",
        ct / et
    );
    println!(
        "first-segment ratio ffmpeg/engine: {:.3} (> 1.0 means the engine is faster to first segment)",
        cf / ef
    );
    if !wrk.is_empty() {
        let (wt, wf) = (
            median(wrk.iter().map(|s| s.total).collect()),
            median(wrk.iter().map(|s| s.first_segment).collect()),
        );
        println!(
            "clusterplex-worker run: total {wt:.2}s first segment {wf:.2}s; throughput ratio {:.3}, first-segment ratio {:.3}",
            ct / wt,
            cf / wf
        );
    }
}
