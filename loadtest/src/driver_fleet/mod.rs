//! The driver fleet: load-test sessions held as `quinn-proto` connections
//! that a few `switchboard_quic::Driver` tasks drive, one per UDP socket,
//! running the fleet's `Sessions` as their application, instead of the
//! SDK's quinn connection, task and channels per session. It is how one
//! process holds hundreds of thousands of sessions, and how the load
//! generator stays cheaper than the router it measures.
//!
//! A scenario opens a [`DriverFleet`] with a [`FrameHandler`] that receives
//! every server frame after the Welcome (Pongs excepted: the fleet counts
//! those for [`DriverFleet::verify_alive`]), and writes frames with a
//! [`FleetSender`]. Frames of one session go out in the order they were
//! given, on its one stream.

mod sessions;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_client::tls::rustls_client_config;
use switchboard_client::{session_transport_config, Trust};
use switchboard_proto::frame;
use switchboard_proto::v1::{client_frame, server_frame::Body, ClientFrame, Hello, Ping, Resume};
use switchboard_quic::tls::ClientTls;
use switchboard_quic::{bind_udp, Driver, PortSharing};
use tokio::sync::{mpsc, Notify, Semaphore};

use crate::fleet::{Failures, FleetOptions, OpenOutcome};
use crate::progress::Counters;
use crate::report::Report;
use crate::stats::Latency;
use sessions::{Command, Sessions};

/// Receive/send buffer asked for each client socket.
const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Pings in flight at once while verifying. Verification is closed-loop: an
/// open-loop burst of pings to hundreds of thousands of sessions overflowed
/// socket buffers, and every connection's own loss recovery then amplified
/// the burst into a storm that killed sessions.
const VERIFY_INFLIGHT: usize = 1_000;
/// Sessions closed per second at the end: all at once, the close packets
/// overflowed the router's socket buffers and most sessions ended only at
/// their idle timeout.
const CLOSE_RATE: f64 = 25_000.0;
/// How long closing waits for the drivers to drain their sessions.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// How long verification waits for the last Pongs.
const VERIFY_GRACE: Duration = Duration::from_secs(30);

/// Receives what the server sends to the fleet's sessions.
pub trait FrameHandler: Send + Sync + 'static {
    /// A server frame for session `index`, after its Welcome.
    fn frame(&self, index: u32, body: Body);
}

/// A handler for scenarios that expect nothing but Pongs.
pub struct IgnoreFrames;

impl FrameHandler for IgnoreFrames {
    fn frame(&self, _index: u32, _body: Body) {}
}

/// State the drivers update and the fleet reads.
struct Shared {
    handler: Arc<dyn FrameHandler>,
    counters: Arc<Counters>,
    /// Handshakes allowed in flight; a driver gives a permit back when a
    /// session opens or fails to.
    handshakes: Arc<Semaphore>,
    opening: Mutex<Opening>,
    pongs: AtomicU64,
    /// Given back for every Pong, every frame that found its session
    /// closed and every session lost: bounds the pings in flight while
    /// verifying.
    ping_credit: Semaphore,
    send_failures: AtomicU64,
    lost: Mutex<Failures>,
    /// Sessions reopened by a reconnect (churn), tries that failed and went
    /// again, and reconnects that failed every try.
    reconnects: AtomicU64,
    reconnect_retries: AtomicU64,
    reconnect_failures: Mutex<Failures>,
}

#[derive(Default)]
struct Opening {
    latency: Latency,
    opened: Vec<u32>,
    failed: Failures,
}

impl Shared {
    fn opened(&self, index: u32, latency: Duration) {
        let mut opening = self.opening.lock().expect("not poisoned");
        opening.latency.record(latency);
        opening.opened.push(index);
        drop(opening);
        Counters::bump(&self.counters.sessions);
        self.handshakes.add_permits(1);
    }

    fn open_failed(&self, reason: String) {
        let mut opening = self.opening.lock().expect("not poisoned");
        opening.failed.add(reason);
        drop(opening);
        Counters::bump(&self.counters.errors);
        self.handshakes.add_permits(1);
    }

    fn reopen_retried(&self) {
        Counters::bump(&self.reconnect_retries);
    }

    fn reopen_failed(&self, reason: String) {
        self.reconnect_failures
            .lock()
            .expect("not poisoned")
            .add(reason);
        self.counters.sessions.fetch_sub(1, Ordering::Relaxed);
        Counters::bump(&self.counters.errors);
    }

    fn session_lost(&self, reason: String) {
        // A ping it may have had in flight will never be answered.
        self.ping_credit.add_permits(1);
        self.lost.lock().expect("not poisoned").add(reason);
        self.counters.sessions.fetch_sub(1, Ordering::Relaxed);
        Counters::bump(&self.counters.errors);
    }

    fn send_failed(&self) {
        Counters::bump(&self.send_failures);
        self.ping_credit.add_permits(1);
    }

    fn frame(&self, index: u32, body: Body) {
        match body {
            Body::Pong(_) => {
                Counters::bump(&self.pongs);
                self.ping_credit.add_permits(1);
            }
            body => self.handler.frame(index, body),
        }
    }
}

/// Writes frames on the fleet's sessions; cheap to clone and usable from
/// any thread.
#[derive(Clone)]
pub struct FleetSender {
    drivers: Arc<Vec<mpsc::UnboundedSender<Command>>>,
}

impl FleetSender {
    /// Queues an encoded frame on session `index`. A frame for a session
    /// that is not open is counted in [`DriverFleet::send_failures`].
    pub fn send(&self, index: u32, frame: Bytes) {
        let _ = self.driver(index).send(Command::Send { index, frame });
    }

    /// Closes session `index` and opens it again at once on `server` with
    /// `token`, resuming after the last message it handed on (churn).
    pub fn reconnect(&self, index: u32, server: SocketAddr, token: String) {
        let reconnect = Command::Reconnect {
            index,
            server,
            token,
        };
        let _ = self.driver(index).send(reconnect);
    }

    /// The channel to the driver that holds session `index`.
    fn driver(&self, index: u32) -> &mpsc::UnboundedSender<Command> {
        &self.drivers[index as usize % self.drivers.len()]
    }
}

/// The SDK's QUIC client configuration (trust, keep-alive, windows), with
/// sessions that let go of rustls after the handshake.
fn driver_quic_config(trust: &Trust, keep_alive: Duration) -> anyhow::Result<quinn::ClientConfig> {
    let tls = rustls_client_config(trust)?;
    let crypto = ClientTls::new(Arc::new(tls))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(session_transport_config(keep_alive)?));
    Ok(config)
}

/// Sessions opened through the endpoint drivers.
pub struct DriverFleet {
    sender: FleetSender,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shared: Arc<Shared>,
    /// What opening cost.
    pub outcome: OpenOutcome,
    /// Indexes of the sessions that opened, ascending.
    pub opened: Vec<u32>,
}

impl DriverFleet {
    /// Opens `options.sessions` sessions at `options.connect_rate`, with at
    /// most `options.max_inflight` handshakes at once, and returns when
    /// each has opened or failed.
    pub async fn open(
        options: &FleetOptions,
        handler: Arc<dyn FrameHandler>,
        counters: &Arc<Counters>,
    ) -> anyhow::Result<DriverFleet> {
        let driver_count = options.socket_count(10_000, 4)?;
        let inflight = options.max_inflight.max(1);
        let shared = Arc::new(Shared {
            handler,
            counters: counters.clone(),
            handshakes: Arc::new(Semaphore::new(inflight)),
            opening: Mutex::default(),
            pongs: AtomicU64::new(0),
            ping_credit: Semaphore::new(0),
            send_failures: AtomicU64::new(0),
            lost: Mutex::default(),
            reconnects: AtomicU64::new(0),
            reconnect_retries: AtomicU64::new(0),
            reconnect_failures: Mutex::default(),
        });
        let config = driver_quic_config(&options.trust, options.keep_alive)?;
        let mut drivers = Vec::with_capacity(driver_count);
        let mut tasks = Vec::with_capacity(driver_count);
        for i in 0..driver_count {
            let local = SocketAddr::new(options.local_addr(i), 0);
            let socket = bind_udp(local, UDP_BUFFER_BYTES, PortSharing::Exclusive)?;
            let (tx, rx) = mpsc::unbounded_channel();
            let sessions = Sessions::new(
                config.clone(),
                options.server_name.clone(),
                shared.clone(),
                tx.downgrade(),
            );
            let driver = Driver::new(sessions, socket, None, rx, Arc::new(Notify::new()))?;
            drivers.push(tx);
            tasks.push(tokio::spawn(driver.run()));
        }
        let sender = FleetSender {
            drivers: Arc::new(drivers),
        };

        let started = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / options.connect_rate.max(0.001));
        for index in 0..options.sessions as u32 {
            // Scheduled-time pacing: catch up after a late wake-up.
            tokio::time::sleep_until((started + interval.mul_f64(index as f64)).into()).await;
            shared
                .handshakes
                .acquire()
                .await
                .expect("never closed")
                .forget();
            let hello = hello(options.token(index as usize), None);
            let server = options.servers[index as usize % options.servers.len()];
            let open = Command::Open {
                index,
                server,
                hello,
            };
            if sender.driver(index).send(open).is_err() {
                shared.open_failed(format!("session {index}: its driver task has ended"));
            }
        }
        // Every permit back means every session opened or failed.
        let all = u32::try_from(inflight).unwrap_or(u32::MAX);
        drop(shared.handshakes.acquire_many(all).await);
        let open_time = started.elapsed();

        let mut opening = std::mem::take(&mut *shared.opening.lock().expect("not poisoned"));
        opening.opened.sort_unstable();
        Ok(DriverFleet {
            sender,
            tasks,
            outcome: OpenOutcome {
                opened: opening.opened.len(),
                connect_latency: opening.latency,
                failed: opening.failed,
                open_time,
            },
            opened: opening.opened,
            shared,
        })
    }

    /// Sessions reopened by [`FleetSender::reconnect`] so far.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Reconnect tries that failed and went again so far.
    pub fn reconnect_retries(&self) -> u64 {
        self.shared.reconnect_retries.load(Ordering::Relaxed)
    }

    /// Adds a violation for reconnects that failed to open.
    pub fn report_failed_reconnects(&self, report: &mut Report) {
        let failures = self.shared.reconnect_failures.lock().expect("not poisoned");
        failures.report("reconnects failed", report);
    }

    /// Writes frames on the sessions.
    pub fn sender(&self) -> FleetSender {
        self.sender.clone()
    }

    /// Pings every open session, at most `VERIFY_INFLIGHT` at once, and
    /// returns how many answered. Gives up on the rest when no answer came
    /// for `VERIFY_GRACE`.
    pub async fn verify_alive(&self) -> u64 {
        let before = self.shared.pongs.load(Ordering::Relaxed);
        let credit = &self.shared.ping_credit;
        // Credit left over from earlier traffic would loosen the bound.
        credit.forget_permits(credit.available_permits());
        credit.add_permits(VERIFY_INFLIGHT);
        for &index in &self.opened {
            match tokio::time::timeout(VERIFY_GRACE, credit.acquire()).await {
                Ok(permit) => permit.expect("never closed").forget(),
                Err(_) => break,
            }
            let ping = ClientFrame {
                r#ref: u64::from(index) + 1,
                body: Some(client_frame::Body::Ping(Ping {
                    nonce: u64::from(index),
                })),
            };
            self.sender.send(index, frame::encode(&ping));
        }
        let expected = self.opened.len() as u64;
        let answered = || self.shared.pongs.load(Ordering::Relaxed) - before;
        let deadline = Instant::now() + VERIFY_GRACE;
        while answered() < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        answered().min(expected)
    }

    /// Adds a violation to `report` if sessions closed after opening, with
    /// a few of the reasons.
    pub fn report_lost(&self, report: &mut Report) {
        let lost = self.shared.lost.lock().expect("not poisoned");
        lost.report("sessions were lost after opening", report);
    }

    /// Frames given for sessions that were not open.
    pub fn send_failures(&self) -> u64 {
        self.shared.send_failures.load(Ordering::Relaxed)
    }

    /// Closes every session, at most `CLOSE_RATE` per second, and waits
    /// (up to `CLOSE_WAIT`) for the drivers to drain them, so the router
    /// frees the sessions now rather than at their idle timeout.
    pub async fn close(self) {
        let started = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / CLOSE_RATE);
        for (n, &index) in self.opened.iter().enumerate() {
            if n % 256 == 0 {
                tokio::time::sleep_until((started + interval.mul_f64(n as f64)).into()).await;
            }
            let _ = self.sender.driver(index).send(Command::Close { index });
        }
        drop(self.sender);
        let aborts: Vec<_> = self.tasks.iter().map(|t| t.abort_handle()).collect();
        let drained = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(CLOSE_WAIT, drained).await.is_err() {
            // Whatever did not drain in time ends at the router's idle timeout.
            for abort in aborts {
                abort.abort();
            }
        }
    }
}

/// The Hello of a load-test session, resuming at `resume` if given.
fn hello(token: String, resume: Option<Resume>) -> Bytes {
    frame::encode(&ClientFrame {
        r#ref: 0,
        body: Some(client_frame::Body::Hello(Hello {
            token,
            device_id: "load".into(),
            client_agent: concat!("switchboard-load/", env!("CARGO_PKG_VERSION")).into(),
            initial_status: 0,
            resume,
        })),
    })
}
