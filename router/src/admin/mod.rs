//! The admin HTTP listener: Prometheus `/metrics`, `/livez` (the process
//! serves), `/readyz` (it accepts new sessions; 503 while draining, and with
//! the Redis engine while Redis does not answer its heartbeats), and the
//! server API for app backends under `/v1` ([`api`]).
//!
//! No peer can hold it: every connection must send a request's headers
//! within `admin.header_timeout` (also between kept-alive requests), and at
//! most `admin.max_connections` are served at once. Beyond that,
//! [`HEALTH_ONLY_CONNECTIONS`] more are answered for the health checks only
//! (an orchestrator that saw `/livez` fail would restart the node and lose
//! every inbox); a connection beyond those ends the oldest of them, so
//! peers that hold them all cannot keep a health check out for longer than
//! it takes to ask.
//!
//! It runs on a thread of its own ([`spawn_thread`]), so a scrape or a
//! health check is answered while the routing threads are saturated.

mod api;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{oneshot, watch, Semaphore};

use crate::config::AdminConfig;
use crate::metrics;
use crate::server::api_calls::ApiCalls;

/// Connections answered for `/livez` and `/readyz` only, beyond
/// `admin.max_connections`.
pub(crate) const HEALTH_ONLY_CONNECTIONS: usize = 16;
/// Header timeout of a health-only connection.
const HEALTH_ONLY_HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// What the admin handlers read.
#[derive(Clone, Debug)]
pub(crate) struct AdminState {
    pub(crate) metrics: Option<PrometheusHandle>,
    pub(crate) draining: watch::Receiver<bool>,
    /// Reaches the shards for server API calls.
    pub(crate) api: Arc<ApiCalls>,
    /// The bearer token the server API requires.
    pub(crate) api_token: Arc<[u8]>,
    /// With the Redis engine: whether Redis answers.
    pub(crate) engine: Option<crate::engine::redis::EngineHealth>,
}

/// Runs [`serve`] on a thread with a runtime of its own until the returned
/// handle is dropped.
pub(crate) fn spawn_thread(
    listener: tokio::net::TcpListener,
    state: AdminState,
    limits: AdminConfig,
) -> std::io::Result<tokio::sync::oneshot::Sender<()>> {
    let listener = listener.into_std()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("admin-http".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => return tracing::error!(%error, "admin listener has no runtime"),
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(error) => return tracing::error!(%error, "admin listener lost"),
                };
                tokio::select! {
                    () = serve(listener, state, limits) => {}
                    _ = stopped => {}
                }
            });
        })?;
    Ok(stop)
}

/// Serves the admin API on `listener`, forever.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    limits: AdminConfig,
) {
    let health = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    let full = health
        .clone()
        .route("/metrics", get(render_metrics))
        .merge(api::routes(state.clone()))
        .with_state(state.clone());
    let health = health
        .fallback(|| async {
            let busy = "busy: the admin listener is at admin.max_connections\n";
            (StatusCode::SERVICE_UNAVAILABLE, busy)
        })
        .with_state(state);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let health_slots = HealthSlots::default();
    let mut next_id = 0u64;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, most likely: let some close.
                tracing::warn!(%error, "admin listener cannot accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let serve_one = |app: Router, timeout: Duration| {
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            let connection = serve_one(full.clone(), limits.header_timeout);
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "admin connection ended");
                }
            });
            continue;
        }
        // Every regular slot is held: health checks only, on a slot that
        // the oldest health-only connection gives up if none is free, so
        // peers holding them all cannot keep an orchestrator's check out.
        metrics::admin_over_limit();
        next_id += 1;
        let (id, evicted) = (next_id, health_slots.take(next_id));
        let connection = serve_one(health.clone(), HEALTH_ONLY_HEADER_TIMEOUT);
        let slots = health_slots.clone();
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => {
                    if let Err(error) = ended {
                        tracing::debug!(%error, "admin health connection ended");
                    }
                }
                _ = evicted => {}
            }
            slots.give_back(id);
        });
    }
}

/// The health-only connections beyond `admin.max_connections`, oldest
/// first, each with the means to end it.
#[derive(Clone, Default)]
struct HealthSlots(Arc<std::sync::Mutex<std::collections::VecDeque<HealthSlot>>>);

/// A health-only connection's id and the sender that ends it.
type HealthSlot = (u64, oneshot::Sender<()>);

impl HealthSlots {
    /// A slot for connection `id`, ending the oldest holder if all
    /// [`HEALTH_ONLY_CONNECTIONS`] are taken; resolves when `id` is ended.
    fn take(&self, id: u64) -> oneshot::Receiver<()> {
        let (end, ended) = oneshot::channel();
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() >= HEALTH_ONLY_CONNECTIONS {
            if let Some((_, oldest)) = held.pop_front() {
                let _ = oldest.send(());
            }
        }
        held.push_back((id, end));
        ended
    }

    /// Connection `id` ended; its slot is free.
    fn give_back(&self, id: u64) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|(held_id, _)| *held_id != id);
    }
}

async fn render_metrics(State(state): State<AdminState>) -> (StatusCode, String) {
    match &state.metrics {
        Some(handle) => (StatusCode::OK, metrics::render(handle)),
        None => (
            StatusCode::NOT_FOUND,
            "no metrics recorder installed\n".into(),
        ),
    }
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if *state.draining.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    match state.engine.as_ref().and_then(|engine| engine.unready()) {
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
        None => (StatusCode::OK, "ready\n"),
    }
}
