//! Helpers shared by the orchestrator's process-level tests: the real orchestrator and worker
//! binaries on loopback, clips made with the ffmpeg CLI, and job-service clients.
#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use clusterplex_core::{
    ByStream, CodecChoice, Input, Job, Output, Segmenting, StreamSettings, StreamSpecifier,
    rpc::{self, Event, JobServiceClient, pb},
};
use tokio_stream::StreamExt;

pub const TOKEN: &str = "s3cret-token";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The worker binary next to this test's target dir, built once if needed.
pub fn worker_bin() -> PathBuf {
    clusterplex_testkit::process::workspace_bins(&[("clusterplex-worker", "clusterplex-worker")])
        .remove(0)
}

pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn orchestrator(port: u16, http: u16, extra: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clusterplex-orchestrator"));
    cmd.env("LISTENING_PORT", port.to_string())
        .env("METRICS_PORT", http.to_string())
        .env("LISTENING_ADDRESS", "127.0.0.1")
        .env("CLUSTERPLEX_TOKEN", TOKEN)
        .env("LOST_WORKER_TIMEOUT_MS", "2000")
        .env("QUEUE_TIMEOUT_MS", "1500")
        .env("SHUTDOWN_GRACE_MS", "2000")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().unwrap())
}

pub fn worker(port: u16, id: &str, media: &Path) -> Proc {
    worker_with(port, id, media, &[])
}

/// A worker with extra environment (later entries override the defaults).
pub fn worker_with(port: u16, id: &str, media: &Path, extra: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(worker_bin());
    cmd.env("ORCHESTRATOR_URL", format!("http://127.0.0.1:{port}"))
        .env("CLUSTERPLEX_TOKEN", TOKEN)
        .env("WORKER_ID", id)
        .env("WORKER_NAME", format!("node-{id}"))
        .env("WORKER_SCORE", "100")
        .env("MAX_JOBS", "1")
        .env("LISTENING_PORT", "0")
        .env("STAT_CPU_INTERVAL", "200")
        .env("MEDIA_ROOTS", media)
        .env("TRANSCODE_ROOTS", media)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().unwrap())
}

pub fn make_clip(dir: &Path, name: &str, secs: u32) -> PathBuf {
    let p = dir.join(name);
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=320x180:rate=25:duration={secs}"))
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    p
}

pub fn transcode_job(input: &Path, out_dir: &Path, out: &str, realtime: bool) -> Job {
    let mut i = Input::new(input.to_str().unwrap());
    i.realtime = realtime;
    let mut o = Output::new(out, Some("mp4"));
    o.streams.push(ByStream::new(
        StreamSpecifier::all(),
        StreamSettings {
            codec: Some(CodecChoice::Encoder("libx264".into())),
            preset: Some("ultrafast".into()),
            ..Default::default()
        },
    ));
    Job {
        inputs: vec![i],
        outputs: vec![o],
        working_dir: Some(out_dir.to_path_buf()),
        ..Default::default()
    }
}

/// A DASH job (1 s segments from number 1, libx264 ultrafast) writing `dir/session.mpd`, its
/// input read at native rate so that it lasts as long as the clip.
pub fn dash_job(input: &Path, dir: &Path) -> Job {
    let mut job = transcode_job(input, dir, dir.join("session.mpd").to_str().unwrap(), true);
    let o = &mut job.outputs[0];
    o.format = Some("dash".into());
    let mut seg = Segmenting::dash(1.0, 1);
    if let Segmenting::Dash { delete_removed, .. } = &mut seg {
        *delete_removed = Some(false);
    }
    o.segmenting = Some(seg);
    job
}

/// Media segment numbers on disk (`chunk-stream0-00003.m4s` -> 3), sorted.
pub fn segments_on_disk(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let n = name.strip_prefix("chunk-stream0-")?.strip_suffix(".m4s")?;
            n.parse().ok()
        })
        .collect();
    v.sort();
    v
}

/// Checks what a submitter saw of a DASH session that was moved between workers (and the
/// files): one `accepted`, one `started`, one terminal `finished`; every segment announced
/// exactly once, numbered from 1 without a gap, at least `min_segments` of them; `finished`
/// lists them all; on disk, the same numbers, one file each. Returns the segment numbers.
pub fn assert_whole_dash_session(all: &[Event], dir: &Path, min_segments: usize) -> Vec<u64> {
    let count = |f: fn(&Event) -> bool| all.iter().filter(|e| f(e)).count();
    assert_eq!(count(|e| matches!(e, Event::Accepted(_))), 1, "{all:#?}");
    assert_eq!(count(|e| matches!(e, Event::Started(_))), 1, "{all:#?}");
    assert_eq!(count(rpc::is_terminal), 1);
    let Some(Event::Finished(fin)) = all.last() else {
        panic!("{all:#?}")
    };
    assert_eq!(fin.exit_status, 0);
    let announced: Vec<u64> = all
        .iter()
        .filter_map(|e| match e {
            Event::Segment(s) if s.output == 0 => Some(s.number),
            _ => None,
        })
        .collect();
    let unique: std::collections::BTreeSet<u64> = announced.iter().copied().collect();
    assert_eq!(
        unique.len(),
        announced.len(),
        "announced twice: {announced:?}"
    );
    let expected: Vec<u64> = (1..=announced.len() as u64).collect();
    assert_eq!(unique.into_iter().collect::<Vec<_>>(), expected);
    assert!(announced.len() >= min_segments, "{announced:?}");
    assert_eq!(fin.segments, expected, "Finished lists the whole session");
    assert_eq!(segments_on_disk(dir), expected);
    expected
}

pub async fn client(port: u16, token: &str) -> JobServiceClient<rpc::AuthChannel> {
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rpc::job_client(&url, Some(token), Duration::from_secs(1)).await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("orchestrator not reachable: {e}"),
        }
    }
}

pub async fn list_workers(c: &mut JobServiceClient<rpc::AuthChannel>) -> Vec<pb::WorkerInfo> {
    c.list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers
}

pub async fn list_jobs(c: &mut JobServiceClient<rpc::AuthChannel>) -> Vec<pb::JobInfo> {
    c.list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner()
        .jobs
}

/// One worker as the orchestrator lists it.
pub async fn worker_info(c: &mut JobServiceClient<rpc::AuthChannel>, id: &str) -> pb::WorkerInfo {
    list_workers(c)
        .await
        .into_iter()
        .find(|w| w.id == id)
        .unwrap_or_else(|| panic!("no worker {id}"))
}

/// Polls the worker list until `done` holds for worker `id` (10 s at most; `what` for the
/// failure message).
pub async fn wait_worker(
    c: &mut JobServiceClient<rpc::AuthChannel>,
    id: &str,
    what: &str,
    mut done: impl FnMut(&pb::WorkerInfo) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let w = worker_info(c, id).await;
        if done(&w) {
            return;
        }
        assert!(Instant::now() < deadline, "{id}: {what}: {w:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until worker `id` runs no job (it confirmed the end of everything it was given).
pub async fn wait_worker_idle(c: &mut JobServiceClient<rpc::AuthChannel>, id: &str) {
    wait_worker(c, id, "still running a job", |w| w.job_ids.is_empty()).await;
}

pub async fn drain(
    c: &mut JobServiceClient<rpc::AuthChannel>,
    id: &str,
    cancel_running: bool,
) -> pb::DrainWorkerResponse {
    c.drain_worker(pb::DrainWorkerRequest {
        worker_id: id.into(),
        cancel_running,
    })
    .await
    .unwrap()
    .into_inner()
}

pub async fn wait_workers(
    c: &mut JobServiceClient<rpc::AuthChannel>,
    n: usize,
) -> Vec<pb::WorkerInfo> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ws = c
            .list_workers(pb::ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers;
        if ws.len() == n {
            return ws;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} workers, have {}",
            ws.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub type Events = tonic::codec::Streaming<pb::JobEventMessage>;

pub async fn submit(c: &mut JobServiceClient<rpc::AuthChannel>, job: &Job) -> Events {
    let req = rpc::submit_request(job, "test-poster", "testhost").unwrap();
    c.submit(req).await.unwrap().into_inner()
}

/// Waits (10 s at most) for the job's `accepted` event: which worker took it.
pub async fn accepted(events: &mut Events) -> pb::Accepted {
    match until(events, 10, |e| matches!(e, Event::Accepted(_))).await {
        Event::Accepted(a) => a,
        _ => unreachable!(),
    }
}

/// Reads events until the terminal one (returned), with a deadline; anything before it is
/// skipped.
pub async fn terminal(events: &mut Events, secs: u64) -> Event {
    until(events, secs, rpc::is_terminal).await
}

/// Reads to the end; the job must have finished with exit status 0.
pub async fn finished(events: &mut Events, secs: u64) -> pb::Finished {
    match terminal(events, secs).await {
        Event::Finished(f) if f.exit_status == 0 => f,
        other => panic!("expected finished, got {other:?}"),
    }
}

/// Reads to the end; the job must have failed with `code`.
pub async fn failed(events: &mut Events, secs: u64, code: pb::FailureCode) -> pb::Failed {
    match terminal(events, secs).await {
        Event::Failed(f) if f.code == code as i32 => f,
        other => panic!("expected failed {code:?}, got {other:?}"),
    }
}

/// Submits `job` and reads its events to the end: where it ran and how it ended.
pub async fn run_job(
    c: &mut JobServiceClient<rpc::AuthChannel>,
    job: &Job,
    secs: u64,
) -> (pb::Accepted, Event) {
    let mut ev = submit(c, job).await;
    let a = accepted(&mut ev).await;
    (a, terminal(&mut ev, secs).await)
}

/// Reads events until the terminal one and returns them all (the terminal one last).
pub async fn all_events(events: &mut Events, secs: u64) -> Vec<Event> {
    let mut out = Vec::new();
    let fut = async {
        while let Some(m) = events.next().await {
            let e = m.unwrap().event.unwrap();
            let end = rpc::is_terminal(&e);
            out.push(e);
            if end {
                return;
            }
        }
        panic!("stream ended without a terminal event");
    };
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("no terminal event");
    out
}

/// Reads events until `pred` matches one (returned), with a deadline. Fails on a terminal
/// event that does not match.
pub async fn until(events: &mut Events, secs: u64, mut pred: impl FnMut(&Event) -> bool) -> Event {
    let fut = async {
        while let Some(m) = events.next().await {
            let ev = m.unwrap().event.unwrap();
            if pred(&ev) {
                return ev;
            }
            assert!(!rpc::is_terminal(&ev), "job ended unexpectedly: {ev:?}");
        }
        panic!("stream ended");
    };
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("timed out waiting for an event")
}

pub fn frames(p: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

pub async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}
