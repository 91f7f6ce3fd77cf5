//! PMS paces the transcode: `canThrottle` in its progress replies (the PMS-contract double
//! over real loopback HTTP) throttles a real engine job until a reply comes without it, in
//! process (the reporter driving the job's control, as the agent wires it) and through
//! `clusterplex-worker run -progressurl`. Time bounds are hang guards only.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use clusterplex_core::{
    CancelToken,
    job::{ByStream, CodecChoice, Input, Job, Output, ProgressTarget, StreamSettings},
};
use clusterplex_pms_contract::{Config, Kind, PmsContract, Recording};
use clusterplex_testkit as tk;
use clusterplex_worker::plex::PlexReporter;

const TOKEN: &str = "local-7d1c2b3a";
const HANG_GUARD: Duration = Duration::from_secs(30);

/// Progress PUTs sent while the reporter knew it was throttled (Plex then leaves out `speed`).
fn throttled_puts(r: &Recording) -> usize {
    r.of(Kind::Progress)
        .iter()
        .filter(|p| p.param("speed").is_none())
        .count()
}

async fn pms() -> PmsContract {
    PmsContract::start_local(Config {
        token: Some(TOKEN.into()),
        throttle: true,
        ..Config::default()
    })
    .await
    .unwrap()
}

/// A 3 s clip read at realtime (`-re`), so the job outlives PMS's first progress reply, which
/// is what tells it to throttle.
fn src() -> PathBuf {
    tk::h264_aac(320, 180, 3.0)
}

fn engine_job(src: &Path, target: &Path, progress_url: String) -> Job {
    let enc = |name: &str| StreamSettings {
        codec: Some(CodecChoice::Encoder(name.into())),
        preset: (name == "libx264").then(|| "ultrafast".to_string()),
        ..Default::default()
    };
    let mut out = Output::new(target.to_string_lossy(), Some("mpegts"));
    out.streams
        .push(ByStream::new("v".parse().unwrap(), enc("libx264")));
    out.streams
        .push(ByStream::new("a".parse().unwrap(), enc("aac")));
    let mut input = Input::new(src.to_string_lossy());
    input.realtime = true;
    let mut job = Job::default();
    job.inputs.push(input);
    job.outputs.push(out);
    job.progress = Some(ProgressTarget {
        plex_url: Some(progress_url),
        ..Default::default()
    });
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_throttle_paces_the_engine_until_pms_lifts_it() {
    let pms = pms().await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.ts");
    let base = pms.session_base("throttle", "4e5f6a7b-0000-4000-8000-000000000001");
    let job = engine_job(&src(), &target, format!("{base}/progress"));
    let reporter = PlexReporter::new(&job, Some(TOKEN.into())).unwrap();
    let control = CancelToken::new();
    reporter.drive(&control);
    let c2 = control.clone();
    let run = tokio::task::spawn_blocking(move || {
        let res = clusterplex_ffmpeg::engine::Engine::new()
            .run(&job, &c2, &mut |ev| reporter.on_event(&ev));
        (res, reporter)
    });
    // PMS keeps hearing progress while it throttles the job, and the job is throttled.
    assert!(
        pms.wait_for(HANG_GUARD, |r| throttled_puts(r) >= 2).await,
        "no throttled progress: {:#?}",
        pms.recording().of(Kind::Progress)
    );
    assert!(control.is_throttled());
    assert!(
        !run.is_finished(),
        "a throttled job cannot read 3 s of input yet"
    );
    pms.set_throttle(false);
    let (res, reporter) = tokio::time::timeout(HANG_GUARD, run)
        .await
        .expect("the job hung")
        .unwrap();
    let sum = res.expect("the job completes once PMS lifts the throttle");
    let stats = reporter.finish(true).await;
    assert!(!control.is_throttled(), "PMS lifted the throttle");
    assert!(sum.throttled_packets > 0, "{sum:?}");
    assert_eq!(tk::count_frames(&target, "v:0"), 75);
    assert_eq!(stats.failed, 0);
    let rec = pms.shutdown().await;
    let progress = rec.of(Kind::Progress);
    assert_eq!(progress.last().unwrap().param("progress"), Some("100.0"));
    assert!(rec.check_token(TOKEN).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_can_throttle_nothing_is_throttled() {
    let pms = PmsContract::start_local(Config {
        token: Some(TOKEN.into()),
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.ts");
    let base = pms.session_base("free", "4e5f6a7b-0000-4000-8000-000000000002");
    let job = engine_job(&src(), &target, format!("{base}/progress"));
    let reporter = PlexReporter::new(&job, Some(TOKEN.into())).unwrap();
    let control = CancelToken::new();
    reporter.drive(&control);
    let (res, reporter) = tokio::task::spawn_blocking(move || {
        let res = clusterplex_ffmpeg::engine::Engine::new()
            .run(&job, &control, &mut |ev| reporter.on_event(&ev));
        (res, reporter)
    })
    .await
    .unwrap();
    let sum = res.unwrap();
    reporter.finish(true).await;
    assert_eq!(sum.throttled_packets, 0, "{sum:?}");
    let rec = pms.shutdown().await;
    assert!(!rec.of(Kind::Progress).is_empty());
    assert_eq!(throttled_puts(&rec), 0);
    assert_eq!(tk::count_frames(&target, "v:0"), 75);
}

/// `clusterplex-worker run` with Plex's `-progressurl` reports to PMS and obeys its throttle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_run_obeys_can_throttle() {
    let pms = pms().await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.ts");
    let base = pms.session_base("run", "4e5f6a7b-0000-4000-8000-000000000003");
    let mut child = Command::new(env!("CARGO_BIN_EXE_clusterplex-worker"))
        .arg("run")
        .env("CLUSTERPLEX_PROGRESS", "none")
        .env("X_PLEX_TOKEN", TOKEN)
        .args(["--", "-re", "-i"])
        .arg(src())
        .args(["-progressurl", &format!("{base}/progress")])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"])
        .args(["-f", "mpegts"])
        .arg(&target)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let throttled = pms.wait_for(HANG_GUARD, |r| throttled_puts(r) >= 2).await;
    let still_running = child.try_wait().unwrap().is_none();
    pms.set_throttle(false);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    let out = tokio::time::timeout(HANG_GUARD, out)
        .await
        .expect("the run hung")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(throttled, "no throttled progress; stderr: {err}");
    assert!(still_running, "finished while throttled; stderr: {err}");
    assert!(out.status.success(), "{err}");
    assert!(err.contains("done: 75 frames"), "{err}");
    assert!(err.contains("packets throttled"), "{err}");
    assert_eq!(tk::count_frames(&target, "v:0"), 75);
    let rec = pms.shutdown().await;
    assert!(rec.check_token(TOKEN).is_empty());
    assert_eq!(
        rec.of(Kind::Progress).last().unwrap().param("progress"),
        Some("100.0")
    );
}
