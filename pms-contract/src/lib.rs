//! A stand-in for Plex Media Server's transcoder-callback endpoint, for tests and the demo.
//!
//! It implements the wire contract documented in `docs/plex-contract.md` (what "Plex Transcoder"
//! sends to `http://127.0.0.1:32400/video/:/transcode/session/<key>/<uuid>/…`) and records every
//! request in arrival order, so a test can run a real transcode against it over loopback and then
//! ask [`Recording`] whether the callbacks were what PMS expects:
//!
//! | request | reply |
//! |---|---|
//! | `PUT …/progress?status=startup`, `?duration=`, `?width=&height=` (metadata) | 204 |
//! | `PUT …/progress?progress=&size=&remaining=[&speed=]` | 206 with a small XML body, containing `canThrottle` while [`PmsContract::set_throttle`] is on |
//! | `PUT …/progress/stream?…`, `PUT …/progress/streamDetail?…` | 204 |
//! | `POST …/progress/log?level=&message=` (or the 2018 `GET`) | 200 |
//! | `POST …/manifest[?stream=subtitles]` with an MPD or CSV body | 200, or 400 if it does not parse |
//! | `POST …/progress*` (PMS rejects it) and anything else | 404 |
//! | any request without the configured `X-Plex-Token` (header or query) | 401 |
//! | `GET /_recording` | the recording as JSON |
//!
//! Manifests are checked *when they arrive* against the session directory (if one is set):
//! every chunk an MPD's timeline lists (and every finished CSV row) must already be on disk, as
//! PMS serves those files as soon as the manifest names them.

pub mod manifest;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub use manifest::{CsvRow, ManifestBody, Mpd, Representation};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid MPD: {0}")]
    Mpd(String),
    #[error("invalid segment list CSV, line {line}: {reason}")]
    Csv { line: usize, reason: String },
}

/// The token header PMS reads (`X_PLEX_TOKEN` in the transcoder's environment).
pub const TOKEN_HEADER: &str = "x-plex-token";

/// How the endpoint behaves.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Required `X-Plex-Token`; `None` accepts requests without one.
    pub token: Option<String>,
    /// The session working directory: manifests are checked against it on arrival.
    pub session_dir: Option<PathBuf>,
    /// Answer progress PUTs with a body containing `canThrottle`.
    pub throttle: bool,
}

// Builders, so a test states only the settings it cares about in one expression.
impl Config {
    /// Requires `token` on every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Checks manifests against the session directory `dir` on arrival.
    pub fn with_session_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.session_dir = Some(dir.into());
        self
    }
}

/// What a request was, by PMS's routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `?status=startup`.
    Startup,
    /// `?duration=`.
    Duration,
    /// `?width=&height=`.
    Dimensions,
    /// `?progress=&size=&remaining=…`.
    Progress,
    /// Another PUT on `…/progress` with a query PMS does not treat as progress.
    OtherMetadata,
    Stream,
    StreamDetail,
    Log,
    Manifest,
    /// Not part of the contract (wrong method or path, missing token).
    Rejected,
}

/// One request as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// Arrival order, from 0.
    pub seq: usize,
    /// Milliseconds since the endpoint started.
    pub at_ms: f64,
    pub method: String,
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The decoded query, in order.
    pub params: Vec<(String, String)>,
    pub kind: Kind,
    /// The status the endpoint answered.
    pub status: u16,
    pub token: Option<String>,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
    /// The body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The body as text (lossy UTF-8).
    pub body: String,
    /// The parsed body of a manifest POST.
    pub manifest: Option<ManifestBody>,
    /// Files the manifest listed that were not in the session directory when it arrived.
    pub missing_on_arrival: Vec<String>,
    /// Whether a session directory was set when the manifest arrived.
    pub checked_on_arrival: bool,
}

impl Recorded {
    /// The first value of query key `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A query value parsed as a number.
    pub fn num(&self, key: &str) -> Option<f64> {
        self.param(key).and_then(|v| v.parse().ok())
    }

    /// The manifest target this request addressed (path plus the `stream` query key), so that
    /// the MPD and the subtitle list are told apart.
    pub fn manifest_key(&self) -> String {
        match self.param("stream") {
            Some(s) => format!("{}?stream={s}", self.path),
            None => self.path.clone(),
        }
    }
}

struct Inner {
    started: Instant,
    config: Mutex<Config>,
    requests: Mutex<Vec<Recorded>>,
}

impl Inner {
    fn config(&self) -> MutexGuard<'_, Config> {
        // A poisoned lock only means a handler panicked; the data is still usable.
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn requests(&self) -> MutexGuard<'_, Vec<Recorded>> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running endpoint. Dropping it stops the server.
pub struct PmsContract {
    addr: SocketAddr,
    inner: Arc<Inner>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl PmsContract {
    /// Starts serving on `addr` (port 0 picks a free port).
    pub async fn start(addr: SocketAddr, config: Config) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let inner = Arc::new(Inner {
            started: Instant::now(),
            config: Mutex::new(config),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/_recording", get(recording_json))
            .fallback(handle)
            .with_state(inner.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!("PMS-contract endpoint stopped: {e}");
            }
        });
        tracing::info!("PMS-contract endpoint listening on http://{addr}");
        Ok(Self {
            addr,
            inner,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Starts on `127.0.0.1:0`.
    pub async fn start_local(config: Config) -> Result<Self, Error> {
        Self::start(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The session base PMS puts in argv: `…/video/:/transcode/session/<key>/<uuid>`;
    /// `-progressurl` is this plus `/progress`, `-manifest_name` this plus `/manifest`.
    pub fn session_base(&self, key: &str, uuid: &str) -> String {
        format!("{}/video/:/transcode/session/{key}/{uuid}", self.url())
    }

    /// Turns `canThrottle` in progress replies on or off.
    pub fn set_throttle(&self, on: bool) {
        self.inner.config().throttle = on;
    }

    /// Sets the directory manifests are checked against on arrival.
    pub fn set_session_dir(&self, dir: Option<PathBuf>) {
        self.inner.config().session_dir = dir;
    }

    /// A snapshot of everything received so far.
    pub fn recording(&self) -> Recording {
        Recording {
            requests: self.inner.requests().clone(),
        }
    }

    /// Waits until `pred` holds for the recording, or `timeout` passes. Returns whether it held.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&Recording) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.recording()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server and returns the recording.
    pub async fn shutdown(mut self) -> Recording {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // Keep-alive clients may hold a connection open; do not wait for them forever.
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                tracing::debug!("PMS-contract endpoint: connections still open at shutdown");
            }
        }
        self.recording()
    }
}

impl Drop for PmsContract {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn recording_json(State(inner): State<Arc<Inner>>) -> Response {
    let requests = inner.requests().clone();
    match serde_json::to_vec_pretty(&requests) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The XML PMS answers progress PUTs with (about the size of the real ~371 B body).
fn progress_reply(throttle: bool) -> String {
    let attr = if throttle { " canThrottle=\"1\"" } else { "" };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MediaContainer size=\"0\"{attr} \
         identifier=\"com.plexapp.plugins.library\" mediaTagPrefix=\"/system/bundle/media/flags/\">\n</MediaContainer>\n"
    )
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or_default().to_string();
    let params = decode_query(&query);
    let hdr = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let token = hdr(TOKEN_HEADER).or_else(|| {
        params
            .iter()
            .find(|(k, _)| k == "X-Plex-Token")
            .map(|(_, v)| v.clone())
    });
    let chunked = headers
        .get(header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let (want_token, session_dir, throttle) = {
        let c = inner.config();
        (c.token.clone(), c.session_dir.clone(), c.throttle)
    };
    let mut rec = Recorded {
        seq: 0,
        at_ms: inner.started.elapsed().as_secs_f64() * 1000.0,
        method: method.to_string(),
        path: path.clone(),
        query,
        params,
        kind: Kind::Rejected,
        status: 404,
        token: token.clone(),
        user_agent: hdr(header::USER_AGENT.as_str()),
        content_type: hdr(header::CONTENT_TYPE.as_str()),
        chunked,
        body: String::from_utf8_lossy(&body).into_owned(),
        manifest: None,
        missing_on_arrival: Vec::new(),
        checked_on_arrival: false,
    };
    let reply = if want_token.is_some() && token != want_token {
        (StatusCode::UNAUTHORIZED, String::new())
    } else {
        route(&mut rec, &method, session_dir.as_deref(), throttle)
    };
    rec.status = reply.0.as_u16();
    {
        let mut reqs = inner.requests();
        rec.seq = reqs.len();
        tracing::debug!(
            seq = rec.seq,
            status = rec.status,
            "{} {}?{}",
            rec.method,
            rec.path,
            rec.query
        );
        reqs.push(rec);
    }
    reply.into_response()
}

/// Decides how PMS would answer, filling in the request's kind and manifest facts.
fn route(
    rec: &mut Recorded,
    method: &Method,
    session_dir: Option<&Path>,
    throttle: bool,
) -> (StatusCode, String) {
    let path = rec.path.trim_end_matches('/');
    let in_session = path.contains("/transcode/session/") || path.starts_with("/log");
    if !in_session {
        return (StatusCode::NOT_FOUND, String::new());
    }
    let has = |k: &str| rec.params.iter().any(|(key, _)| key == k);
    if path.ends_with("/progress") && *method == Method::PUT {
        rec.kind = if has("progress") {
            Kind::Progress
        } else if rec.param("status") == Some("startup") {
            Kind::Startup
        } else if has("duration") {
            Kind::Duration
        } else if has("width") && has("height") {
            Kind::Dimensions
        } else {
            Kind::OtherMetadata
        };
        if rec.kind == Kind::Progress {
            return (StatusCode::PARTIAL_CONTENT, progress_reply(throttle));
        }
        return (StatusCode::NO_CONTENT, String::new());
    }
    if (path.ends_with("/progress/stream") || path.ends_with("/progress/streamDetail"))
        && *method == Method::PUT
    {
        rec.kind = if path.ends_with("/stream") {
            Kind::Stream
        } else {
            Kind::StreamDetail
        };
        return (StatusCode::NO_CONTENT, String::new());
    }
    if (path.ends_with("/progress/log") || path == "/log")
        && (*method == Method::POST || *method == Method::GET)
    {
        rec.kind = Kind::Log;
        return (StatusCode::OK, String::new());
    }
    if path.ends_with("/manifest") && *method == Method::POST {
        rec.kind = Kind::Manifest;
        let parsed = ManifestBody::parse(&rec.body);
        if let Some(dir) = session_dir {
            rec.checked_on_arrival = true;
            rec.missing_on_arrival = parsed
                .listed_files()
                .into_iter()
                .filter(|f| !dir.join(f).is_file())
                .collect();
        }
        let status = match parsed {
            ManifestBody::Invalid { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::OK,
        };
        rec.manifest = Some(parsed);
        return (status, String::new());
    }
    // PMS answers POSTs on the progress endpoints (and anything unknown) with 404.
    (StatusCode::NOT_FOUND, String::new())
}

/// Decodes `application/x-www-form-urlencoded` pairs, keeping order and duplicates.
pub fn decode_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Everything the endpoint received, with the checks a test runs on it. Each check returns
/// the violations it found (empty: the contract held).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    pub requests: Vec<Recorded>,
}

impl Recording {
    /// Requests of one kind, in order.
    pub fn of(&self, kind: Kind) -> Vec<&Recorded> {
        self.requests.iter().filter(|r| r.kind == kind).collect()
    }

    /// Requests answered with an error status (401, 404, 400…).
    pub fn rejected(&self) -> Vec<&Recorded> {
        self.requests.iter().filter(|r| r.status >= 400).collect()
    }

    /// The `progress=` values, in order.
    pub fn progress_values(&self) -> Vec<f64> {
        self.of(Kind::Progress)
            .iter()
            .filter_map(|r| r.num("progress"))
            .collect()
    }

    /// Parsed MPDs, in order.
    pub fn mpds(&self) -> Vec<&Mpd> {
        self.requests
            .iter()
            .filter_map(|r| match &r.manifest {
                Some(ManifestBody::Mpd(m)) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// Every request carried the token.
    pub fn check_token(&self, token: &str) -> Vec<String> {
        self.requests
            .iter()
            .filter(|r| r.token.as_deref() != Some(token))
            .map(|r| format!("#{} {} {} without the token", r.seq, r.method, r.path))
            .collect()
    }

    /// Every manifest parsed, and listed only files that existed in the session directory
    /// when it arrived.
    pub fn check_manifests_list_existing_chunks(&self) -> Vec<String> {
        let mut v = Vec::new();
        for r in self.of(Kind::Manifest) {
            if let Some(ManifestBody::Invalid { reason }) = &r.manifest {
                v.push(format!("#{} manifest does not parse: {reason}", r.seq));
            }
            if !r.checked_on_arrival {
                v.push(format!(
                    "#{} manifest arrived with no session directory to check",
                    r.seq
                ));
            }
            if !r.missing_on_arrival.is_empty() {
                v.push(format!(
                    "#{} manifest lists files not yet on disk: {:?}",
                    r.seq, r.missing_on_arrival
                ));
            }
        }
        v
    }

    /// After the fact: every file any manifest listed exists in `dir` now.
    pub fn check_listed_files_exist_in(&self, dir: &Path) -> Vec<String> {
        let mut v = Vec::new();
        for r in self.of(Kind::Manifest) {
            for f in r.manifest.iter().flat_map(ManifestBody::listed_files) {
                if !dir.join(&f).is_file() {
                    v.push(format!("#{} lists {f}, not in {}", r.seq, dir.display()));
                }
            }
        }
        v
    }

    /// DASH numbering after `-skip_to_segment N`: the first MPD starts at N, later ones never
    /// below N nor going back (the window only slides forward).
    pub fn check_start_number(&self, skip_to_segment: u64) -> Vec<String> {
        let mut v = Vec::new();
        let mpds = self.mpds();
        if mpds.is_empty() {
            v.push("no MPD received".into());
        }
        let mut last: Option<Vec<u64>> = None;
        for (i, m) in mpds.iter().enumerate() {
            let nums = m.start_numbers();
            if i == 0 && nums.iter().any(|&n| n != skip_to_segment) {
                v.push(format!(
                    "first MPD startNumber {nums:?}, expected {skip_to_segment}"
                ));
            }
            if nums.iter().any(|&n| n < skip_to_segment) {
                v.push(format!(
                    "MPD {i} startNumber {nums:?} below {skip_to_segment}"
                ));
            }
            if let Some(prev) = &last
                && prev.len() == nums.len()
                && prev.iter().zip(&nums).any(|(a, b)| b < a)
            {
                v.push(format!(
                    "MPD {i} startNumber went back from {prev:?} to {nums:?}"
                ));
            }
            last = Some(nums);
        }
        v
    }

    /// Per manifest target, every MPD but the last is `dynamic` and the last is `static`.
    pub fn check_static_only_last(&self) -> Vec<String> {
        let mut v = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        for r in self.of(Kind::Manifest) {
            if matches!(r.manifest, Some(ManifestBody::Mpd(_))) && !keys.contains(&r.manifest_key())
            {
                keys.push(r.manifest_key());
            }
        }
        if keys.is_empty() {
            v.push("no MPD received".into());
        }
        for key in keys {
            let posts: Vec<(usize, &Mpd)> = self
                .requests
                .iter()
                .filter(|r| r.kind == Kind::Manifest && r.manifest_key() == key)
                .filter_map(|r| match &r.manifest {
                    Some(ManifestBody::Mpd(m)) => Some((r.seq, m)),
                    _ => None,
                })
                .collect();
            let n = posts.len();
            for (i, (seq, m)) in posts.into_iter().enumerate() {
                let want = if i + 1 == n { "static" } else { "dynamic" };
                if m.mpd_type != want {
                    v.push(format!(
                        "#{seq} {key}: MPD {i} of {n} is {:?}, expected {want}",
                        m.mpd_type
                    ));
                }
                if m.mpd_type == "static" && m.media_presentation_duration.is_none() {
                    v.push(format!(
                        "#{seq} {key}: static MPD without mediaPresentationDuration"
                    ));
                }
            }
        }
        v
    }

    /// `progress` and `size` never go backwards (unknown values, `-1`, are skipped).
    pub fn check_progress_monotonic(&self) -> Vec<String> {
        let mut v = Vec::new();
        for key in ["progress", "size"] {
            let mut last = f64::NEG_INFINITY;
            for r in self.of(Kind::Progress) {
                match r.num(key) {
                    None => v.push(format!("#{} progress PUT without a numeric {key}", r.seq)),
                    Some(x) if x < 0.0 => {}
                    Some(x) if x < last => {
                        v.push(format!("#{} {key} went back from {last} to {x}", r.seq))
                    }
                    Some(x) => last = x,
                }
            }
        }
        v
    }

    /// Every CSV POST parsed (3 or 5 columns, `#` only on the last row), times do not go
    /// back between rows, and each POST holds at most `window` rows (0: no limit).
    pub fn check_csv_rows(&self, window: usize) -> Vec<String> {
        let mut v = Vec::new();
        for r in self.of(Kind::Manifest) {
            match &r.manifest {
                Some(ManifestBody::Csv { rows }) => {
                    if window > 0 && rows.len() > window {
                        v.push(format!(
                            "#{} {} rows, window is {window}",
                            r.seq,
                            rows.len()
                        ));
                    }
                    for pair in rows.windows(2) {
                        if pair[1].start < pair[0].start {
                            v.push(format!(
                                "#{} row {} starts before {}",
                                r.seq, pair[1].name, pair[0].name
                            ));
                        }
                    }
                }
                Some(ManifestBody::Invalid { reason }) => {
                    v.push(format!("#{} invalid: {reason}", r.seq))
                }
                _ => {}
            }
        }
        v
    }

    /// The order PMS relies on: `status=startup` (when sent) first; `stream` / `streamDetail`
    /// (when sent) after it and before `duration`, each detail after its stream; `duration`
    /// before any progress or manifest; no POST on the progress endpoint.
    pub fn check_order(&self) -> Vec<String> {
        let mut v = Vec::new();
        let first = |k: Kind| self.requests.iter().find(|r| r.kind == k).map(|r| r.seq);
        if let Some(s) = first(Kind::Startup)
            && s != 0
        {
            v.push(format!("status=startup is request #{s}, not the first"));
        }
        match first(Kind::Duration) {
            None => v.push("no duration PUT".into()),
            Some(d) => {
                for k in [Kind::Progress, Kind::Manifest, Kind::Dimensions] {
                    if let Some(p) = first(k)
                        && p < d
                    {
                        v.push(format!("{k:?} #{p} before duration #{d}"));
                    }
                }
            }
        }
        v.extend(self.stream_order());
        for r in self.rejected() {
            v.push(format!(
                "#{} {} {}?{} rejected with {}",
                r.seq, r.method, r.path, r.query, r.status
            ));
        }
        v
    }

    /// Where `stream` / `streamDetail` PUTs sit: after `status=startup`, before `duration`, and
    /// each `streamDetail` after the `stream` PUT of the same `index` and `id`.
    fn stream_order(&self) -> Vec<String> {
        let mut v = Vec::new();
        let first = |k: Kind| self.requests.iter().find(|r| r.kind == k).map(|r| r.seq);
        let (startup, duration) = (first(Kind::Startup), first(Kind::Duration));
        for r in self
            .requests
            .iter()
            .filter(|r| matches!(r.kind, Kind::Stream | Kind::StreamDetail))
        {
            if let Some(s) = startup
                && r.seq < s
            {
                v.push(format!(
                    "{:?} #{} before status=startup #{s}",
                    r.kind, r.seq
                ));
            }
            if let Some(d) = duration
                && r.seq > d
            {
                v.push(format!("{:?} #{} after duration #{d}", r.kind, r.seq));
            }
            if r.kind == Kind::StreamDetail {
                let announced = self.requests[..r.seq].iter().any(|s| {
                    s.kind == Kind::Stream
                        && s.param("index") == r.param("index")
                        && s.param("id") == r.param("id")
                });
                if !announced {
                    v.push(format!(
                        "streamDetail #{} (index {:?}) without an earlier stream PUT for it",
                        r.seq,
                        r.param("index")
                    ));
                }
            }
        }
        v
    }

    /// `stream` and `streamDetail` were sent: exactly one of each per input stream (`index`),
    /// `types` (e.g. `["video", "audio"]`) in index order, each with `index`, `id`, `codec` and
    /// `type`; video details carry `width` and `height`, audio ones `channels`.
    pub fn check_streams(&self, types: &[&str]) -> Vec<String> {
        let mut v = Vec::new();
        for kind in [Kind::Stream, Kind::StreamDetail] {
            let reqs = self.of(kind);
            let got: Vec<&str> = reqs.iter().map(|r| r.param("type").unwrap_or("")).collect();
            if got != types {
                v.push(format!(
                    "{kind:?} PUTs for types {got:?}, expected {types:?}"
                ));
            }
            let mut seen = Vec::new();
            for r in &reqs {
                for key in ["index", "id", "codec", "type"] {
                    if r.param(key).is_none_or(str::is_empty) {
                        v.push(format!("{kind:?} #{} without {key}", r.seq));
                    }
                }
                if r.param("index")
                    .and_then(|i| i.parse::<u32>().ok())
                    .is_none()
                {
                    v.push(format!("{kind:?} #{} index is not a number", r.seq));
                }
                if seen.contains(&r.param("index")) {
                    v.push(format!(
                        "{kind:?} #{} repeats index {:?}",
                        r.seq,
                        r.param("index")
                    ));
                }
                seen.push(r.param("index"));
                if kind == Kind::StreamDetail {
                    let need: &[&str] = match r.param("type") {
                        Some("video") => &["width", "height"],
                        Some("audio") => &["channels"],
                        _ => &[],
                    };
                    for key in need {
                        if r.param(key).is_none() {
                            v.push(format!(
                                "streamDetail #{} ({:?}) without {key}",
                                r.seq,
                                r.param("type")
                            ));
                        }
                    }
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = decode_query("level=2&message=hello%20world+x%2C&bad=%zz&flag");
        assert_eq!(q[1], ("message".into(), "hello world x,".into()));
        assert_eq!(q[2], ("bad".into(), "%zz".into()));
        assert_eq!(q[3], ("flag".into(), "".into()));
    }
}
