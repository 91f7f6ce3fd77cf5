//! `clusterplex-orchestrator workers | jobs | drain`: the job service's admin calls from a shell,
//! so taking a node out for maintenance needs no gRPC tooling.

use clap::Subcommand;
use clusterplex_core::{conn::OrchestratorConn as Conn, rpc::pb};

use crate::error::Error;

/// Admin subcommands (without one, the binary runs the orchestrator).
#[derive(Debug, Clone, Subcommand)]
pub enum Admin {
    /// List the registered workers: state, running/max jobs, CPU, benchmark score.
    Workers(Conn),
    /// List queued and running jobs.
    Jobs(Conn),
    /// Stop placing jobs on a worker (it stays drained if it reconnects); with
    /// --cancel-running, also move its running jobs to other workers.
    Drain {
        #[command(flatten)]
        conn: Conn,
        /// The worker's id (see `workers`).
        worker_id: String,
        /// Cancel its running jobs and move them elsewhere (segmented jobs carry on from the
        /// first segment not yet written) instead of letting them finish there.
        #[arg(long)]
        cancel_running: bool,
    },
}

fn rpc_error(s: tonic::Status) -> Error {
    Error::Rpc(format!("{:?}: {}", s.code(), s.message()))
}

/// Runs `cmd` against the orchestrator and returns what to print.
pub async fn run(cmd: &Admin) -> Result<String, Error> {
    let conn = match cmd {
        Admin::Workers(c) | Admin::Jobs(c) | Admin::Drain { conn: c, .. } => c,
    };
    let mut client = conn.job_client().await.map_err(rpc_error)?;
    match cmd {
        Admin::Workers(_) => {
            let ws = client
                .list_workers(pb::ListWorkersRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner()
                .workers;
            Ok(workers_table(&ws))
        }
        Admin::Jobs(_) => {
            let js = client
                .list_jobs(pb::ListJobsRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner()
                .jobs;
            Ok(jobs_table(&js))
        }
        Admin::Drain {
            worker_id,
            cancel_running,
            ..
        } => {
            let r = client
                .drain_worker(pb::DrainWorkerRequest {
                    worker_id: worker_id.clone(),
                    cancel_running: *cancel_running,
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            if !r.found {
                return Err(Error::Rpc(format!("no worker `{worker_id}` is registered")));
            }
            let what = if *cancel_running {
                "moving to other workers"
            } else {
                "left to finish there"
            };
            Ok(format!(
                "worker `{worker_id}` drained: no new jobs go to it; {} running job(s) {what}\n",
                r.running_jobs
            ))
        }
    }
}

fn state_name(s: i32) -> &'static str {
    match pb::WorkerState::try_from(s) {
        Ok(pb::WorkerState::Active) => "active",
        Ok(pb::WorkerState::Draining) => "draining",
        Ok(pb::WorkerState::Lost) => "lost",
        Ok(pb::WorkerState::Asleep) => "asleep",
        _ => "?",
    }
}

fn workers_table(ws: &[pb::WorkerInfo]) -> String {
    let mut out = format!(
        "{:<24} {:<20} {:<9} {:>5} {:>6} {:>7}\n",
        "ID", "NAME", "STATE", "JOBS", "CPU%", "SCORE"
    );
    for w in ws {
        out += &format!(
            "{:<24} {:<20} {:<9} {:>5} {:>6.1} {:>7.1}\n",
            w.id,
            w.name,
            state_name(w.state),
            format!("{}/{}", w.running_jobs, w.max_jobs),
            w.cpu_percent,
            w.benchmark_score
        );
    }
    out
}

fn jobs_table(js: &[pb::JobInfo]) -> String {
    let mut out = format!(
        "{:<28} {:<8} {:<24} {:<20} {:>9}\n",
        "JOB", "STATE", "WORKER", "FROM", "AGE"
    );
    for j in js {
        out += &format!(
            "{:<28} {:<8} {:<24} {:<20} {:>8.1}s\n",
            j.job_id,
            // A paused job is on its worker (or queued: no worker yet) but reads nothing.
            if j.paused { "paused" } else { &j.state },
            if j.worker_id.is_empty() {
                "-"
            } else {
                &j.worker_id
            },
            j.poster_host,
            j.age_ms as f64 / 1000.0
        );
    }
    out
}
