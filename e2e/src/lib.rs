//! Harness for ClusterPlex's end-to-end tests: a real cluster on loopback (the
//! `clusterplex-orchestrator` binary and separate `clusterplex-worker` processes), the
//! `clusterplex-pms-contract` binary standing in for Plex Media Server, and the
//! `clusterplex-shim` binary run the way PMS runs its transcoder (as `Plex Transcoder`, argv
//! from Plex, settings from the environment, cwd = the session directory).
//!
//! Everything is a real process on loopback; processes die with the value that owns them.
//! Logs of the orchestrator and workers go to files under the cluster's temp dir and are
//! printed by [`Cluster::log_tails`] when a test wants to explain a failure.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use clusterplex_core::rpc::{self, JobServiceClient, pb};
use clusterplex_pms_contract::{Recorded, Recording};
use clusterplex_testkit::process::{Proc, free_port, http_get, metric, workspace_bins};

/// The orchestrator's shared secret in these tests.
pub const TOKEN: &str = "e2e-cluster-token";
/// What PMS puts in `X_PLEX_TOKEN`; the PMS stand-in requires it.
pub const PLEX_TOKEN: &str = "local-e2e-0b7c1e2a";

/// Paths of the four binaries, built once per test process.
pub struct Bins {
    pub shim: PathBuf,
    pub orchestrator: PathBuf,
    pub worker: PathBuf,
    pub pms: PathBuf,
}

pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let b = workspace_bins(&[
            ("clusterplex-shim", "clusterplex-shim"),
            ("clusterplex-orchestrator", "clusterplex-orchestrator"),
            ("clusterplex-worker", "clusterplex-worker"),
            ("clusterplex-pms-contract", "clusterplex-pms-contract"),
        ]);
        Bins {
            shim: b[0].clone(),
            orchestrator: b[1].clone(),
            worker: b[2].clone(),
            pms: b[3].clone(),
        }
    })
}

/// How the cluster is set up.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    pub workers: usize,
    /// `MAX_JOBS` of each worker.
    pub max_jobs: u32,
    pub strategy: &'static str,
    /// `LOST_WORKER_TIMEOUT_MS`.
    pub lost_ms: u64,
    /// `QUEUE_TIMEOUT_MS`.
    pub queue_ms: u64,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        Self {
            workers: 3,
            max_jobs: 1,
            strategy: "LOAD_RANK",
            lost_ms: 2000,
            queue_ms: 1500,
        }
    }
}

/// An orchestrator and its workers, with a media root and a sessions root they all share (as
/// ClusterPlex's shared transcode directory).
pub struct Cluster {
    pub root: tempfile::TempDir,
    /// Inputs live here (`MEDIA_ROOTS`).
    pub media: PathBuf,
    /// Session directories live here (`TRANSCODE_ROOTS`).
    pub sessions: PathBuf,
    pub grpc: u16,
    pub http: u16,
    pub opts: ClusterOpts,
    logs: PathBuf,
    orch: Option<Proc>,
    workers: BTreeMap<String, Proc>,
}

impl Cluster {
    /// Starts the orchestrator and `opts.workers` workers (`w1`, `w2`…) and waits until all
    /// have registered.
    pub async fn start(opts: ClusterOpts) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let base = root.path().canonicalize().expect("canonical tempdir");
        let (media, sessions, logs) =
            (base.join("media"), base.join("sessions"), base.join("logs"));
        for d in [&media, &sessions, &logs] {
            std::fs::create_dir_all(d).expect("create dir");
        }
        let mut c = Self {
            root,
            media,
            sessions,
            grpc: free_port(),
            http: free_port(),
            opts: opts.clone(),
            logs,
            orch: None,
            workers: BTreeMap::new(),
        };
        c.start_orchestrator();
        for i in 1..=opts.workers {
            c.start_worker(&format!("w{i}"));
        }
        c.wait_workers(opts.workers).await;
        c
    }

    /// Starts (or restarts) the orchestrator on the cluster's ports.
    pub fn start_orchestrator(&mut self) {
        let log = self.log_file("orchestrator");
        let mut cmd = Command::new(&bins().orchestrator);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LISTENING_PORT", self.grpc.to_string())
            .env("METRICS_PORT", self.http.to_string())
            .env("LISTENING_ADDRESS", "127.0.0.1")
            .env("CLUSTERPLEX_TOKEN", TOKEN)
            .env("WORKER_SELECTION_STRATEGY", self.opts.strategy)
            .env("LOST_WORKER_TIMEOUT_MS", self.opts.lost_ms.to_string())
            .env("QUEUE_TIMEOUT_MS", self.opts.queue_ms.to_string())
            .env("SHUTDOWN_GRACE_MS", "2000")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.orch = Some(Proc::spawn("orchestrator", &mut cmd));
    }

    fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))
            .expect("log file")
    }

    /// Starts worker `id` (name `node-<id>`); a running one with that id is killed first.
    pub fn start_worker(&mut self, id: &str) {
        self.workers.remove(id);
        let log = self.log_file(&format!("worker-{id}"));
        let mut cmd = Command::new(&bins().worker);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ORCHESTRATOR_URL", self.url())
            .env("CLUSTERPLEX_TOKEN", TOKEN)
            .env("WORKER_ID", id)
            .env("WORKER_NAME", format!("node-{id}"))
            .env("WORKER_SCORE", "100")
            .env("MAX_JOBS", self.opts.max_jobs.to_string())
            .env("LISTENING_PORT", "0")
            .env("STAT_CPU_INTERVAL", "200")
            .env("MEDIA_ROOTS", &self.media)
            .env("TRANSCODE_ROOTS", &self.sessions)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.workers.insert(
            id.to_string(),
            Proc::spawn(&format!("worker {id}"), &mut cmd),
        );
    }

    /// SIGKILLs worker `id`; false when it was not running.
    pub fn kill_worker(&mut self, id: &str) -> bool {
        match self.workers.remove(id) {
            Some(mut p) => {
                p.signal("KILL");
                let _ = p.wait_timeout(Duration::from_secs(5));
                true
            }
            None => false,
        }
    }

    /// SIGKILLs the orchestrator.
    pub fn kill_orchestrator(&mut self) {
        self.orch = None;
    }

    /// Ids of the worker processes this harness has running.
    pub fn running_workers(&self) -> Vec<String> {
        self.workers.keys().cloned().collect()
    }

    /// The gRPC URL shims and workers use.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// `GET /metrics` (empty when the orchestrator does not answer).
    pub fn metrics(&self) -> String {
        http_get(self.http, "/metrics").unwrap_or_default()
    }

    /// One unlabelled metric; panics (with the text) when it is missing.
    pub fn metric(&self, name: &str) -> f64 {
        let m = self.metrics();
        metric(&m, name).unwrap_or_else(|| panic!("metric {name} missing in:\n{m}"))
    }

    /// A job-service client (retries the connection for up to 20 s).
    pub async fn client(&self) -> JobServiceClient<rpc::AuthChannel> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match rpc::job_client(&self.url(), Some(TOKEN), Duration::from_secs(1)).await {
                Ok(c) => return c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("orchestrator not reachable: {e}\n{}", self.log_tails()),
            }
        }
    }

    pub async fn list_workers(&self) -> Vec<pb::WorkerInfo> {
        let mut c = self.client().await;
        c.list_workers(pb::ListWorkersRequest {})
            .await
            .expect("ListWorkers")
            .into_inner()
            .workers
    }

    pub async fn list_jobs(&self) -> Vec<pb::JobInfo> {
        let mut c = self.client().await;
        c.list_jobs(pb::ListJobsRequest {})
            .await
            .expect("ListJobs")
            .into_inner()
            .jobs
    }

    /// Waits (up to 30 s) until exactly `n` workers are registered.
    pub async fn wait_workers(&self, n: usize) -> Vec<pb::WorkerInfo> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ws = self.list_workers().await;
            if ws.len() == n {
                return ws;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} workers, have {}\n{}",
                ws.len(),
                self.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new empty session directory under the sessions root, named like Plex's.
    pub fn session_dir(&self, key: &str) -> PathBuf {
        let d = self.sessions.join(format!("plex-transcode-{key}-0b7c1e2a"));
        std::fs::create_dir_all(&d).expect("session dir");
        d
    }

    /// Copies (hard-links when possible) a fixture into the media root, as `name`.
    pub fn media_file(&self, fixture: &Path, name: &str) -> PathBuf {
        let dst = self.media.join(name);
        if !dst.exists() && std::fs::hard_link(fixture, &dst).is_err() {
            std::fs::copy(fixture, &dst).expect("copy fixture into the media root");
        }
        dst
    }

    /// The last lines of every log, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.logs) {
            let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(15)..];
                out.push_str(&format!(
                    "--- {} (last {} lines)\n{}\n",
                    f.display(),
                    tail.len(),
                    tail.join("\n")
                ));
            }
        }
        out
    }
}

/// The `clusterplex-pms-contract` binary on a free port, checking manifests against one
/// session directory and requiring [`PLEX_TOKEN`].
pub struct Pms {
    pub port: u16,
    _proc: Proc,
}

impl Pms {
    pub fn start(session_dir: &Path) -> Self {
        let mut cmd = Command::new(&bins().pms);
        cmd.args(["--port", "0", "--token", PLEX_TOKEN, "--session-dir"])
            .arg(session_dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut proc = Proc::spawn("pms-contract", &mut cmd);
        let stdout = proc.child().stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the PMS-contract address");
        let port = line
            .trim()
            .strip_prefix("PMS_CONTRACT_URL=http://127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from pms-contract: {line:?}"));
        Self { port, _proc: proc }
    }

    /// Everything received so far.
    pub fn recording(&self) -> Recording {
        let body = http_get(self.port, "/_recording").expect("GET /_recording");
        let requests: Vec<Recorded> =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad recording JSON: {e}"));
        Recording { requests }
    }
}

/// The original transcoder's stand-in (records its argv, exits with `STANDIN_EXIT`, default
/// 0) and the shim installed as `Plex Transcoder` next to it, as ClusterPlex installs it.
pub struct Install {
    dir: tempfile::TempDir,
}

impl Default for Install {
    fn default() -> Self {
        Self::new()
    }
}

impl Install {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = "#!/bin/sh\nd=\"$(dirname \"$0\")\"\n: > \"$d/argv.tmp\"\n\
for a in \"$@\"; do printf '%s\\n' \"$a\" >> \"$d/argv.tmp\"; done\n\
mv \"$d/argv.tmp\" \"$d/argv\"\nexit \"${STANDIN_EXIT:-0}\"\n";
        let p = dir.path().join("originalTranscoder");
        std::fs::write(&p, script).expect("write stand-in");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::symlink(&bins().shim, dir.path().join("Plex Transcoder"))
            .expect("symlink the shim");
        Self { dir }
    }

    /// Like [`Install::new`], but the original transcoder really transcodes: after recording
    /// its argv it runs them with `clusterplex-worker run` (the engine honours Plex's options;
    /// Plex's own binary is not available to tests). For `both`-mode fallbacks that must write
    /// segments.
    pub fn with_engine() -> Self {
        let install = Self::new();
        let script = format!(
            "#!/bin/sh\nd=\"$(dirname \"$0\")\"\n: > \"$d/argv.tmp\"\n\
for a in \"$@\"; do printf '%s\\n' \"$a\" >> \"$d/argv.tmp\"; done\n\
mv \"$d/argv.tmp\" \"$d/argv\"\nCLUSTERPLEX_PROGRESS=none exec '{}' run -- \"$@\"\n",
            bins().worker.display()
        );
        std::fs::write(install.path().join("originalTranscoder"), script).expect("write stand-in");
        install
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The argv the original transcoder got, if it ran.
    pub fn original_ran_with(&self) -> Option<Vec<String>> {
        std::fs::read_to_string(self.path().join("argv"))
            .ok()
            .map(|s| s.lines().map(str::to_string).collect())
    }

    /// Forgets an earlier run of the original transcoder.
    pub fn reset(&self) {
        let _ = std::fs::remove_file(self.path().join("argv"));
    }

    /// The shim as PMS runs it: `args`, cwd `session_dir`, a clean environment with the
    /// cluster's URL and token, `PMS_IP=127.0.0.1` and the relay port set to the PMS stand-in,
    /// so the shim's rewriting points Plex's loopback URLs at it. `mode` is
    /// `TRANSCODE_OPERATING_MODE`.
    pub fn shim(
        &self,
        orchestrator_url: &str,
        pms_port: u16,
        session_dir: &Path,
        mode: &str,
        args: &[String],
    ) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(self.path().join("Plex Transcoder"));
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TRANSCODER_PATH", self.path())
            .env("ORCHESTRATOR_URL", orchestrator_url)
            .env("CLUSTERPLEX_TOKEN", TOKEN)
            .env("CLUSTERPLEX_CONNECT_TIMEOUT_MS", "1000")
            .env("TRANSCODE_OPERATING_MODE", mode)
            .env("PMS_IP", "127.0.0.1")
            .env("LOCAL_RELAY_ENABLED", "true")
            .env("LOCAL_RELAY_PORT", pms_port.to_string())
            .env("X_PLEX_TOKEN", PLEX_TOKEN)
            .current_dir(session_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }
}

/// How a shim run ended.
#[derive(Debug, Clone)]
pub struct Done {
    /// Exit code (128 + signal when killed by one).
    pub code: i32,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Done {
    /// The worker named in the shim's "job accepted" log line.
    pub fn worker(&self) -> Option<String> {
        accepted_worker(&self.stderr)
    }
}

/// The worker named in a shim log's "job accepted by a worker" line (`worker=node-w2`).
pub fn accepted_worker(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .filter(|l| l.contains("job accepted by a worker"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("worker="))
                .map(|w| w.trim_matches('"').to_string())
        })
        .next_back()
}

/// Waits for a spawned shim (at most `limit`; a hang is a test failure).
pub async fn finish(child: tokio::process::Child, limit: Duration) -> Done {
    use std::os::unix::process::ExitStatusExt;
    let t0 = Instant::now();
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the shim did not exit within {limit:?}"))
        .expect("wait for the shim");
    Done {
        code: out
            .status
            .code()
            .or_else(|| out.status.signal().map(|s| 128 + s))
            .unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: t0.elapsed(),
    }
}

/// Plex's argv with the value of the n-th `-i` replaced by `inputs[n]` and any absolute output
/// path (the last argument, as in Optimize jobs) moved into `session_dir`.
pub fn point_at(args: &[String], inputs: &[PathBuf], session_dir: &Path) -> Vec<String> {
    let mut out = args.to_vec();
    let mut n = 0;
    for i in 1..out.len() {
        if out[i - 1] == "-i" {
            let p = inputs
                .get(n)
                .unwrap_or_else(|| panic!("argv has more than {} inputs", inputs.len()));
            out[i] = p.to_string_lossy().into_owned();
            n += 1;
        }
    }
    assert_eq!(n, inputs.len(), "argv has {n} inputs");
    if let Some(last) = out.last_mut()
        && last.starts_with('/')
    {
        let name = Path::new(last.as_str())
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        *last = session_dir.join(name).to_string_lossy().into_owned();
    }
    out
}

/// Reads a corpus command line (`/work/shared/corpus/plex-args/NN.txt` as checked into
/// `clusterplex-core/tests/corpus/plex/`): one argument per line.
pub fn corpus(name: &str) -> Vec<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../clusterplex-core/tests/corpus/plex")
        .join(format!("{name}.txt"));
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

/// DASH chunk numbers on disk per representation (`chunk-stream<R>-<NNNNN>.m4s`).
pub fn dash_chunks(dir: &Path) -> BTreeMap<u32, Vec<u64>> {
    let mut reps: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix("chunk-stream")
            .and_then(|r| r.strip_suffix(".m4s"))
        else {
            continue;
        };
        if let Some((r, n)) = rest.split_once('-')
            && let (Ok(r), Ok(n)) = (r.parse(), n.parse())
        {
            reps.entry(r).or_default().push(n);
        }
    }
    for v in reps.values_mut() {
        v.sort_unstable();
    }
    reps
}

/// What a DASH session directory holds, checked.
#[derive(Debug, Default)]
pub struct DashCheck {
    /// Chunk numbers per representation.
    pub chunks: BTreeMap<u32, Vec<u64>>,
    /// Codec per representation (ffprobe of init + chunks).
    pub codecs: BTreeMap<u32, String>,
    /// Duration per representation in seconds.
    pub durations: BTreeMap<u32, f64>,
    /// Start time per representation in seconds (the first chunk's `tfdt`).
    pub starts: BTreeMap<u32, f64>,
    /// Everything wrong.
    pub violations: Vec<String>,
}

/// Checks the DASH output in `dir`: `reps` representations, chunks numbered contiguously from
/// `first` (the same numbers for every representation), and init + chunks of each
/// representation concatenated decode without errors.
/// Chunks numbered below `first` (left by an earlier job of the session, before a seek) are
/// ignored, and the init segments must be this job's.
pub fn check_dash(dir: &Path, reps: u32, first: u64) -> DashCheck {
    let mut chunks = dash_chunks(dir);
    for v in chunks.values_mut() {
        v.retain(|n| *n >= first);
    }
    chunks.retain(|_, v| !v.is_empty());
    let mut c = DashCheck {
        chunks,
        ..Default::default()
    };
    if c.chunks.len() != reps as usize {
        c.violations.push(format!(
            "chunks for representations {:?}, expected 0..{reps}",
            c.chunks.keys().collect::<Vec<_>>()
        ));
    }
    let reference = c.chunks.values().next().cloned().unwrap_or_default();
    for (r, nums) in &c.chunks {
        let want: Vec<u64> = (first..first + nums.len() as u64).collect();
        if nums.is_empty() || *nums != want {
            c.violations.push(format!(
                "stream {r}: chunks {nums:?} are not contiguous from {first}"
            ));
        }
        if *nums != reference {
            c.violations.push(format!(
                "stream {r}: chunks {nums:?} differ from stream 0's {reference:?}"
            ));
        }
        let init = dir.join(format!("init-stream{r}.m4s"));
        let Ok(mut data) = std::fs::read(&init) else {
            c.violations.push(format!("{} missing", init.display()));
            continue;
        };
        for n in nums {
            data.extend(
                std::fs::read(dir.join(format!("chunk-stream{r}-{n:05}.m4s"))).unwrap_or_default(),
            );
        }
        let joined = dir.join(format!(".e2e-joined-{r}.mp4"));
        std::fs::write(&joined, &data).expect("write joined representation");
        match clusterplex_testkit::try_probe(&joined) {
            Ok(info) => {
                if let Some(s) = info.streams().first() {
                    c.codecs
                        .insert(*r, s["codec_name"].as_str().unwrap_or("").to_string());
                }
                if let Some(d) = info.duration() {
                    c.durations.insert(*r, d);
                }
                if let Some(t) = info.start_time() {
                    c.starts.insert(*r, t);
                }
            }
            Err(e) => c
                .violations
                .push(format!("stream {r}: ffprobe cannot read it: {e}")),
        }
        let errs = clusterplex_testkit::decode_errors(&joined);
        if !errs.trim().is_empty() {
            let first_lines: Vec<&str> = errs.trim().lines().take(3).collect();
            c.violations.push(format!(
                "stream {r}: decode errors ({} lines): {}; chunk time spans: {}",
                errs.trim().lines().count(),
                first_lines.join(" | "),
                chunk_spans(dir, *r, nums)
            ));
        }
        let _ = std::fs::remove_file(&joined);
    }
    c
}

/// Presentation times (seconds) of every packet of representation `r`: its init segment and
/// chunks `nums` joined, as a player appends them.
pub fn joined_packet_times(dir: &Path, r: u32, nums: &[u64]) -> Vec<f64> {
    let mut data = std::fs::read(dir.join(format!("init-stream{r}.m4s"))).unwrap_or_default();
    for n in nums {
        data.extend(
            std::fs::read(dir.join(format!("chunk-stream{r}-{n:05}.m4s"))).unwrap_or_default(),
        );
    }
    let joined = dir.join(format!(".e2e-times-{r}.mp4"));
    std::fs::write(&joined, &data).expect("write joined representation");
    let mut times: Vec<f64> = clusterplex_testkit::packets(&joined, "0")
        .iter()
        .filter_map(|p| clusterplex_testkit::num(&p["pts_time"]))
        .collect();
    let _ = std::fs::remove_file(&joined);
    times.sort_by(f64::total_cmp);
    times
}

/// `number: first..last` packet times of each chunk of representation `r`, for messages.
fn chunk_spans(dir: &Path, r: u32, nums: &[u64]) -> String {
    let init = std::fs::read(dir.join(format!("init-stream{r}.m4s"))).unwrap_or_default();
    let mut out = Vec::new();
    for n in nums {
        let mut data = init.clone();
        data.extend(
            std::fs::read(dir.join(format!("chunk-stream{r}-{n:05}.m4s"))).unwrap_or_default(),
        );
        let one = dir.join(format!(".e2e-chunk-{r}-{n}.mp4"));
        if std::fs::write(&one, &data).is_err() {
            continue;
        }
        let times: Vec<f64> = clusterplex_testkit::packets(&one, "0")
            .iter()
            .filter_map(|p| clusterplex_testkit::num(&p["dts_time"]))
            .collect();
        let _ = std::fs::remove_file(&one);
        match (times.first(), times.last()) {
            (Some(a), Some(b)) => out.push(format!("{n}: {a:.2}..{b:.2}")),
            _ => out.push(format!("{n}: no packets")),
        }
    }
    out.join(", ")
}

/// All the PMS-contract checks that hold for any finished Plex DASH session.
pub fn contract_violations(rec: &Recording, skip_to_segment: u64) -> Vec<String> {
    [
        rec.check_order(),
        rec.check_token(PLEX_TOKEN),
        rec.check_manifests_list_existing_chunks(),
        rec.check_start_number(skip_to_segment),
        rec.check_static_only_last(),
        rec.check_progress_monotonic(),
    ]
    .concat()
}

/// A Plex-style DASH playback argv (the shape of corpus line 01 with 2 s segments): video
/// copied, audio to stereo AAC, callbacks to `base` (`…/transcode/session/<key>/<uuid>` on
/// PMS's loopback address, as Plex writes it). `seek` adds `-ss` before the input, `realtime`
/// adds `-re` (to keep a job running long enough to act on it).
pub fn plex_dash_args(
    input: &Path,
    base: &str,
    skip_to_segment: u64,
    seek: Option<f64>,
    realtime: bool,
) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|x| x.to_string()));
    if realtime {
        push(&["-re"]);
    }
    push(&["-codec:0", "h264", "-codec:1", "aac"]);
    let ss = seek.map(|s| format!("{s}"));
    if let Some(ss) = &ss {
        push(&["-ss", ss]);
    }
    let input = input.to_string_lossy();
    let progress = format!("{base}/progress");
    let manifest = format!("{base}/manifest?X-Plex-Http-Pipeline=infinite");
    push(&[
        "-noaccurate_seek",
        "-analyzeduration",
        "20000000",
        "-probesize",
        "20000000",
        "-i",
        &input,
        "-start_at_zero",
        "-copyts",
        "-fps_mode",
        "cfr",
        "-y",
        "-nostats",
        "-loglevel",
        "quiet",
        "-loglevel_plex",
        "error",
        "-progressurl",
        &progress,
    ]);
    a.extend(clusterplex_testkit::plex_dash_outputs(
        &["copy"],
        skip_to_segment,
    ));
    a.extend(
        [
            "-metadata:s:1",
            "language=eng",
            "-manifest_name",
            &manifest,
            "-map_metadata",
            "-1",
            "-map_chapters",
            "-1",
            "dash",
        ]
        .map(String::from),
    );
    a
}

/// `http://127.0.0.1:32400/video/:/transcode/session/<key>/<uuid>`: where Plex's argv points.
pub fn plex_base(key: &str) -> String {
    format!(
        "http://127.0.0.1:32400/video/:/transcode/session/{key}/6f1c2d3e-0000-4000-8000-00000000e2e0"
    )
}

/// Waits (up to `limit`) until `path` exists.
pub async fn wait_file(path: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}
