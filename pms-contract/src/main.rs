//! `clusterplex-pms-contract`: serves the PMS transcoder-callback contract on loopback and
//! records what it receives (for the demo and manual runs of Plex jobs without a real PMS).

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use clusterplex_pms_contract::{Config, PmsContract};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on. Keep it loopback: this endpoint checks no client address.
    #[arg(long, env = "PMS_CONTRACT_BIND", default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Port; 32400 is PMS's own, so unmodified Plex command lines reach it. 0 picks a free one.
    #[arg(long, env = "PMS_CONTRACT_PORT", default_value_t = 32400)]
    port: u16,
    /// Require this `X-Plex-Token` on every request (401 otherwise). Unset: accept any.
    #[arg(long, env = "X_PLEX_TOKEN")]
    token: Option<String>,
    /// Session working directory: each manifest is checked on arrival against its files.
    #[arg(long, env = "PMS_CONTRACT_SESSION_DIR")]
    session_dir: Option<PathBuf>,
    /// Answer progress PUTs with `canThrottle` (asks the transcoder to slow down).
    #[arg(long, env = "PMS_CONTRACT_THROTTLE", default_value_t = false)]
    throttle: bool,
    /// Write the recording as JSON here on exit (SIGINT/SIGTERM). Unset: print it to stdout.
    #[arg(long, env = "PMS_CONTRACT_DUMP")]
    dump: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = Config {
        token: args.token,
        session_dir: args.session_dir,
        throttle: args.throttle,
    };
    let server = PmsContract::start(SocketAddr::new(args.bind, args.port), config).await?;
    // One machine-readable line so scripts that asked for port 0 learn the address.
    println!("PMS_CONTRACT_URL={}", server.url());

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    let recording = server.shutdown().await;
    let json = serde_json::to_string_pretty(&recording.requests)?;
    match args.dump {
        Some(path) => {
            std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?
        }
        None => println!("{json}"),
    }
    tracing::info!("recorded {} requests", recording.requests.len());
    Ok(())
}
