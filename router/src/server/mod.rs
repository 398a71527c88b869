//! The QUIC/tokio shell around the sans-IO core.
//!
//! [`Server::bind`] loads TLS and the token secret, binds one UDP socket per
//! endpoint on the listen port (`SO_REUSEPORT`) and the admin listener
//! (port 0 works, for tests); [`Server::run`] serves until the `shutdown`
//! future resolves, then drains: new connections are refused, every session
//! gets a GoAway, and whatever is left is closed with GOING_AWAY within
//! `shutdown_timeout`.
//!
//! Tasks: one per shard (`shard_task`), one endpoint driver per socket
//! (`switchboard_quic::Driver`, running the router's `session`s), and the
//! admin HTTP server (`crate::admin`). Shards reach sessions through the
//! `directory`; sessions start with the checks in `handshake`.

pub(crate) mod api_calls;
mod directory;
mod handshake;
mod outbox;
mod session;
mod shard_task;
pub mod webhook;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use switchboard_core::engine::InboxAuthority;
use switchboard_core::{Shard, ShardId, ShardInput};
use switchboard_proto::ALPN;
use switchboard_quic::{bind_udp, session_transport, Driver, PortSharing};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;

use self::directory::DriverCommand;
use crate::auth::TokenVerifier;
use crate::config::{Config, EngineKind};
use crate::dev::SecretSource;
use crate::engine::redis::{Deliver, EngineHealth, RedisEngine};
use api_calls::ApiCalls;
use directory::SessionDirectory;
use session::Sessions;
use shard_task::ShardHandle;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The certificate or key could not be loaded or created.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The token secret could not be read or created.
    #[error(transparent)]
    Secret(#[from] crate::auth::SecretError),
    /// A configuration value the server needs is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The engine (Redis) could not be reached or set up.
    #[error("the redis engine: {0}")]
    Engine(#[from] crate::engine::EngineError),
    /// A listener could not be bound.
    #[error("binding {what} on {addr}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One endpoint driver, not yet running, and its command channel.
struct EndpointDriver {
    driver: Driver<Sessions>,
    commands: mpsc::UnboundedSender<DriverCommand>,
}

/// State shared by every endpoint driver.
pub(crate) struct ServerContext {
    pub(crate) config: Config,
    pub(crate) verifier: TokenVerifier,
    pub(crate) shards: Arc<[ShardHandle]>,
    pub(crate) directory: Arc<SessionDirectory>,
    /// Turns true when shutdown starts.
    pub(crate) draining: watch::Receiver<bool>,
    next_session: AtomicU64,
    /// QUIC handshakes in progress over every endpoint driver.
    pub(crate) handshakes: AtomicUsize,
}

impl ServerContext {
    pub(crate) fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A bound, not yet running, router.
pub struct Server {
    /// The endpoint drivers, one per UDP socket sharing the port.
    drivers: Vec<EndpointDriver>,
    /// The bound QUIC address.
    local_addr: SocketAddr,
    admin: tokio::net::TcpListener,
    ctx: Arc<ServerContext>,
    draining: watch::Sender<bool>,
    shard_tasks: JoinSet<()>,
    metrics: Option<PrometheusHandle>,
    fingerprint: String,
    secret_source: SecretSource,
    api: Arc<ApiCalls>,
    api_token: Arc<[u8]>,
    api_token_source: SecretSource,
    admin_limits: crate::config::AdminConfig,
    /// With the Redis engine: whether Redis answers (for `/readyz`).
    engine_health: Option<EngineHealth>,
}

impl Server {
    /// Loads TLS material and the token secret and binds both listeners.
    /// `metrics` is the installed Prometheus recorder's handle, served on
    /// `/metrics` (none: `/metrics` answers 404). Must run inside a tokio
    /// runtime.
    pub async fn bind(
        config: Config,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Server, ServerError> {
        if config.engine == EngineKind::Redis && config.redis.cluster {
            // Issue 24 builds the cluster in stages (engine/mod.rs).
            return Err(ServerError::Config(
                "redis.cluster = true is not available in this version yet: give one Redis URL"
                    .into(),
            ));
        }
        let certified = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => crate::tls::load_pem_pair(cert, key)?,
            (None, None) => crate::tls::load_or_create_dev_cert(&config.dev_dir)?,
            _ => {
                return Err(ServerError::Config(
                    "tls.cert and tls.key must be set together".into(),
                ))
            }
        };
        let fingerprint = certified.fingerprint();
        let (secret, secret_source) = crate::dev::token_secret(&config)?;
        let (api_token, api_token_source) = crate::dev::api_token(&config)?;
        let verifier =
            TokenVerifier::new(&secret, config.auth.leeway, config.auth.max_token_lifetime);

        let crypto = switchboard_quic::tls::server_tls(certified.chain, certified.key, ALPN)
            .map_err(crate::tls::TlsError::from)?;
        let server_config = quic_server_config(&config, crypto)?;
        let sockets = bind_sockets(&config)?;
        let local_addr = sockets[0]
            .local_addr()
            .map_err(quic_bind_error(config.listen))?;
        let admin = tokio::net::TcpListener::bind(config.admin_listen)
            .await
            .map_err(|source| ServerError::Bind {
                what: "admin HTTP",
                addr: config.admin_listen,
                source,
            })?;

        let shard_count = config.shard_count();
        let (handles, inboxes): (Vec<_>, Vec<_>) =
            (0..shard_count).map(|_| mpsc::unbounded_channel()).unzip();
        let shards: Arc<[ShardHandle]> = handles.into();
        let directory = Arc::new(SessionDirectory::default());
        let api = Arc::new(ApiCalls::new(shards.clone()));
        let webhook_secret = match &config.webhook.secret_file {
            Some(path) => Some(crate::auth::read_secret_file(path)?),
            None => None,
        };
        let webhook = webhook::Webhook::start(&config.webhook, webhook_secret)
            .map_err(ServerError::Config)?;
        let mut shard_tasks = JoinSet::new();
        let engine = match config.engine {
            EngineKind::Memory => None,
            EngineKind::Redis => {
                let limits = config.core_limits(0, config.inbox_budget()).mailbox;
                Some(RedisEngine::connect(&config.redis, limits).await?)
            }
        };
        // In memory, inbox sequence numbers last one run: a new epoch per
        // run tells a resuming client that numbers of an earlier run mean
        // nothing. In Redis they last as long as its data, and so does the
        // epoch kept there.
        let inbox_epoch = engine
            .as_ref()
            .map_or(shard_task::now().unix_ms, RedisEngine::epoch);
        let inbox_budget = config.inbox_budget();
        let deliver: Deliver = {
            let shards = shards.clone();
            Arc::new(move |shard: ShardId, input: ShardInput| {
                let _ = shards[shard.0 as usize].send(input.into());
            })
        };
        let engine_health = match &engine {
            Some(engine) => Some(engine.start(shard_count, deliver.clone()).await?),
            None => None,
        };
        for (index, inbox) in inboxes.into_iter().enumerate() {
            let mut limits = config.core_limits(inbox_epoch, inbox_budget.clone());
            let id = ShardId(index as u32);
            let writer = engine.as_ref().map(|engine| {
                limits.inbox_authority = InboxAuthority::External;
                limits.message_id_run = engine.node().0;
                engine.spawn_writer(id, shard_count, deliver.clone())
            });
            let shard = Shard::new(id, shard_count, limits, Instant::now());
            shard_tasks.spawn(shard_task::run_shard(
                index,
                shard,
                inbox,
                shards.clone(),
                directory.clone(),
                api.clone(),
                webhook.clone(),
                writer,
            ));
        }
        let (draining_tx, draining_rx) = watch::channel(false);
        let admin_limits = config.admin.clone();
        let ctx = Arc::new(ServerContext {
            config,
            verifier,
            shards,
            directory,
            draining: draining_rx,
            next_session: AtomicU64::new(0),
            handshakes: AtomicUsize::new(0),
        });
        let server_config = Arc::new(server_config);
        let drivers = sockets
            .into_iter()
            .map(|socket| {
                let (commands, receiver) = mpsc::unbounded_channel();
                let credit_returned = Arc::new(Notify::new());
                let sessions =
                    Sessions::new(ctx.clone(), commands.clone(), credit_returned.clone());
                let driver = Driver::new(
                    sessions,
                    socket,
                    Some(server_config.clone()),
                    receiver,
                    credit_returned,
                )
                .map_err(quic_bind_error(local_addr))?;
                Ok(EndpointDriver { driver, commands })
            })
            .collect::<Result<Vec<_>, ServerError>>()?;
        Ok(Server {
            drivers,
            local_addr,
            admin,
            ctx,
            draining: draining_tx,
            shard_tasks,
            metrics,
            fingerprint,
            secret_source,
            api,
            api_token: api_token.into(),
            api_token_source,
            admin_limits,
            engine_health,
        })
    }

    /// The bound QUIC address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("bound listener has an address")
    }

    /// SHA-256 fingerprint of the certificate served, 64 hex digits.
    pub fn cert_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Where the token secret came from (a file, or the dev default).
    pub fn secret_source(&self) -> SecretSource {
        self.secret_source
    }

    /// Where the server API token came from.
    pub fn api_token_source(&self) -> SecretSource {
        self.api_token_source
    }

    /// Serves until `shutdown` resolves, then drains and returns within the
    /// configured shutdown timeout.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let ctx = self.ctx.clone();
        let state = crate::admin::AdminState {
            metrics: self.metrics.clone(),
            draining: ctx.draining.clone(),
            api: self.api.clone(),
            api_token: self.api_token.clone(),
            engine: self.engine_health.clone(),
        };
        let admin = crate::admin::spawn_thread(self.admin, state, self.admin_limits.clone())
            .inspect_err(|error| tracing::error!(%error, "the admin listener did not start"));
        let drivers = std::mem::take(&mut self.drivers);
        run_drivers(&ctx, drivers, shutdown, &self.draining).await;
        self.shard_tasks.abort_all();
        drop(admin);
        tracing::info!("shutdown complete");
    }
}

/// Serves until `shutdown`, then drains: GoAway first, then a GOING_AWAY
/// close for whoever is left, within `shutdown_timeout`.
async fn run_drivers(
    ctx: &Arc<ServerContext>,
    drivers: Vec<EndpointDriver>,
    shutdown: impl Future<Output = ()>,
    draining: &watch::Sender<bool>,
) {
    let mut tasks = JoinSet::new();
    let commands: Vec<_> = drivers
        .into_iter()
        .map(|endpoint| {
            tasks.spawn(endpoint.driver.run());
            endpoint.commands
        })
        .collect();
    let tell_drivers = |command: fn() -> DriverCommand| {
        for driver in &commands {
            let _ = driver.send(command());
        }
    };
    shutdown.await;
    tracing::info!(
        sessions = ctx.directory.len(),
        "shutting down: refusing new connections, sending GoAway"
    );
    let timeout = ctx.config.shutdown_timeout;
    let _ = draining.send(true);
    tell_drivers(|| DriverCommand::Drain);
    let drained = ctx.directory.wait_until_empty();
    let _ = tokio::time::timeout(timeout.mul_f64(0.8), drained).await;
    tell_drivers(|| DriverCommand::CloseAll);
    // Give the close frames time to leave.
    tokio::time::sleep(timeout.mul_f64(0.2).max(Duration::from_millis(100))).await;
    tasks.abort_all();
}

/// The QUIC server configuration: `crypto`, and transport settings for one
/// session stream whose idle timeout is three heartbeat intervals.
fn quic_server_config(
    config: &Config,
    crypto: Arc<switchboard_quic::tls::ServerTls>,
) -> Result<quinn_proto::ServerConfig, ServerError> {
    let mut server_config = quinn_proto::ServerConfig::with_crypto(crypto);
    let mut transport = session_transport(config.limits.max_frame_bytes);
    transport.max_idle_timeout(Some(
        (config.heartbeat_interval * 3)
            .try_into()
            .map_err(|_| ServerError::Config("heartbeat_interval is too long".into()))?,
    ));
    server_config.transport_config(Arc::new(transport));
    Ok(server_config)
}

/// Binds `config.endpoint_count()` UDP sockets on `config.listen`, sharing
/// the port with `SO_REUSEPORT` (the first one resolves port 0).
fn bind_sockets(config: &Config) -> Result<Vec<std::net::UdpSocket>, ServerError> {
    let mut sockets = Vec::new();
    let mut addr = config.listen;
    if addr.port() != 0 {
        // SO_REUSEPORT would let a second router silently share a busy
        // port: make sure nothing holds it first.
        drop(std::net::UdpSocket::bind(addr).map_err(quic_bind_error(addr))?);
    }
    for _ in 0..config.endpoint_count().max(1) {
        let socket = bind_udp(addr, config.udp_buffer_bytes, PortSharing::Shared)
            .map_err(quic_bind_error(addr))?;
        addr = socket.local_addr().map_err(quic_bind_error(addr))?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// The error for a QUIC socket on `addr` that could not be bound or set up.
fn quic_bind_error(addr: SocketAddr) -> impl FnOnce(std::io::Error) -> ServerError {
    move |source| ServerError::Bind {
        what: "QUIC",
        addr,
        source,
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
