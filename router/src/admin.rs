//! The admin HTTP listener: Prometheus `/metrics`, `/livez` (the process
//! serves) and `/readyz` (it accepts new sessions; 503 while draining).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

/// What the admin handlers read.
#[derive(Clone, Debug)]
pub(crate) struct AdminState {
    pub(crate) metrics: Option<PrometheusHandle>,
    pub(crate) draining: watch::Receiver<bool>,
}

/// Serves the admin API on `listener` until the task is aborted.
pub(crate) async fn serve(listener: tokio::net::TcpListener, state: AdminState) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
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
