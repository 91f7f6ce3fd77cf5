//! The orchestrator's state: registered workers, jobs and the wait queue, and every transition
//! between them. Dispatch is event-driven: a job is placed when it is submitted, when a worker
//! registers, and when a worker frees a slot; nothing polls.
//!
//! One mutex guards the state; it is held only for in-memory work (placement over the worker
//! map, channel sends that never block), never across an `.await`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clusterplex_core::{
    Capabilities, CapabilityNeeds,
    load::Load,
    placement::{self, Candidate, Strategy},
    rpc::{self, Event, pb},
};
use tokio::sync::{Notify, mpsc};
use tonic::Status;

use crate::metrics::{Metrics, WorkerLabels};

/// Events to one submitter. Unbounded so the state lock never waits on a slow shim; a job's
/// events are small and few (progress every interval, one per segment).
pub type EventTx = mpsc::UnboundedSender<Result<pb::JobEventMessage, Status>>;
pub type EventRx = mpsc::UnboundedReceiver<Result<pb::JobEventMessage, Status>>;
/// Messages down to one worker.
pub type WorkerTx = mpsc::UnboundedSender<Result<pb::OrchestratorMessage, Status>>;

/// Scheduling settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub strategy: Strategy,
    /// How long a job waits for a capable worker before failing with `NO_WORKER`.
    pub queue_timeout: Duration,
    /// A worker that sends nothing (no load report) for this long is marked lost.
    pub lost_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::LoadRank,
            queue_timeout: Duration::from_secs(10),
            lost_timeout: Duration::from_secs(15),
        }
    }
}

struct WorkerEntry {
    id: String,
    name: String,
    version: String,
    caps: Capabilities,
    score: f64,
    max_jobs: u32,
    load: Load,
    draining: bool,
    tx: WorkerTx,
    session: u64,
    /// Jobs occupying a slot, until the worker reports their end.
    jobs: BTreeSet<String>,
    last_seen: Instant,
    labels: WorkerLabels,
}

impl Candidate for WorkerEntry {
    fn id(&self) -> &str {
        &self.id
    }
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }
    fn score(&self) -> f64 {
        self.score
    }
    fn max_jobs(&self) -> u32 {
        self.max_jobs
    }
    fn load(&self) -> &Load {
        &self.load
    }
    fn accepting(&self) -> bool {
        !self.draining
    }
}

enum JobState {
    Queued,
    Running { worker: String, started: Instant },
}

struct JobEntry {
    job_json: Vec<u8>,
    needs: CapabilityNeeds,
    poster_id: String,
    poster_host: String,
    submitted: Instant,
    state: JobState,
    tx: EventTx,
}

#[derive(Default)]
struct Inner {
    workers: BTreeMap<String, WorkerEntry>,
    jobs: HashMap<String, JobEntry>,
    queue: VecDeque<String>,
    rr_last: Option<String>,
    posters: HashMap<String, u32>,
    next_session: u64,
    shutting_down: bool,
}

/// What a new job submission carries.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub job_id: String,
    pub job_json: Vec<u8>,
    pub needs: CapabilityNeeds,
    pub poster_id: String,
    pub poster_host: String,
}

/// The orchestrator's shared state.
pub struct Cluster {
    inner: Mutex<Inner>,
    cfg: ClusterConfig,
    pub metrics: Metrics,
    ids: AtomicU64,
    /// Signalled whenever a job ends (graceful shutdown waits on it).
    job_ended: Notify,
}

impl Cluster {
    pub fn new(cfg: ClusterConfig) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            cfg,
            metrics: Metrics::new(),
            ids: AtomicU64::new(1),
            job_ended: Notify::new(),
        })
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough state (every transition is
        // completed before anything that could panic); keep serving rather than cascade.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_job_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        format!("job-{t:x}-{n}")
    }

    // ------------------------------------------------------------------------------ jobs

    /// Accepts a job: places it now or queues it. Returns its id and its event stream.
    pub fn submit(self: &Arc<Self>, mut sub: Submission) -> Result<(String, EventRx), Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        if inner.shutting_down {
            return Err(Status::unavailable("the orchestrator is shutting down"));
        }
        if sub.job_id.is_empty() || inner.jobs.contains_key(&sub.job_id) {
            sub.job_id = self.new_job_id();
        }
        let id = sub.job_id.clone();
        self.metrics.jobs_posted.inc();
        let count = inner.posters.entry(sub.poster_id.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.metrics.job_posters_active.inc();
        }
        inner.jobs.insert(
            id.clone(),
            JobEntry {
                job_json: sub.job_json,
                needs: sub.needs,
                poster_id: sub.poster_id,
                poster_host: sub.poster_host,
                submitted: Instant::now(),
                state: JobState::Queued,
                tx,
            },
        );
        if !self.place_locked(&mut inner, &id) {
            inner.queue.push_back(id.clone());
            self.metrics.queue_depth.set(inner.queue.len() as i64);
            let position = u32::try_from(inner.queue.len()).unwrap_or(u32::MAX);
            if let Some(j) = inner.jobs.get(&id) {
                let _ = j.tx.send(Ok(rpc::job_event(
                    &id,
                    Event::Queued(pb::Queued { position }),
                )));
            }
            drop(inner);
            // A timer per queued job, not a poll: it fires once, at the deadline.
            let me = Arc::clone(self);
            let jid = id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(me.cfg.queue_timeout).await;
                me.queue_timed_out(&jid);
            });
        }
        Ok((id, rx))
    }

    /// Tries to place a queued (or new) job. True when it was assigned.
    fn place_locked(&self, inner: &mut Inner, job_id: &str) -> bool {
        let t0 = Instant::now();
        let Some(job) = inner.jobs.get(job_id) else {
            return false;
        };
        let chosen = placement::select(
            self.cfg.strategy,
            inner.workers.values(),
            &job.needs,
            inner.rr_last.as_deref(),
        )
        .map(|w| w.id.clone());
        self.metrics
            .placement_seconds
            .observe(t0.elapsed().as_secs_f64());
        let Some(wid) = chosen else { return false };
        let Inner {
            workers,
            jobs,
            rr_last,
            ..
        } = inner;
        let (Some(w), Some(job)) = (workers.get_mut(&wid), jobs.get_mut(job_id)) else {
            return false;
        };
        let assign = pb::OrchestratorMessage {
            msg: Some(pb::orchestrator_message::Msg::Assign(pb::AssignJob {
                job_id: job_id.to_string(),
                job_json: job.job_json.clone(),
            })),
        };
        if w.tx.send(Ok(assign)).is_err() {
            // Its stream is closing; the reader task will mark it lost.
            return false;
        }
        placement::account_assignment(&mut w.load, w.max_jobs);
        w.jobs.insert(job_id.to_string());
        self.update_worker_gauges(w);
        *rr_last = Some(wid.clone());
        self.metrics
            .queue_wait_seconds
            .observe(job.submitted.elapsed().as_secs_f64());
        job.state = JobState::Running {
            worker: wid.clone(),
            started: Instant::now(),
        };
        let _ = job.tx.send(Ok(rpc::job_event(
            job_id,
            Event::Accepted(pb::Accepted {
                worker_id: wid,
                worker_name: w.name.clone(),
            }),
        )));
        true
    }

    /// Places as many queued jobs as possible, oldest first.
    fn drain_queue_locked(&self, inner: &mut Inner) {
        if inner.queue.is_empty() {
            return;
        }
        let queued: Vec<String> = inner.queue.drain(..).collect();
        for id in queued {
            if !inner.jobs.contains_key(&id) {
                continue;
            }
            if !self.place_locked(inner, &id) {
                inner.queue.push_back(id);
            }
        }
        self.metrics.queue_depth.set(inner.queue.len() as i64);
    }

    fn queue_timed_out(&self, job_id: &str) {
        let mut inner = self.lock();
        let still_queued =
            matches!(inner.jobs.get(job_id), Some(j) if matches!(j.state, JobState::Queued));
        if !still_queued {
            return;
        }
        inner.queue.retain(|j| j != job_id);
        self.metrics.queue_depth.set(inner.queue.len() as i64);
        let reason = match inner.jobs.get(job_id) {
            Some(j) => placement::explain_unplaceable(inner.workers.values(), &j.needs),
            None => return,
        };
        let reason = format!("{reason} (waited {:?})", self.cfg.queue_timeout);
        self.finish_locked(
            &mut inner,
            job_id,
            rpc::failed(pb::FailureCode::NoWorker, reason, false),
        );
    }

    /// Sends a terminal event to the job's submitter and forgets the job (the submitter's
    /// stream then ends). The worker slot is released separately, when the worker reports.
    fn finish_locked(&self, inner: &mut Inner, job_id: &str, event: Event) {
        let Some(job) = inner.jobs.remove(job_id) else {
            return;
        };
        match &event {
            Event::Finished(_) => self.metrics.jobs_succeeded.inc(),
            Event::Cancelled(_) => self.metrics.jobs_killed.inc(),
            _ => self.metrics.jobs_failed.inc(),
        }
        self.metrics.jobs_completed.inc();
        if let JobState::Running { started, .. } = job.state {
            self.metrics
                .job_duration_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        let _ = job.tx.send(Ok(rpc::job_event(job_id, event)));
        self.poster_done_locked(inner, &job.poster_id);
        self.job_ended.notify_waiters();
    }

    fn poster_done_locked(&self, inner: &mut Inner, poster: &str) {
        if let Some(c) = inner.posters.get_mut(poster) {
            *c -= 1;
            if *c == 0 {
                inner.posters.remove(poster);
                self.metrics.job_posters_active.dec();
            }
        }
    }

    /// The submitter went away (dropped its call): cancel the job wherever it is.
    pub fn poster_gone(&self, job_id: &str) {
        let mut inner = self.lock();
        let Some(job) = inner.jobs.get(job_id) else {
            return;
        };
        if let JobState::Running { worker, .. } = &job.state {
            if let Some(w) = inner.workers.get(worker) {
                let _ = w.tx.send(Ok(pb::OrchestratorMessage {
                    msg: Some(pb::orchestrator_message::Msg::Cancel(pb::CancelJob {
                        job_id: job_id.to_string(),
                        reason: "the submitter disconnected".into(),
                    })),
                }));
            }
        } else {
            inner.queue.retain(|j| j != job_id);
            self.metrics.queue_depth.set(inner.queue.len() as i64);
        }
        tracing::info!(job = job_id, "submitter disconnected; job cancelled");
        self.finish_locked(
            &mut inner,
            job_id,
            Event::Cancelled(pb::Cancelled {
                reason: "submitter disconnected".into(),
            }),
        );
    }

    // --------------------------------------------------------------------------- workers

    /// Registers (or re-registers) a worker. Returns the session number of this connection.
    pub fn register(&self, reg: &pb::Register, tx: WorkerTx) -> Result<u64, Status> {
        if reg.worker_id.is_empty() {
            return Err(Status::invalid_argument("register: worker_id is empty"));
        }
        let mut inner = self.lock();
        inner.next_session += 1;
        let session = inner.next_session;
        let still_running: BTreeSet<String> = reg.running_job_ids.iter().cloned().collect();
        let mut kept = BTreeSet::new();
        if let Some(old) = inner.workers.remove(&reg.worker_id) {
            // Same id again (reconnect): keep the jobs it still runs, fail the ones it lost.
            tracing::info!(
                worker = reg.worker_id,
                "worker re-registered; replacing its old connection"
            );
            self.metrics.worker_load_cpu.remove(&old.labels);
            self.metrics.worker_load_tasks.remove(&old.labels);
            self.metrics.worker_load_rank.remove(&old.labels);
            self.metrics.workers_active.dec();
            for j in old.jobs {
                if still_running.contains(&j) {
                    kept.insert(j);
                } else {
                    self.fail_lost_job_locked(&mut inner, &j, &old.id, "the worker restarted");
                }
            }
        }
        // Jobs it runs that we no longer track (failed over while it was away): stop them.
        for j in still_running.difference(&kept) {
            let _ = tx.send(Ok(pb::OrchestratorMessage {
                msg: Some(pb::orchestrator_message::Msg::Cancel(pb::CancelJob {
                    job_id: j.clone(),
                    reason: "the orchestrator no longer tracks this job".into(),
                })),
            }));
        }
        let labels = WorkerLabels {
            worker_id: reg.worker_id.clone(),
            worker_name: reg.name.clone(),
        };
        let load = Load {
            running_jobs: u32::try_from(kept.len()).unwrap_or(u32::MAX),
            ..Load::default()
        };
        let entry = WorkerEntry {
            id: reg.worker_id.clone(),
            name: reg.name.clone(),
            version: reg.version.clone(),
            caps: reg
                .capabilities
                .clone()
                .map(Capabilities::from)
                .unwrap_or_default(),
            score: if reg.benchmark_score.is_finite() {
                reg.benchmark_score.max(0.0)
            } else {
                0.0
            },
            max_jobs: reg.max_jobs.max(1),
            load,
            draining: false,
            tx,
            session,
            jobs: kept,
            last_seen: Instant::now(),
            labels,
        };
        self.metrics.workers_active.inc();
        self.update_worker_gauges(&entry);
        inner.workers.insert(entry.id.clone(), entry);
        self.drain_queue_locked(&mut inner);
        Ok(session)
    }

    fn update_worker_gauges(&self, w: &WorkerEntry) {
        self.metrics
            .worker_load_cpu
            .get_or_create(&w.labels)
            .set(w.load.cpu_percent);
        self.metrics
            .worker_load_tasks
            .get_or_create(&w.labels)
            .set(i64::from(w.load.running_jobs));
        self.metrics
            .worker_load_rank
            .get_or_create(&w.labels)
            .set(placement::rank(w.score, w.load.cpu_percent));
    }

    fn fail_lost_job_locked(&self, inner: &mut Inner, job_id: &str, worker: &str, why: &str) {
        let on_worker = matches!(inner.jobs.get(job_id), Some(j) if matches!(&j.state, JobState::Running { worker: w, .. } if w == worker));
        if on_worker {
            let reason = format!("worker {worker} lost: {why}");
            self.finish_locked(
                inner,
                job_id,
                rpc::failed(pb::FailureCode::WorkerLost, reason, true),
            );
        }
    }

    /// The worker's stream ended or its reports stopped: forget it and fail its jobs now, so
    /// their submitters can fall back at once.
    pub fn worker_lost(&self, worker_id: &str, session: u64, why: &str) {
        let mut inner = self.lock();
        let current = matches!(inner.workers.get(worker_id), Some(w) if w.session == session);
        if !current {
            return;
        }
        let Some(w) = inner.workers.remove(worker_id) else {
            return;
        };
        tracing::warn!(
            worker = worker_id,
            name = w.name,
            jobs = w.jobs.len(),
            "worker lost: {why}"
        );
        self.metrics.workers_active.dec();
        self.metrics.worker_load_cpu.remove(&w.labels);
        self.metrics.worker_load_tasks.remove(&w.labels);
        self.metrics.worker_load_rank.remove(&w.labels);
        let _ =
            w.tx.send(Err(Status::unavailable(format!("marked lost: {why}"))));
        for j in &w.jobs {
            self.fail_lost_job_locked(&mut inner, j, worker_id, why);
        }
    }

    /// When the worker was last heard from, if this session is still current.
    pub fn last_seen(&self, worker_id: &str, session: u64) -> Option<Instant> {
        let inner = self.lock();
        inner
            .workers
            .get(worker_id)
            .filter(|w| w.session == session)
            .map(|w| w.last_seen)
    }

    /// A message from a worker's stream.
    pub fn worker_message(&self, worker_id: &str, session: u64, msg: pb::worker_message::Msg) {
        let mut inner = self.lock();
        let Some(w) = inner
            .workers
            .get_mut(worker_id)
            .filter(|w| w.session == session)
        else {
            return;
        };
        w.last_seen = Instant::now();
        match msg {
            pb::worker_message::Msg::Register(_) => {}
            pb::worker_message::Msg::Load(l) => {
                w.load.cpu_percent = if l.cpu_percent.is_finite() {
                    l.cpu_percent.clamp(0.0, 100.0)
                } else {
                    0.0
                };
                w.load.mem_used_bytes = l.mem_used_bytes;
                w.load.mem_total_bytes = l.mem_total_bytes;
                // The orchestrator's own count is authoritative (it includes assignments the
                // worker has not seen yet).
                w.load.running_jobs = u32::try_from(w.jobs.len()).unwrap_or(u32::MAX);
                let w = &*w;
                self.update_worker_gauges(w);
            }
            pb::worker_message::Msg::JobEvent(ev) => {
                let Some(event) = ev.event else { return };
                let job_id = ev.job_id;
                if rpc::is_terminal(&event) {
                    if w.jobs.remove(&job_id) {
                        placement::account_release(&mut w.load, w.max_jobs);
                        let w = &*w;
                        self.update_worker_gauges(w);
                    }
                    let ours = matches!(inner.jobs.get(&job_id), Some(j) if matches!(&j.state, JobState::Running { worker, .. } if worker == worker_id));
                    if ours {
                        self.finish_locked(&mut inner, &job_id, event);
                    }
                    self.drain_queue_locked(&mut inner);
                } else if let Some(job) = inner.jobs.get(&job_id) {
                    if matches!(event, Event::Accepted(_) | Event::Queued(_)) {
                        // The orchestrator already told the submitter where the job runs.
                        return;
                    }
                    let _ = job.tx.send(Ok(rpc::job_event(&job_id, event)));
                }
            }
        }
    }

    /// Stops placing jobs on a worker. Returns `(found, running jobs)`.
    pub fn drain(&self, worker_id: &str, cancel_running: bool) -> (bool, u32) {
        let mut inner = self.lock();
        let Some(w) = inner.workers.get_mut(worker_id) else {
            return (false, 0);
        };
        w.draining = true;
        let _ = w.tx.send(Ok(pb::OrchestratorMessage {
            msg: Some(pb::orchestrator_message::Msg::Drain(pb::Drain {})),
        }));
        let jobs: Vec<String> = w.jobs.iter().cloned().collect();
        if cancel_running {
            for j in &jobs {
                let _ = w.tx.send(Ok(pb::OrchestratorMessage {
                    msg: Some(pb::orchestrator_message::Msg::Cancel(pb::CancelJob {
                        job_id: j.clone(),
                        reason: "worker drained".into(),
                    })),
                }));
            }
            for j in &jobs {
                self.fail_lost_job_locked(&mut inner, j, worker_id, "drained");
            }
        }
        (true, u32::try_from(jobs.len()).unwrap_or(u32::MAX))
    }

    pub fn list_workers(&self) -> Vec<pb::WorkerInfo> {
        let inner = self.lock();
        inner
            .workers
            .values()
            .map(|w| pb::WorkerInfo {
                id: w.id.clone(),
                name: w.name.clone(),
                version: w.version.clone(),
                state: if w.draining {
                    pb::WorkerState::Draining
                } else {
                    pb::WorkerState::Active
                } as i32,
                capabilities: Some((&w.caps).into()),
                benchmark_score: w.score,
                max_jobs: w.max_jobs,
                running_jobs: w.load.running_jobs,
                cpu_percent: w.load.cpu_percent,
                mem_used_bytes: w.load.mem_used_bytes,
                job_ids: w.jobs.iter().cloned().collect(),
            })
            .collect()
    }

    pub fn list_jobs(&self) -> Vec<pb::JobInfo> {
        let inner = self.lock();
        let mut jobs: Vec<pb::JobInfo> = inner
            .jobs
            .iter()
            .map(|(id, j)| pb::JobInfo {
                job_id: id.clone(),
                state: match j.state {
                    JobState::Queued => "queued".into(),
                    JobState::Running { .. } => "running".into(),
                },
                worker_id: match &j.state {
                    JobState::Running { worker, .. } => worker.clone(),
                    JobState::Queued => String::new(),
                },
                poster_id: j.poster_id.clone(),
                poster_host: j.poster_host.clone(),
                age_ms: u64::try_from(j.submitted.elapsed().as_millis()).unwrap_or(u64::MAX),
            })
            .collect();
        jobs.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        jobs
    }

    /// Ends every worker stream (at shutdown), so the gRPC server can stop.
    pub fn disconnect_workers(&self) {
        let mut inner = self.lock();
        let workers = std::mem::take(&mut inner.workers);
        for (_, w) in workers {
            let _ = w.tx.send(Err(Status::unavailable(
                "the orchestrator is shutting down",
            )));
            self.metrics.workers_active.dec();
        }
    }

    /// Number of jobs not yet ended (queued or running).
    pub fn active_jobs(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Graceful shutdown: refuse new jobs, fail queued ones, let running ones finish for up to
    /// `grace`, then fail and cancel what is left.
    pub async fn shutdown(&self, grace: Duration) {
        {
            let mut inner = self.lock();
            inner.shutting_down = true;
            let queued: Vec<String> = inner.queue.drain(..).collect();
            self.metrics.queue_depth.set(0);
            for id in queued {
                self.finish_locked(
                    &mut inner,
                    &id,
                    rpc::failed(
                        pb::FailureCode::Shutdown,
                        "the orchestrator is shutting down",
                        true,
                    ),
                );
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.job_ended.notified();
            if self.active_jobs() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let mut inner = self.lock();
        let left: Vec<(String, Option<String>)> = inner
            .jobs
            .iter()
            .map(|(id, j)| {
                (
                    id.clone(),
                    match &j.state {
                        JobState::Running { worker, .. } => Some(worker.clone()),
                        JobState::Queued => None,
                    },
                )
            })
            .collect();
        for (id, worker) in left {
            if let Some(w) = worker.and_then(|w| inner.workers.get(&w)) {
                let _ = w.tx.send(Ok(pb::OrchestratorMessage {
                    msg: Some(pb::orchestrator_message::Msg::Cancel(pb::CancelJob {
                        job_id: id.clone(),
                        reason: "orchestrator shutdown".into(),
                    })),
                }));
            }
            self.finish_locked(
                &mut inner,
                &id,
                rpc::failed(
                    pb::FailureCode::Shutdown,
                    "the orchestrator shut down before the job ended",
                    true,
                ),
            );
        }
    }
}
