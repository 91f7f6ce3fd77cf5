//! The remote path: submit the planned job to the orchestrator and follow its events.

use std::{future::Future, pin::Pin, time::Duration};

use clusterplex_core::{
    plan::Plan,
    rpc::{self, Event, pb},
};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tracing::{debug, info, warn};

use crate::Settings;

/// How a remote attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteOutcome {
    /// The job ran on `worker` and exited with `exit_code`.
    Finished { exit_code: i32, worker: String },
    /// No connection within the connect timeout.
    Unreachable(String),
    /// The orchestrator refused the job before it ran (no capable worker, bad token...).
    Rejected(String),
    /// The job started and failed (or the worker was lost). `resume` is where a segmented
    /// session can carry on locally: the first segment not yet written and the media seconds
    /// already covered (from the orchestrator's `Failed`, else tracked from the event stream).
    Failed {
        reason: String,
        exit_code: i32,
        resume: Option<Resume>,
    },
}

/// Where a segmented session can carry on (see `clusterplex_core::Job::resume_at`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resume {
    /// First segment number not yet written.
    pub segment: u64,
    /// Media seconds already covered by the written segments.
    pub elapsed: f64,
}

impl Eq for Resume {}

/// Runs a plan remotely. Dropping the returned future cancels the remote job; `paused`
/// pauses (true) and resumes (false) it while it runs.
pub trait RemoteRunner: Send + Sync {
    fn run<'a>(
        &'a self,
        plan: &'a Plan,
        paused: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = RemoteOutcome> + Send + 'a>>;
}

/// The orchestrator's gRPC `JobService.Submit`.
pub struct GrpcRunner {
    pub settings: Settings,
}

impl RemoteRunner for GrpcRunner {
    fn run<'a>(
        &'a self,
        plan: &'a Plan,
        paused: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = RemoteOutcome> + Send + 'a>> {
        Box::pin(submit(&self.settings, plan, paused))
    }
}

fn poster_identity() -> (String, String) {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    (format!("shim-{}-{nanos:x}", std::process::id()), host)
}

/// Keeps the orchestrator's pause state of job `job_id` equal to what stdin asked for.
struct PauseSync {
    paused: watch::Receiver<bool>,
    /// False once the sender is gone (stdin is not watched).
    open: bool,
    /// What the orchestrator was last told.
    applied: bool,
}

impl PauseSync {
    async fn changed(&mut self) {
        if !self.open || self.paused.changed().await.is_err() {
            self.open = false;
            std::future::pending::<()>().await
        }
    }

    async fn sync(
        &mut self,
        client: &mut rpc::JobServiceClient<rpc::AuthChannel>,
        timeout: Duration,
        job_id: &str,
    ) {
        let want = *self.paused.borrow_and_update();
        if want == self.applied || job_id.is_empty() {
            return;
        }
        // Told once per change: a failure is logged, not retried in a loop (the next key
        // tries again).
        self.applied = want;
        let req = pb::PauseJobRequest {
            job_id: job_id.to_string(),
            paused: want,
        };
        match tokio::time::timeout(timeout, client.pause_job(req)).await {
            Ok(Ok(r)) => {
                let worker = r.into_inner().worker_id;
                info!(job = %job_id, worker = %worker, "{}", if want { "paused the remote job" } else { "resumed the remote job" });
            }
            Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
                warn!(job = %job_id, "the orchestrator cannot pause jobs (an older release); the job keeps running");
            }
            Ok(Err(s)) => {
                warn!(job = %job_id, "pause/resume refused: {:?}: {}", s.code(), s.message())
            }
            Err(_) => warn!(job = %job_id, "no answer to pause/resume within {timeout:?}"),
        }
    }
}

async fn submit(settings: &Settings, plan: &Plan, paused: watch::Receiver<bool>) -> RemoteOutcome {
    let mut client = match settings.conn.job_client().await {
        Ok(c) => c,
        Err(e) => return RemoteOutcome::Unreachable(e.message().to_string()),
    };
    let (poster_id, host) = poster_identity();
    // Plex gives its transcoder the callback token in the environment; the worker needs it to
    // make the same callbacks, so it travels with the submitted job (never in a printed plan).
    let mut job = plan.job.clone();
    job.plex.token = std::env::var("X_PLEX_TOKEN").ok().filter(|t| !t.is_empty());
    let mut request = match rpc::submit_request(&job, &poster_id, &host) {
        Ok(r) => r,
        Err(e) => return RemoteOutcome::Rejected(e.message().to_string()),
    };
    // Our own id for the job (the orchestrator may still pick another; the events carry the
    // one it uses, and that is the one pause/resume name).
    request.job_id = poster_id.clone();
    request.needs_json = match rpc::encode_json(&plan.needs) {
        Ok(n) => n,
        Err(e) => return RemoteOutcome::Rejected(e.message().to_string()),
    };
    let mut stream =
        match tokio::time::timeout(settings.conn.connect_timeout(), client.submit(request)).await {
            Err(_) => {
                return RemoteOutcome::Unreachable(
                    "no answer to Submit within the connect timeout".into(),
                );
            }
            Ok(Err(status)) => {
                return match status.code() {
                    tonic::Code::Unavailable => RemoteOutcome::Unreachable(status.message().into()),
                    _ => RemoteOutcome::Rejected(format!(
                        "{:?}: {}",
                        status.code(),
                        status.message()
                    )),
                };
            }
            Ok(Ok(resp)) => resp.into_inner(),
        };
    let mut worker = String::new();
    let mut started = false;
    // ffmpeg prints stats unless told not to; Jellyfin parses them from stderr.
    let stats = !plan.job.cli_flags.contains_key("nostats");
    let mut tracker = SegmentTracker::default();
    let mut job_id = String::new();
    let mut pause = PauseSync {
        paused,
        open: true,
        applied: false,
    };
    let timeout = settings.conn.connect_timeout();
    loop {
        let next = tokio::select! {
            m = stream.next() => m,
            () = pause.changed() => {
                pause.sync(&mut client, timeout, &job_id).await;
                continue;
            }
        };
        let Some(msg) = next else { break };
        if job_id.is_empty()
            && let Ok(m) = &msg
            && !m.job_id.is_empty()
        {
            job_id = m.job_id.clone();
            // A key pressed before the orchestrator named the job.
            pause.sync(&mut client, timeout, &job_id).await;
        }
        let msg = match msg {
            Ok(m) => m,
            Err(status) => {
                let reason = format!("{:?}: {}", status.code(), status.message());
                return if started {
                    RemoteOutcome::Failed {
                        reason,
                        exit_code: 1,
                        resume: tracker.resume(),
                    }
                } else {
                    RemoteOutcome::Rejected(reason)
                };
            }
        };
        match msg.event {
            Some(Event::Queued(q)) => info!(job = %msg.job_id, position = q.position, "queued"),
            Some(Event::Accepted(a)) => {
                started = true;
                worker = if a.worker_name.is_empty() {
                    a.worker_id
                } else {
                    a.worker_name
                };
                info!(decision = "remote", job = %msg.job_id, worker = %worker, "job accepted by a worker");
            }
            Some(Event::Finished(f)) => {
                return RemoteOutcome::Finished {
                    exit_code: f.exit_status,
                    worker,
                };
            }
            Some(Event::Failed(f)) => {
                let code =
                    pb::FailureCode::try_from(f.code).unwrap_or(pb::FailureCode::Unspecified);
                let reason = format!("{code:?}: {}", f.reason);
                return match code {
                    pb::FailureCode::NoWorker | pb::FailureCode::Refused if !started => {
                        RemoteOutcome::Rejected(reason)
                    }
                    _ => RemoteOutcome::Failed {
                        reason,
                        exit_code: f.exit_status,
                        resume: match (f.resume_segment, f.resume_elapsed) {
                            (Some(segment), Some(elapsed)) => Some(Resume { segment, elapsed }),
                            _ => tracker.resume(),
                        },
                    },
                };
            }
            Some(Event::Cancelled(c)) => {
                return RemoteOutcome::Failed {
                    reason: format!("cancelled: {}", c.reason),
                    exit_code: 1,
                    resume: tracker.resume(),
                };
            }
            Some(Event::Progress(p)) => {
                if stats {
                    eprint!("{}", stats_line(&(&p).into()));
                }
            }
            Some(Event::Segment(seg)) => {
                tracker.segment(seg.output, seg.number, seg.start, seg.end)
            }
            Some(other) => debug!(job = %msg.job_id, event = ?other, "event"),
            None => warn!(job = %msg.job_id, "empty event"),
        }
    }
    RemoteOutcome::Failed {
        reason: "the event stream ended without a result".into(),
        exit_code: 1,
        resume: tracker.resume(),
    }
}

/// Follows `SegmentWritten` events of the first output (the one Plex's playback reads) to know
/// where a failed session can carry on.
#[derive(Debug, Default)]
struct SegmentTracker {
    /// Start of the first segment (where this job began on the output timeline).
    first_start: Option<f64>,
    /// Highest segment number written and its end.
    last: Option<(u64, f64)>,
}

impl SegmentTracker {
    fn segment(&mut self, output: u32, number: u64, start: f64, end: f64) {
        if output != 0 {
            return;
        }
        let first = *self.first_start.get_or_insert(start);
        self.first_start = Some(first.min(start));
        if self.last.is_none_or(|(n, _)| number >= n) {
            self.last = Some((number, end));
        }
    }

    fn resume(&self) -> Option<Resume> {
        let (n, end) = self.last?;
        Some(Resume {
            segment: n + 1,
            elapsed: (end - self.first_start.unwrap_or(0.0)).max(0.0),
        })
    }
}

/// One ffmpeg-style stats line, CR-terminated as ffmpeg writes it on a terminal-less stderr.
pub fn stats_line(p: &clusterplex_core::Progress) -> String {
    let t = p.out_time.max(0.0);
    let cs = (t * 100.0).round() as u64;
    let (h, m, sec, c) = (cs / 360_000, cs / 6000 % 60, cs / 100 % 60, cs % 100);
    let kb = p.bytes / 1024;
    let bitrate = if t > 0.0 {
        format!("{:.1}kbits/s", p.bytes as f64 * 8.0 / t / 1000.0)
    } else {
        "N/A".into()
    };
    format!(
        "frame={:5} fps={:.1} q=-1.0 size={kb:8}kB time={h:02}:{m:02}:{sec:02}.{c:02} bitrate={bitrate} speed={:.3}x    \r",
        p.frames, p.fps, p.speed
    )
}
