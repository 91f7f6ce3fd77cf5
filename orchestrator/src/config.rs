//! Command-line flags and environment (ClusterPlex's names where one exists), and the library
//! configuration they turn into.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use clusterplex_core::placement::Strategy;

use crate::{cluster::ClusterConfig, error::Error, power::PowerConfig};

/// `clusterplex-orchestrator`: places transcode jobs from shims on workers.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Args {
    /// gRPC port for shims and workers (ClusterPlex's LISTENING_PORT).
    #[arg(long, env = "LISTENING_PORT", default_value_t = 3500)]
    pub listening_port: u16,
    /// HTTP port for GET /health and GET /metrics.
    #[arg(long, env = "METRICS_PORT", default_value_t = 3502)]
    pub metrics_port: u16,
    /// Address to bind both ports on.
    #[arg(long, env = "LISTENING_ADDRESS", default_value = "0.0.0.0")]
    pub bind: std::net::IpAddr,
    /// How a worker is chosen: RR, LOAD_CPU, LOAD_TASKS or LOAD_RANK (benchmark score x free CPU).
    #[arg(long, env = "WORKER_SELECTION_STRATEGY", default_value = "LOAD_RANK")]
    pub worker_selection_strategy: String,
    /// How long a job waits for a capable worker with a free slot before failing (NO_WORKER).
    #[arg(long, env = "QUEUE_TIMEOUT_MS", default_value_t = 10_000)]
    pub queue_timeout_ms: u64,
    /// A worker silent (no load report) this long, is marked lost and its jobs fail over.
    #[arg(long, env = "LOST_WORKER_TIMEOUT_MS", default_value_t = 15_000)]
    pub lost_worker_timeout_ms: u64,
    /// On SIGTERM, how long running jobs may take to finish before they are failed.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 30_000)]
    pub shutdown_grace_ms: u64,
    /// Shared secret every RPC must carry (`authorization: Bearer <token>`); unset = no auth.
    #[arg(long, env = "CLUSTERPLEX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM certificate chain: serve gRPC over TLS only (clients then use `https://`).
    #[arg(long, env = "CLUSTERPLEX_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "CLUSTERPLEX_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate (PEM) the --local-workers verify the orchestrator's certificate with
    /// (they connect to `https://localhost`); default: the --tls-cert file itself.
    #[arg(long, env = "CLUSTERPLEX_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Power saving: a worker idle this many seconds is told to sleep (it needs
    /// CLUSTERPLEX_SLEEP_COMMAND and a wake MAC); 0 = never.
    #[arg(long, env = "CLUSTERPLEX_SLEEP_AFTER_S", default_value_t = 0)]
    pub sleep_after_s: u64,
    /// Power saving: never put the last N awake workers to sleep.
    #[arg(long, env = "CLUSTERPLEX_MIN_AWAKE_WORKERS", default_value_t = 1)]
    pub min_awake_workers: usize,
    /// Power saving: how long a queued job waits for a worker woken for it before it is
    /// handled as when no worker can take it.
    #[arg(long, env = "CLUSTERPLEX_WAKE_TIMEOUT_S", default_value_t = 120)]
    pub wake_timeout_s: u64,
    /// Power saving: where Wake-on-LAN magic packets are sent (UDP, broadcast allowed).
    #[arg(
        long,
        env = "CLUSTERPLEX_WOL_ADDR",
        default_value = "255.255.255.255:9"
    )]
    pub wol_addr: SocketAddr,
    /// Run this many workers inside this process (a one-machine cluster).
    #[arg(long, env = "LOCAL_WORKERS", default_value_t = 0)]
    pub local_workers: u32,
    /// Instead of running the orchestrator, ask a running one (admin commands).
    #[command(subcommand)]
    pub admin: Option<crate::admin::Admin>,
}

/// TLS files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The library's configuration.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub cluster: ClusterConfig,
    pub token: Option<String>,
    pub tls: Option<TlsFiles>,
    pub shutdown_grace: Duration,
}

impl OrchestratorConfig {
    /// Loopback on free ports, default scheduling: for tests and benches.
    pub fn loopback() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            cluster: ClusterConfig::default(),
            token: None,
            tls: None,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl TryFrom<&Args> for OrchestratorConfig {
    type Error = Error;
    fn try_from(a: &Args) -> Result<Self, Error> {
        let strategy: Strategy = a
            .worker_selection_strategy
            .parse()
            .map_err(|e| Error::Config(format!("{e}")))?;
        if a.lost_worker_timeout_ms == 0 {
            return Err(Error::Config("LOST_WORKER_TIMEOUT_MS must be > 0".into()));
        }
        Ok(Self {
            grpc_addr: SocketAddr::new(a.bind, a.listening_port),
            http_addr: SocketAddr::new(a.bind, a.metrics_port),
            cluster: ClusterConfig {
                strategy,
                queue_timeout: Duration::from_millis(a.queue_timeout_ms),
                lost_timeout: Duration::from_millis(a.lost_worker_timeout_ms),
                power: PowerConfig {
                    sleep_after: (a.sleep_after_s > 0)
                        .then(|| Duration::from_secs(a.sleep_after_s)),
                    min_awake: a.min_awake_workers,
                    wake_timeout: Duration::from_secs(a.wake_timeout_s.max(1)),
                    wol_addr: a.wol_addr,
                },
            },
            token: a.token.clone().filter(|t| !t.is_empty()),
            tls: a
                .tls_cert
                .clone()
                .zip(a.tls_key.clone())
                .map(|(cert, key)| TlsFiles { cert, key }),
            shutdown_grace: Duration::from_millis(a.shutdown_grace_ms),
        })
    }
}
