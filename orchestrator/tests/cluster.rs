//! A real cluster on loopback: the orchestrator binary, worker binaries running the real engine
//! on clips made with the ffmpeg CLI, and jobs submitted through the job service.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use clusterplex_core::{
    ByStream, CodecChoice, Input, Job, Output, StreamSettings, StreamSpecifier,
    rpc::{self, Event, JobServiceClient, WorkerServiceClient, pb},
};
use tokio_stream::StreamExt;

const TOKEN: &str = "s3cret-token";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The worker binary next to this test's target dir, built once if needed.
fn worker_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let bin = dir.join("clusterplex-worker");
        if let Ok(cargo) = std::env::var("CARGO") {
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "-p",
                "clusterplex-worker",
                "--bin",
                "clusterplex-worker",
            ]);
            if dir.ends_with("release") {
                cmd.arg("--release");
            }
            let st = cmd.status().unwrap();
            assert!(st.success(), "building clusterplex-worker failed");
        }
        assert!(bin.exists(), "{} missing", bin.display());
        bin
    })
    .clone()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn orchestrator(port: u16, http: u16, extra: &[(&str, &str)]) -> Proc {
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

fn worker(port: u16, id: &str, media: &Path) -> Proc {
    Proc(
        Command::new(worker_bin())
            .env("ORCHESTRATOR_URL", format!("http://127.0.0.1:{port}"))
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
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn make_clip(dir: &Path, name: &str, secs: u32) -> PathBuf {
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

fn transcode_job(input: &Path, out_dir: &Path, out: &str, realtime: bool) -> Job {
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

async fn client(port: u16, token: &str) -> JobServiceClient<rpc::AuthChannel> {
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

async fn wait_workers(c: &mut JobServiceClient<rpc::AuthChannel>, n: usize) -> Vec<pb::WorkerInfo> {
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

type Events = tonic::codec::Streaming<pb::JobEventMessage>;

async fn submit(c: &mut JobServiceClient<rpc::AuthChannel>, job: &Job) -> Events {
    let req = rpc::submit_request(job, "test-poster", "testhost").unwrap();
    c.submit(req).await.unwrap().into_inner()
}

/// Reads events until `pred` matches one (returned), with a deadline.
async fn until(events: &mut Events, secs: u64, mut pred: impl FnMut(&Event) -> bool) -> Event {
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

fn frames(p: &Path) -> u64 {
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

async fn http_get(port: u16, path: &str) -> String {
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

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_failover_cancel_auth_and_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().canonicalize().unwrap();
    let short = make_clip(&media, "short.mp4", 2);
    let long = make_clip(&media, "long.mp4", 30);
    let (port, http) = (free_port(), free_port());
    let _orch = orchestrator(port, http, &[("WORKER_SELECTION_STRATEGY", "LOAD_RANK")]);
    let mut workers: Vec<(String, Proc)> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| (id.to_string(), worker(port, id, &media)))
        .collect();
    let mut c = client(port, TOKEN).await;
    wait_workers(&mut c, 3).await;
    assert_eq!(
        http_get(http, "/health").await.lines().last(),
        Some("Healthy")
    );

    // A wrong token is refused on every RPC.
    let mut bad = client(port, "wrong").await;
    let e = bad
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = bad
        .submit(
            rpc::submit_request(&transcode_job(&short, &media, "x.mp4", false), "p", "h").unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    // A worker speaking another protocol version is refused with a clear status.
    let ch = rpc::connect_channel(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2))
        .await
        .unwrap();
    let mut wc =
        WorkerServiceClient::with_interceptor(ch, rpc::TokenInterceptor::new(Some(TOKEN)).unwrap());
    let reg = pb::WorkerMessage {
        msg: Some(pb::worker_message::Msg::Register(pb::Register {
            worker_id: "old".into(),
            protocol_version: rpc::PROTOCOL_VERSION + 1,
            max_jobs: 1,
            ..Default::default()
        })),
    };
    let e = wc.attach(tokio_stream::iter(vec![reg])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("protocol version mismatch"),
        "{}",
        e.message()
    );

    // 1. A real transcode through the cluster.
    let mut ev = submit(&mut c, &transcode_job(&short, &media, "out1.mp4", false)).await;
    let Event::Accepted(acc) = until(&mut ev, 10, |e| matches!(e, Event::Accepted(_))).await else {
        unreachable!()
    };
    assert!(acc.worker_id.starts_with('w') && acc.worker_name == format!("node-{}", acc.worker_id));
    let end = until(&mut ev, 60, rpc::is_terminal).await;
    assert!(
        matches!(end, Event::Finished(ref f) if f.exit_status == 0),
        "{end:?}"
    );
    assert_eq!(frames(&media.join("out1.mp4")), 50);

    // 2. SIGKILL the worker running a slow job: its submitter sees failed(WORKER_LOST) promptly.
    let mut ev = submit(&mut c, &transcode_job(&long, &media, "slow1.mp4", true)).await;
    let Event::Accepted(acc) = until(&mut ev, 10, |e| matches!(e, Event::Accepted(_))).await else {
        unreachable!()
    };
    until(&mut ev, 10, |e| {
        matches!(e, Event::Progress(_) | Event::Started(_))
    })
    .await;
    let victim = acc.worker_id.clone();
    let idx = workers.iter().position(|(id, _)| *id == victim).unwrap();
    let (_, mut p) = workers.remove(idx);
    p.0.kill().unwrap();
    let killed_at = Instant::now();
    let end = until(&mut ev, 10, rpc::is_terminal).await;
    let Event::Failed(f) = end else {
        panic!("{end:?}")
    };
    assert_eq!(f.code, pb::FailureCode::WorkerLost as i32);
    assert!(f.retryable);
    assert!(
        killed_at.elapsed() < Duration::from_millis(4000),
        "failover took {:?}",
        killed_at.elapsed()
    );
    // Later jobs go elsewhere.
    for n in 0..2 {
        let mut ev = submit(
            &mut c,
            &transcode_job(&short, &media, &format!("after{n}.mp4"), false),
        )
        .await;
        let Event::Accepted(acc) = until(&mut ev, 10, |e| matches!(e, Event::Accepted(_))).await
        else {
            unreachable!()
        };
        assert_ne!(acc.worker_id, victim);
        let end = until(&mut ev, 60, rpc::is_terminal).await;
        assert!(matches!(end, Event::Finished(_)), "{end:?}");
    }

    // 3. The shim cancels its call: the job stops on the worker and its slot frees.
    let mut ev = submit(&mut c, &transcode_job(&long, &media, "slow2.mp4", true)).await;
    let Event::Accepted(acc) = until(&mut ev, 10, |e| matches!(e, Event::Accepted(_))).await else {
        unreachable!()
    };
    until(&mut ev, 10, |e| matches!(e, Event::Progress(_))).await;
    drop(ev);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let ws = c
            .list_workers(pb::ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers;
        let w = ws.iter().find(|w| w.id == acc.worker_id).unwrap();
        if w.job_ids.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job still running on {} after cancel",
            acc.worker_id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let size = std::fs::metadata(media.join("slow2.mp4"))
        .map(|m| m.len())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        std::fs::metadata(media.join("slow2.mp4"))
            .map(|m| m.len())
            .unwrap_or(0),
        size,
        "output still growing"
    );

    // 4. A job no worker can run fails with NO_WORKER after the queue timeout.
    let mut req =
        rpc::submit_request(&transcode_job(&short, &media, "x.mp4", false), "p2", "h").unwrap();
    req.needs_json = br#"{"encoders":["h264_nvmpi"]}"#.to_vec();
    let mut ev = c.submit(req).await.unwrap().into_inner();
    let end = until(&mut ev, 10, rpc::is_terminal).await;
    let Event::Failed(f) = end else {
        panic!("{end:?}")
    };
    assert_eq!(f.code, pb::FailureCode::NoWorker as i32);
    assert!(!f.retryable);
    assert!(f.reason.contains("encoder:h264_nvmpi"), "{}", f.reason);

    // 5. A path outside MEDIA_ROOTS is refused by the worker.
    let mut ev = submit(
        &mut c,
        &transcode_job(Path::new("/etc/hostname"), &media, "x.mp4", false),
    )
    .await;
    let end = until(&mut ev, 10, rpc::is_terminal).await;
    let Event::Failed(f) = end else {
        panic!("{end:?}")
    };
    assert_eq!(f.code, pb::FailureCode::Refused as i32);
    assert!(f.reason.contains("MEDIA_ROOTS"), "{}", f.reason);

    // 6. /metrics counted all of it.
    let m = http_get(http, "/metrics").await;
    assert_eq!(metric(&m, "jobs_posted"), 7.0);
    assert_eq!(metric(&m, "jobs_succeeded"), 3.0);
    assert_eq!(metric(&m, "jobs_failed"), 3.0);
    assert_eq!(metric(&m, "jobs_killed"), 1.0);
    assert_eq!(metric(&m, "jobs_completed"), 7.0);
    assert_eq!(metric(&m, "workers_active"), 2.0);
    assert_eq!(metric(&m, "job_posters_active"), 0.0);
    assert_eq!(metric(&m, "worker_protocol_mismatches"), 1.0);
    assert!(m.contains("worker_load_cpu{"), "{m}");
    assert!(m.contains("worker_load_tasks{"), "{m}");
    assert!(m.contains("queue_wait_seconds_bucket"), "{m}");
    assert!(m.contains("job_duration_seconds_count 6"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_reregister_after_an_orchestrator_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().canonicalize().unwrap();
    let (port, http) = (free_port(), free_port());
    let orch = orchestrator(port, http, &[]);
    let _w = [worker(port, "r1", &media), worker(port, "r2", &media)];
    let mut c = client(port, TOKEN).await;
    wait_workers(&mut c, 2).await;
    drop(orch); // SIGKILL
    let _orch = orchestrator(port, http, &[]);
    let mut c = client(port, TOKEN).await;
    let ws = wait_workers(&mut c, 2).await;
    let mut ids: Vec<_> = ws.iter().map(|w| w.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["r1", "r2"]);
    let m = http_get(http, "/metrics").await;
    assert_eq!(metric(&m, "workers_active"), 2.0);
}
