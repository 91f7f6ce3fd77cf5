//! The gRPC services: `JobService` for shims, `WorkerService` for worker agents.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use clusterplex_core::{
    placement,
    rpc::{self, PROTOCOL_VERSION, pb},
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::cluster::{Cluster, EventRx, Submission};

/// How long a new worker connection may take to send its `Register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Implements both services over one [`Cluster`].
#[derive(Clone)]
pub struct Services {
    pub cluster: Arc<Cluster>,
}

/// A job's event stream; dropping it (the client cancelled or disconnected) cancels the job.
pub struct JobEventStream {
    rx: EventRx,
    cluster: Arc<Cluster>,
    job_id: String,
}

impl Stream for JobEventStream {
    type Item = Result<pb::JobEventMessage, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for JobEventStream {
    fn drop(&mut self) {
        // No-op when the job already ended (its entry is gone).
        self.cluster.poster_gone(&self.job_id);
    }
}

#[tonic::async_trait]
impl pb::job_service_server::JobService for Services {
    type SubmitStream = JobEventStream;

    async fn submit(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<Self::SubmitStream>, Status> {
        let req = request.into_inner();
        if req.protocol_version != 0 && req.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version mismatch: client speaks {}, orchestrator speaks {PROTOCOL_VERSION}",
                req.protocol_version
            )));
        }
        let job = rpc::decode_job(&req.job_json)?;
        let needs = match rpc::decode_needs(&req.needs_json)? {
            Some(n) => n,
            None => placement::needs_of(&job),
        };
        let (job_id, rx) = self.cluster.submit(Submission {
            job_id: req.job_id,
            job_json: req.job_json,
            job: Some(job),
            needs,
            poster_id: req.poster_id,
            poster_host: req.poster_host,
        })?;
        tracing::debug!(job = job_id, "job submitted");
        Ok(Response::new(JobEventStream {
            rx,
            cluster: Arc::clone(&self.cluster),
            job_id,
        }))
    }

    async fn list_workers(
        &self,
        _: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        Ok(Response::new(pb::ListWorkersResponse {
            workers: self.cluster.list_workers(),
        }))
    }

    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        Ok(Response::new(pb::ListJobsResponse {
            jobs: self.cluster.list_jobs(),
        }))
    }

    async fn drain_worker(
        &self,
        request: Request<pb::DrainWorkerRequest>,
    ) -> Result<Response<pb::DrainWorkerResponse>, Status> {
        let req = request.into_inner();
        let (found, running_jobs) = self.cluster.drain(&req.worker_id, req.cancel_running);
        if !found {
            return Err(Status::not_found(format!(
                "no worker with id `{}`",
                req.worker_id
            )));
        }
        Ok(Response::new(pb::DrainWorkerResponse {
            found,
            running_jobs,
        }))
    }

    async fn pause_job(
        &self,
        request: Request<pb::PauseJobRequest>,
    ) -> Result<Response<pb::PauseJobResponse>, Status> {
        let req = request.into_inner();
        let worker = self.cluster.pause(&req.job_id, req.paused)?;
        Ok(Response::new(pb::PauseJobResponse {
            worker_id: worker.unwrap_or_default(),
        }))
    }
}

#[tonic::async_trait]
impl pb::worker_service_server::WorkerService for Services {
    type AttachStream = UnboundedReceiverStream<Result<pb::OrchestratorMessage, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded("no Register message within 10 s"))?;
        let reg = match first {
            Some(Ok(pb::WorkerMessage {
                msg: Some(pb::worker_message::Msg::Register(r)),
            })) => r,
            Some(Err(e)) => return Err(e),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on Attach must be Register",
                ));
            }
        };
        if reg.protocol_version != PROTOCOL_VERSION {
            self.cluster.metrics.protocol_mismatches.inc();
            tracing::warn!(
                worker = reg.worker_id,
                version = reg.protocol_version,
                "refused: protocol mismatch"
            );
            return Err(Status::failed_precondition(format!(
                "protocol version mismatch: worker `{}` speaks {}, this orchestrator speaks {PROTOCOL_VERSION}; \
                 run the same ClusterPlex release on both",
                reg.worker_id, reg.protocol_version
            )));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let session = self.cluster.register(&reg, tx.clone())?;
        let _ = tx.send(Ok(pb::OrchestratorMessage {
            msg: Some(pb::orchestrator_message::Msg::Registered(pb::Registered {
                orchestrator_version: env!("CARGO_PKG_VERSION").into(),
                protocol_version: PROTOCOL_VERSION,
            })),
        }));
        tracing::info!(
            worker = reg.worker_id,
            name = reg.name,
            score = reg.benchmark_score,
            slots = reg.max_jobs,
            "worker registered"
        );
        let worker_id = reg.worker_id;

        // Reader: every message up; the end of the stream marks the worker lost.
        let cluster = Arc::clone(&self.cluster);
        let wid = worker_id.clone();
        tokio::spawn(async move {
            let why = loop {
                match inbound.next().await {
                    Some(Ok(pb::WorkerMessage { msg: Some(m) })) => {
                        cluster.worker_message(&wid, session, m)
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break format!("stream error: {}", e.message()),
                    None => break "stream closed".to_string(),
                }
            };
            cluster.worker_lost(&wid, session, &why);
        });

        // Watchdog: wakes when the last report would expire, not on a polling tick.
        let cluster = Arc::clone(&self.cluster);
        tokio::spawn(async move {
            let timeout = cluster.config().lost_timeout;
            while let Some(seen) = cluster.last_seen(&worker_id, session) {
                let deadline = seen + timeout;
                if std::time::Instant::now() >= deadline {
                    cluster.worker_lost(&worker_id, session, &format!("no report for {timeout:?}"));
                    break;
                }
                tokio::time::sleep_until(deadline.into()).await;
            }
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}
