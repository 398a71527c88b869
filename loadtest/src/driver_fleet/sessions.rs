//! [`Sessions`]: the load generator's side of its QUIC connections, the
//! [`Application`] each endpoint driver (`switchboard_quic::Driver`, one per
//! UDP socket) runs. Commands come in on one channel per driver; what the
//! server sends goes to the fleet's shared state synchronously.
//!
//! Each session acks its inbox like a real client, in batches: on its own
//! once [`ACK_EVERY`] messages are unacked, piggybacked on a frame it
//! writes anyway once [`PIGGYBACK_AT`] are, and at the latest
//! [`ACK_DELAY`] after the first unacked message (checked whenever the
//! session is driven, which its keep-alive timer guarantees). So the
//! router's delivery window never closes, its ack timeout never fires, and
//! acks add few frames and almost no packets.
//!
//! A reconnect (churn) that fails to open, say because the router was too
//! busy to answer its Hello in time, is tried again with the same resume
//! point, up to [`REOPEN_ATTEMPTS`] times with a doubling pause (or the
//! `retry_after_ms` the server's close asked for): a real client retries,
//! and giving up would strand the messages stored for it and count them as
//! lost.
//!
//! QUIC acknowledgements go out in the turn that received the packet, not
//! on quinn-proto's delayed-ACK timer: a session sends seconds apart, so
//! nothing would carry the ACK within the delay, and the timer would only
//! cost a second walk over the session's state.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{ClientConfig, ConnectionError, WriteError};
use switchboard_proto::close::CloseCode;
use switchboard_proto::frame::{self, FrameDecoder};
use switchboard_proto::v1::{
    client_frame, server_frame::Body, Ack, ClientFrame, InboxOpened, Resume, ServerFrame,
};
use switchboard_quic::{Admission, Application, Conn, Connections, Driven, Events, StreamRead};
use tokio::sync::mpsc::WeakUnboundedSender;

use super::Shared;
use crate::progress::Counters;

/// Largest stream read at once.
const READ_CHUNK: usize = 64 * 1024;
/// Frames a session buffers before the first Welcome can be checked: the
/// largest frame the router sends today is far smaller.
const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Unacked messages after which a session acks without waiting for a frame
/// to piggyback on (well inside the router's default window of 256).
const ACK_EVERY: u64 = 64;
/// Unacked messages worth an Ack written together with another frame.
const PIGGYBACK_AT: u64 = 16;
/// Longest a message stays unacked (far inside the router's 60 s ack
/// timeout), given the session is driven (any I/O or timer) by then.
const ACK_DELAY: Duration = Duration::from_secs(2);

/// Tries a reconnect gets to open before it counts as failed.
const REOPEN_ATTEMPTS: u32 = 5;
/// The pause before a reconnect's second try; it doubles for each after.
const FIRST_REOPEN_PAUSE: Duration = Duration::from_millis(250);

/// What the fleet asks a driver to do.
pub(super) enum Command {
    /// Open session `index` to `server`, sending `hello` first.
    Open {
        index: u32,
        server: SocketAddr,
        hello: Bytes,
    },
    /// Write an encoded frame on session `index`'s stream.
    Send { index: u32, frame: Bytes },
    /// Close session `index` with the normal code.
    Close { index: u32 },
    /// Close session `index` and open it again at once, resuming where it
    /// stopped (churn).
    Reconnect {
        index: u32,
        server: SocketAddr,
        token: String,
    },
    /// Try again a reconnect of session `index` that failed to open.
    Reopen { index: u32, reopen: Reopen },
}

/// Where a session is in its life.
#[derive(PartialEq, Eq)]
enum Phase {
    /// QUIC handshake, then Hello sent and Welcome awaited.
    Opening,
    /// Welcome received.
    Open,
    /// Closed; waiting for quinn-proto to drain it.
    Closed,
}

pub(super) struct Session {
    index: u32,
    decoder: FrameDecoder,
    outbox: VecDeque<Bytes>,
    started: Instant,
    phase: Phase,
    /// Highest inbox sequence number received.
    last_seq: u64,
    /// Highest sequence number acked (or being acked).
    acked: u64,
    /// An Ack frame (or what is left of it) to write before the outbox.
    pending_ack: Option<Bytes>,
    /// The inbox epoch (from InboxOpened), to resume with.
    epoch: u64,
    /// When an ack was first found pending (the batch's age).
    unacked_since: Option<Instant>,
    /// A reconnect of an earlier session (counted apart from first opens),
    /// until its `InboxOpened`.
    reopen: Option<Reopen>,
}

/// What a reconnect needs to be tried again.
pub(super) struct Reopen {
    server: SocketAddr,
    /// The Hello with its resume point.
    hello: Bytes,
    /// Tries so far, this one included.
    attempt: u32,
    /// The wait the server asked for when it refused this try.
    retry_after: Option<Duration>,
}

impl Reopen {
    /// How long to wait before the next try: doubling from
    /// [`FIRST_REOPEN_PAUSE`], or longer if the server asked.
    fn pause(&self) -> Duration {
        let backoff = FIRST_REOPEN_PAUSE * 2u32.pow(self.attempt - 1);
        backoff.max(self.retry_after.unwrap_or_default())
    }
}

/// Ends the session on our side with the normal close code.
fn close_normally(conn: &mut Conn<Session>, now: Instant) {
    conn.session.phase = Phase::Closed;
    // Closed on purpose: not a refused reconnect to try again.
    conn.session.reopen = None;
    conn.close(now, CloseCode::Normal.to_code(), "");
}

impl Session {
    /// Queues an Ack of everything received when one is due (see the
    /// module docs).
    fn queue_ack(&mut self, now: Instant) {
        let unacked = self.last_seq - self.acked;
        if self.pending_ack.is_some() || unacked == 0 {
            return;
        }
        let first_unacked = *self.unacked_since.get_or_insert(now);
        let due = unacked >= ACK_EVERY
            || (!self.outbox.is_empty() && unacked >= PIGGYBACK_AT)
            || now.duration_since(first_unacked) >= ACK_DELAY;
        if !due {
            return;
        }
        self.unacked_since = None;
        self.acked = self.last_seq;
        self.pending_ack = Some(frame::encode(&ClientFrame {
            r#ref: 0,
            body: Some(client_frame::Body::Ack(Ack { seq: self.acked })),
        }));
    }
}

/// The sessions on one client socket; see the module docs.
pub(super) struct Sessions {
    config: ClientConfig,
    server_name: String,
    by_index: HashMap<u32, usize, foldhash::fast::RandomState>,
    /// This driver's own command channel, for reconnects to try again
    /// (weak, so that the driver still ends when the fleet lets go).
    commands: WeakUnboundedSender<Command>,
    shared: Arc<Shared>,
}

impl Sessions {
    pub(super) fn new(
        config: ClientConfig,
        server_name: String,
        shared: Arc<Shared>,
        commands: WeakUnboundedSender<Command>,
    ) -> Sessions {
        Sessions {
            config,
            server_name,
            by_index: HashMap::default(),
            commands,
            shared,
        }
    }

    /// The open session `index`, with its handle.
    fn session<'a>(
        &self,
        conns: &'a mut Connections<Session>,
        index: u32,
    ) -> Option<&'a mut Conn<Session>> {
        conns.get_mut(*self.by_index.get(&index)?)
    }

    /// Closes an open session and opens its successor, resuming after the
    /// last message it handed on. Frames it had not written yet count as
    /// failed sends. A session not open (still opening, or gone) is left.
    fn reconnect(
        &mut self,
        conns: &mut Connections<Session>,
        index: u32,
        server: SocketAddr,
        token: String,
        now: Instant,
    ) {
        let Some(conn) = self.session(conns, index) else {
            return;
        };
        if conn.session.phase != Phase::Open {
            return;
        }
        let resume = Resume {
            epoch: conn.session.epoch,
            last_seq: conn.session.last_seq,
        };
        for _ in conn.session.outbox.drain(..) {
            self.shared.send_failed();
        }
        close_normally(conn, now);
        let handle = conn.handle;
        conns.touch(handle);
        let hello = super::hello(token, Some(resume));
        self.open(conns, index, server, hello, Some(1), now);
    }

    /// Opens session `index`: a first open, or try `reopen_attempt` of a
    /// reconnect.
    fn open(
        &mut self,
        conns: &mut Connections<Session>,
        index: u32,
        server: SocketAddr,
        hello: Bytes,
        reopen_attempt: Option<u32>,
        now: Instant,
    ) {
        let reopen = reopen_attempt.map(|attempt| Reopen {
            server,
            hello: hello.clone(),
            attempt,
            retry_after: None,
        });
        let session = Session {
            index,
            decoder: FrameDecoder::new(MAX_FRAME_BYTES),
            outbox: VecDeque::from([hello]),
            started: now,
            phase: Phase::Opening,
            last_seq: 0,
            acked: 0,
            pending_ack: None,
            epoch: 0,
            unacked_since: None,
            reopen,
        };
        match conns.connect(now, self.config.clone(), server, &self.server_name, session) {
            Ok(handle) => {
                self.by_index.insert(index, handle);
            }
            Err(error) if reopen_attempt.is_some() => {
                self.shared.reopen_failed(format!("connect: {error}"))
            }
            Err(error) => self.shared.open_failed(format!("connect: {error}")),
        }
    }

    /// Writes queued frames until the stream's flow control says stop;
    /// false when the stream can no longer be written.
    fn write(conn: &mut Conn<Session>, now: Instant) -> bool {
        if !conn.has_stream() {
            return true;
        }
        conn.session.queue_ack(now);
        if let Some(ack) = conn.session.pending_ack.take() {
            let mut chunk = [ack];
            match conn.write(&mut chunk) {
                Ok(written) if written.chunks == 1 => {}
                Ok(_) | Err(WriteError::Blocked) => {
                    let [rest] = chunk;
                    conn.session.pending_ack = Some(rest);
                    return true;
                }
                Err(_) => return false,
            }
        }
        while let Some(front) = conn.session.outbox.front() {
            let mut chunk = [front.clone()];
            match conn.write(&mut chunk) {
                Ok(written) if written.chunks == 1 => {
                    conn.session.outbox.pop_front();
                }
                Ok(_) => {
                    let [rest] = chunk;
                    *conn.session.outbox.front_mut().expect("front exists") = rest;
                    return true;
                }
                Err(WriteError::Blocked) => return true,
                Err(_) => return false,
            }
        }
        true
    }

    /// Reads and handles every complete frame the server sent.
    fn read(&self, conn: &mut Conn<Session>, now: Instant) {
        loop {
            loop {
                match conn.session.decoder.decode::<ServerFrame>() {
                    Ok(Some(frame)) => self.shared.on_frame(conn, frame, now),
                    Ok(None) => break,
                    Err(error) => {
                        let reason = format!("undecodable frame from the server: {error}");
                        fail(&self.shared, conn, reason, now);
                        return;
                    }
                }
            }
            match conn.read(READ_CHUNK) {
                StreamRead::Data(bytes) => conn.session.decoder.extend(&bytes),
                StreamRead::Empty => return,
                StreamRead::Finished => {
                    fail(&self.shared, conn, "server ended the stream".into(), now);
                    return;
                }
            }
        }
    }
}

impl Application for Sessions {
    type Session = Session;
    type Command = Command;

    fn accept(&mut self, _now: Instant, _validated: bool) -> Admission<Session> {
        Admission::Refuse // a client endpoint is never asked
    }

    fn command(&mut self, conns: &mut Connections<Session>, command: Command, now: Instant) {
        match command {
            Command::Open {
                index,
                server,
                hello,
            } => self.open(conns, index, server, hello, None, now),
            Command::Send { index, frame } => match self.session(conns, index) {
                Some(conn) if conn.session.phase == Phase::Open => {
                    conn.session.outbox.push_back(frame);
                    let handle = conn.handle;
                    conns.touch(handle);
                }
                _ => self.shared.send_failed(),
            },
            Command::Reconnect {
                index,
                server,
                token,
            } => self.reconnect(conns, index, server, token, now),
            Command::Reopen { index, reopen } => {
                // A newer session may have taken the index meanwhile.
                if !self.by_index.contains_key(&index) {
                    let attempt = Some(reopen.attempt + 1);
                    self.open(conns, index, reopen.server, reopen.hello, attempt, now);
                }
            }
            Command::Close { index } => match self.session(conns, index) {
                Some(conn) if conn.session.phase != Phase::Closed => {
                    close_normally(conn, now);
                    let handle = conn.handle;
                    conns.touch(handle);
                }
                _ => {}
            },
        }
    }

    fn drive(&mut self, conn: &mut Conn<Session>, events: Events, now: Instant) -> Driven {
        if let Some(reason) = events.lost {
            if let Some(reopen) = &mut conn.session.reopen {
                reopen.retry_after = retry_hint(&reason);
            }
            end(&self.shared, &mut conn.session, describe(&reason));
        }
        if conn.session.phase != Phase::Closed {
            let writable = Self::write(conn, now) && {
                self.read(conn, now);
                // What was read may have made an ack due.
                conn.session.phase != Phase::Open || Self::write(conn, now)
            };
            if !writable {
                let reason = "the server stopped reading the stream".to_owned();
                fail(&self.shared, conn, reason, now);
            }
        }
        // Frames just written carry the ACK anyway; with none, it goes alone.
        Driven {
            ack_now: conn.session.phase == Phase::Open,
        }
    }

    fn drained(&mut self, conn: Conn<Session>) {
        // A reconnect may have given the index to a newer session.
        let index = conn.session.index;
        if self.by_index.get(&index) == Some(&conn.handle) {
            self.by_index.remove(&index);
        }
        // A failed reconnect with tries left (see `end`) goes again after
        // its back-off, unless the fleet is closing the driver.
        if let Some(reopen) = conn.session.reopen {
            let pause = reopen.pause();
            let commands = self.commands.clone();
            tokio::spawn(async move {
                tokio::time::sleep(pause).await;
                if let Some(commands) = commands.upgrade() {
                    let _ = commands.send(Command::Reopen { index, reopen });
                }
            });
        }
    }
}

/// Marks a session closed and reports `reason`: a failed open, or a lost
/// session whose unwritten frames count as failed sends. A reconnect that
/// ends before its `InboxOpened` (refused after the Welcome too, as by
/// `RECONNECTING_TOO_FAST`) keeps its [`Reopen`] to go again once drained
/// while it has tries left. False when it was closed already.
fn end(shared: &Shared, session: &mut Session, reason: String) -> bool {
    let phase = std::mem::replace(&mut session.phase, Phase::Closed);
    let retry = session
        .reopen
        .as_ref()
        .is_some_and(|reopen| reopen.attempt < REOPEN_ATTEMPTS);
    match phase {
        Phase::Closed => return false,
        _ if retry => shared.reopen_retried(),
        _ if session.reopen.take().is_some() => shared.reopen_failed(reason),
        Phase::Opening => shared.open_failed(reason),
        Phase::Open => shared.session_lost(reason),
    }
    if phase == Phase::Open {
        for _ in session.outbox.drain(..) {
            shared.send_failed();
        }
    }
    session.outbox.clear();
    true
}

/// Ends a session the client gave up on, reporting `reason`.
fn fail(shared: &Shared, conn: &mut Conn<Session>, reason: String, now: Instant) {
    if !end(shared, &mut conn.session, reason) {
        return;
    }
    conn.close(now, CloseCode::ProtocolViolation.to_code(), "");
}

/// The wait a server's close asks for (`retry_after_ms=<n>` in its reason,
/// PROTOCOL.md §12), if any.
fn retry_hint(error: &ConnectionError) -> Option<Duration> {
    let ConnectionError::ApplicationClosed(close) = error else {
        return None;
    };
    let reason = std::str::from_utf8(&close.reason).ok()?;
    let millis = reason.strip_prefix("retry_after_ms=")?.parse().ok()?;
    Some(Duration::from_millis(millis))
}

/// A connection error as the report shows it.
fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ApplicationClosed(close) => {
            let code = close.error_code.into_inner();
            let reason = String::from_utf8_lossy(&close.reason);
            match CloseCode::from_code(code) {
                Some(known) => format!("closed by server: {known}: {reason}"),
                None => format!("closed by server: code 0x{code:x}: {reason}"),
            }
        }
        other => other.to_string(),
    }
}

impl Shared {
    /// Handles one server frame of `session`: the Welcome opens it; anything
    /// else before the Welcome fails it; after it, frames go on to the
    /// fleet.
    fn on_frame(&self, conn: &mut Conn<Session>, frame: ServerFrame, now: Instant) {
        let session = &mut conn.session;
        match (&session.phase, frame.body) {
            (Phase::Opening, Some(Body::Welcome(_))) => {
                session.phase = Phase::Open;
                // A reconnect counts once its inbox opened (below).
                if session.reopen.is_none() {
                    self.opened(session.index, now - session.started);
                }
            }
            (Phase::Opening, other) => {
                let reason = format!("expected Welcome, got {other:?}");
                fail(self, conn, reason, now);
            }
            (Phase::Open, Some(body)) => {
                match &body {
                    Body::InboxOpened(InboxOpened {
                        resume_after,
                        epoch,
                        ..
                    }) => {
                        session.epoch = *epoch;
                        session.last_seq = *resume_after;
                        session.acked = *resume_after;
                        if session.reopen.take().is_some() {
                            Counters::bump(&self.reconnects);
                        }
                    }
                    Body::Deliver(deliver) => session.last_seq = deliver.seq,
                    Body::Gap(gap) => session.last_seq = gap.to_seq,
                    _ => {}
                }
                self.frame(session.index, body)
            }
            _ => {}
        }
    }
}
