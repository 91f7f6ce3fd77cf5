//! The job control handle's pacing flags on real media: throttle (Plex's `canThrottle`) and
//! pause (Jellyfin's `p` key). Time bounds here are hang guards or lower bounds that sleeps
//! guarantee, never speed assertions.

use std::{
    path::{Path, PathBuf},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use clusterplex_core::{
    ByStream, CancelToken, CodecChoice, Input, Job, JobEvent, JobSummary, Output, StreamSettings,
};
use clusterplex_ffmpeg::{Error, engine::Engine};
use clusterplex_testkit as tk;

/// Generous bound for anything that must merely not hang.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn enc(name: &str) -> StreamSettings {
    StreamSettings {
        codec: Some(CodecChoice::Encoder(name.into())),
        preset: (name == "libx264").then(|| "ultrafast".to_string()),
        ..Default::default()
    }
}

/// A 2 s 320x180 clip with audio (50 video frames), transcoded to MPEG-TS in `dir`. TS is
/// written as it goes, so a job that reads input shows up in the file size at once.
fn ts_job(dir: &Path, realtime: bool) -> (Job, PathBuf) {
    let src = tk::h264_aac(320, 180, 2.0);
    let target = dir.join("out.ts");
    let mut out = Output::new(target.to_string_lossy(), Some("mpegts"));
    out.streams
        .push(ByStream::new("v".parse().unwrap(), enc("libx264")));
    out.streams
        .push(ByStream::new("a".parse().unwrap(), enc("aac")));
    let mut input = Input::new(src.to_string_lossy());
    input.realtime = realtime;
    let job = Job {
        inputs: vec![input],
        outputs: vec![out],
        ..Default::default()
    };
    (job, target)
}

type Outcome = Result<JobSummary, Error>;

/// Runs `job` on its own thread; its events arrive on the returned channel, its result when
/// the thread is joined.
fn spawn(job: Job, control: &CancelToken) -> (JoinHandle<Outcome>, mpsc::Receiver<JobEvent>) {
    let control = control.clone();
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        Engine::new().run(&job, &control, &mut |e| {
            let _ = tx.send(e);
        })
    });
    (h, rx)
}

/// Joins `h`, failing the test instead of hanging.
fn join(h: JoinHandle<Outcome>) -> Outcome {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(h.join());
    });
    rx.recv_timeout(HANG_GUARD)
        .expect("the job hung")
        .expect("the job thread panicked")
}

fn wait_started(rx: &mpsc::Receiver<JobEvent>) {
    loop {
        match rx.recv_timeout(HANG_GUARD).expect("no Started event") {
            JobEvent::Started { .. } => return,
            _ => continue,
        }
    }
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// A job started on its own thread with its control handle set up by `pace` first, once the
/// engine has said `Started`. `_dir` keeps the output directory alive: bind it by name when
/// destructuring (`..` would drop it, and the directory, at once).
struct Running {
    _dir: tempfile::TempDir,
    target: PathBuf,
    control: CancelToken,
    h: JoinHandle<Outcome>,
    rx: mpsc::Receiver<JobEvent>,
}

fn start(realtime: bool, pace: fn(&CancelToken)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (job, target) = ts_job(dir.path(), realtime);
    let control = CancelToken::new();
    pace(&control);
    let (h, rx) = spawn(job, &control);
    wait_started(&rx);
    Running {
        _dir: dir,
        target,
        control,
        h,
        rx,
    }
}

/// Cancel stops a job that `pace` holds back, with the cancelled error.
fn assert_cancel_stops(pace: fn(&CancelToken)) {
    let r = start(false, pace);
    std::thread::sleep(Duration::from_millis(300));
    r.control.cancel();
    let out = join(r.h);
    assert!(matches!(out, Err(Error::Cancelled)), "{out:?}");
}

#[test]
fn throttled_job_sleeps_per_packet_and_completes_once_released() {
    let Running {
        _dir,
        target,
        control,
        h,
        ..
    } = start(false, |c| c.set_throttled(true));
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !h.is_finished(),
        "a throttled job cannot read 2 s of input in 0.7 s"
    );
    control.set_throttled(false);
    let sum = join(h).expect("the job completes after the throttle is lifted");
    assert!(sum.throttled_packets > 0, "{sum:?}");
    assert_eq!(sum.paused_ms, 0);
    assert_eq!(tk::count_frames(&target, "v:0"), 50);
}

#[test]
fn unthrottled_job_counts_no_throttled_packets() {
    let Running {
        _dir, target, h, ..
    } = start(false, |_| {});
    let sum = join(h).unwrap();
    assert_eq!((sum.throttled_packets, sum.paused_ms), (0, 0), "{sum:?}");
    assert_eq!(tk::count_frames(&target, "v:0"), 50);
}

#[test]
fn paused_job_reads_nothing_until_resumed_then_completes() {
    let Running {
        _dir,
        target,
        control,
        h,
        rx,
    } = start(false, |c| c.set_paused(true));
    std::thread::sleep(Duration::from_millis(200));
    let before = size(&target);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!h.is_finished(), "a paused job finished");
    assert_eq!(size(&target), before, "output grew while paused");
    let during: Vec<JobEvent> = rx.try_iter().collect();
    assert!(
        !during.iter().any(|e| matches!(e, JobEvent::Progress(_))),
        "progress while paused: {during:?}"
    );
    control.set_paused(false);
    let sum = join(h).expect("the job completes after resuming");
    assert!(sum.paused_ms >= 1000, "{sum:?}");
    assert!(sum.paused_ms as f64 <= sum.elapsed * 1000.0, "{sum:?}");
    assert_eq!(sum.throttled_packets, 0);
    assert_eq!(tk::count_frames(&target, "v:0"), 50);
    let last = rx.try_iter().filter_map(|e| match e {
        JobEvent::Progress(p) => Some(p.frames),
        _ => None,
    });
    assert_eq!(last.last(), Some(50));
}

#[test]
fn cancel_stops_a_paused_job() {
    assert_cancel_stops(|c| c.set_paused(true));
}

#[test]
fn cancel_stops_a_throttled_job() {
    assert_cancel_stops(|c| c.set_throttled(true));
}

/// `-re` paces on wall time minus paused time: after a pause the job goes on at realtime
/// instead of bursting through what it "missed". Without that, a 2 s clip paused for 1.5 s
/// from its start would let 1.5 s of input through at once and end about 0.5 s after
/// resuming; at realtime it needs nearly 2 s. (A lower bound: sleeps guarantee it, however
/// slow the machine.)
#[test]
fn paused_realtime_input_resumes_at_realtime() {
    let Running {
        _dir,
        target,
        control,
        h,
        ..
    } = start(true, |c| c.set_paused(true));
    std::thread::sleep(Duration::from_millis(1500));
    control.set_paused(false);
    let resumed = Instant::now();
    let sum = join(h).unwrap();
    let after = resumed.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "caught up in a burst: done {after:?} after resuming ({sum:?})"
    );
    assert!(sum.paused_ms >= 1000, "{sum:?}");
    assert_eq!(tk::count_frames(&target, "v:0"), 50);
}
