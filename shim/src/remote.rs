//! The remote path: submit the planned job to the orchestrator and follow its events.

use std::{future::Future, pin::Pin};

use clusterplex_core::{
    plan::Plan,
    rpc::{self, Event, pb},
};
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
    /// The job started and failed (or the worker was lost).
    Failed { reason: String, exit_code: i32 },
}

/// Runs a plan remotely. Dropping the returned future cancels the remote job.
pub trait RemoteRunner: Send + Sync {
    fn run<'a>(
        &'a self,
        plan: &'a Plan,
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
    ) -> Pin<Box<dyn Future<Output = RemoteOutcome> + Send + 'a>> {
        Box::pin(submit(&self.settings, plan))
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

async fn submit(settings: &Settings, plan: &Plan) -> RemoteOutcome {
    let mut client = match rpc::job_client(
        &settings.orchestrator_url,
        settings.token.as_deref(),
        settings.connect_timeout(),
    )
    .await
    {
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
    request.needs_json = match rpc::encode_json(&plan.needs) {
        Ok(n) => n,
        Err(e) => return RemoteOutcome::Rejected(e.message().to_string()),
    };
    let mut stream = match tokio::time::timeout(settings.connect_timeout(), client.submit(request))
        .await
    {
        Err(_) => {
            return RemoteOutcome::Unreachable(
                "no answer to Submit within the connect timeout".into(),
            );
        }
        Ok(Err(status)) => {
            return match status.code() {
                tonic::Code::Unavailable => RemoteOutcome::Unreachable(status.message().into()),
                _ => RemoteOutcome::Rejected(format!("{:?}: {}", status.code(), status.message())),
            };
        }
        Ok(Ok(resp)) => resp.into_inner(),
    };
    let mut worker = String::new();
    let mut started = false;
    while let Some(msg) = stream.next().await {
        let msg = match msg {
            Ok(m) => m,
            Err(status) => {
                let reason = format!("{:?}: {}", status.code(), status.message());
                return if started {
                    RemoteOutcome::Failed {
                        reason,
                        exit_code: 1,
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
                    },
                };
            }
            Some(Event::Cancelled(c)) => {
                return RemoteOutcome::Failed {
                    reason: format!("cancelled: {}", c.reason),
                    exit_code: 1,
                };
            }
            Some(other) => debug!(job = %msg.job_id, event = ?other, "event"),
            None => warn!(job = %msg.job_id, "empty event"),
        }
    }
    RemoteOutcome::Failed {
        reason: "the event stream ended without a result".into(),
        exit_code: 1,
    }
}
