//! [`Driver`]: the task that runs one [`Endpoint`] on one UDP socket with
//! the real clock. There is no task, channel or timer per connection: one
//! loop takes what is ready, in this order, and drives every connection it
//! touched once:
//!
//! 1. the earliest connection deadline (one [`WakeTimer`] for all of them);
//! 2. a command from another task (its channel is FIFO per sender);
//! 3. the application's own wake-up, while it waits for one;
//! 4. room in the send buffer, while connections wait for it;
//! 5. received datagrams, a batch of system calls' worth.
//!
//! Then, whatever woke it: every deadline now due, the commands already
//! waiting, and one [`Endpoint::drive`], whose datagrams leave together when
//! the turn ends. What is already due goes first, so a busy socket cannot
//! starve timers, commands or credit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn_proto::{EndpointConfig, ServerConfig};
use tokio::sync::{mpsc, Notify};

use crate::endpoint::{Application, Endpoint};
use crate::socket::{DatagramSocket, RecvBatch, RECV_BATCH};
use crate::timers::WakeTimer;

/// Commands handled per wake-up before connections are driven, and
/// datagrams received (in calls of [`RECV_BATCH`] buffers; a GRO buffer
/// holds several).
const BATCH: usize = 256;

/// A turn longer than this is logged: every connection on the socket waited
/// that long.
const SLOW_TURN: Duration = Duration::from_millis(200);

/// One endpoint on one socket, run as a task; see the module docs.
pub struct Driver<A: Application> {
    endpoint: Endpoint<A>,
    socket: DatagramSocket,
    commands: mpsc::UnboundedReceiver<A::Command>,
    wakeup: Arc<Notify>,
}

impl<A: Application> Driver<A> {
    /// A driver of `app`'s connections on `socket` (bound; made
    /// non-blocking here), taking commands from `commands`. With a `server`
    /// configuration it accepts connections. `wakeup`, notified by other
    /// tasks, wakes the loop while the application
    /// [waits for it](Application::waits_for_wakeup).
    pub fn new(
        app: A,
        socket: std::net::UdpSocket,
        server: Option<Arc<ServerConfig>>,
        commands: mpsc::UnboundedReceiver<A::Command>,
        wakeup: Arc<Notify>,
    ) -> std::io::Result<Driver<A>> {
        let socket = DatagramSocket::new(socket, server.is_some())?;
        let config = Arc::new(EndpointConfig::default());
        Ok(Driver {
            endpoint: Endpoint::new(app, config, server, Instant::now()),
            socket,
            commands,
            wakeup,
        })
    }

    /// Runs until every command sender is gone and every connection has
    /// drained (a server keeps a sender, so it runs until aborted).
    pub async fn run(mut self) {
        let mut received = RecvBatch::default();
        let mut wake = WakeTimer::default();
        let mut commands_open = true;
        while commands_open || !self.endpoint.connections().is_empty() {
            wake.arm(self.endpoint.next_timeout());
            let woken = self.endpoint.app().waits_for_wakeup();
            let send_blocked = self.socket.has_pending() || self.endpoint.is_blocked_on_send();
            tokio::select! {
                biased;
                () = wake.fired() => {}
                command = self.commands.recv(), if commands_open => match command {
                    Some(command) => self.endpoint.handle_command(command, Instant::now()),
                    None => commands_open = false,
                },
                () = self.wakeup.notified(), if woken => {}
                Ok(()) = self.socket.writable(), if send_blocked => {
                    if self.socket.flush() {
                        self.endpoint.resume_sending();
                    }
                }
                Ok(()) = self.socket.readable() => {
                    // One receive time for the batch, which the ACK timers
                    // are found by.
                    let now = Instant::now();
                    for _ in 0..BATCH / RECV_BATCH {
                        if self.socket.try_recv(&mut received).is_err() {
                            break;
                        }
                        for datagram in received.datagrams() {
                            self.endpoint.handle_datagram(now, datagram, &mut self.socket);
                        }
                    }
                }
            }
            let turn_started = Instant::now();
            self.endpoint.handle_timeouts(turn_started);
            for _ in 0..BATCH {
                match self.commands.try_recv() {
                    Ok(command) => self.endpoint.handle_command(command, Instant::now()),
                    Err(_) => break,
                }
            }
            // Read after the commands: quinn-proto must never see time go
            // back from the `now` a command gave it.
            self.endpoint.drive(Instant::now(), &mut self.socket);
            // What the turn produced leaves together; connections that
            // stopped on a full send buffer go on at once if it drained.
            if self.socket.flush() && self.endpoint.resume_sending() {
                self.endpoint.drive(Instant::now(), &mut self.socket);
                self.socket.flush();
            }
            self.endpoint.end_turn();
            let turn = turn_started.elapsed();
            if turn > SLOW_TURN {
                tracing::warn!(
                    turn_ms = turn.as_millis() as u64,
                    connections = self.endpoint.connections().len(),
                    "driver turn was slow; timers and handshakes ran late"
                );
            }
        }
    }
}
