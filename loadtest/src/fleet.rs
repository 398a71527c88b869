//! A [`Fleet`] of load-test sessions: opened at a target rate with a bound on
//! handshakes in flight, spread round-robin over several client endpoints
//! (UDP sockets, optionally on several local addresses) and server addresses.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_client::{bind_endpoint, quic_config, Client, ConnectOptions, Events, Trust};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::progress::Counters;
use crate::report::Report;
use crate::stats::Latency;

/// Receive/send buffer asked for each client socket.
const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Failure messages kept as samples for the report.
const SAMPLES: usize = 5;

/// How to open the fleet.
#[derive(Clone)]
pub struct FleetOptions {
    /// Router addresses; sessions are spread over them.
    pub servers: Vec<SocketAddr>,
    /// How to trust the router's certificate.
    pub trust: Trust,
    /// TLS server name.
    pub server_name: String,
    /// The token secret shared with the router.
    pub secret: Vec<u8>,
    /// Number of sessions.
    pub sessions: usize,
    /// New sessions per second.
    pub connect_rate: f64,
    /// Most handshakes in flight at once (more overflows UDP buffers).
    pub max_inflight: usize,
    /// Client endpoints (UDP sockets, each with its own driver task); 0 = one
    /// per 2,000 sessions.
    pub endpoints: usize,
    /// Local addresses to bind endpoints on; empty = unspecified.
    pub local_addrs: Vec<std::net::IpAddr>,
    /// User ids are `{user_prefix}{index}`.
    pub user_prefix: String,
    /// QUIC keep-alive interval.
    pub keep_alive: Duration,
    /// How sessions are held: endpoint drivers or the SDK.
    pub client: ClientKind,
}

/// How the load generator holds its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// quinn-proto connections driven by `switchboard_quic::Driver` tasks,
    /// one per UDP socket: no task or channel per session (`lean` is an
    /// alias). See `driver_fleet`.
    #[default]
    #[value(alias = "lean")]
    Driver,
    /// The client SDK: a quinn connection, tasks and channels per session.
    Sdk,
}

/// One open session of the fleet.
pub struct Member {
    /// Index in the fleet.
    pub index: usize,
    /// The session.
    pub client: Client,
    /// Its events (taken by the scenario).
    pub events: Option<Events>,
}

/// What opening a fleet (SDK or driver) cost.
#[derive(Debug, Default)]
pub struct OpenOutcome {
    /// Sessions that opened.
    pub opened: usize,
    /// Connect (handshake + Hello/Welcome) latency.
    pub connect_latency: Latency,
    /// Sessions that failed to open, with the first few reasons.
    pub failed: Failures,
    /// Wall time to open the fleet.
    pub open_time: Duration,
}

/// How many of something failed, and the first few reasons.
#[derive(Debug, Default)]
pub struct Failures {
    /// How many failed.
    pub count: u64,
    /// The first few reasons.
    pub samples: Vec<String>,
}

impl Failures {
    /// Counts one failure, keeping `reason` if it is among the first few.
    pub(crate) fn add(&mut self, reason: String) {
        self.count += 1;
        if self.samples.len() < SAMPLES {
            self.samples.push(reason);
        }
    }

    /// Adds a violation to `report`, "COUNT WHAT (SAMPLES)", if any failed.
    pub(crate) fn report(&self, what: &str, report: &mut Report) {
        if self.count > 0 {
            let samples = self.samples.join("; ");
            report
                .violations
                .push(format!("{} {what} ({samples})", self.count));
        }
    }
}

/// The open sessions and what opening them cost.
pub struct Fleet {
    /// Sessions that opened, by index order.
    pub members: Vec<Member>,
    /// What opening cost.
    pub outcome: OpenOutcome,
    /// Kept alive for the sessions.
    _endpoints: Vec<quinn::Endpoint>,
}

impl std::fmt::Debug for FleetOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetOptions")
            .field("servers", &self.servers)
            .field("sessions", &self.sessions)
            .field("connect_rate", &self.connect_rate)
            .field("client", &self.client)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl FleetOptions {
    /// How long [`FleetOptions::probe`] waits for each router.
    pub const PROBE_WAIT: Duration = Duration::from_secs(5);

    /// Checks that every router answers a QUIC handshake (certificate
    /// included) within [`Self::PROBE_WAIT`], so a wrong address fails at
    /// once with what to check, not as thousands of timed-out sessions.
    pub async fn probe(&self) -> anyhow::Result<()> {
        let config = quic_config(&self.trust, self.keep_alive)?;
        for &server in &self.servers {
            let endpoint = bind_endpoint(SocketAddr::new(self.local_addr(0), 0), 0)?;
            let connecting = endpoint.connect_with(config.clone(), server, &self.server_name)?;
            match tokio::time::timeout(Self::PROBE_WAIT, connecting).await {
                Ok(Ok(connection)) => connection.close(0u32.into(), b"probe"),
                Ok(Err(error)) => anyhow::bail!("{server}: the QUIC handshake failed: {error}"),
                Err(_) => anyhow::bail!(
                    "no answer from {server} within {} s: is `switchboard serve` running and \
                     listening on UDP {server}? Check --server",
                    Self::PROBE_WAIT.as_secs()
                ),
            }
        }
        Ok(())
    }

    /// The user id of session `index`.
    pub fn user(&self, index: usize) -> String {
        format!("{}{index}", self.user_prefix)
    }

    /// How many client sockets to open: `endpoints`, or when that is 0 one
    /// per `sessions_per_socket` sessions, at least `min` and at most 64.
    /// Fails when there is no server to connect to.
    pub fn socket_count(&self, sessions_per_socket: usize, min: usize) -> anyhow::Result<usize> {
        anyhow::ensure!(!self.servers.is_empty(), "at least one --server is needed");
        Ok(match self.endpoints {
            0 => self.sessions.div_ceil(sessions_per_socket).clamp(min, 64),
            n => n,
        })
    }

    /// A day-long token for session `index`'s user.
    pub fn token(&self, index: usize) -> String {
        switchboard_proto::token::mint(
            &self.secret,
            &self.user(index),
            Duration::from_secs(24 * 3600),
        )
    }

    /// The local address client socket `socket` binds (round-robin over
    /// `local_addrs`, else the unspecified address of the servers' family).
    pub fn local_addr(&self, socket: usize) -> std::net::IpAddr {
        match self.local_addrs.get(socket % self.local_addrs.len().max(1)) {
            Some(ip) => *ip,
            None if self.servers[0].is_ipv6() => std::net::Ipv6Addr::UNSPECIFIED.into(),
            None => std::net::Ipv4Addr::UNSPECIFIED.into(),
        }
    }
}

/// Opens `options.sessions` sessions.
pub async fn open(options: &FleetOptions, counters: &Arc<Counters>) -> anyhow::Result<Fleet> {
    let endpoint_count = options.socket_count(2_000, 1)?;
    let mut endpoints = Vec::with_capacity(endpoint_count);
    for i in 0..endpoint_count {
        let local = SocketAddr::new(options.local_addr(i), 0);
        endpoints.push(bind_endpoint(local, UDP_BUFFER_BYTES)?);
    }
    let config = quic_config(&options.trust, options.keep_alive)?;
    let permits = Arc::new(Semaphore::new(options.max_inflight.max(1)));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / options.connect_rate.max(0.001));
    let mut tasks = JoinSet::new();
    for index in 0..options.sessions {
        // Scheduled-time pacing: catch up after a late wake-up instead of
        // drifting.
        let due = started + interval.mul_f64(index as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let endpoint = endpoints[index % endpoints.len()].clone();
        let server = options.servers[index % options.servers.len()];
        let token = options.token(index);
        let mut connect = ConnectOptions::new(server, options.trust.clone(), token, "load");
        connect.server_name = options.server_name.clone();
        connect.keep_alive = options.keep_alive;
        let config = config.clone();
        let counters = counters.clone();
        tasks.spawn(async move {
            let begun = Instant::now();
            let result = Client::connect_via(&endpoint, config, connect).await;
            drop(permit);
            match &result {
                Ok(_) => Counters::bump(&counters.sessions),
                Err(_) => Counters::bump(&counters.errors),
            }
            (index, begun.elapsed(), result)
        });
    }
    let mut fleet = Fleet {
        members: Vec::with_capacity(options.sessions),
        outcome: OpenOutcome::default(),
        _endpoints: endpoints,
    };
    while let Some(joined) = tasks.join_next().await {
        let (index, took, result) = joined?;
        match result {
            Ok((client, events)) => {
                fleet.outcome.connect_latency.record(took);
                fleet.members.push(Member {
                    index,
                    client,
                    events: Some(events),
                });
            }
            Err(error) => fleet
                .outcome
                .failed
                .add(format!("session {index}: {error}")),
        }
    }
    fleet.outcome.open_time = started.elapsed();
    fleet.outcome.opened = fleet.members.len();
    fleet.members.sort_by_key(|m| m.index);
    Ok(fleet)
}

impl Fleet {
    /// The user ids of the open sessions, in order.
    pub fn users(&self, options: &FleetOptions) -> Vec<String> {
        self.members.iter().map(|m| options.user(m.index)).collect()
    }

    /// Pings every session (at most `concurrency` at once); returns how many
    /// answered.
    pub async fn verify_alive(&self, concurrency: usize, counters: &Arc<Counters>) -> u64 {
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut tasks = JoinSet::new();
        for member in &self.members {
            let client = member.client.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await.expect("never closed");
                tokio::time::timeout(Duration::from_secs(30), client.ping())
                    .await
                    .is_ok_and(|r| r.is_ok())
            });
        }
        let mut alive = 0;
        while let Some(joined) = tasks.join_next().await {
            if joined.unwrap_or(false) {
                alive += 1;
            } else {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        alive
    }

    /// Closes every session and waits (up to 5 s) until the close frames
    /// have left, so the router frees the sessions now rather than at their
    /// idle timeout.
    pub async fn close(self) {
        for member in self.members {
            member.client.close().await;
        }
        for endpoint in &self._endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(5), endpoint.wait_idle()).await;
        }
    }
}
