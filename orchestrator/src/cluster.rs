//! The orchestrator's state: registered workers, jobs and the wait queue, and every transition
//! between them. Dispatch is event-driven: a job is placed when it is submitted, when a worker
//! registers, and when a worker frees a slot; nothing polls.
//!
//! One mutex guards the state; it is held only for in-memory work (placement over the worker
//! map, channel sends that never block), never across an `.await`.
//!
//! Two behaviours serve Plex sessions (issue #6):
//! - *Superseding and affinity*: a job whose `plex.session_id` matches a live job of the same
//!   session replaces it (Plex restarted the transcoder for a seek): the old job is cancelled at
//!   once and the new one prefers the old one's worker while it is capable and has a free slot.
//! - *Failover resume*: when a worker is lost, each of its jobs is placed again elsewhere,
//!   invisibly to the submitter. Segmented jobs carry on from the first segment not yet written
//!   ([`Job::resume_at`]); single-file jobs restart from the beginning. Only when no capable
//!   worker frees up within the queue timeout does the submitter get `failed{WORKER_LOST}`, with
//!   the resume point so that it can carry on locally.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clusterplex_core::{
    Capabilities, CapabilityNeeds, Job, Segmenting,
    load::Load,
    placement::{self, Candidate, CapableCache, PlacementIndex, Strategy},
    rpc::{self, Event, pb},
};
use tokio::sync::{Notify, mpsc};
use tonic::Status;

use crate::{
    metrics::{Metrics, WorkerGauges, WorkerLabels},
    power::{self, AwakeWorker, PowerConfig, SleepState, Sleeper, Sleepers},
};

/// How long the worker that last ran a session is remembered for affinity after the session's
/// job ended (Plex kills the old transcoder before it starts the one for the seek).
const SESSION_MEMORY: Duration = Duration::from_secs(60);

/// How long a job being moved off a drained worker waits for that worker to confirm the
/// cancel before it moves anyway.
const DRAIN_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Sleeping idle workers and waking them (off by default).
    pub power: PowerConfig,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::LoadRank,
            queue_timeout: Duration::from_secs(10),
            lost_timeout: Duration::from_secs(15),
            power: PowerConfig::default(),
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
    /// Jobs assigned to the worker, until it reports their end.
    jobs: BTreeSet<String>,
    /// Of `jobs`, those the orchestrator cancelled: the engine stops within 200 ms, so their
    /// slots already count as free (a seek's new job can then go to the same worker at once).
    cancelling: BTreeSet<String>,
    last_seen: Instant,
    labels: WorkerLabels,
    /// Handles on this worker's gauges, so updates skip the label lookup.
    gauges: WorkerGauges,
    /// Its Wake-on-LAN MAC, when it sent a valid one.
    mac: Option<[u8; 6]>,
    /// It has a sleep command (and a MAC): it may be told to sleep.
    can_sleep: bool,
    /// Since when it has had no job (None while it runs one).
    idle_since: Option<Instant>,
    /// Told to sleep and not yet gone (its box is suspending, or its sleep command failed):
    /// it takes no job until it is taken back or registers again.
    asleep: bool,
}

impl WorkerEntry {
    /// Jobs that hold a slot.
    fn busy(&self) -> u32 {
        u32::try_from(self.jobs.len().saturating_sub(self.cancelling.len())).unwrap_or(u32::MAX)
    }

    /// After its load, slots or draining changed: its gauges and the placement index follow.
    fn load_changed(&self, index: &mut PlacementIndex) {
        self.gauges.update(&self.load, self.score);
        index.update(self);
    }

    fn send_pause(&self, job_id: &str, paused: bool) {
        let _ = self.tx.send(Ok(pb::OrchestratorMessage {
            msg: Some(pb::orchestrator_message::Msg::Pause(pb::PauseJob {
                job_id: job_id.to_string(),
                paused,
            })),
        }));
    }

    fn send_cancel(&self, job_id: &str, reason: &str) {
        let _ = self.tx.send(Ok(pb::OrchestratorMessage {
            msg: Some(pb::orchestrator_message::Msg::Cancel(pb::CancelJob {
                job_id: job_id.to_string(),
                reason: reason.to_string(),
            })),
        }));
    }

    /// Cancels one of its jobs and frees the job's slot now.
    fn cancel_job(&mut self, job_id: &str, reason: &str, index: &mut PlacementIndex) {
        self.send_cancel(job_id, reason);
        if self.jobs.contains(job_id) && self.cancelling.insert(job_id.to_string()) {
            placement::account_release(&mut self.load, self.max_jobs);
            self.load_changed(index);
        }
    }
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
        !self.draining && !self.asleep
    }
}

enum JobState {
    Queued,
    Running { worker: String, started: Instant },
}

struct JobEntry {
    /// The job as submitted.
    job_json: Vec<u8>,
    /// The parsed job, for resuming (None only for callers that do not pass it).
    job: Option<Job>,
    /// After a failover: what the next worker runs instead of `job_json` (the continuation).
    continuation: Option<Vec<u8>>,
    needs: CapabilityNeeds,
    poster_id: String,
    poster_host: String,
    submitted: Instant,
    state: JobState,
    tx: EventTx,
    /// Plex transcode session (for superseding and affinity).
    session: Option<String>,
    /// Worker to try first (the one that ran this session before).
    prefer: Option<String>,
    /// Segments written so far on the first output: number -> (start, end) seconds.
    segments: BTreeMap<u64, (f64, f64)>,
    /// The latest progress its worker reported: a continuation counts on from it.
    last_progress: Option<pb::ProgressEvent>,
    /// Bumped each time the job is queued, so that an older queue timer does not fire on it.
    generation: u64,
    /// Set once the job lost its worker and was moved: its submitter does not see the move.
    failover: Option<Failover>,
    /// Paused by its submitter (`PauseJob`): every worker that runs it is told, a failover
    /// continuation included.
    paused: bool,
}

/// Why and from where a job is being carried on elsewhere.
struct Failover {
    why: String,
    /// `(next_segment, elapsed)` of the continuation; None when it restarts from the start.
    resume: Option<(u64, f64)>,
}

impl JobEntry {
    /// Where a segmented job can carry on: the first segment number not yet written (counting
    /// up from the job's first number) and the media seconds from the job's output origin to
    /// the end of the contiguous run before it. None when nothing was written yet or the job is not segmented.
    fn resume_point(&self) -> Option<(u64, f64)> {
        let job = self.job.as_ref()?;
        let first = match job.outputs.first()?.segmenting.as_ref()? {
            Segmenting::Segment { start_number, .. }
            | Segmenting::Hls { start_number, .. }
            | Segmenting::Dash { start_number, .. } => *start_number,
        };
        let (start, _) = *self.segments.get(&first)?;
        let mut next = first;
        let mut end = start;
        while let Some(&(_, e)) = self.segments.get(&next) {
            end = e;
            next += 1;
        }
        Some((next, (end - job.output_origin()).max(0.0)))
    }
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
    /// Plex session id -> its live job.
    sessions: HashMap<String, String>,
    /// Plex session id -> the worker that last ran it, and when its job ended.
    recent_sessions: HashMap<String, (String, Instant)>,
    /// Workers with a free slot in the strategy's order (kept in step with `workers`).
    index: PlacementIndex,
    /// Workers that cover each distinct set of needs (kept in step with `workers`).
    capable: CapableCache,
    /// Jobs being moved off a worker drained with `cancel_running` -> that worker. They move
    /// once the worker confirms the cancel, so two workers never write the same segment.
    moving: HashMap<String, String>,
    /// Workers told to sleep (power saving), remembered after their connection drops.
    sleepers: Sleepers,
}

/// What a new job submission carries.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub job_id: String,
    pub job_json: Vec<u8>,
    /// The parsed job: needed for superseding by session and for failover resume.
    pub job: Option<Job>,
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
            inner: Mutex::new(Inner {
                index: PlacementIndex::new(cfg.strategy),
                ..Inner::default()
            }),
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
        let session = sub
            .job
            .as_ref()
            .and_then(|j| j.plex.session_id.clone())
            .filter(|s| !s.is_empty());
        let prefer = match &session {
            Some(sid) => self.supersede_locked(&mut inner, sid, &id),
            None => None,
        };
        inner.jobs.insert(
            id.clone(),
            JobEntry {
                job_json: sub.job_json,
                job: sub.job,
                continuation: None,
                needs: sub.needs,
                poster_id: sub.poster_id,
                poster_host: sub.poster_host,
                submitted: Instant::now(),
                state: JobState::Queued,
                tx,
                session,
                prefer,
                segments: BTreeMap::new(),
                last_progress: None,
                generation: 0,
                failover: None,
                paused: false,
            },
        );
        if !self.place_locked(&mut inner, &id) {
            self.enqueue_locked(&mut inner, &id);
        }
        Ok((id, rx))
    }

    /// A new job of Plex session `sid` arrived: the session's live job (if any) is cancelled
    /// at once, since Plex restarted the transcoder (a seek). Returns the worker the new job
    /// should prefer: the one that ran the session last.
    fn supersede_locked(&self, inner: &mut Inner, sid: &str, new_id: &str) -> Option<String> {
        let old = inner.sessions.insert(sid.to_string(), new_id.to_string());
        if let Some(old_id) = old
            && let Some(job) = inner.jobs.get(&old_id)
        {
            let reason = format!("superseded by a new transcode of session {sid}");
            match &job.state {
                JobState::Running { worker, .. } => {
                    let worker = worker.clone();
                    if let Some(w) = inner.workers.get_mut(&worker) {
                        w.cancel_job(&old_id, &reason, &mut inner.index);
                    }
                    inner
                        .recent_sessions
                        .insert(sid.to_string(), (worker, Instant::now()));
                }
                JobState::Queued => {
                    inner.queue.retain(|j| *j != old_id);
                    self.metrics.queue_depth.set(inner.queue.len() as i64);
                }
            }
            tracing::info!(job = old_id, session = sid, "superseded (seek)");
            self.finish_locked(inner, &old_id, Event::Cancelled(pb::Cancelled { reason }));
        }
        let recent = inner.recent_sessions.get(sid)?;
        (recent.1.elapsed() < SESSION_MEMORY).then(|| recent.0.clone())
    }

    /// Queues a job that could not be placed, with a timer that fails it at the queue timeout.
    /// A job that was already running (failover) goes before new submissions.
    fn enqueue_locked(self: &Arc<Self>, inner: &mut Inner, id: &str) {
        let Some(j) = inner.jobs.get(id) else {
            return;
        };
        if j.failover.is_some() {
            inner.queue.push_front(id.to_string());
        } else {
            inner.queue.push_back(id.to_string());
        }
        self.metrics.queue_depth.set(inner.queue.len() as i64);
        let position = u32::try_from(inner.queue.len()).unwrap_or(u32::MAX);
        let Some(j) = inner.jobs.get_mut(id) else {
            return;
        };
        j.generation += 1;
        let generation = j.generation;
        if j.failover.is_none() {
            let _ = j.tx.send(Ok(rpc::job_event(
                id,
                Event::Queued(pb::Queued { position }),
            )));
        }
        // A timer per queued job, not a poll: it fires once, at the deadline.
        let me = Arc::clone(self);
        let jid = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(me.cfg.queue_timeout).await;
            me.queue_timed_out(&jid, generation);
        });
        self.wake_for_queue_locked(inner);
    }

    /// Tries to place a queued (or new) job. True when it was assigned.
    fn place_locked(&self, inner: &mut Inner, job_id: &str) -> bool {
        let t0 = Instant::now();
        let Some(job) = inner.jobs.get(job_id) else {
            return false;
        };
        // Affinity first (a seek of a session goes back to its worker), then the strategy.
        let preferred = job
            .prefer
            .as_ref()
            .and_then(|p| inner.workers.get(p))
            .filter(|w| placement::has_free_slot(*w) && w.caps.covers(&job.needs));
        let affinity = preferred.is_some();
        let chosen = match preferred {
            Some(w) => Some(w.id.clone()),
            None => {
                let capable = inner.capable.get(&job.needs, inner.workers.values());
                let chosen = inner.index.select(capable, inner.rr_last.as_deref());
                // The index must choose what a pass over every worker would.
                debug_assert_eq!(
                    chosen.as_deref(),
                    placement::select(
                        self.cfg.strategy,
                        inner.workers.values(),
                        &job.needs,
                        inner.rr_last.as_deref(),
                    )
                    .map(|w| w.id.as_str())
                );
                chosen.map(|id| id.to_string())
            }
        };
        self.metrics
            .placement_seconds
            .observe(t0.elapsed().as_secs_f64());
        let Some(wid) = chosen else { return false };
        let Inner {
            workers,
            jobs,
            rr_last,
            index,
            ..
        } = inner;
        let (Some(w), Some(job)) = (workers.get_mut(&wid), jobs.get_mut(job_id)) else {
            return false;
        };
        let assign = pb::OrchestratorMessage {
            msg: Some(pb::orchestrator_message::Msg::Assign(pb::AssignJob {
                job_id: job_id.to_string(),
                job_json: job.continuation.as_ref().unwrap_or(&job.job_json).clone(),
                // A job paused before it was placed (or before a failover) starts paused.
                paused: job.paused,
            })),
        };
        if w.tx.send(Ok(assign)).is_err() {
            // Its stream is closing; the reader task will mark it lost.
            return false;
        }
        placement::account_assignment(&mut w.load, w.max_jobs);
        w.jobs.insert(job_id.to_string());
        w.idle_since = None;
        w.load_changed(index);
        if !affinity {
            *rr_last = Some(wid.clone());
        }
        job.state = JobState::Running {
            worker: wid.clone(),
            started: Instant::now(),
        };
        if let Some(f) = &job.failover {
            // Invisible to the submitter: its stream carries on with the new worker's events.
            tracing::info!(job = job_id, worker = wid, resume = ?f.resume, "job moved after: {}", f.why);
            self.metrics.jobs_failed_over.inc();
            return true;
        }
        self.metrics
            .queue_wait_seconds
            .observe(job.submitted.elapsed().as_secs_f64());
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

    fn queue_timed_out(self: &Arc<Self>, job_id: &str, generation: u64) {
        let mut inner = self.lock();
        let still_queued = matches!(inner.jobs.get(job_id),
            Some(j) if matches!(j.state, JobState::Queued) && j.generation == generation);
        if !still_queued {
            return;
        }
        // A sleeping worker that covers it is being woken: the job waits for it until that
        // wake's deadline, then (if still queued) ends here as it would have at the timeout.
        if let Some(deadline) = inner
            .jobs
            .get(job_id)
            .and_then(|j| inner.sleepers.waking_for(&j.needs, Instant::now()))
        {
            let me = Arc::clone(self);
            let jid = job_id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline.into()).await;
                me.queue_timed_out(&jid, generation);
            });
            return;
        }
        inner.queue.retain(|j| j != job_id);
        self.metrics.queue_depth.set(inner.queue.len() as i64);
        let Some(j) = inner.jobs.get(job_id) else {
            return;
        };
        let explain = placement::explain_unplaceable(inner.workers.values(), &j.needs);
        let waited = self.cfg.queue_timeout;
        let event = match &j.failover {
            // The job lost its worker and none could take it over: the submitter carries on
            // (locally, from the resume point when there is one).
            Some(f) => {
                let mut ev = rpc::failed(
                    pb::FailureCode::WorkerLost,
                    format!(
                        "{}; nowhere to resume: {explain} (waited {waited:?})",
                        f.why
                    ),
                    true,
                );
                if let (Event::Failed(failed), Some((next, elapsed))) = (&mut ev, f.resume) {
                    failed.resume_segment = Some(next);
                    failed.resume_elapsed = Some(elapsed);
                }
                ev
            }
            None => rpc::failed(
                pb::FailureCode::NoWorker,
                format!("{explain} (waited {waited:?})"),
                false,
            ),
        };
        self.finish_locked(&mut inner, job_id, event);
    }

    /// Sends a terminal event to the job's submitter and forgets the job (the submitter's
    /// stream then ends). The worker slot is released separately, when the worker reports.
    fn finish_locked(&self, inner: &mut Inner, job_id: &str, mut event: Event) {
        let Some(job) = inner.jobs.remove(job_id) else {
            return;
        };
        match &mut event {
            Event::Finished(f) => {
                self.metrics.jobs_succeeded.inc();
                if job.failover.is_some() {
                    // The segments written before the move belong to the same session.
                    let mut all: BTreeSet<u64> = job.segments.keys().copied().collect();
                    all.extend(f.segments.iter().copied());
                    f.segments = all.into_iter().collect();
                }
            }
            Event::Cancelled(_) => self.metrics.jobs_killed.inc(),
            _ => self.metrics.jobs_failed.inc(),
        }
        self.metrics.jobs_completed.inc();
        if let JobState::Running { started, worker } = &job.state {
            self.metrics
                .job_duration_seconds
                .observe(started.elapsed().as_secs_f64());
            if let Some(sid) = &job.session {
                if inner.recent_sessions.len() > 4096 {
                    inner
                        .recent_sessions
                        .retain(|_, (_, t)| t.elapsed() < SESSION_MEMORY);
                }
                inner
                    .recent_sessions
                    .insert(sid.clone(), (worker.clone(), Instant::now()));
            }
        }
        if let Some(sid) = &job.session
            && inner.sessions.get(sid).is_some_and(|j| j == job_id)
        {
            inner.sessions.remove(sid);
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

    /// Pauses or resumes job `job_id` for its submitter: the state is kept with the job and
    /// sent to the worker running it (a job still queued, or moved later, is assigned in that
    /// state). Returns the worker told, if any; unknown job: NOT_FOUND.
    pub fn pause(&self, job_id: &str, paused: bool) -> Result<Option<String>, Status> {
        let mut inner = self.lock();
        let Some(job) = inner.jobs.get_mut(job_id) else {
            return Err(Status::not_found(format!("no job with id `{job_id}`")));
        };
        let changed = job.paused != paused;
        job.paused = paused;
        let worker = match &job.state {
            JobState::Running { worker, .. } => Some(worker.clone()),
            JobState::Queued => None,
        };
        if let Some(w) = worker.as_ref().and_then(|w| inner.workers.get(w)) {
            // Sent even when unchanged: a repeat costs nothing and heals a lost message.
            w.send_pause(job_id, paused);
        }
        if changed {
            tracing::info!(
                job = job_id,
                worker = worker.as_deref().unwrap_or("-"),
                "{}",
                if paused { "job paused" } else { "job resumed" }
            );
        }
        Ok(worker)
    }

    /// The submitter went away (dropped its call): cancel the job wherever it is.
    pub fn poster_gone(&self, job_id: &str) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(job) = inner.jobs.get(job_id) else {
            return;
        };
        if let JobState::Running { worker, .. } = &job.state {
            let worker = worker.clone();
            if let Some(w) = inner.workers.get_mut(&worker) {
                w.cancel_job(job_id, "the submitter disconnected", &mut inner.index);
            }
        } else {
            inner.queue.retain(|j| j != job_id);
            self.metrics.queue_depth.set(inner.queue.len() as i64);
        }
        tracing::info!(job = job_id, "submitter disconnected; job cancelled");
        self.finish_locked(
            inner,
            job_id,
            Event::Cancelled(pb::Cancelled {
                reason: "submitter disconnected".into(),
            }),
        );
        // Its slot counts as free now.
        self.drain_queue_locked(inner);
    }

    // --------------------------------------------------------------------------- workers

    /// Registers (or re-registers) a worker. Returns the session number of this connection.
    pub fn register(self: &Arc<Self>, reg: &pb::Register, tx: WorkerTx) -> Result<u64, Status> {
        if reg.worker_id.is_empty() {
            return Err(Status::invalid_argument("register: worker_id is empty"));
        }
        let mut inner = self.lock();
        inner.next_session += 1;
        let session = inner.next_session;
        if let Some(s) = inner.sleepers.remove(&reg.worker_id) {
            let how = match s.state {
                SleepState::Waking { .. } => "woken",
                SleepState::Asleep => "back by itself",
                SleepState::Unwakeable => "back after its wake timed out",
            };
            tracing::info!(worker = reg.worker_id, "sleeping worker registered: {how}");
            self.metrics.workers_asleep.set(inner.sleepers.len() as i64);
        }
        let still_running: BTreeSet<String> = reg.running_job_ids.iter().cloned().collect();
        let mut kept = BTreeSet::new();
        let mut lost = Vec::new();
        let mut draining = false;
        if let Some(old) = inner.workers.remove(&reg.worker_id) {
            inner.index.remove(&old.id);
            // A drained worker stays drained when it reconnects.
            draining = old.draining;
            // Same id again (reconnect): keep the jobs it still runs, move the ones it lost.
            tracing::info!(
                worker = reg.worker_id,
                "worker re-registered; replacing its old connection"
            );
            self.remove_worker_metrics(&old);
            for j in old.jobs {
                if still_running.contains(&j) && !old.cancelling.contains(&j) {
                    kept.insert(j);
                } else {
                    lost.push(j);
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
        let mut entry = WorkerEntry {
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
            draining,
            tx,
            session,
            jobs: kept,
            cancelling: BTreeSet::new(),
            last_seen: Instant::now(),
            gauges: self.metrics.worker_gauges(&labels),
            labels,
            mac: rpc::parse_mac(&reg.wake_mac),
            can_sleep: reg.can_sleep && rpc::parse_mac(&reg.wake_mac).is_some(),
            idle_since: None,
            asleep: false,
        };
        if entry.jobs.is_empty() {
            entry.idle_since = Some(Instant::now());
            self.arm_sleep_timer();
        }
        self.metrics.workers_active.inc();
        entry.load_changed(&mut inner.index);
        // New, or back with maybe other capabilities.
        inner.capable.worker_changed(&entry);
        // A pause sent while it was away is not lost: repeat it for the jobs it kept.
        for j in &entry.jobs {
            if inner.jobs.get(j).is_some_and(|e| e.paused) {
                entry.send_pause(j, true);
            }
        }
        inner.workers.insert(entry.id.clone(), entry);
        for j in lost {
            self.failover_locked(&mut inner, &j, &reg.worker_id, "the worker restarted");
        }
        self.drain_queue_locked(&mut inner);
        Ok(session)
    }

    fn remove_worker_metrics(&self, w: &WorkerEntry) {
        self.metrics.worker_load_cpu.remove(&w.labels);
        self.metrics.worker_load_tasks.remove(&w.labels);
        self.metrics.worker_load_rank.remove(&w.labels);
        self.metrics.workers_active.dec();
    }

    /// Job `job_id` lost its worker: place it elsewhere, from the first unwritten segment when
    /// it is segmented, else from the start; queue it (for the queue timeout) when no capable
    /// worker is free. Its submitter sees none of this unless it finally fails.
    fn failover_locked(self: &Arc<Self>, inner: &mut Inner, job_id: &str, worker: &str, why: &str) {
        let Some(job) = inner.jobs.get_mut(job_id) else {
            return;
        };
        if !matches!(&job.state, JobState::Running { worker: w, .. } if w == worker) {
            return;
        }
        let why = format!("worker {worker} lost: {why}");
        let Some(original) = &job.job else {
            // Nothing to rebuild the job from: the submitter falls back.
            return self.finish_locked(
                inner,
                job_id,
                rpc::failed(pb::FailureCode::WorkerLost, why, true),
            );
        };
        let resume = job.resume_point();
        let continuation = match resume {
            Some((next, elapsed)) => match original.resume_at(next, elapsed) {
                Ok(mut c) => {
                    // Its progress counts on from what the submitter (and PMS) last saw.
                    if let (Some(p), Some(cont)) = (&job.last_progress, c.continuation.as_mut()) {
                        (cont.frames, cont.bytes, cont.out_time) = (p.frames, p.bytes, p.out_time);
                    }
                    rpc::encode_json(&c)
                        .ok()
                        .map(|json| (json, (next, elapsed)))
                }
                // One-file outputs cannot carry on: restart from the start.
                Err(_) => None,
            },
            None => None,
        };
        let resume = continuation.as_ref().map(|(_, r)| *r);
        job.continuation = continuation.map(|(json, _)| json);
        job.state = JobState::Queued;
        job.prefer = None;
        tracing::warn!(job = job_id, ?resume, "{why}; moving the job");
        job.failover = Some(Failover { why, resume });
        if !self.place_locked(inner, job_id) {
            self.enqueue_locked(inner, job_id);
        }
    }

    /// The worker's stream ended or its reports stopped: forget it and move its jobs to other
    /// workers (or fail them when none can take them).
    pub fn worker_lost(self: &Arc<Self>, worker_id: &str, session: u64, why: &str) {
        let mut inner = self.lock();
        let current = matches!(inner.workers.get(worker_id), Some(w) if w.session == session);
        if !current {
            return;
        }
        let Some(w) = inner.workers.remove(worker_id) else {
            return;
        };
        inner.index.remove(worker_id);
        inner.capable.worker_removed(worker_id);
        for j in &w.jobs {
            inner.moving.remove(j);
        }
        if w.asleep {
            // Expected: a suspending machine drops its connection. It stays remembered.
            tracing::info!(worker = worker_id, "sleeping worker disconnected: {why}");
        } else {
            tracing::warn!(
                worker = worker_id,
                name = w.name,
                jobs = w.jobs.len(),
                "worker lost: {why}"
            );
        }
        self.remove_worker_metrics(&w);
        let _ =
            w.tx.send(Err(Status::unavailable(format!("marked lost: {why}"))));
        for j in &w.jobs {
            self.failover_locked(&mut inner, j, worker_id, why);
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
    pub fn worker_message(
        self: &Arc<Self>,
        worker_id: &str,
        session: u64,
        msg: pb::worker_message::Msg,
    ) {
        let mut guard = self.lock();
        let inner = &mut *guard;
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
                w.load.running_jobs = w.busy();
                w.load_changed(&mut inner.index);
            }
            pb::worker_message::Msg::JobEvent(ev) => {
                let Some(event) = ev.event else { return };
                let job_id = ev.job_id;
                if rpc::is_terminal(&event) {
                    if w.jobs.remove(&job_id) && !w.cancelling.remove(&job_id) {
                        placement::account_release(&mut w.load, w.max_jobs);
                        w.load_changed(&mut inner.index);
                    }
                    if w.jobs.is_empty() && w.idle_since.is_none() {
                        w.idle_since = Some(Instant::now());
                        self.arm_sleep_timer();
                    }
                    let ours = matches!(inner.jobs.get(&job_id), Some(j) if matches!(&j.state, JobState::Running { worker, .. } if worker == worker_id));
                    let moving = inner.moving.remove(&job_id).is_some_and(|w| w == worker_id);
                    if ours && moving && matches!(event, Event::Cancelled(_)) {
                        // Drained with cancel: the worker stopped it; carry on elsewhere.
                        self.failover_locked(inner, &job_id, worker_id, "drained");
                    } else if ours {
                        self.finish_locked(inner, &job_id, event);
                    }
                    self.drain_queue_locked(inner);
                } else if let Some(job) = inner.jobs.get_mut(&job_id) {
                    let ours = matches!(&job.state, JobState::Running { worker, .. } if worker == worker_id);
                    if !ours {
                        // A worker that lost the job (it was moved) is still talking about it.
                        return;
                    }
                    match &event {
                        // The orchestrator already told the submitter where the job runs.
                        Event::Accepted(_) | Event::Queued(_) => return,
                        // A continuation's start is not news to the submitter.
                        Event::Started(_) if job.failover.is_some() => return,
                        Event::Segment(s) if s.output == 0 => {
                            job.segments.insert(s.number, (s.start, s.end));
                        }
                        Event::Progress(p) => job.last_progress = Some(*p),
                        _ => {}
                    }
                    let _ = job.tx.send(Ok(rpc::job_event(&job_id, event)));
                }
            }
        }
    }

    /// Stops placing jobs on a worker. Returns `(found, running jobs)`. Its running jobs finish
    /// there, or with `cancel_running` they are cancelled on it and moved to other workers like
    /// a failover (segmented ones carry on from the first segment not yet written), invisibly
    /// to their submitters. A job moves once the worker confirms its cancel (the engine stops
    /// within 200 ms), or after [`DRAIN_CONFIRM_TIMEOUT`] if it does not.
    pub fn drain(self: &Arc<Self>, worker_id: &str, cancel_running: bool) -> (bool, u32) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(w) = inner.workers.get_mut(worker_id) else {
            return (false, 0);
        };
        w.draining = true;
        w.load_changed(&mut inner.index);
        inner.capable.worker_changed(&*w);
        let _ = w.tx.send(Ok(pb::OrchestratorMessage {
            msg: Some(pb::orchestrator_message::Msg::Drain(pb::Drain {})),
        }));
        let jobs: Vec<String> = w
            .jobs
            .iter()
            .filter(|j| !w.cancelling.contains(*j))
            .cloned()
            .collect();
        tracing::info!(
            worker = worker_id,
            jobs = jobs.len(),
            cancel_running,
            "draining"
        );
        if cancel_running {
            for j in &jobs {
                w.cancel_job(
                    j,
                    "worker drained; the job moves to another worker",
                    &mut inner.index,
                );
                inner.moving.insert(j.clone(), worker_id.to_string());
                let me = Arc::clone(self);
                let (jid, wid) = (j.clone(), worker_id.to_string());
                tokio::spawn(async move {
                    tokio::time::sleep(DRAIN_CONFIRM_TIMEOUT).await;
                    me.move_drained_job(&jid, &wid, "drained; the cancel was not confirmed");
                });
            }
        }
        (true, u32::try_from(jobs.len()).unwrap_or(u32::MAX))
    }

    // ------------------------------------------------------------------------- power saving

    /// A worker became idle (or registered): once it has been idle for SLEEP_AFTER_S, the
    /// sleep policy looks at every worker. A timer, not a poll; nothing when the feature is off.
    fn arm_sleep_timer(self: &Arc<Self>) {
        let Some(after) = self.cfg.power.sleep_after else {
            return;
        };
        let me = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            me.check_sleep();
        });
    }

    /// Tells the workers that have been idle long enough to sleep (see [`power::to_sleep`]),
    /// and remembers them, so that a job that needs one can wake it.
    pub(crate) fn check_sleep(&self) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.shutting_down {
            return;
        }
        let now = Instant::now();
        let awake: Vec<AwakeWorker<'_>> = inner
            .workers
            .values()
            .filter(|w| !w.asleep)
            .map(|w| AwakeWorker {
                id: &w.id,
                idle_since: w.idle_since,
                draining: w.draining,
                can_sleep: w.can_sleep,
            })
            .collect();
        let chosen = power::to_sleep(&self.cfg.power, now, &awake);
        for id in chosen {
            let Some(w) = inner.workers.get_mut(&id) else {
                continue;
            };
            let Some(mac) = w.mac else { continue };
            let sleep = pb::OrchestratorMessage {
                msg: Some(pb::orchestrator_message::Msg::Sleep(pb::Sleep {})),
            };
            if w.tx.send(Ok(sleep)).is_err() {
                continue;
            }
            w.asleep = true;
            w.load_changed(&mut inner.index);
            inner.capable.worker_changed(&*w);
            tracing::info!(
                worker = id,
                idle = ?w.idle_since.map(|t| now.saturating_duration_since(t)),
                mac = rpc::format_mac(&mac),
                "idle worker told to sleep"
            );
            inner.sleepers.insert(
                id,
                Sleeper {
                    name: w.name.clone(),
                    caps: w.caps.clone(),
                    score: w.score,
                    max_jobs: w.max_jobs,
                    mac,
                    state: SleepState::Asleep,
                },
            );
            self.metrics.sleeps_ordered.inc();
        }
        self.metrics.workers_asleep.set(inner.sleepers.len() as i64);
    }

    /// Wakes the sleeping workers the queued jobs need (see [`Sleepers::plan_wakes`]): a
    /// magic packet each, and a timer after which the wake counts as failed. A sleeper still
    /// connected (its machine is still suspending, or its sleep command failed) is simply
    /// taken back.
    fn wake_for_queue_locked(self: &Arc<Self>, inner: &mut Inner) {
        if !self.cfg.power.enabled() || inner.sleepers.is_empty() || inner.queue.is_empty() {
            return;
        }
        let now = Instant::now();
        let timeout = self.cfg.power.wake_timeout;
        let waiting: Vec<&CapabilityNeeds> = inner
            .queue
            .iter()
            .filter_map(|id| inner.jobs.get(id))
            .map(|j| &j.needs)
            .collect();
        let wake = inner.sleepers.plan_wakes(&waiting, now, timeout);
        let mut taken_back = false;
        for id in wake {
            if let Some(w) = inner.workers.get_mut(&id) {
                w.asleep = false;
                w.idle_since = Some(now);
                w.load_changed(&mut inner.index);
                inner.capable.worker_changed(&*w);
                inner.sleepers.remove(&id);
                tracing::info!(
                    worker = id,
                    "a job needs a sleeping worker still connected: taken back"
                );
                taken_back = true;
                continue;
            }
            let Some(s) = inner.sleepers.get(&id) else {
                continue;
            };
            let (mac, to, deadline) = (s.mac, self.cfg.power.wol_addr, now + timeout);
            tracing::info!(worker = id, mac = rpc::format_mac(&mac), %to, "waking worker (Wake-on-LAN)");
            let me = Arc::clone(self);
            tokio::spawn(async move {
                match power::send_magic_packet(to, &mac).await {
                    Ok(()) => me.metrics.wake_packets_sent.inc(),
                    Err(e) => tracing::warn!(worker = id, "Wake-on-LAN packet to {to}: {e}"),
                }
                tokio::time::sleep_until(deadline.into()).await;
                me.wake_timed_out(&id, deadline);
            });
        }
        self.metrics.workers_asleep.set(inner.sleepers.len() as i64);
        if taken_back {
            self.drain_queue_locked(inner);
            self.arm_sleep_timer();
        }
    }

    /// The worker woken with deadline `deadline` has not registered: it is not woken again
    /// until it registers by itself. Jobs that waited for it end at their queue timer as
    /// they would have without it.
    fn wake_timed_out(&self, worker_id: &str, deadline: Instant) {
        let mut inner = self.lock();
        if inner.sleepers.wake_timed_out(worker_id, deadline) {
            tracing::warn!(
                worker = worker_id,
                timeout = ?self.cfg.power.wake_timeout,
                "woken worker did not register in time; it is not woken again until it registers"
            );
        }
    }

    /// Moves a job off the drained worker `worker_id` if it is still waiting to move.
    fn move_drained_job(self: &Arc<Self>, job_id: &str, worker_id: &str, why: &str) {
        let mut inner = self.lock();
        if inner.moving.get(job_id).is_some_and(|w| w == worker_id) {
            inner.moving.remove(job_id);
            self.failover_locked(&mut inner, job_id, worker_id, why);
        }
    }

    pub fn list_workers(&self) -> Vec<pb::WorkerInfo> {
        let inner = self.lock();
        let mut list: Vec<pb::WorkerInfo> = inner
            .workers
            .values()
            .map(|w| pb::WorkerInfo {
                id: w.id.clone(),
                name: w.name.clone(),
                version: w.version.clone(),
                state: if w.asleep {
                    pb::WorkerState::Asleep
                } else if w.draining {
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
            .collect();
        // Sleepers whose connection is gone (their machine is suspended).
        list.extend(
            inner
                .sleepers
                .iter()
                .filter(|(id, _)| !inner.workers.contains_key(*id))
                .map(|(id, s)| pb::WorkerInfo {
                    id: id.clone(),
                    name: s.name.clone(),
                    state: pb::WorkerState::Asleep as i32,
                    capabilities: Some((&s.caps).into()),
                    benchmark_score: s.score,
                    max_jobs: s.max_jobs,
                    ..Default::default()
                }),
        );
        list
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
                paused: j.paused,
            })
            .collect();
        jobs.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        jobs
    }

    /// Ends every worker stream (at shutdown), so the gRPC server can stop.
    pub fn disconnect_workers(&self) {
        let mut inner = self.lock();
        let workers = std::mem::take(&mut inner.workers);
        inner.index = PlacementIndex::new(self.cfg.strategy);
        inner.capable.clear();
        for (_, w) in workers {
            let _ = w.tx.send(Err(Status::unavailable(
                "the orchestrator is shutting down",
            )));
            self.remove_worker_metrics(&w);
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
            let inner = &mut *inner;
            if let Some(w) = worker.and_then(|w| inner.workers.get_mut(&w)) {
                w.cancel_job(&id, "orchestrator shutdown", &mut inner.index);
            }
            self.finish_locked(
                inner,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clusterplex_core::{Input, Output};

    fn dash_job(start: u64) -> Job {
        let mut o = Output::new("/t/s.mpd", Some("dash"));
        o.segmenting = Some(Segmenting::dash(2.0, start));
        Job {
            inputs: vec![Input::new("/m/a.mkv")],
            outputs: vec![o],
            ..Default::default()
        }
    }

    fn entry(job: Job) -> JobEntry {
        JobEntry {
            job_json: Vec::new(),
            job: Some(job),
            continuation: None,
            needs: CapabilityNeeds::default(),
            poster_id: String::new(),
            poster_host: String::new(),
            submitted: Instant::now(),
            state: JobState::Queued,
            tx: mpsc::unbounded_channel().0,
            session: None,
            prefer: None,
            segments: BTreeMap::new(),
            last_progress: None,
            generation: 0,
            failover: None,
            paused: false,
        }
    }

    #[test]
    fn resume_point_is_the_first_gap_and_the_contiguous_time() {
        // Plex after a seek to 10 s: -ss 10 -copyts, so output times are input positions.
        let mut job = dash_job(5);
        job.inputs[0].seek = Some(10.0);
        job.timestamps.copyts = true;
        let mut e = entry(job);
        assert_eq!(e.resume_point(), None, "nothing written");
        e.segments.insert(5, (10.02, 12.0));
        e.segments.insert(6, (12.0, 14.0));
        e.segments.insert(8, (16.0, 18.0)); // after a gap: not counted
        // Measured from the origin (10 s), not from the first packet (10.02 s): a seek to
        // 13.98 over copied video would land on the keyframe before the boundary.
        assert_eq!(e.resume_point(), Some((7, 4.0)));
        e.segments.insert(7, (14.0, 16.0));
        assert_eq!(e.resume_point(), Some((9, 8.0)));
        // Without -copyts the output restarts at 0 (its -itsoffset).
        let mut e = entry(dash_job(1));
        e.segments.insert(1, (0.02, 2.0));
        assert_eq!(e.resume_point(), Some((2, 2.0)));
        // A single file has no resume point.
        let mut single = entry(Job {
            outputs: vec![Output::new("/t/a.mp4", Some("mp4"))],
            ..dash_job(1)
        });
        single.segments.insert(1, (0.0, 2.0));
        assert_eq!(single.resume_point(), None);
    }

    /// A one-slot worker's registration (the power tests add their fields to it).
    pub(super) fn registration(id: &str) -> pb::Register {
        pb::Register {
            worker_id: id.into(),
            name: id.into(),
            protocol_version: rpc::PROTOCOL_VERSION,
            max_jobs: 1,
            benchmark_score: 100.0,
            ..Default::default()
        }
    }

    /// Registers `reg` with a channel standing in for the worker's stream.
    pub(super) fn attach(
        c: &Arc<Cluster>,
        reg: &pb::Register,
    ) -> (
        u64,
        mpsc::UnboundedReceiver<Result<pb::OrchestratorMessage, Status>>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        (c.register(reg, tx).unwrap(), rx)
    }

    fn register(
        c: &Arc<Cluster>,
        id: &str,
    ) -> (
        u64,
        mpsc::UnboundedReceiver<Result<pb::OrchestratorMessage, Status>>,
    ) {
        attach(c, &registration(id))
    }

    fn submit(c: &Arc<Cluster>, session: Option<&str>) -> (String, EventRx) {
        let mut job = dash_job(1);
        job.plex.session_id = session.map(str::to_string);
        c.submit(Submission {
            job_json: rpc::encode_json(&job).unwrap(),
            job: Some(job),
            ..Default::default()
        })
        .unwrap()
    }

    fn accepted_on(rx: &mut EventRx) -> String {
        loop {
            match rx.try_recv().unwrap().unwrap().event.unwrap() {
                Event::Accepted(a) => return a.worker_id,
                Event::Queued(_) => {}
                e => panic!("{e:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_seek_supersedes_the_session_s_job_and_stays_on_its_worker() {
        let c = Cluster::new(ClusterConfig {
            strategy: Strategy::RoundRobin,
            ..Default::default()
        });
        let (_, mut w1) = register(&c, "w1");
        let (_, _w2) = register(&c, "w2");
        let (old, mut old_rx) = submit(&c, Some("s1"));
        assert_eq!(accepted_on(&mut old_rx), "w1");
        // Same session: the old job ends as cancelled, the worker is told, the new one stays
        // on w1 although round-robin would pick w2 and w1's only slot was taken.
        let (_new, mut new_rx) = submit(&c, Some("s1"));
        let ev = old_rx.try_recv().unwrap().unwrap().event.unwrap();
        assert!(
            matches!(ev, Event::Cancelled(ref x) if x.reason.contains("superseded")),
            "{ev:?}"
        );
        assert_eq!(accepted_on(&mut new_rx), "w1");
        let mut saw_cancel = false;
        while let Ok(Ok(m)) = w1.try_recv() {
            if let Some(pb::orchestrator_message::Msg::Cancel(x)) = m.msg {
                saw_cancel |= x.job_id == old;
            }
        }
        assert!(saw_cancel);
        // Other sessions follow the strategy.
        let (_, mut other) = submit(&c, Some("s2"));
        assert_eq!(accepted_on(&mut other), "w2");
        let (_, mut none) = submit(&c, None);
        assert!(matches!(
            none.try_recv().unwrap().unwrap().event.unwrap(),
            Event::Queued(_)
        ));
    }

    #[tokio::test]
    async fn a_lost_worker_s_segmented_job_continues_elsewhere_from_the_gap() {
        let c = Cluster::new(ClusterConfig::default());
        let (s1, _w1) = register(&c, "w1");
        let (id, mut rx) = submit(&c, None);
        assert_eq!(accepted_on(&mut rx), "w1");
        for n in 1..=3u64 {
            let seg = pb::SegmentWritten {
                number: n,
                start: (n - 1) as f64 * 2.0,
                end: n as f64 * 2.0,
                ..Default::default()
            };
            c.worker_message(
                "w1",
                s1,
                pb::worker_message::Msg::JobEvent(rpc::job_event(&id, Event::Segment(seg))),
            );
        }
        for _ in 0..3 {
            assert!(matches!(
                rx.try_recv().unwrap().unwrap().event.unwrap(),
                Event::Segment(_)
            ));
        }
        c.worker_lost("w1", s1, "test");
        // No worker yet: queued silently.
        assert!(rx.try_recv().is_err());
        let (_, mut w2) = register(&c, "w2");
        let assign = loop {
            if let Some(pb::orchestrator_message::Msg::Assign(a)) =
                w2.try_recv().unwrap().unwrap().msg
            {
                break a;
            }
        };
        assert_eq!(assign.job_id, id);
        let cont = rpc::decode_job(&assign.job_json).unwrap();
        assert_eq!(cont.inputs[0].seek, Some(6.0));
        assert!(matches!(
            cont.outputs[0].segmenting,
            Some(Segmenting::Dash {
                start_number: 4,
                ..
            })
        ));
        // The submitter still saw nothing of the move.
        assert!(rx.try_recv().is_err());
    }

    fn pauses(
        rx: &mut mpsc::UnboundedReceiver<Result<pb::OrchestratorMessage, Status>>,
    ) -> Vec<(String, bool)> {
        let mut v = Vec::new();
        while let Ok(Ok(m)) = rx.try_recv() {
            match m.msg {
                Some(pb::orchestrator_message::Msg::Pause(p)) => v.push((p.job_id, p.paused)),
                Some(pb::orchestrator_message::Msg::Assign(a)) if a.paused => {
                    v.push((format!("assign {}", a.job_id), true))
                }
                _ => {}
            }
        }
        v
    }

    #[tokio::test]
    async fn pause_reaches_the_worker_and_survives_queueing_and_failover() {
        let c = Cluster::new(ClusterConfig::default());
        assert_eq!(
            c.pause("nope", true).unwrap_err().code(),
            tonic::Code::NotFound
        );
        // Paused while queued: assigned paused.
        let (id, mut rx) = submit(&c, None);
        assert!(matches!(
            rx.try_recv().unwrap().unwrap().event.unwrap(),
            Event::Queued(_)
        ));
        assert_eq!(c.pause(&id, true).unwrap(), None);
        assert!(c.list_jobs()[0].paused);
        let (s1, mut w1) = register(&c, "w1");
        assert_eq!(accepted_on(&mut rx), "w1");
        assert_eq!(pauses(&mut w1), [(format!("assign {id}"), true)]);
        // Running: the worker is told each change.
        assert_eq!(c.pause(&id, false).unwrap().as_deref(), Some("w1"));
        assert_eq!(c.pause(&id, true).unwrap().as_deref(), Some("w1"));
        assert_eq!(pauses(&mut w1), [(id.clone(), false), (id.clone(), true)]);
        // The worker is lost: the continuation starts paused on the next one.
        c.worker_lost("w1", s1, "test");
        let (_, mut w2) = register(&c, "w2");
        assert_eq!(pauses(&mut w2), [(format!("assign {id}"), true)]);
        // Resumed there.
        assert_eq!(c.pause(&id, false).unwrap().as_deref(), Some("w2"));
        assert_eq!(pauses(&mut w2), [(id.clone(), false)]);
        assert!(!c.list_jobs()[0].paused);
    }
}

/// Drain, and the placement index and capable-worker cache kept in step with the workers.
#[cfg(test)]
mod placement_tests;

/// Power saving: sleeping idle workers, waking them for queued jobs, wake timeouts.
#[cfg(test)]
mod power_tests;
