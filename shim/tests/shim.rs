//! The real shim binary against a stand-in transcoder (a shell script that records its argv and
//! exits with a chosen code) and a real gRPC JobService on loopback.

use std::{
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use clusterplex_core::rpc::{
    Event, JobServiceServer, job_event,
    pb::{self, job_service_server::JobService},
};
use tokio::{process::Command, sync::mpsc};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

const SHIM: &str = env!("CARGO_BIN_EXE_clusterplex-shim");

fn corpus(name: &str) -> Vec<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../clusterplex-core/tests/corpus/plex")
        .join(format!("{name}.txt"));
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A temp dir holding `originalTranscoder` (the stand-in) and `Plex Transcoder` (the shim).
struct Install {
    dir: tempfile::TempDir,
}

impl Install {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"#!/bin/sh
d="$(dirname "$0")"
echo "$$" > "$d/pid.tmp" && mv "$d/pid.tmp" "$d/pid"
: > "$d/argv"
for a in "$@"; do printf '%s\n' "$a" >> "$d/argv"; done
if [ -n "$STANDIN_STDOUT" ]; then printf '%s\n' "$STANDIN_STDOUT"; fi
if [ -n "$STANDIN_SLEEP" ]; then exec sleep "$STANDIN_SLEEP"; fi
exit "${STANDIN_EXIT:-0}"
"#;
        let p = dir.path().join("originalTranscoder");
        std::fs::write(&p, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(SHIM, dir.path().join("Plex Transcoder")).unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The shim as Plex runs it, with a clean ClusterPlex environment.
    fn command(&self, args: &[String]) -> Command {
        let mut c = Command::new(self.path().join("Plex Transcoder"));
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TRANSCODER_PATH", self.path())
            .env("CLUSTERPLEX_CONNECT_TIMEOUT_MS", "1000")
            .current_dir(self.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    fn recorded_argv(&self) -> Option<Vec<String>> {
        std::fs::read_to_string(self.path().join("argv"))
            .ok()
            .map(|s| s.lines().map(str::to_string).collect())
    }

    async fn wait_for_pid(&self) -> u32 {
        for _ in 0..200 {
            if let Ok(p) = std::fs::read_to_string(self.path().join("pid")) {
                return p.trim().parse().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the stand-in transcoder never started");
    }
}

struct Done {
    code: i32,
    stderr: String,
}

async fn finish(child: tokio::process::Child) -> Done {
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("shim hung")
        .unwrap();
    Done {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

async fn run(c: &mut Command) -> Done {
    finish(c.spawn().unwrap()).await
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn kill(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .await
        .unwrap();
    assert!(st.success());
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; its state letter is Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')),
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------- test server

#[derive(Clone, Copy, Debug)]
enum Script {
    Finish(i32),
    NoWorker,
    JobError(i32),
    /// Accept, then never finish (until the client goes away).
    Hang,
    /// Accept, report progress, then hang.
    ProgressThenHang,
    /// Accept, write DASH segments 1 and 2 (5 s each), then lose the worker.
    LostAfterSegments,
}

#[derive(Default)]
struct Seen {
    jobs: Vec<serde_json::Value>,
    needs: Vec<serde_json::Value>,
    tokens: Vec<Option<String>>,
    cancelled: bool,
    /// PauseJob calls: (job id, paused).
    pauses: Vec<(String, bool)>,
}

struct TestService {
    script: Script,
    seen: Arc<Mutex<Seen>>,
}

#[tonic::async_trait]
impl JobService for TestService {
    type SubmitStream = ReceiverStream<Result<pb::JobEventMessage, Status>>;

    async fn submit(
        &self,
        req: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<Self::SubmitStream>, Status> {
        let token = req
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        let r = req.into_inner();
        {
            let mut s = self.seen.lock().unwrap();
            s.jobs.push(serde_json::from_slice(&r.job_json).unwrap());
            s.needs.push(serde_json::from_slice(&r.needs_json).unwrap());
            s.tokens.push(token);
        }
        let (tx, rx) = mpsc::channel(8);
        let script = self.script;
        let seen = self.seen.clone();
        tokio::spawn(async move {
            let send = |e: Event| job_event("job-1", e);
            let accepted = Event::Accepted(pb::Accepted {
                worker_id: "w1".into(),
                worker_name: "test-worker".into(),
            });
            match script {
                Script::Finish(code) => {
                    let _ = tx.send(Ok(send(accepted))).await;
                    let _ = tx
                        .send(Ok(send(Event::Finished(pb::Finished {
                            exit_status: code,
                            ..Default::default()
                        }))))
                        .await;
                }
                Script::NoWorker => {
                    let _ = tx
                        .send(Ok(send(clusterplex_core::rpc::failed(
                            pb::FailureCode::NoWorker,
                            "no worker",
                            true,
                        ))))
                        .await;
                }
                Script::JobError(code) => {
                    let _ = tx.send(Ok(send(accepted))).await;
                    let _ = tx
                        .send(Ok(send(Event::Failed(pb::Failed {
                            reason: "decode error".into(),
                            code: pb::FailureCode::JobError as i32,
                            exit_status: code,
                            ..Default::default()
                        }))))
                        .await;
                }
                Script::ProgressThenHang => {
                    let _ = tx.send(Ok(send(accepted))).await;
                    let p = clusterplex_core::Progress {
                        frames: 125,
                        fps: 50.0,
                        out_time: 5.0,
                        speed: 2.0,
                        bytes: 640 * 1024,
                        duration: Some(60.0),
                    };
                    let _ = tx.send(Ok(send(Event::Progress((&p).into())))).await;
                    tx.closed().await;
                    seen.lock().unwrap().cancelled = true;
                }
                Script::LostAfterSegments => {
                    let _ = tx.send(Ok(send(accepted))).await;
                    for n in 1..=2u64 {
                        let seg = Event::Segment(pb::SegmentWritten {
                            output: 0,
                            number: n,
                            paths: vec![format!("chunk-stream0-{n:05}.m4s")],
                            start: (n - 1) as f64 * 5.0,
                            end: n as f64 * 5.0,
                        });
                        let _ = tx.send(Ok(send(seg))).await;
                    }
                    let _ = tx
                        .send(Ok(send(Event::Failed(pb::Failed {
                            reason: "worker gone".into(),
                            code: pb::FailureCode::WorkerLost as i32,
                            retryable: true,
                            exit_status: 1,
                            ..Default::default()
                        }))))
                        .await;
                }
                Script::Hang => {
                    let _ = tx.send(Ok(send(accepted))).await;
                    // The shim cancelling the call drops the receiver.
                    tx.closed().await;
                    seen.lock().unwrap().cancelled = true;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_workers(
        &self,
        _: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn drain_worker(
        &self,
        _: Request<pb::DrainWorkerRequest>,
    ) -> Result<Response<pb::DrainWorkerResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn pause_job(
        &self,
        req: Request<pb::PauseJobRequest>,
    ) -> Result<Response<pb::PauseJobResponse>, Status> {
        let r = req.into_inner();
        self.seen.lock().unwrap().pauses.push((r.job_id, r.paused));
        Ok(Response::new(pb::PauseJobResponse {
            worker_id: "w1".into(),
        }))
    }
}

/// Waits (up to 10 s) until the fake orchestrator got exactly one job.
async fn wait_submitted(seen: &Mutex<Seen>) {
    for _ in 0..400 {
        if !seen.lock().unwrap().jobs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seen.lock().unwrap().jobs.len(), 1, "job never submitted");
}

/// Waits (up to 2 s) until the shim cancelled its call, and fails the test if it never did.
async fn wait_cancelled(seen: &Mutex<Seen>) {
    for _ in 0..200 {
        if seen.lock().unwrap().cancelled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        seen.lock().unwrap().cancelled,
        "the remote job was not cancelled"
    );
}

/// The shim on a Jellyfin HLS argv against the orchestrator at `url`, stdin piped, once it has
/// submitted: the child and its stdin.
async fn jellyfin_remote(
    inst: &Install,
    url: &str,
    seen: &Mutex<Seen>,
) -> (tokio::process::Child, tokio::process::ChildStdin) {
    let mut child = inst
        .command(&jellyfin_hls(&[]))
        .env("ORCHESTRATOR_URL", url)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    wait_submitted(seen).await;
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// Writes `keys` to the shim's stdin at once.
async fn type_keys(stdin: &mut tokio::process::ChildStdin, keys: &[u8]) {
    use tokio::io::AsyncWriteExt;
    stdin.write_all(keys).await.unwrap();
    stdin.flush().await.unwrap();
}

async fn server(script: Script) -> (String, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let svc = TestService {
        script,
        seen: seen.clone(),
    };
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(JobServiceServer::new(svc))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (url, seen)
}

// ----------------------------------------------------------------------------------- tests

#[tokio::test]
async fn plan_subcommand_prints_json_or_exits_2() {
    let out = Command::new(SHIM)
        .args(["plan", "--pms-ip", "10.0.0.9", "--"])
        .args(corpus("04"))
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["placement"]["kind"], "remote");
    assert_eq!(plan["job"]["outputs"][1]["target"], "sub-chunk-%05d");
    assert!(
        plan["rewritten_urls"][0]["to"]
            .as_str()
            .unwrap()
            .starts_with("http://10.0.0.9:32499/video/:/transcode/session/")
    );

    let out = Command::new(SHIM)
        .args(["plan", "--", "-i"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-i needs a value"));
    let out = Command::new(SHIM)
        .args(["plan", "--", "-i", "a.mkv"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no outputs"));
}

#[tokio::test]
async fn local_mode_runs_original_with_exact_argv_and_exit_code() {
    let inst = Install::new();
    let args = corpus("01");
    let done = run(inst
        .command(&args)
        .env("TRANSCODE_OPERATING_MODE", "local")
        .env("STANDIN_EXIT", "7"))
    .await;
    assert_eq!(done.code, 7, "{}", done.stderr);
    assert_eq!(inst.recorded_argv().unwrap(), args);
    assert!(
        done.stderr.contains("decision=\"local\""),
        "{}",
        done.stderr
    );
    assert!(
        done.stderr.contains("TRANSCODE_OPERATING_MODE=local"),
        "{}",
        done.stderr
    );
}

#[tokio::test]
async fn both_mode_falls_back_when_orchestrator_is_unreachable() {
    let inst = Install::new();
    let args = corpus("01");
    let done = run(inst
        .command(&args)
        .env(
            "ORCHESTRATOR_URL",
            format!("http://127.0.0.1:{}", closed_port()),
        )
        .env("PMS_IP", "192.168.2.1")
        .env("STANDIN_EXIT", "0"))
    .await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert_eq!(
        inst.recorded_argv().unwrap(),
        args,
        "local fallback gets the original argv"
    );
    assert!(
        done.stderr.contains("orchestrator unreachable"),
        "{}",
        done.stderr
    );
}

#[tokio::test]
async fn remote_mode_never_runs_locally() {
    let inst = Install::new();
    let done = run(inst
        .command(&corpus("01"))
        .env("TRANSCODE_OPERATING_MODE", "remote")
        .env(
            "ORCHESTRATOR_URL",
            format!("http://127.0.0.1:{}", closed_port()),
        )
        .env("PMS_IP", "192.168.2.1"))
    .await;
    assert_ne!(done.code, 0);
    assert!(
        inst.recorded_argv().is_none(),
        "the original transcoder must not run"
    );
    assert!(
        done.stderr.contains("not falling back to local"),
        "{}",
        done.stderr
    );

    // A job that must stay local (EAE) is refused outright in remote mode.
    let done = run(inst
        .command(&corpus("03"))
        .env("TRANSCODE_OPERATING_MODE", "remote")
        .env("TRANSCODE_EAE_LOCALLY", "yes")
        .env("PMS_IP", "192.168.2.1"))
    .await;
    assert_ne!(done.code, 0);
    assert!(inst.recorded_argv().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_success_and_exit_code_passthrough() {
    let (url, seen) = server(Script::Finish(0)).await;
    let inst = Install::new();
    let done = run(inst
        .command(&corpus("01"))
        .env("ORCHESTRATOR_URL", &url)
        .env("PMS_IP", "192.168.2.1")
        .env("CLUSTERPLEX_TOKEN", "s3cret"))
    .await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert!(inst.recorded_argv().is_none(), "ran remotely, not locally");
    assert!(done.stderr.contains("test-worker"), "{}", done.stderr);
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.jobs.len(), 1);
        assert_eq!(
            s.jobs[0]["progress"]["plex_url"],
            "http://192.168.2.1:32499/video/:/transcode/session/f168tc7vl2desp78pov5ktwu/b12394b4-a41e-475d-bf98-4a9e52ad87c5/progress"
        );
        assert_eq!(s.needs[0]["encoders"][0], "aac");
        assert_eq!(s.tokens[0].as_deref(), Some("Bearer s3cret"));
    }

    let (url, _) = server(Script::Finish(3)).await;
    let done = run(inst
        .command(&corpus("01"))
        .env("ORCHESTRATOR_URL", &url)
        .env("PMS_IP", "192.168.2.1"))
    .await;
    assert_eq!(done.code, 3, "{}", done.stderr);

    // A job error in remote mode passes the worker's exit status through.
    let (url, _) = server(Script::JobError(5)).await;
    let done = run(inst
        .command(&corpus("01"))
        .env("ORCHESTRATOR_URL", &url)
        .env("PMS_IP", "192.168.2.1")
        .env("TRANSCODE_OPERATING_MODE", "remote"))
    .await;
    assert_eq!(done.code, 5, "{}", done.stderr);
    assert!(inst.recorded_argv().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_mode_falls_back_on_rejection_and_on_failure() {
    for script in [Script::NoWorker, Script::JobError(5)] {
        let (url, seen) = server(script).await;
        let inst = Install::new();
        let done = run(inst
            .command(&corpus("01"))
            .env("ORCHESTRATOR_URL", &url)
            .env("PMS_IP", "192.168.2.1")
            .env("STANDIN_EXIT", "4"))
        .await;
        assert_eq!(done.code, 4, "{script:?}: {}", done.stderr);
        assert_eq!(inst.recorded_argv().unwrap(), corpus("01"));
        assert!(done.stderr.contains("fallback"), "{}", done.stderr);
        assert_eq!(seen.lock().unwrap().jobs.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eae_and_credits_jobs_stay_local() {
    let (url, seen) = server(Script::Finish(0)).await;
    let inst = Install::new();
    let done = run(inst
        .command(&corpus("03"))
        .env("ORCHESTRATOR_URL", &url)
        .env("PMS_IP", "192.168.2.1")
        .env("TRANSCODE_EAE_LOCALLY", "true"))
    .await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert!(inst.recorded_argv().is_some());
    assert!(done.stderr.contains("EasyAudioEncoder"), "{}", done.stderr);

    // "false" means false (ClusterPlex's Node shim read it as true): the job goes remote.
    let inst2 = Install::new();
    let done = run(inst2
        .command(&corpus("03"))
        .env("ORCHESTRATOR_URL", &url)
        .env("PMS_IP", "192.168.2.1")
        .env("TRANSCODE_EAE_LOCALLY", "false"))
    .await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert!(inst2.recorded_argv().is_none());

    let credits = inst.path().join("PlexCreditsDetection-1234");
    std::fs::create_dir(&credits).unwrap();
    let _ = std::fs::remove_file(inst.path().join("argv"));
    let done = run(inst
        .command(&corpus("01"))
        .current_dir(&credits)
        .env("ORCHESTRATOR_URL", &url)
        .env("PMS_IP", "192.168.2.1"))
    .await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert!(inst.recorded_argv().is_some());
    assert!(done.stderr.contains("credits detection"), "{}", done.stderr);
    assert_eq!(
        seen.lock().unwrap().jobs.len(),
        1,
        "only the EAE_LOCALLY=false job was submitted"
    );

    let done = run(inst
        .command(&corpus("01"))
        .env("TRANSCODE_EAE_LOCALLY", "maybe"))
    .await;
    assert_eq!(done.code, 1);
    assert!(done.stderr.contains("not a boolean"), "{}", done.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_kill_the_local_child() {
    for (sig, code) in [("TERM", 143), ("INT", 130)] {
        let inst = Install::new();
        let child = inst
            .command(&corpus("01"))
            .env("TRANSCODE_OPERATING_MODE", "local")
            .env("STANDIN_SLEEP", "30")
            .spawn()
            .unwrap();
        let shim_pid = child.id().unwrap();
        let standin = inst.wait_for_pid().await;
        assert!(alive(standin));
        kill(shim_pid, sig).await;
        let done = finish(child).await;
        assert_eq!(done.code, code, "{}", done.stderr);
        assert!(!alive(standin), "the stand-in transcoder outlived the shim");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_cancels_the_remote_job() {
    for (sig, code) in [("TERM", 143), ("INT", 130)] {
        let (url, seen) = server(Script::Hang).await;
        let inst = Install::new();
        let child = inst
            .command(&corpus("01"))
            .env("ORCHESTRATOR_URL", &url)
            .env("PMS_IP", "192.168.2.1")
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        wait_submitted(&seen).await;
        kill(pid, sig).await;
        let done = finish(child).await;
        assert_eq!(done.code, code, "{}", done.stderr);
        wait_cancelled(&seen).await;
        assert!(inst.recorded_argv().is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_shim_takes_its_local_child_along() {
    let inst = Install::new();
    let child = inst
        .command(&corpus("01"))
        .env("TRANSCODE_OPERATING_MODE", "local")
        .env("STANDIN_SLEEP", "60")
        .spawn()
        .unwrap();
    let shim_pid = child.id().unwrap();
    let standin = inst.wait_for_pid().await;
    assert!(alive(standin));
    // The stand-in is the shim's direct child (the guard exec'd into it), with the exact argv.
    let stat = std::fs::read_to_string(format!("/proc/{standin}/stat")).unwrap();
    let ppid: u32 = stat
        .split(") ")
        .nth(1)
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ppid, shim_pid);
    assert_eq!(inst.recorded_argv().unwrap(), corpus("01"));
    // No handler can run on SIGKILL; the kernel must take the child down.
    kill(shim_pid, "KILL").await;
    let done = finish(child).await;
    assert_eq!(done.code, -1, "killed by a signal");
    let mut gone = false;
    for _ in 0..200 {
        if !alive(standin) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the local transcoder outlived a SIGKILLed shim");
}

fn jellyfin_hls(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["-i", "/media/movie.mkv", "-map", "0:v:0", "-c:v", "libx264"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v.extend(
        [
            "-f",
            "hls",
            "-hls_time",
            "3",
            "-start_number",
            "0",
            "/cache/transcodes/x.m3u8",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_probes_go_to_the_local_transcoder_untouched() {
    let (url, seen) = server(Script::Finish(0)).await;
    for probe in [
        vec!["-version"],
        vec!["-hide_banner", "-encoders"],
        vec!["-h", "filter=tonemap_opencl"],
        vec!["-hwaccels"],
    ] {
        let args: Vec<String> = probe.iter().map(|s| s.to_string()).collect();
        let inst = Install::new();
        let out = inst
            .command(&args)
            .env("ORCHESTRATOR_URL", &url)
            .env("TRANSCODE_OPERATING_MODE", "remote")
            .env("STANDIN_STDOUT", "ffmpeg version 6.0.1 stand-in")
            .env("STANDIN_EXIT", "3")
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "exit code passes through");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ffmpeg version 6.0.1 stand-in\n",
            "stdout is the transcoder's, unchanged"
        );
        assert_eq!(inst.recorded_argv().unwrap(), args);
    }
    assert!(
        seen.lock().unwrap().jobs.is_empty(),
        "probes never go remote"
    );
}

#[tokio::test]
async fn version_is_answered_without_a_local_transcoder() {
    let inst = Install::new();
    std::fs::remove_file(inst.path().join("originalTranscoder")).unwrap();
    for args in [vec!["-version"], vec!["-hide_banner", "-version"]] {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = inst.command(&args).output().await.unwrap();
        assert_eq!(out.status.code(), Some(0));
        let stdout = String::from_utf8_lossy(&out.stdout);
        // Jellyfin's check: ^ffmpeg version n?((?:[0-9]+\.?)+), at least 4.4.
        let first = stdout.lines().next().unwrap();
        let ver: String = first
            .strip_prefix("ffmpeg version ")
            .unwrap()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let parts: Vec<u32> = ver.split('.').filter_map(|p| p.parse().ok()).collect();
        assert!(parts >= vec![4, 4], "{first}");
        assert!(stdout.contains("libavcodec     59."), "{stdout}");
        assert!(!stdout.contains("Libav developers"));
    }
    // Anything else cannot be answered truthfully: it fails, clearly.
    let out = inst
        .command(&["-encoders".to_string()])
        .output()
        .await
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("originalTranscoder"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q_on_stdin_stops_a_remote_job_with_exit_0() {
    let (url, seen) = server(Script::Hang).await;
    let inst = Install::new();
    let (child, mut stdin) = jellyfin_remote(&inst, &url, &seen).await;
    type_keys(&mut stdin, b"q\n").await;
    let done = finish(child).await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    wait_cancelled(&seen).await;
    assert!(inst.recorded_argv().is_none());
}

/// Jellyfin's pause keys (`p`, or `c` without jellyfin-ffmpeg) and resume keys (`u`, or a
/// newline) become PauseJob calls for the job id the orchestrator streams back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_keys_on_stdin_pause_and_resume_the_remote_job() {
    let (url, seen) = server(Script::Hang).await;
    let inst = Install::new();
    let (child, mut stdin) = jellyfin_remote(&inst, &url, &seen).await;
    let want = [(b"p", true), (b"u", false), (b"c", true), (b"\n", false)];
    for (n, (key, paused)) in want.iter().enumerate() {
        type_keys(&mut stdin, *key).await;
        let mut got = false;
        for _ in 0..400 {
            if seen.lock().unwrap().pauses.len() > n {
                got = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(got, "no PauseJob after {:?}", key);
        assert_eq!(
            seen.lock().unwrap().pauses[n],
            ("job-1".to_string(), *paused)
        );
    }
    type_keys(&mut stdin, b"q\n").await;
    let done = finish(child).await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    wait_cancelled(&seen).await;
    assert_eq!(seen.lock().unwrap().pauses.len(), 4);
}

/// After a remote attempt the shim is already reading stdin; a local fallback must still get
/// every key (pause `p`, resume `u`, quit `q`) as ffmpeg would, none swallowed by that read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_reaches_the_local_fallback_after_a_remote_attempt() {
    let (url, seen) = server(Script::NoWorker).await;
    let inst = Install::new();
    // An ffmpeg-like stand-in: records each line it reads, exits 0 on q.
    let script = "#!/bin/sh\nd=\"$(dirname \"$0\")\"\necho $$ > \"$d/pid\"\n\
while read -r k; do echo \"$k\" >> \"$d/keys\"; [ \"$k\" = q ] && exit 0; done\nexit 9\n";
    std::fs::write(inst.path().join("originalTranscoder"), script).unwrap();
    let (child, mut stdin) = jellyfin_remote(&inst, &url, &seen).await;
    inst.wait_for_pid().await;
    type_keys(&mut stdin, b"p\nu\nq\n").await;
    let done = finish(child).await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert!(done.stderr.contains("fallback"), "{}", done.stderr);
    assert_eq!(
        std::fs::read_to_string(inst.path().join("keys")).unwrap(),
        "p\nu\nq\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_reaches_the_local_transcoder() {
    let inst = Install::new();
    // A stand-in that behaves like ffmpeg on `q`: reads stdin, exits 0 on q.
    let script = "#!/bin/sh\nwhile read -r k; do [ \"$k\" = q ] && exit 0; done\nexit 9\n";
    let p = inst.path().join("originalTranscoder");
    std::fs::write(&p, script).unwrap();
    let mut child = inst
        .command(&jellyfin_hls(&[]))
        .env("TRANSCODE_OPERATING_MODE", "local")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"p\nq\n").await.unwrap();
    drop(stdin);
    let done = finish(child).await;
    assert_eq!(done.code, 0, "{}", done.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_progress_prints_ffmpeg_stats_lines_unless_nostats() {
    for (extra, want) in [(vec![], true), (vec!["-nostats"], false)] {
        let (url, _seen) = server(Script::ProgressThenHang).await;
        let inst = Install::new();
        let child = inst
            .command(&jellyfin_hls(&extra))
            .env("ORCHESTRATOR_URL", &url)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        kill(pid, "TERM").await;
        let done = finish(child).await;
        assert_eq!(done.code, 143);
        let line = done
            .stderr
            .split(['\r', '\n'])
            .find(|l| l.starts_with("frame="))
            .map(str::to_string);
        if !want {
            assert!(line.is_none(), "{}", done.stderr);
            continue;
        }
        let line = line.unwrap_or_else(|| panic!("no stats line: {}", done.stderr));
        assert!(done.stderr.contains(&format!("{line}\r")), "CR-terminated");
        // Jellyfin splits on spaces and reads fps=, time=, size=...kB, bitrate=...kbits/s.
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.contains(&"time=00:00:05.00"), "{line}");
        assert!(fields.contains(&"fps=50.0"), "{line}");
        assert!(fields.contains(&"speed=2.000x"), "{line}");
        assert!(line.contains("size=     640kB"), "{line}");
        assert!(fields.contains(&"bitrate=1048.6kbits/s"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_mode_resumes_locally_after_written_segments() {
    let (url, _seen) = server(Script::LostAfterSegments).await;
    let inst = Install::new();
    let args = corpus("01");
    let done = run(inst
        .command(&args)
        .env("ORCHESTRATOR_URL", &url)
        .env("PMS_IP", "192.168.2.1")
        .env("STANDIN_EXIT", "0"))
    .await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert!(
        done.stderr.contains("resuming at segment 3"),
        "{}",
        done.stderr
    );
    let got = inst.recorded_argv().expect("the local transcoder ran");
    let expected = clusterplex_core::parse::rewrite::resume_argv(&args, 3, 10.0).unwrap();
    assert_eq!(got, expected);
    let at = |opt: &str| {
        got.iter()
            .position(|a| a == opt)
            .map(|i| got[i + 1].clone())
    };
    assert_eq!(at("-ss").as_deref(), Some("10"));
    assert_eq!(at("-skip_to_segment").as_deref(), Some("3"));
}

/// A file name with bytes that are not UTF-8 cannot become a job; the original transcoder still
/// gets the argv byte for byte (and its exit code comes back), and `remote` refuses clearly.
#[tokio::test]
async fn non_utf8_argv_runs_the_original_byte_for_byte() {
    use std::os::unix::ffi::OsStrExt;
    let inst = Install::new();
    let bad = std::ffi::OsStr::from_bytes(b"/media/caf\xe9.mkv");
    let mut c = inst.command(&[]);
    c.args([
        std::ffi::OsStr::new("-i"),
        bad,
        std::ffi::OsStr::new("out.mkv"),
    ]);
    let done = run(c
        .env("TRANSCODE_OPERATING_MODE", "both")
        .env("STANDIN_EXIT", "5"))
    .await;
    assert_eq!(done.code, 5, "{}", done.stderr);
    let recorded = std::fs::read(inst.path().join("argv")).unwrap();
    assert_eq!(recorded, b"-i\n/media/caf\xe9.mkv\nout.mkv\n");

    std::fs::remove_file(inst.path().join("argv")).unwrap();
    let mut c = inst.command(&[]);
    c.args([
        std::ffi::OsStr::new("-i"),
        bad,
        std::ffi::OsStr::new("out.mkv"),
    ]);
    let done = run(c.env("TRANSCODE_OPERATING_MODE", "remote")).await;
    assert_eq!(done.code, 1);
    assert!(done.stderr.contains("not valid UTF-8"), "{}", done.stderr);
    assert!(inst.recorded_argv().is_none());
}
