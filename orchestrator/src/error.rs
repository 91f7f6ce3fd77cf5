//! The orchestrator library's error type.

use std::net::SocketAddr;

/// What can stop the orchestrator from starting, or an admin command from completing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("TLS: {0}")]
    Tls(String),
    /// An admin call to a running orchestrator failed (unreachable, refused, unknown worker).
    #[error("{0}")]
    Rpc(String),
}
