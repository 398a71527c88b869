//! The QUIC/tokio shell around the sans-IO core.
//!
//! [`Server::bind`] loads TLS and the token secret, binds the QUIC endpoint and
//! the admin listener (port 0 works, for tests); [`Server::run`] serves until
//! the `shutdown` future resolves, then drains: new connections are refused,
//! every session gets a GoAway, and whatever is left is closed with
//! GOING_AWAY within `shutdown_timeout`.
//!
//! Tasks: one per shard ([`shard_task`]), one per connection
//! ([`connection`]), the accept loop, and the admin HTTP server ([`crate::admin`]).

mod connection;
mod directory;
mod shard_task;
mod udp;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use quinn::{Endpoint, VarInt};
use switchboard_proto::close::CloseCode;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth::TokenVerifier;
use crate::config::Config;
use crate::core::{Shard, ShardId};
use crate::dev::SecretSource;
use directory::SessionDirectory;
use shard_task::ShardHandle;

/// Capacity of each shard's inbox from its sessions.
const SHARD_INBOX: usize = 4096;

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
    /// A listener could not be bound.
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// State shared by every connection task.
pub(crate) struct ServerContext {
    pub(crate) config: Config,
    pub(crate) verifier: TokenVerifier,
    pub(crate) shards: Arc<[ShardHandle]>,
    pub(crate) directory: Arc<SessionDirectory>,
    /// Turns true when shutdown starts.
    pub(crate) draining: watch::Receiver<bool>,
    next_session: AtomicU64,
}

impl ServerContext {
    pub(crate) fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A bound, not yet running, router.
pub struct Server {
    /// One or more endpoints sharing the listen port (`SO_REUSEPORT`).
    endpoints: Vec<Endpoint>,
    admin: tokio::net::TcpListener,
    ctx: Arc<ServerContext>,
    draining: watch::Sender<bool>,
    shard_tasks: JoinSet<()>,
    metrics: Option<PrometheusHandle>,
    fingerprint: String,
    secret_source: SecretSource,
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
        let verifier = TokenVerifier::new(&secret, config.auth.leeway);

        let mut server_config =
            quinn::ServerConfig::with_crypto(crate::tls::server_crypto(certified)?);
        let mut transport = lean_transport(config.limits.max_frame_bytes);
        transport.max_idle_timeout(Some(
            (config.heartbeat_interval * 3)
                .try_into()
                .map_err(|_| ServerError::Config("heartbeat_interval is too long".into()))?,
        ));
        server_config.transport_config(Arc::new(transport));
        let endpoints = bind_endpoints(&config, server_config)?;
        let admin = tokio::net::TcpListener::bind(config.admin_listen)
            .await
            .map_err(|source| ServerError::Bind {
                what: "admin HTTP",
                addr: config.admin_listen,
                source,
            })?;

        let shard_count = config.shard_count();
        let mut handles = Vec::new();
        let mut inboxes = Vec::new();
        for _ in 0..shard_count {
            let (handle, inbox) = shard_task::shard_channels(SHARD_INBOX);
            handles.push(handle);
            inboxes.push(inbox);
        }
        let shards: Arc<[ShardHandle]> = handles.into();
        let directory = Arc::new(SessionDirectory::default());
        let mut shard_tasks = JoinSet::new();
        for (index, inbox) in inboxes.into_iter().enumerate() {
            let shard = Shard::new(ShardId(index as u32), shard_count, config.core_limits());
            shard_tasks.spawn(shard_task::run_shard(
                shard,
                inbox,
                shards.clone(),
                directory.clone(),
            ));
        }
        let (draining_tx, draining_rx) = watch::channel(false);
        let ctx = Arc::new(ServerContext {
            config,
            verifier,
            shards,
            directory,
            draining: draining_rx,
            next_session: AtomicU64::new(0),
        });
        Ok(Server {
            endpoints,
            admin,
            ctx,
            draining: draining_tx,
            shard_tasks,
            metrics,
            fingerprint,
            secret_source,
        })
    }

    /// The bound QUIC address.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoints[0]
            .local_addr()
            .expect("bound endpoint has an address")
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

    /// Serves until `shutdown` resolves, then drains and returns within the
    /// configured shutdown timeout.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let ctx = self.ctx.clone();
        let admin = tokio::spawn(crate::admin::serve(
            self.admin,
            crate::admin::AdminState {
                metrics: self.metrics.clone(),
                draining: ctx.draining.clone(),
            },
        ));
        // One accept task per endpoint feeds a single channel, so this loop
        // owns every connection task (for draining) whatever endpoint it
        // came in on.
        let (incoming_tx, mut incoming_rx) = tokio::sync::mpsc::channel(1024);
        let mut acceptors = JoinSet::new();
        for endpoint in &self.endpoints {
            let endpoint = endpoint.clone();
            let incoming_tx = incoming_tx.clone();
            acceptors.spawn(async move {
                while let Some(incoming) = endpoint.accept().await {
                    if incoming_tx.send(incoming).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(incoming_tx);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                incoming = incoming_rx.recv() => {
                    let Some(incoming) = incoming else { break };
                    connections.spawn(connection::serve(incoming, ctx.clone()));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        acceptors.abort_all();

        tracing::info!(
            sessions = ctx.directory.len(),
            "shutting down: refusing new connections, sending GoAway"
        );
        let timeout = ctx.config.shutdown_timeout;
        for endpoint in &self.endpoints {
            endpoint.set_server_config(None);
        }
        let _ = self.draining.send(true);
        // Let clients leave on their own for most of the timeout.
        let drain = async { while connections.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(timeout.mul_f64(0.8), drain).await;
        for endpoint in &self.endpoints {
            endpoint.close(
                VarInt::from_u32(CloseCode::GoingAway.to_code()),
                b"server shutting down",
            );
        }
        let rest = timeout.mul_f64(0.2).max(Duration::from_millis(100));
        let _ = tokio::time::timeout(rest, async {
            while connections.join_next().await.is_some() {}
            for endpoint in &self.endpoints {
                endpoint.wait_idle().await;
            }
        })
        .await;
        connections.abort_all();
        self.shard_tasks.abort_all();
        admin.abort();
        tracing::info!("shutdown complete");
    }
}

/// Transport settings sized for one session stream per connection: the
/// stream limits the protocol needs (one client-opened bidi stream, nothing
/// else), flow-control windows of a few frames instead of quinn's
/// bulk-transfer defaults, no datagrams and no MTU discovery. Each saves
/// per-connection state, which is what a million sessions multiply.
fn lean_transport(max_frame_bytes: usize) -> quinn::TransportConfig {
    let window = u32::try_from((max_frame_bytes * 4).max(64 * 1024)).unwrap_or(u32::MAX);
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(window))
        .receive_window(VarInt::from_u32(window))
        .send_window(u64::from(window) * 2)
        .datagram_receive_buffer_size(None)
        .mtu_discovery_config(None);
    transport
}

/// Binds `config.endpoint_count()` endpoints on `config.listen`, sharing the
/// port with `SO_REUSEPORT` (the first one resolves port 0).
fn bind_endpoints(
    config: &Config,
    server_config: quinn::ServerConfig,
) -> Result<Vec<Endpoint>, ServerError> {
    let bind_error = |addr, source| ServerError::Bind {
        what: "QUIC",
        addr,
        source,
    };
    let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
    let mut endpoints = Vec::new();
    let mut addr = config.listen;
    if addr.port() != 0 {
        // SO_REUSEPORT would let a second router silently share a busy
        // port: make sure nothing holds it first.
        drop(std::net::UdpSocket::bind(addr).map_err(|e| bind_error(addr, e))?);
    }
    for _ in 0..config.endpoint_count().max(1) {
        let socket =
            udp::bind_reuseport(addr, config.udp_buffer_bytes).map_err(|e| bind_error(addr, e))?;
        addr = socket.local_addr().map_err(|e| bind_error(addr, e))?;
        let endpoint = Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config.clone()),
            socket,
            runtime.clone(),
        )
        .map_err(|e| bind_error(addr, e))?;
        endpoints.push(endpoint);
    }
    Ok(endpoints)
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
