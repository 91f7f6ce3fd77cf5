//! The cluster agent: registers with the orchestrator, holds one bidirectional gRPC stream, runs
//! the jobs it is given in-process (any [`JobRunner`]: the engine in the binary, a no-op runner
//! in benches), and reconnects with backoff forever.

pub mod paths;
pub mod score;
pub mod wake;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clap::Parser;
use clusterplex_core::{
    CancelToken, Capabilities, JobEvent, JobRunner,
    conn::OrchestratorConn,
    load::{CpuTimes, parse_meminfo},
    rpc::{self, Event, PROTOCOL_VERSION, TokenInterceptor, WorkerServiceClient, pb},
};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

pub use paths::PathPolicy;

/// `clusterplex-worker [agent]`: joins a ClusterPlex cluster and runs the jobs it is given.
#[derive(Debug, Clone, Parser)]
#[command(name = "clusterplex-worker", version, about)]
pub struct Args {
    /// How to reach the orchestrator.
    #[command(flatten)]
    pub conn: OrchestratorConn,
    /// Port of this worker's `GET /health` (0 = off).
    #[arg(long, env = "LISTENING_PORT", default_value_t = 3501)]
    pub listening_port: u16,
    /// Load report (and progress) interval in milliseconds.
    #[arg(long, env = "STAT_CPU_INTERVAL", default_value_t = 2000)]
    pub stat_cpu_interval: u64,
    /// Stable worker id; default: `<hostname>` (a reconnect with the same id replaces the old).
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<String>,
    /// Display name (metrics label `worker_name`); default: the hostname.
    #[arg(long, env = "WORKER_NAME")]
    pub worker_name: Option<String>,
    /// Jobs run at the same time.
    #[arg(long, env = "MAX_JOBS", default_value_t = 2)]
    pub max_jobs: u32,
    /// Fixed benchmark score instead of measuring one at start.
    #[arg(long, env = "WORKER_SCORE")]
    pub worker_score: Option<f64>,
    /// Where the measured score is cached.
    #[arg(long, env = "CACHE_DIR", default_value = "/tmp/clusterplex-cache")]
    pub cache_dir: PathBuf,
    /// Comma-separated directories inputs may be read from (empty: any path).
    #[arg(long, env = "MEDIA_ROOTS", value_delimiter = ',')]
    pub media_roots: Vec<PathBuf>,
    /// Comma-separated directories outputs may be written to, besides the job's working
    /// directory (which must itself be inside one of these when any is set).
    #[arg(long, env = "TRANSCODE_ROOTS", value_delimiter = ',')]
    pub transcode_roots: Vec<PathBuf>,
    /// Allow http(s) inputs and outputs (Plex's callback URLs, network streams).
    #[arg(long, env = "ALLOW_URLS", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_urls: bool,
    /// Power saving: command run with `sh -c` when the orchestrator tells this idle worker to
    /// sleep (e.g. `systemctl suspend`); empty = this worker never sleeps.
    #[arg(long, env = "CLUSTERPLEX_SLEEP_COMMAND", default_value = "")]
    pub sleep_command: String,
    /// Power saving: the MAC a Wake-on-LAN packet wakes this machine with; default: the MAC of
    /// the network interface that reaches the orchestrator (Linux).
    #[arg(long, env = "CLUSTERPLEX_WOL_MAC")]
    pub wol_mac: Option<String>,
}

/// The agent's settings, independent of how they were given.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub conn: OrchestratorConn,
    pub worker_id: String,
    pub name: String,
    pub max_jobs: u32,
    pub report_interval: Duration,
    pub score: f64,
    pub capabilities: Capabilities,
    pub paths: PathPolicy,
    /// Run (`sh -c`) when told to sleep; None: this worker never sleeps.
    pub sleep_command: Option<String>,
    /// Wake-on-LAN MAC to register with; None: detected per connection.
    pub wol_mac: Option<String>,
}

impl AgentConfig {
    /// A config for tests and benches: no path restrictions, fixed score.
    pub fn simple(url: &str, worker_id: &str) -> Self {
        Self {
            conn: OrchestratorConn {
                orchestrator_url: url.into(),
                ..Default::default()
            },
            worker_id: worker_id.into(),
            name: worker_id.into(),
            max_jobs: 1,
            report_interval: Duration::from_millis(500),
            score: 100.0,
            capabilities: Capabilities::default(),
            paths: PathPolicy::default(),
            sleep_command: None,
            wol_mac: None,
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".into())
}

/// Entry point for `clusterplex-worker [agent] [flags]`.
pub fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("agent") {
        argv.remove(1);
    }
    let args = Args::parse_from(argv);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("clusterplex-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run_from_args(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clusterplex-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_from_args(args: Args) -> anyhow::Result<()> {
    let host = hostname();
    let runner: Arc<dyn JobRunner> = Arc::new(clusterplex_ffmpeg::engine::Engine::new());
    let capabilities = probe_capabilities();
    let score = match args.worker_score {
        Some(s) => s,
        None => {
            let dir = args.cache_dir.clone();
            tokio::task::spawn_blocking(move || score::cached_or_measure(&dir)).await?
        }
    };
    let paths = PathPolicy::new(&args.media_roots, &args.transcode_roots, args.allow_urls)?;
    let wol_mac = match args.wol_mac.as_deref().filter(|m| !m.trim().is_empty()) {
        Some(m) => Some(rpc::format_mac(&rpc::parse_mac(m).ok_or_else(|| {
            anyhow::anyhow!("CLUSTERPLEX_WOL_MAC `{m}` is not a MAC address like aa:bb:cc:dd:ee:ff")
        })?)),
        None => None,
    };
    let cfg = AgentConfig {
        conn: args.conn.clone(),
        worker_id: args.worker_id.clone().unwrap_or_else(|| host.clone()),
        name: args.worker_name.clone().unwrap_or(host),
        max_jobs: args.max_jobs.max(1),
        report_interval: Duration::from_millis(args.stat_cpu_interval.max(50)),
        score,
        capabilities,
        paths,
        sleep_command: Some(args.sleep_command.trim().to_string()).filter(|c| !c.is_empty()),
        wol_mac,
    };
    tracing::info!(
        id = cfg.worker_id,
        score = cfg.score,
        slots = cfg.max_jobs,
        "worker starting"
    );
    if args.listening_port != 0 {
        let addr = SocketAddr::from(([0, 0, 0, 0], args.listening_port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("health port {addr}: {e}"))?;
        let app = axum::Router::new().route("/health", axum::routing::get(|| async { "Healthy" }));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("health server: {e}");
            }
        });
    }
    let agent = tokio::spawn(run_agent(cfg, runner));
    tokio::select! {
        _ = agent => {}
        _ = shutdown_signal() => tracing::info!("worker stopping"),
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// What this process's libav can do.
pub fn probe_capabilities() -> Capabilities {
    clusterplex_ffmpeg::caps::probe()
}

/// Starts `n` agents inside this process (the orchestrator's `--local-workers`), each with the
/// engine, this machine's capabilities and an equal share of a measured score.
pub fn spawn_local_workers(
    url: &str,
    token: Option<&str>,
    tls_ca: Option<PathBuf>,
    n: u32,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let caps = probe_capabilities();
    let score = score::measure();
    let host = hostname();
    let runner: Arc<dyn JobRunner> = Arc::new(clusterplex_ffmpeg::engine::Engine::new());
    Ok((0..n)
        .map(|i| {
            let mut cfg = AgentConfig::simple(url, &format!("{host}-local-{i}"));
            cfg.conn.token = token.map(str::to_string);
            cfg.conn.tls_ca = tls_ca.clone();
            cfg.capabilities = caps.clone();
            cfg.score = score;
            cfg.report_interval = Duration::from_secs(2);
            tokio::spawn(run_agent(cfg, Arc::clone(&runner)))
        })
        .collect())
}

/// Jobs this agent is running, by id (kept across reconnects).
type Running = Arc<Mutex<HashMap<String, CancelToken>>>;

/// Runs the agent forever: connect, register, serve; on any failure wait (1 s doubling to
/// 30 s, reset after a healthy connection, each wait jittered) and connect again.
pub async fn run_agent(cfg: AgentConfig, runner: Arc<dyn JobRunner>) {
    let running: Running = Arc::default();
    // Job events from job threads; one agent-wide queue so events survive a reconnect.
    let (events_tx, events_rx) = mpsc::unbounded_channel::<pb::WorkerMessage>();
    let events_rx = Arc::new(tokio::sync::Mutex::new(events_rx));
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        match connect_once(&cfg, &runner, &running, &events_tx, &events_rx).await {
            Ok(()) => tracing::warn!(
                url = cfg.conn.orchestrator_url,
                "orchestrator closed the stream"
            ),
            Err(e) => tracing::warn!(
                url = cfg.conn.orchestrator_url,
                "orchestrator connection: {e}"
            ),
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_secs(1);
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// A random wait between half of `d` and `d`, so that workers which lost the orchestrator
/// together (it restarted) do not all reconnect in the same instant.
fn jittered(d: Duration) -> Duration {
    use std::hash::BuildHasher;
    // RandomState is seeded per process and per call: random enough to spread reconnects,
    // without a random-number crate.
    let r = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    d.mul_f64(0.5 + (r % 1024) as f64 / 2048.0)
}

fn worker_msg(msg: pb::worker_message::Msg) -> pb::WorkerMessage {
    pb::WorkerMessage { msg: Some(msg) }
}

async fn connect_once(
    cfg: &AgentConfig,
    runner: &Arc<dyn JobRunner>,
    running: &Running,
    events_tx: &mpsc::UnboundedSender<pb::WorkerMessage>,
    events_rx: &Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<pb::WorkerMessage>>>,
) -> anyhow::Result<()> {
    let channel = rpc::connect_channel_tls(
        &cfg.conn.orchestrator_url,
        cfg.conn.connect_timeout(),
        cfg.conn.tls_ca.as_deref(),
    )
    .await?;
    let mut client =
        WorkerServiceClient::with_interceptor(channel, TokenInterceptor::new(cfg.conn.token())?);
    let (up_tx, up_rx) = mpsc::channel::<pb::WorkerMessage>(1024);
    let running_ids: Vec<String> = lock(running).keys().cloned().collect();
    let wake_mac = match &cfg.sleep_command {
        Some(_) => wake::wake_mac(cfg.wol_mac.as_deref(), &cfg.conn.orchestrator_url).await,
        None => String::new(),
    };
    if cfg.sleep_command.is_some() && wake_mac.is_empty() {
        tracing::warn!(
            "a sleep command is set but no wake MAC is known (set CLUSTERPLEX_WOL_MAC): this worker is never told to sleep"
        );
    }
    up_tx
        .send(worker_msg(pb::worker_message::Msg::Register(
            pb::Register {
                worker_id: cfg.worker_id.clone(),
                name: cfg.name.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
                protocol_version: PROTOCOL_VERSION,
                capabilities: Some((&cfg.capabilities).into()),
                benchmark_score: cfg.score,
                max_jobs: cfg.max_jobs,
                running_job_ids: running_ids,
                can_sleep: cfg.sleep_command.is_some(),
                wake_mac,
            },
        )))
        .await?;
    let response = client.attach(ReceiverStream::new(up_rx)).await?;
    let mut down = response.into_inner();

    // Forward job events and send load reports for as long as this connection lives.
    let fwd_tx = up_tx.clone();
    let events_rx = Arc::clone(events_rx);
    let forwarder = AbortOnDrop(tokio::spawn(async move {
        let mut rx = events_rx.lock().await;
        while let Some(m) = rx.recv().await {
            if fwd_tx.send(m).await.is_err() {
                break;
            }
        }
    }));
    let rep_tx = up_tx.clone();
    let rep_running = Arc::clone(running);
    let interval = cfg.report_interval;
    let reporter = AbortOnDrop(tokio::spawn(async move {
        let mut last = CpuTimes::read();
        loop {
            tokio::time::sleep(interval).await;
            let now = CpuTimes::read();
            let cpu = match (&now, &last) {
                (Some(n), Some(l)) => n.percent_since(l),
                _ => 0.0,
            };
            last = now;
            let (mem_used, mem_total) = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| parse_meminfo(&m))
                .unwrap_or_default();
            let running_jobs = u32::try_from(lock(&rep_running).len()).unwrap_or(u32::MAX);
            let report = pb::LoadReport {
                cpu_percent: cpu,
                running_jobs,
                mem_used_bytes: mem_used,
                mem_total_bytes: mem_total,
            };
            if rep_tx
                .send(worker_msg(pb::worker_message::Msg::Load(report)))
                .await
                .is_err()
            {
                break;
            }
        }
    }));

    while let Some(msg) = down.next().await {
        let msg = msg?;
        match msg.msg {
            Some(pb::orchestrator_message::Msg::Registered(r)) => {
                tracing::info!(orchestrator = r.orchestrator_version, "registered");
            }
            Some(pb::orchestrator_message::Msg::Assign(a)) => {
                start_job(cfg, runner, running, events_tx, a);
            }
            Some(pb::orchestrator_message::Msg::Cancel(c)) => {
                if let Some(t) = lock(running).get(&c.job_id) {
                    tracing::info!(job = c.job_id, reason = c.reason, "cancelling");
                    t.cancel();
                }
            }
            Some(pb::orchestrator_message::Msg::Pause(p)) => {
                if let Some(t) = lock(running).get(&p.job_id) {
                    tracing::info!(
                        job = p.job_id,
                        "{}",
                        if p.paused { "pausing" } else { "resuming" }
                    );
                    t.set_paused(p.paused);
                }
            }
            Some(pb::orchestrator_message::Msg::Drain(_)) => {
                tracing::info!("draining: no new jobs will come")
            }
            Some(pb::orchestrator_message::Msg::Sleep(_)) => match &cfg.sleep_command {
                // Never while a job runs (one may have been assigned as the order crossed).
                Some(cmd) if lock(running).is_empty() => {
                    // Not awaited: the stream keeps being served until the machine suspends
                    // (and drops it); after the resume, the reconnect loop registers again.
                    tokio::spawn(wake::run_sleep_command(cmd.clone()));
                }
                Some(_) => tracing::info!("told to sleep while running a job: staying awake"),
                None => tracing::debug!("told to sleep without a sleep command: ignored"),
            },
            // A message this worker does not know (a newer orchestrator): ignore it.
            None => {}
        }
    }
    drop((forwarder, reporter));
    Ok(())
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Progress is forwarded at least this often: below the engine's (and Plex's) 0.5 s period,
/// so every progress event the engine emits reaches the orchestrator.
const PROGRESS_FORWARD_MIN: Duration = Duration::from_millis(400);

/// A continuation's progress counts on from the session's (frames and bytes added to what
/// the lost transcoder had reported) and never reports an output time behind it, so PMS and
/// the submitter see one job's progress across a failover.
pub fn continue_progress(p: &mut clusterplex_core::Progress, c: &clusterplex_core::Continuation) {
    p.frames += c.frames;
    p.bytes += c.bytes;
    p.out_time = p.out_time.max(c.out_time);
}

/// Checks and starts one assigned job on a blocking thread.
fn start_job(
    cfg: &AgentConfig,
    runner: &Arc<dyn JobRunner>,
    running: &Running,
    events_tx: &mpsc::UnboundedSender<pb::WorkerMessage>,
    a: pb::AssignJob,
) {
    let job_id = a.job_id;
    let send = {
        let tx = events_tx.clone();
        let id = job_id.clone();
        move |ev: Event| {
            let _ = tx.send(worker_msg(pb::worker_message::Msg::JobEvent(
                rpc::job_event(&id, ev),
            )));
        }
    };
    let job = match rpc::decode_job(&a.job_json) {
        Ok(j) => j,
        Err(e) => {
            return send(rpc::failed(
                pb::FailureCode::Refused,
                e.message().to_string(),
                false,
            ));
        }
    };
    if let Err(why) = cfg.paths.check(&job) {
        tracing::warn!(job = job_id, "refused: {why}");
        return send(rpc::failed(pb::FailureCode::Refused, why, false));
    }
    let cancel = CancelToken::new();
    // Paused by its submitter before it got here (e.g. moved by a failover).
    cancel.set_paused(a.paused);
    if lock(running)
        .insert(job_id.clone(), cancel.clone())
        .is_some()
    {
        // Already running (a duplicate assignment after a reconnect): keep the first.
        return;
    }
    send(Event::Accepted(pb::Accepted {
        worker_id: cfg.worker_id.clone(),
        worker_name: cfg.name.clone(),
    }));
    let runner = Arc::clone(runner);
    let running = Arc::clone(running);
    let interval = cfg.report_interval;
    tracing::info!(job = job_id, "job started");
    let spawned = std::thread::Builder::new()
        .name(format!("job-{job_id}"))
        .spawn(move || {
            let mut last_progress: Option<Instant> = None;
            // Plex jobs get their progress, manifest and segment-list callbacks from here, as
            // Plex's own transcoder would make them.
            let token = crate::plex::callback_token(&job);
            let reporter = crate::plex::PlexReporter::new(&job, token);
            // PMS paces the job through its progress replies (`canThrottle`); a continuation
            // picks the state up again from its first reply.
            if let Some(r) = &reporter {
                r.drive(&cancel);
            }
            // Progress at most once per STAT_CPU_INTERVAL, but every engine report (0.5 s, as
            // often as PMS gets it) when that interval is longer: a continuation after a
            // failover counts on from the last progress the orchestrator saw, which must not be
            // behind what PMS saw. Segments and the rest always.
            let progress_every = interval.min(PROGRESS_FORWARD_MIN);
            let mut on_event = |mut ev: JobEvent| {
                if let (JobEvent::Progress(p), Some(c)) = (&mut ev, &job.continuation) {
                    continue_progress(p, c);
                }
                if let Some(r) = &reporter {
                    r.on_event(&ev);
                }
                if let JobEvent::Progress(_) = ev {
                    if last_progress.is_some_and(|t| t.elapsed() < progress_every) {
                        return;
                    }
                    last_progress = Some(Instant::now());
                }
                send(rpc::event_to_pb(&ev));
            };
            let result = runner.run(&job, &cancel, &mut on_event);
            if let Some(r) = reporter {
                let stats = r.finish_blocking(result.is_ok());
                tracing::debug!(job = job_id, ?stats, "plex callbacks delivered");
            }
            lock(&running).remove(&job_id);
            match &result {
                Ok(_) => tracing::info!(job = job_id, "job finished"),
                Err(e) => tracing::warn!(job = job_id, "job ended: {e}"),
            }
            send(rpc::outcome_to_pb(&result));
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start a job thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_waits_are_spread_between_half_and_all_of_the_backoff() {
        let d = Duration::from_secs(8);
        let waits: Vec<Duration> = (0..200).map(|_| jittered(d)).collect();
        assert!(waits.iter().all(|w| *w >= d / 2 && *w <= d), "{waits:?}");
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 50, "not spread: {distinct:?}");
    }
}
