//! The admin HTTP listener: Prometheus `/metrics`, `/livez` (the process
//! serves), `/readyz` (it accepts new sessions; 503 while draining), and the
//! server API for app backends under `/v1` ([`api`]).

mod api;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::server::api_calls::ApiCalls;

/// What the admin handlers read.
#[derive(Clone, Debug)]
pub(crate) struct AdminState {
    pub(crate) metrics: Option<PrometheusHandle>,
    pub(crate) draining: watch::Receiver<bool>,
    /// Reaches the shards for server API calls.
    pub(crate) api: Arc<ApiCalls>,
    /// The bearer token the server API requires.
    pub(crate) api_token: Arc<[u8]>,
}

/// Serves the admin API on `listener` until the task is aborted.
pub(crate) async fn serve(listener: tokio::net::TcpListener, state: AdminState) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(api::routes(state.clone()))
        .with_state(state);
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "admin listener failed");
    }
}

async fn metrics(State(state): State<AdminState>) -> (StatusCode, String) {
    match &state.metrics {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (
            StatusCode::NOT_FOUND,
            "no metrics recorder installed\n".into(),
        ),
    }
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if *state.draining.borrow() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}
