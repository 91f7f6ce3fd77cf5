//! `clusterplex-orchestrator workers | jobs | drain`: the job service's admin calls from a shell,
//! so taking a node out for maintenance needs no gRPC tooling.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Subcommand};
use clusterplex_core::rpc::{self, pb};

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

/// How an admin command reaches a running orchestrator.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// gRPC address of the orchestrator.
    #[arg(
        long,
        env = "ORCHESTRATOR_URL",
        default_value = "http://localhost:3500"
    )]
    pub orchestrator_url: String,
    /// Shared token (`authorization: Bearer <token>`).
    #[arg(long, env = "CLUSTERPLEX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA (PEM) for an `https://` orchestrator URL.
    #[arg(long, env = "CLUSTERPLEX_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Connect timeout in milliseconds.
    #[arg(long, env = "CLUSTERPLEX_CONNECT_TIMEOUT_MS", default_value_t = 2000)]
    pub connect_timeout_ms: u64,
}

fn rpc_error(s: tonic::Status) -> Error {
    Error::Rpc(format!("{:?}: {}", s.code(), s.message()))
}

/// Runs `cmd` against the orchestrator and returns what to print.
pub async fn run(cmd: &Admin) -> Result<String, Error> {
    let conn = match cmd {
        Admin::Workers(c) | Admin::Jobs(c) | Admin::Drain { conn: c, .. } => c,
    };
    let mut client = rpc::job_client_tls(
        &conn.orchestrator_url,
        conn.token.as_deref().filter(|t| !t.is_empty()),
        Duration::from_millis(conn.connect_timeout_ms),
        conn.tls_ca.as_deref(),
    )
    .await
    .map_err(rpc_error)?;
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
            j.state,
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
