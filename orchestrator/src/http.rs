//! The HTTP side: `GET /health` and `GET /metrics` (Prometheus/OpenMetrics text).

use std::sync::Arc;

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use crate::cluster::Cluster;

/// The router for the HTTP port.
pub fn router(cluster: Arc<Cluster>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(cluster)
}

async fn health() -> &'static str {
    // ClusterPlex's body, which existing health checks may match on.
    "Healthy"
}

async fn metrics(State(cluster): State<Arc<Cluster>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        cluster.metrics.render(),
    )
}
