//! How a client (a shim, a worker agent, an admin command) reaches the orchestrator: the
//! settings every one of them takes, declared once so their flags, environment variables and
//! defaults cannot drift apart.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use crate::rpc;

/// The default orchestrator URL (ClusterPlex's port on this host).
pub const DEFAULT_ORCHESTRATOR_URL: &str = "http://localhost:3500";

/// Connection settings for the orchestrator (`#[command(flatten)]` them into a CLI).
#[derive(Debug, Clone, Args)]
pub struct OrchestratorConn {
    /// gRPC address of the orchestrator (`https://` for TLS).
    #[arg(long, env = "ORCHESTRATOR_URL", default_value = DEFAULT_ORCHESTRATOR_URL)]
    pub orchestrator_url: String,
    /// Shared token the orchestrator requires (sent as `authorization: Bearer <token>`).
    #[arg(long, env = "CLUSTERPLEX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) that an `https://` orchestrator URL is verified against.
    #[arg(long, env = "CLUSTERPLEX_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// How long to wait for the orchestrator connection, in milliseconds.
    #[arg(long, env = "CLUSTERPLEX_CONNECT_TIMEOUT_MS", default_value_t = 2000)]
    pub connect_timeout_ms: u64,
}

impl Default for OrchestratorConn {
    fn default() -> Self {
        OrchestratorConn {
            orchestrator_url: DEFAULT_ORCHESTRATOR_URL.to_string(),
            token: None,
            tls_ca: None,
            connect_timeout_ms: 2000,
        }
    }
}

impl OrchestratorConn {
    /// The token, with an empty value (`CLUSTERPLEX_TOKEN=`) meaning none.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.is_empty())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// A job-service client with the token attached.
    pub async fn job_client(
        &self,
    ) -> Result<rpc::JobServiceClient<rpc::AuthChannel>, tonic::Status> {
        rpc::job_client_tls(
            &self.orchestrator_url,
            self.token(),
            self.connect_timeout(),
            self.tls_ca.as_deref(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        conn: OrchestratorConn,
    }

    #[test]
    fn defaults_match_the_documented_ones_and_an_empty_token_is_none() {
        let c = Cli::try_parse_from(["x", "--token", ""]).unwrap().conn;
        let d = OrchestratorConn::default();
        assert_eq!(c.orchestrator_url, d.orchestrator_url);
        assert_eq!(c.connect_timeout_ms, d.connect_timeout_ms);
        assert_eq!(c.token(), None);
        let c = Cli::try_parse_from(["x", "--token", "s3cret", "--connect-timeout-ms", "50"])
            .unwrap()
            .conn;
        assert_eq!(c.token(), Some("s3cret"));
        assert_eq!(c.connect_timeout(), Duration::from_millis(50));
    }
}
