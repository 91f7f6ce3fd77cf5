//! `clusterplex-orchestrator`: see the library and docs/cluster.md.

use std::process::ExitCode;

use clap::Parser;
use clusterplex_orchestrator::{Args, OrchestratorConfig};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(cmd) = &args.admin {
        return match clusterplex_orchestrator::admin::run(cmd).await {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("clusterplex-orchestrator: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clusterplex-orchestrator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let cfg = OrchestratorConfig::try_from(args)?;
    let grace = cfg.shutdown_grace;
    let token = cfg.token.clone();
    let tls = cfg.tls.clone();
    let running = clusterplex_orchestrator::start(cfg).await?;
    let mut local = Vec::new();
    if args.local_workers > 0 {
        // Embedded workers take the same path as remote ones: a gRPC stream over loopback.
        let port = running.grpc_addr.port();
        // With TLS the server speaks nothing else; its certificate must name `localhost`.
        let (url, ca) = match &tls {
            Some(t) => (
                format!("https://localhost:{port}"),
                Some(args.tls_ca.clone().unwrap_or_else(|| t.cert.clone())),
            ),
            None => (format!("http://127.0.0.1:{port}"), None),
        };
        local = clusterplex_worker::agent::spawn_local_workers(
            &url,
            token.as_deref(),
            ca,
            args.local_workers,
        )?;
    }
    clusterplex_orchestrator::shutdown_signal().await;
    tracing::info!(?grace, "shutting down: draining in-flight jobs");
    running.shutdown(grace).await;
    for h in local {
        h.abort();
    }
    Ok(())
}
