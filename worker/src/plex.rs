//! The Plex callback reporter: turns a running job's [`JobEvent`]s into the HTTP calls Plex
//! Media Server expects from "Plex Transcoder" (see `docs/plex-contract.md`).
//!
//! ```ignore
//! let reporter = PlexReporter::new(&job, std::env::var("X_PLEX_TOKEN").ok());
//! let summary = engine.run(&job, &cancel, &mut |ev| {
//!     if let Some(r) = &reporter { r.on_event(&ev) }
//!     // ... forward `ev` elsewhere too ...
//! });
//! if let Some(r) = reporter { let stats = r.finish(summary.is_ok()).await; }
//! ```
//!
//! * [`PlexReporter::new`] returns `None` when the job has nothing to report to (no
//!   `-progressurl`, no manifest or segment list URL). It queues `PUT <progressurl>?status=startup`.
//! * [`PlexReporter::on_event`] never blocks and never fails: it queues the calls and returns.
//!   `Started` becomes `stream`/`streamDetail` PUTs, `?duration=` and `?width=&height=`;
//!   `Progress` only updates the latest value, which is sent as
//!   `?progress=&size=&remaining=&speed=` at most every 0.5 s; `Manifest` events whose target is
//!   an `http://` URL (the DASH MPD, segment list CSVs) are POSTed chunked, in order, never
//!   dropped; `Log` events at or below `-loglevel_plex` become
//!   `POST <progressurl>/log?level=&message=`. `SegmentWritten` sends nothing itself: the
//!   engine's `Manifest` event that follows it carries the list.
//! * [`PlexReporter::finish`] (or [`PlexReporter::finish_blocking`]) delivers what is queued,
//!   sends the final progress and returns [`ReportStats`], bounded by
//!   [`ReporterConfig::finish_timeout`].
//!
//! [`PlexReporter::drive`] hands the reporter the job's control handle: PMS's `canThrottle`
//! in a progress reply then throttles the engine (100 ms per input packet) until a reply
//! without it, as with Plex's own transcoder.
//!
//! `Started` also becomes one `PUT <progressurl>/stream?index=&id=&codec=&type=` per input
//! audio/video stream, then one `PUT <progressurl>/streamDetail?…` each (the same keys plus the
//! engine's per-stream details), all before `?duration=`, as Plex's transcoder orders them.
//!
//! The HTTP work runs on a dedicated thread with its own small runtime, so a slow or dead PMS
//! never stalls the engine and the reporter works from sync (local runs) and async (agent) code.
//! Errors are logged and retried briefly (connection errors and 5xx); after repeated failures
//! each call gets one attempt only. Only HTTP (no TLS) is spoken: the shim points callbacks at
//! the PMS-side relay (`PMS_IP:LOCAL_RELAY_PORT`), which is plain HTTP.

use std::{
    collections::HashMap,
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use clusterplex_core::{
    CancelToken,
    events::{InputStream, JobEvent, LogLevel, Progress},
    job::{Job, Segmenting},
};
use hyper::{
    Method, Request, StatusCode,
    body::{Body, Bytes, Frame, SizeHint},
    client::conn::http1::SendRequest,
    header,
};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};

/// `User-Agent` of libavformat's HTTP protocol (FFmpeg 5.1's libavformat), as Plex's
/// transcoder sends it.
pub const LAVF_USER_AGENT: &str = "Lavf/59.27.100";

/// Tuning of the reporter. `Default` matches Plex's transcoder where it is known.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    /// Minimum time between two progress PUTs (Plex: 0.5 s).
    pub min_interval: Duration,
    /// Limit for one request (connect, send, read the reply).
    pub request_timeout: Duration,
    /// Extra attempts after a connection error or 5xx.
    pub retries: u32,
    /// Upper bound for [`PlexReporter::finish`] to deliver what is still queued.
    pub finish_timeout: Duration,
    /// Log lines queued beyond this are dropped (manifests never are).
    pub max_pending_logs: usize,
    pub user_agent: String,
}

impl Default for ReporterConfig {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_millis(500),
            request_timeout: Duration::from_secs(2),
            retries: 2,
            finish_timeout: Duration::from_secs(5),
            max_pending_logs: 256,
            user_agent: LAVF_USER_AGENT.to_string(),
        }
    }
}

/// What the reporter did, returned by [`PlexReporter::finish`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportStats {
    /// Requests PMS answered with 2xx.
    pub delivered: u32,
    /// Requests that failed after their retries (network error, timeout, non-2xx).
    pub failed: u32,
    /// Log lines dropped because too many were queued.
    pub dropped_logs: u32,
    /// Queued requests given up on when `finish_timeout` ran out.
    pub abandoned: u32,
    /// Progress PUTs sent.
    pub progress_puts: u32,
    /// Manifest / segment list POSTs delivered.
    pub manifests: u32,
}

enum Msg {
    /// A PUT with an empty body (progress metadata).
    Put(String),
    /// A chunked POST (manifest, segment list).
    Post(String, Bytes),
    /// A log POST (empty body).
    Log(String),
    Finish {
        ok: bool,
        done: oneshot::Sender<ReportStats>,
    },
}

struct Shared {
    latest: Mutex<Option<Progress>>,
    /// Input duration from `Started`, for percentages when `Progress` lacks one.
    duration: Mutex<Option<f64>>,
    throttled: AtomicBool,
    /// The job's control handle, whose throttle flag follows `throttled` when set.
    control: OnceLock<CancelToken>,
    pending_logs: AtomicUsize,
    dropped_logs: AtomicUsize,
    /// Set by `finish`: after this instant nothing more is attempted, however much is queued.
    finish_by: Mutex<Option<Instant>>,
}

impl Shared {
    /// Time left before the finish deadline; `None` while the job runs.
    fn finish_budget(&self) -> Option<Duration> {
        let by = self.finish_by.lock().ok().and_then(|b| *b)?;
        Some(by.saturating_duration_since(Instant::now()))
    }
}

/// Reports one job's events to Plex Media Server. See the module docs.
pub struct PlexReporter {
    tx: mpsc::UnboundedSender<Msg>,
    shared: Arc<Shared>,
    progress_url: Option<String>,
    log_threshold: Option<LogLevel>,
    config: ReporterConfig,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The session was announced to PMS (`status=startup`, streams, duration, size) by an
    /// earlier transcoder: this job continues it after a failover.
    announced: bool,
}

impl PlexReporter {
    /// A reporter for `job` with default tuning; `token` is the `X_PLEX_TOKEN` PMS gave the
    /// transcoder. `None` when the job has no Plex callback URL.
    pub fn new(job: &Job, token: Option<String>) -> Option<Self> {
        Self::with_config(job, token, ReporterConfig::default())
    }

    /// [`PlexReporter::new`] with explicit tuning.
    pub fn with_config(job: &Job, token: Option<String>, config: ReporterConfig) -> Option<Self> {
        let progress_url = job
            .progress
            .as_ref()
            .and_then(|p| p.plex_url.clone())
            .filter(|u| is_http(u));
        if progress_url.is_none() && http_targets(job).is_empty() {
            return None;
        }
        let shared = Arc::new(Shared {
            latest: Mutex::new(None),
            duration: Mutex::new(None),
            throttled: AtomicBool::new(false),
            control: OnceLock::new(),
            pending_logs: AtomicUsize::new(0),
            dropped_logs: AtomicUsize::new(0),
            finish_by: Mutex::new(None),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            client: Client::new(token, &config),
            shared: shared.clone(),
            progress_url: progress_url.clone(),
            config: config.clone(),
            stats: ReportStats::default(),
        };
        let thread = std::thread::Builder::new()
            .name("plex-reporter".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(worker.run(rx)),
                    Err(e) => tracing::error!("plex reporter: cannot start its runtime: {e}"),
                }
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(
                    "plex reporter: cannot start its thread: {e}; no callbacks for this job"
                );
                return None;
            }
        };
        let reporter = Self {
            tx,
            shared,
            log_threshold: log_threshold(job.plex.loglevel.as_deref()),
            progress_url,
            config,
            thread: Some(thread),
            announced: job.continuation.is_some(),
        };
        if let Some(base) = reporter
            .progress_url
            .as_ref()
            .filter(|_| !reporter.announced)
        {
            reporter.send(Msg::Put(with_query(
                base,
                "",
                &[("status", "startup".into())],
            )));
        }
        Some(reporter)
    }

    /// Whether PMS's last progress reply asked to throttle (`canThrottle`). Plex's transcoder
    /// then sleeps between packets; see [`PlexReporter::drive`].
    pub fn throttled(&self) -> bool {
        self.shared.throttled.load(Ordering::Relaxed)
    }

    /// Makes PMS pace the job: from now on every progress reply sets `control`'s throttle flag
    /// (on while the reply contains `canThrottle`), which the engine honours by sleeping
    /// 100 ms per input packet, as Plex's transcoder does. One control per reporter; later
    /// calls are ignored.
    pub fn drive(&self, control: &CancelToken) {
        control.set_throttled(self.throttled());
        if self.shared.control.set(control.clone()).is_err() {
            tracing::debug!("plex reporter: already drives a job");
        }
    }

    /// Queues what `event` means for PMS. Never blocks.
    pub fn on_event(&self, event: &JobEvent) {
        match event {
            JobEvent::Started {
                duration,
                video_size,
                input_streams,
            } => {
                if let Ok(mut d) = self.shared.duration.lock() {
                    *d = *duration;
                }
                // A continuation (failover): PMS already heard all this from the transcoder
                // that started the session.
                let Some(base) = self.progress_url.as_ref().filter(|_| !self.announced) else {
                    return;
                };
                // Plex's transcoder announces every input audio/video stream, then details each
                // one, before it reports the duration (docs/plex-contract.md §2, rows 2-4).
                let announced: Vec<&InputStream> = input_streams
                    .iter()
                    .filter(|s| s.kind == "audio" || s.kind == "video")
                    .collect();
                for s in &announced {
                    self.send(Msg::Put(with_query(base, "/stream", &stream_keys(s))));
                }
                for s in &announced {
                    let mut q = stream_keys(s);
                    q.extend(s.details.iter().map(|(k, v)| (k.as_str(), v.clone())));
                    self.send(Msg::Put(with_query(base, "/streamDetail", &q)));
                }
                let d = duration
                    .filter(|d| d.is_finite() && *d > 0.0)
                    .unwrap_or(-1.0);
                self.send(Msg::Put(with_query(
                    base,
                    "",
                    &[("duration", format!("{d:.6}"))],
                )));
                if let Some((w, h)) = video_size {
                    self.send(Msg::Put(with_query(
                        base,
                        "",
                        &[("width", w.to_string()), ("height", h.to_string())],
                    )));
                }
            }
            JobEvent::Progress(p) => {
                if let Ok(mut latest) = self.shared.latest.lock() {
                    *latest = Some(p.clone());
                }
            }
            JobEvent::SegmentWritten(_) => {}
            JobEvent::Manifest { target, body, .. } => {
                if is_http(target) {
                    self.send(Msg::Post(target.clone(), Bytes::from(body.clone())));
                } else if target.starts_with("https://") {
                    tracing::warn!(
                        "plex reporter: cannot POST to {target}: only plain HTTP is spoken"
                    );
                }
            }
            JobEvent::Log { level, message } => {
                let (Some(base), Some(max)) = (&self.progress_url, self.log_threshold) else {
                    return;
                };
                if *level > max {
                    return;
                }
                if self.shared.pending_logs.load(Ordering::Relaxed) >= self.config.max_pending_logs
                {
                    self.shared.dropped_logs.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.shared.pending_logs.fetch_add(1, Ordering::Relaxed);
                let q = [
                    ("level", (*level as u8).to_string()),
                    ("message", message.clone()),
                ];
                self.send(Msg::Log(with_query(base, "/log", &q)));
            }
        }
    }

    /// Starts the finish deadline now, so a backlog in front of `Finish` cannot outlast it.
    fn start_finishing(&self) {
        if let Ok(mut by) = self.shared.finish_by.lock() {
            *by = Some(Instant::now() + self.config.finish_timeout);
        }
    }

    fn send(&self, msg: Msg) {
        if self.tx.send(msg).is_err() {
            tracing::debug!("plex reporter: already stopped");
        }
    }

    /// Delivers what is queued, sends the final progress (100 % when `ok`) and stops.
    pub async fn finish(mut self, ok: bool) -> ReportStats {
        self.start_finishing();
        let (done, wait) = oneshot::channel();
        self.send(Msg::Finish { ok, done });
        let stats = wait.await.unwrap_or_default();
        if let Some(t) = self.thread.take() {
            // The worker has answered, so the thread is ending; joining cannot stall.
            let _ = t.join();
        }
        stats
    }

    /// [`PlexReporter::finish`] for code without an async runtime. Do not call it from inside
    /// a runtime thread.
    pub fn finish_blocking(mut self, ok: bool) -> ReportStats {
        self.start_finishing();
        let (done, wait) = oneshot::channel();
        self.send(Msg::Finish { ok, done });
        let stats = wait.blocking_recv().unwrap_or_default();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        stats
    }
}

impl Drop for PlexReporter {
    fn drop(&mut self) {
        // Dropped without `finish` (e.g. the job panicked): the worker sees the channel close,
        // flushes within its deadline and ends; do not wait for it here.
        self.thread.take();
    }
}

/// The `X-Plex-Token` for `job`'s callbacks: the one submitted with the job, else
/// `X_PLEX_TOKEN` from the environment (where PMS puts it for its transcoder).
pub fn callback_token(job: &Job) -> Option<String> {
    job.plex
        .token
        .clone()
        .or_else(|| std::env::var("X_PLEX_TOKEN").ok().filter(|t| !t.is_empty()))
}

fn is_http(url: &str) -> bool {
    url.starts_with("http://")
}

/// Manifest and segment list targets of `job` that are HTTP URLs.
pub fn http_targets(job: &Job) -> Vec<String> {
    let mut out = Vec::new();
    for o in &job.outputs {
        match &o.segmenting {
            Some(Segmenting::Dash {
                manifest_target: Some(t),
                ..
            }) if is_http(t) => out.push(t.clone()),
            Some(Segmenting::Segment { list: Some(l), .. }) if is_http(&l.target) => {
                out.push(l.target.clone())
            }
            _ => {}
        }
    }
    out
}

/// The keys `stream` and `streamDetail` both start with.
fn stream_keys(s: &InputStream) -> Vec<(&str, String)> {
    vec![
        ("index", s.index.to_string()),
        ("id", s.id.to_string()),
        ("codec", s.codec.clone()),
        ("type", s.kind.clone()),
    ]
}

/// `-loglevel_plex` as the highest level sent; `None` for `quiet`.
fn log_threshold(level: Option<&str>) -> Option<LogLevel> {
    let level = level.unwrap_or("error").to_ascii_lowercase();
    Some(match level.as_str() {
        "quiet" | "-8" => return None,
        "panic" | "fatal" | "error" | "0" | "8" | "16" => LogLevel::Error,
        "warning" | "24" => LogLevel::Warning,
        "info" | "32" => LogLevel::Info,
        "verbose" | "40" => LogLevel::Verbose,
        "debug" | "trace" | "48" | "56" => LogLevel::Debug,
        _ => LogLevel::Error,
    })
}

/// `base` + `suffix` (inserted before any query `base` has) + the form-encoded `pairs`.
pub fn with_query(base: &str, suffix: &str, pairs: &[(&str, String)]) -> String {
    let (path, existing) = match base.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (base, None),
    };
    let mut q: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    q.extend(existing.filter(|e| !e.is_empty()).map(str::to_string));
    if q.is_empty() {
        format!("{path}{suffix}")
    } else {
        format!("{path}{suffix}?{}", q.join("&"))
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The progress query Plex's transcoder sends.
fn progress_query(
    p: &Progress,
    duration: Option<f64>,
    ok_final: bool,
    throttled: bool,
) -> Vec<(&'static str, String)> {
    let duration = p
        .duration
        .or(duration)
        .filter(|d| d.is_finite() && *d > 0.0);
    let percent = if ok_final && duration.is_some() {
        Some(100.0)
    } else {
        duration.map(|d| (p.out_time / d * 100.0).clamp(0.0, 100.0))
    };
    let remaining = match (duration, ok_final) {
        (Some(_), true) => 0.0,
        (Some(d), false) if p.speed > 0.0 => ((d - p.out_time) / p.speed).max(0.0),
        _ => -1.0,
    };
    let mut q = vec![
        (
            "progress",
            percent.map_or("-1".to_string(), |v| format!("{v:.1}")),
        ),
        ("size", p.bytes.to_string()),
        ("remaining", format!("{remaining:.0}")),
    ];
    // Plex leaves speed out while PMS throttles it.
    if !throttled && p.speed.is_finite() {
        q.push(("speed", format!("{:.1}", p.speed)));
    }
    q
}

struct Worker {
    client: Client,
    shared: Arc<Shared>,
    progress_url: Option<String>,
    config: ReporterConfig,
    stats: ReportStats,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut tick = tokio::time::interval(self.config.min_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sent: Option<Progress> = None;
        let finish = loop {
            tokio::select! {
                biased;
                msg = rx.recv() => match msg {
                    Some(Msg::Finish { ok, done }) => break Some((ok, done)),
                    Some(m) => self.deliver(m).await,
                    None => break None,
                },
                _ = tick.tick() => {
                    let latest = self.shared.latest.lock().ok().and_then(|l| l.clone());
                    if latest.is_some() && latest != last_sent {
                        if let Some(p) = &latest {
                            self.put_progress(p, false).await;
                        }
                        last_sent = latest;
                    }
                }
            }
        };
        if finish.is_none() {
            // Dropped without `finish`: still bound the flush.
            if let Ok(mut by) = self.shared.finish_by.lock() {
                by.get_or_insert(Instant::now() + self.config.finish_timeout);
            }
        }
        // Deliver what is still queued (each request respects the finish deadline), then the
        // final progress report, as Plex's transcoder reports once more after its trailer.
        while let Ok(m) = rx.try_recv() {
            self.deliver(m).await;
        }
        let ok = finish.as_ref().is_some_and(|(ok, _)| *ok);
        let fin = self
            .shared
            .latest
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .unwrap_or_default();
        self.put_progress(&fin, ok).await;
        if self.stats.abandoned > 0 {
            tracing::warn!(
                "plex reporter: PMS too slow; gave up on {} callbacks",
                self.stats.abandoned
            );
        }
        self.stats.dropped_logs = self.shared.dropped_logs.load(Ordering::Relaxed) as u32;
        if let Some((_, done)) = finish {
            let _ = done.send(self.stats.clone());
        }
    }

    async fn put_progress(&mut self, p: &Progress, ok_final: bool) {
        let Some(base) = &self.progress_url else {
            return;
        };
        let duration = self.shared.duration.lock().ok().and_then(|d| *d);
        let q = progress_query(
            p,
            duration,
            ok_final,
            self.shared.throttled.load(Ordering::Relaxed),
        );
        let url = with_query(base, "", &q);
        self.stats.progress_puts += 1;
        if let Some(reply) = self.request(Method::PUT, &url, None).await {
            let throttle = reply.contains("canThrottle");
            self.shared.throttled.store(throttle, Ordering::Relaxed);
            if let Some(c) = self.shared.control.get() {
                c.set_throttled(throttle);
            }
        }
    }

    async fn deliver(&mut self, msg: Msg) {
        match msg {
            Msg::Put(url) => {
                self.request(Method::PUT, &url, None).await;
            }
            Msg::Post(url, body) => {
                if self.request(Method::POST, &url, Some(body)).await.is_some() {
                    self.stats.manifests += 1;
                }
            }
            Msg::Log(url) => {
                self.shared.pending_logs.fetch_sub(1, Ordering::Relaxed);
                self.request(Method::POST, &url, None).await;
            }
            Msg::Finish { .. } => {}
        }
    }

    /// Sends with retries; the reply body on 2xx.
    async fn request(&mut self, method: Method, url: &str, body: Option<Bytes>) -> Option<String> {
        // After repeated failures PMS is likely gone: one attempt each, so the job is not slowed.
        let attempts = if self.client.consecutive_failures >= 3 {
            1
        } else {
            1 + self.config.retries
        };
        let mut last_err = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * 3u64.pow(attempt - 1))).await;
            }
            let budget = self.shared.finish_budget();
            if budget.is_some_and(|b| b.is_zero()) {
                self.stats.abandoned += 1;
                return None;
            }
            let limit = budget.map_or(self.config.request_timeout, |b| {
                b.min(self.config.request_timeout)
            });
            let sent =
                tokio::time::timeout(limit, self.client.send(method.clone(), url, body.clone()))
                    .await;
            match sent {
                Ok(Ok((status, reply))) if status.is_success() => {
                    self.client.consecutive_failures = 0;
                    self.stats.delivered += 1;
                    return Some(reply);
                }
                Ok(Ok((status, _))) if status.is_server_error() => {
                    last_err = format!("HTTP {status}")
                }
                Ok(Ok((status, _))) => {
                    // 4xx will not change on retry (wrong token, wrong path).
                    tracing::warn!("plex reporter: {method} {url}: HTTP {status}");
                    self.stats.failed += 1;
                    return None;
                }
                Ok(Err(e)) => last_err = e,
                Err(_) => {
                    self.client.drop_connection(url);
                    last_err = format!("no answer within {:?}", self.config.request_timeout);
                }
            }
        }
        self.client.consecutive_failures += 1;
        self.stats.failed += 1;
        tracing::warn!("plex reporter: {method} {url}: {last_err}");
        None
    }
}

/// A minimal HTTP/1.1 client keeping one keep-alive connection per PMS address, like Plex's
/// transcoder does (PMS logs it as pipelined).
struct Client {
    token: Option<String>,
    user_agent: String,
    connections: HashMap<String, SendRequest<OnceBody>>,
    consecutive_failures: u32,
}

impl Client {
    fn new(token: Option<String>, config: &ReporterConfig) -> Self {
        Self {
            token,
            user_agent: config.user_agent.clone(),
            connections: HashMap::new(),
            consecutive_failures: 0,
        }
    }

    fn drop_connection(&mut self, url: &str) {
        if let Ok(uri) = url.parse::<hyper::Uri>()
            && let Some(key) = connection_key(&uri)
        {
            self.connections.remove(&key);
        }
    }

    async fn connection(&mut self, authority: &str) -> Result<&mut SendRequest<OnceBody>, String> {
        let reusable = self
            .connections
            .get(authority)
            .is_some_and(|c| !c.is_closed());
        if !reusable {
            let stream = tokio::net::TcpStream::connect(authority)
                .await
                .map_err(|e| format!("connect {authority}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake {authority}: {e}"))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("plex reporter: connection ended: {e}");
                }
            });
            self.connections.insert(authority.to_string(), send);
        }
        self.connections
            .get_mut(authority)
            .ok_or_else(|| "connection vanished".to_string())
    }

    async fn send(
        &mut self,
        method: Method,
        url: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, String), String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let authority = connection_key(&uri).ok_or_else(|| format!("no host in {url}"))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, uri.authority().map_or("", |a| a.as_str()))
            .header(header::USER_AGENT, &self.user_agent)
            .header(header::ACCEPT, "*/*")
            .header("X-Plex-Http-Pipeline", "infinite");
        if method == Method::PUT {
            req = req.header(header::RANGE, "bytes=0-");
        }
        if let Some(t) = &self.token {
            req = req.header("X-Plex-Token", t);
        }
        // A body without a known length goes out with `Transfer-Encoding: chunked`, as
        // libavformat's HTTP writer sends manifests.
        let body = match body {
            Some(b) => OnceBody {
                data: Some(b),
                sized: false,
            },
            None => OnceBody {
                data: None,
                sized: true,
            },
        };
        let req = req.body(body).map_err(|e| format!("request {url}: {e}"))?;
        let sender = self.connection(&authority).await?;
        sender
            .ready()
            .await
            .map_err(|e| format!("{authority}: {e}"))?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.connections.remove(&authority);
                return Err(format!("{authority}: {e}"));
            }
        };
        let status = resp.status();
        let mut incoming = resp.into_body();
        let mut reply = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| Pin::new(&mut incoming).poll_frame(cx)).await
        {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        // PMS replies are small; cap what is kept, in case something else answers.
                        if reply.len() < 64 * 1024 {
                            reply.extend_from_slice(d);
                        }
                    }
                }
                Err(e) => {
                    self.connections.remove(&authority);
                    return Err(format!("reading the reply: {e}"));
                }
            }
        }
        Ok((status, String::from_utf8_lossy(&reply).into_owned()))
    }
}

/// `host:port` of a URL (port 80 when absent), the key of its connection.
fn connection_key(uri: &hyper::Uri) -> Option<String> {
    let host = uri.host()?;
    Some(format!("{host}:{}", uri.port_u16().unwrap_or(80)))
}

/// A request body sent in one piece: sized (empty) or of unknown length (chunked).
struct OnceBody {
    data: Option<Bytes>,
    sized: bool,
}

impl Body for OnceBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.sized && self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
        } else {
            SizeHint::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_building() {
        let base = "http://10.0.0.2:32499/video/:/transcode/session/k/u/progress";
        assert_eq!(
            with_query(base, "", &[("status", "startup".into())]),
            format!("{base}?status=startup")
        );
        assert_eq!(
            with_query(
                base,
                "/log",
                &[("level", "0".into()), ("message", "a b&c/é".into())]
            ),
            format!("{base}/log?level=0&message=a%20b%26c%2F%C3%A9")
        );
        assert_eq!(
            with_query("http://h/m?X-Plex-Http-Pipeline=infinite", "", &[]),
            "http://h/m?X-Plex-Http-Pipeline=infinite"
        );
    }

    #[test]
    fn progress_values() {
        let p = Progress {
            out_time: 5.0,
            speed: 2.0,
            bytes: 1000,
            duration: Some(20.0),
            ..Default::default()
        };
        let q = progress_query(&p, None, false, false);
        assert_eq!(q[0], ("progress", "25.0".into()));
        assert_eq!(q[2], ("remaining", "8".into()));
        assert_eq!(q[3], ("speed", "2.0".into()));
        let q = progress_query(&Progress::default(), None, false, true);
        assert_eq!(q[0], ("progress", "-1".into()));
        assert_eq!(q.len(), 3, "no speed while throttled");
        assert_eq!(
            progress_query(&p, None, true, false)[0],
            ("progress", "100.0".into())
        );
    }

    #[test]
    fn log_levels() {
        assert_eq!(log_threshold(Some("quiet")), None);
        assert_eq!(log_threshold(Some("error")), Some(LogLevel::Error));
        assert_eq!(log_threshold(Some("verbose")), Some(LogLevel::Verbose));
    }
}
