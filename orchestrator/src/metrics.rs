//! Prometheus metrics, with ClusterPlex's names so existing dashboards keep working.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, text::encode},
    metrics::{
        MetricType,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// A monotonically increasing count exposed without the OpenMetrics `_total` suffix, because
/// ClusterPlex's dashboards query `jobs_posted`, not `jobs_posted_total`.
#[derive(Debug, Default, Clone)]
pub struct PlainCounter(std::sync::Arc<AtomicU64>);

impl PlainCounter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl EncodeMetric for PlainCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&(self.get() as i64))
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Unknown
    }
}

/// Labels of the per-worker gauges (ClusterPlex's `worker_id`, `worker_name`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub worker_id: String,
    pub worker_name: String,
}

/// Every metric the orchestrator exports.
pub struct Metrics {
    registry: Registry,
    pub jobs_posted: PlainCounter,
    pub jobs_completed: PlainCounter,
    pub jobs_succeeded: PlainCounter,
    pub jobs_failed: PlainCounter,
    pub jobs_killed: PlainCounter,
    pub job_posters_active: Gauge,
    pub workers_active: Gauge,
    pub queue_depth: Gauge,
    pub worker_load_cpu: Family<WorkerLabels, Gauge<f64, AtomicU64>>,
    pub worker_load_tasks: Family<WorkerLabels, Gauge>,
    pub worker_load_rank: Family<WorkerLabels, Gauge<f64, AtomicU64>>,
    pub queue_wait_seconds: Histogram,
    pub placement_seconds: Histogram,
    pub job_duration_seconds: Histogram,
    pub protocol_mismatches: PlainCounter,
    /// Jobs moved to another worker after theirs was lost (resumed or restarted).
    pub jobs_failed_over: PlainCounter,
    /// Power saving: workers told to sleep and not registered again.
    pub workers_asleep: Gauge,
    /// Power saving: Wake-on-LAN magic packets sent.
    pub wake_packets_sent: PlainCounter,
    /// Power saving: idle workers told to sleep.
    pub sleeps_ordered: PlainCounter,
}

/// One worker's gauges, looked up once at registration.
#[derive(Debug, Clone, Default)]
pub struct WorkerGauges {
    cpu: Gauge<f64, AtomicU64>,
    tasks: Gauge,
    rank: Gauge<f64, AtomicU64>,
}

impl WorkerGauges {
    pub fn update(&self, load: &clusterplex_core::load::Load, score: f64) {
        self.cpu.set(load.cpu_percent);
        self.tasks.set(i64::from(load.running_jobs));
        self.rank
            .set(clusterplex_core::placement::rank(score, load.cpu_percent));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let counter = |r: &mut Registry, name: &str, help: &str| {
            let c = PlainCounter::default();
            r.register(name, help, c.clone());
            c
        };
        let jobs_posted = counter(&mut registry, "jobs_posted", "Jobs Posted");
        let jobs_completed = counter(
            &mut registry,
            "jobs_completed",
            "Jobs Completed (succeeded, failed or killed)",
        );
        let jobs_succeeded = counter(&mut registry, "jobs_succeeded", "Jobs Succeeded");
        let jobs_failed = counter(&mut registry, "jobs_failed", "Jobs Failed");
        let jobs_killed = counter(
            &mut registry,
            "jobs_killed",
            "Jobs Killed (cancelled by their poster)",
        );
        let protocol_mismatches = counter(
            &mut registry,
            "worker_protocol_mismatches",
            "Workers refused for a protocol version mismatch",
        );
        let jobs_failed_over = counter(
            &mut registry,
            "jobs_failed_over",
            "Jobs moved to another worker after theirs was lost",
        );
        let wake_packets_sent = counter(
            &mut registry,
            "worker_wake_packets_sent",
            "Wake-on-LAN packets sent to sleeping workers",
        );
        let sleeps_ordered = counter(
            &mut registry,
            "worker_sleeps_ordered",
            "Idle workers told to sleep",
        );
        let workers_asleep = Gauge::default();
        registry.register(
            "workers_asleep",
            "Workers told to sleep (power saving), until they register again",
            workers_asleep.clone(),
        );
        let job_posters_active = Gauge::default();
        registry.register(
            "job_posters_active",
            "Active Job Posters",
            job_posters_active.clone(),
        );
        let workers_active = Gauge::default();
        registry.register("workers_active", "Active Workers", workers_active.clone());
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Jobs waiting for a worker",
            queue_depth.clone(),
        );
        let worker_load_cpu = Family::default();
        registry.register(
            "worker_load_cpu",
            "Worker Load - CPU usage",
            worker_load_cpu.clone(),
        );
        let worker_load_tasks = Family::default();
        registry.register(
            "worker_load_tasks",
            "Worker Load - Tasks Count",
            worker_load_tasks.clone(),
        );
        let worker_load_rank = Family::default();
        registry.register(
            "worker_load_rank",
            "Worker Load - Rank (score x free CPU)",
            worker_load_rank.clone(),
        );
        // 50 us .. ~26 s.
        let queue_wait_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 20));
        registry.register(
            "queue_wait_seconds",
            "Time from submit to assignment",
            queue_wait_seconds.clone(),
        );
        // 1 us .. ~0.5 s.
        let placement_seconds = Histogram::new(exponential_buckets(0.000_001, 2.0, 20));
        registry.register(
            "placement_seconds",
            "Time to choose a worker",
            placement_seconds.clone(),
        );
        // 10 ms .. ~1.5 h.
        let job_duration_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 20));
        registry.register(
            "job_duration_seconds",
            "Time from assignment to the job's end",
            job_duration_seconds.clone(),
        );
        Self {
            registry,
            jobs_posted,
            jobs_completed,
            jobs_succeeded,
            jobs_failed,
            jobs_killed,
            job_posters_active,
            workers_active,
            queue_depth,
            worker_load_cpu,
            worker_load_tasks,
            worker_load_rank,
            queue_wait_seconds,
            placement_seconds,
            job_duration_seconds,
            protocol_mismatches,
            jobs_failed_over,
            workers_asleep,
            wake_packets_sent,
            sleeps_ordered,
        }
    }

    /// Handles on the per-worker gauges for `labels` (created now).
    pub fn worker_gauges(&self, labels: &WorkerLabels) -> WorkerGauges {
        WorkerGauges {
            cpu: self.worker_load_cpu.get_or_create(labels).clone(),
            tasks: self.worker_load_tasks.get_or_create(labels).clone(),
            rank: self.worker_load_rank.get_or_create(labels).clone(),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
