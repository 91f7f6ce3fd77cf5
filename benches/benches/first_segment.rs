//! Time to the first segment on disk: what the cluster adds to a playback's start.
//!
//! The same Plex-style DASH job (720p H.264 copied, AAC re-encoded, 2 s segments) runs three
//! ways, interleaved, each into a fresh session directory, timed from the moment the process
//! (or call) starts until `chunk-stream0-00001.m4s` exists:
//!
//! * `cluster`: `clusterplex-shim` (as `Plex Transcoder`, `TRANSCODE_OPERATING_MODE=remote`)
//!   -> a warm orchestrator -> one of three warm `clusterplex-worker` processes, on loopback;
//! * `local process`: `clusterplex-worker run` with the same argv (what a local run costs);
//! * `in-process`: the engine called directly in this process (no process start at all).
//!
//! Prints medians (and p10/p90) over the runs, `cluster - local process` (the cluster's
//! overhead; goal: under 50 ms on loopback) and `cluster - in-process`, and the load average.
//!
//! `cargo bench -p clusterplex-benches --bench first_segment` (env: FIRST_SEGMENT_RUNS,
//! default 15). Builds the release binaries of the shim, orchestrator and worker first.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use clusterplex_core::{CancelToken, parse::parse_args};
use clusterplex_e2e::{Cluster, ClusterOpts, Install, bins};
use clusterplex_ffmpeg::engine::Engine;

fn args(input: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-codec:0".into(),
        "h264".into(),
        "-codec:1".into(),
        "aac".into(),
        "-i".into(),
        input.to_string_lossy().into_owned(),
    ];
    a.extend(
        [
            "-start_at_zero",
            "-copyts",
            "-y",
            "-nostats",
            "-loglevel",
            "quiet",
        ]
        .map(String::from),
    );
    a.extend(clusterplex_testkit::plex_dash_outputs(&["copy"], 1));
    a.push("dash".into());
    a
}

const FIRST: &str = "chunk-stream0-00001.m4s";

/// Polls for the first chunk every 0.5 ms; its delay from `t0`.
fn wait_first(dir: &Path, t0: Instant, limit: Duration) -> Option<f64> {
    let f = dir.join(FIRST);
    while t0.elapsed() < limit {
        if f.exists() {
            return Some(t0.elapsed().as_secs_f64() * 1000.0);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    None
}

fn fresh(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run_process(mut cmd: Command, dir: &Path) -> f64 {
    let t0 = Instant::now();
    let mut child = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ms = wait_first(dir, t0, Duration::from_secs(30)).expect("no first segment");
    let st = child.wait().unwrap();
    assert!(st.success(), "{cmd:?} failed: {st}");
    ms
}

fn stats(name: &str, v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    println!(
        "  {name:<15} median {:7.1} ms   p10 {:7.1}   p90 {:7.1}   (n={})",
        q(0.5),
        q(0.1),
        q(0.9),
        v.len()
    );
    q(0.5)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let runs: usize = std::env::var("FIRST_SEGMENT_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = rt.block_on(Cluster::start(ClusterOpts::default()));
    let input = cluster.media_file(&clusterplex_testkit::h264_aac(1280, 720, 4.0), "bench.mp4");
    let argv = args(&input);
    let install = Install::new();
    let worker = bins().worker.clone();
    let root = cluster.sessions.clone();
    println!(
        "first segment on disk, 720p H.264 copy + AAC, DASH 2 s segments; load average before: {}",
        loadavg()
    );

    let cluster_cmd = |dir: &Path| {
        let mut c = Command::new(install.path().join("Plex Transcoder"));
        c.args(&argv)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TRANSCODER_PATH", install.path())
            .env("ORCHESTRATOR_URL", cluster.url())
            .env("CLUSTERPLEX_TOKEN", clusterplex_e2e::TOKEN)
            .env("TRANSCODE_OPERATING_MODE", "remote")
            .env("CLUSTERPLEX_LOG", "warn")
            .current_dir(dir);
        c
    };
    let local_cmd = || {
        let mut c = Command::new(&worker);
        c.arg("run")
            .arg("--")
            .args(&argv)
            .env("CLUSTERPLEX_PROGRESS", "none");
        c
    };
    let in_process = |dir: &Path| {
        let mut job = parse_args(&argv).unwrap().job;
        job.working_dir = Some(dir.to_path_buf());
        let t0 = Instant::now();
        let d = dir.to_path_buf();
        let poll = std::thread::spawn(move || wait_first(&d, t0, Duration::from_secs(30)));
        Engine::new()
            .run(&job, &CancelToken::new(), &mut |_| {})
            .unwrap();
        poll.join().unwrap().expect("no first segment")
    };

    let (mut c, mut l, mut p) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs + 2 {
        let a = run_process(cluster_cmd(&fresh(&root, "c")), &root.join("c"));
        let b = run_process(local_cmd(), &fresh(&root, "l"));
        let d = in_process(&fresh(&root, "p"));
        // The first two of each warm caches and connections up.
        if i >= 2 {
            c.push(a);
            l.push(b);
            p.push(d);
        }
    }
    let mc = stats("cluster", &mut c);
    let ml = stats("local process", &mut l);
    let mp = stats("in-process", &mut p);
    println!(
        "  cluster - local process: {:+.1} ms (goal < 50 ms)\n  cluster - in-process:    {:+.1} ms\n  load average after: {}",
        mc - ml,
        mc - mp,
        loadavg()
    );
    drop(cluster);
}
