//! clusterplex-orchestrator: accepts jobs from shims over gRPC, places them on registered
//! workers, relays their events back, and exports ClusterPlex's metrics over HTTP.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod power;
pub mod service;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use clusterplex_core::rpc::{JobServiceServer, WorkerServiceServer, check_token};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{Request, Status, transport::server::TcpIncoming};

pub use cluster::{Cluster, ClusterConfig};
pub use config::{Args, OrchestratorConfig};
pub use error::Error;

/// A running orchestrator (gRPC + HTTP servers).
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub cluster: Arc<Cluster>,
    stop_grpc: Option<oneshot::Sender<()>>,
    stop_http: Option<oneshot::Sender<()>>,
    grpc: JoinHandle<()>,
    http: JoinHandle<()>,
}

/// Binds both ports (0 picks a free one) and starts serving.
pub async fn start(cfg: OrchestratorConfig) -> Result<Running, Error> {
    let grpc_listener = TcpListener::bind(cfg.grpc_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: cfg.grpc_addr,
            source,
        })?;
    let http_listener = TcpListener::bind(cfg.http_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: cfg.http_addr,
            source,
        })?;
    let grpc_addr = grpc_listener.local_addr().map_err(|source| Error::Bind {
        addr: cfg.grpc_addr,
        source,
    })?;
    let http_addr = http_listener.local_addr().map_err(|source| Error::Bind {
        addr: cfg.http_addr,
        source,
    })?;
    let cluster = Cluster::new(cfg.cluster.clone());
    let services = service::Services {
        cluster: Arc::clone(&cluster),
    };

    let token: Arc<Option<String>> = Arc::new(cfg.token.clone().filter(|t| !t.is_empty()));
    let auth = move |req: Request<()>| -> Result<Request<()>, Status> {
        check_token(token.as_deref(), req.metadata())?;
        Ok(req)
    };

    let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
    if let Some(tls) = &cfg.tls {
        let cert = std::fs::read(&tls.cert)
            .map_err(|e| Error::Tls(format!("{}: {e}", tls.cert.display())))?;
        let key = std::fs::read(&tls.key)
            .map_err(|e| Error::Tls(format!("{}: {e}", tls.key.display())))?;
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| Error::Tls(e.to_string()))?;
    }
    let router = builder
        .add_service(JobServiceServer::with_interceptor(
            services.clone(),
            auth.clone(),
        ))
        .add_service(WorkerServiceServer::with_interceptor(services, auth));
    let (stop_grpc, grpc_stop_rx) = oneshot::channel::<()>();
    let grpc = tokio::spawn(async move {
        // `Server::tcp_nodelay` only applies to listeners tonic binds itself; without it on
        // these sockets, Nagle held a job's second event (`finished` right after `accepted`)
        // until the client's delayed ACK, ~40 ms later.
        let incoming = TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = grpc_stop_rx.await;
            })
            .await
        {
            tracing::error!("gRPC server failed: {e}");
        }
    });
    let (stop_http, http_stop_rx) = oneshot::channel::<()>();
    let app = http::router(Arc::clone(&cluster));
    let http = tokio::spawn(async move {
        let serve = axum::serve(http_listener, app).with_graceful_shutdown(async {
            let _ = http_stop_rx.await;
        });
        if let Err(e) = serve.await {
            tracing::error!("HTTP server failed: {e}");
        }
    });
    tracing::info!(%grpc_addr, %http_addr, strategy = %cfg.cluster.strategy, "orchestrator listening");
    Ok(Running {
        grpc_addr,
        http_addr,
        cluster,
        stop_grpc: Some(stop_grpc),
        stop_http: Some(stop_http),
        grpc,
        http,
    })
}

impl Running {
    /// Graceful shutdown: new jobs are refused, running ones get up to `grace` to finish, then
    /// workers are disconnected and both servers stop.
    pub async fn shutdown(mut self, grace: Duration) {
        self.cluster.shutdown(grace).await;
        self.cluster.disconnect_workers();
        if let Some(s) = self.stop_grpc.take() {
            let _ = s.send(());
        }
        if let Some(s) = self.stop_http.take() {
            let _ = s.send(());
        }
        // Servers finish their in-flight calls; do not wait on a stuck client forever.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.grpc).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.http).await;
        self.grpc.abort();
        self.http.abort();
    }

    /// Stops at once, like a crash (for tests of restarts).
    pub fn abort(self) {
        self.grpc.abort();
        self.http.abort();
        self.cluster.disconnect_workers();
    }
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
