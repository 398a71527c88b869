//! [`ClientDriver`]: one task per UDP socket drives every load-test session
//! on it through `quinn-proto` directly: the sessions live in a
//! [`ConnTable`], their deadlines in one [`TimerWheel`]; there is no task,
//! channel or timer per session. Commands come in on one channel per driver;
//! what the server sends goes to the fleet's shared state synchronously.
//!
//! Each session acks its inbox like a real client, in batches: on its own
//! once [`ACK_EVERY`] messages are unacked, piggybacked on a frame it
//! writes anyway once [`PIGGYBACK_AT`] are, and at the latest
//! [`ACK_DELAY`] after the first unacked message (checked whenever the
//! session is driven, which its keep-alive timer guarantees). So the
//! router's delivery window never closes, its ack timeout never fires, and
//! acks add few frames and almost no packets.
//!
//! QUIC acknowledgements go out in the turn that received the packet
//! ([`ack_now`]), not on quinn-proto's 25 ms delayed-ACK timer: a session
//! sends seconds apart, so nothing would carry the ACK within the delay,
//! and the timer would only cost a second walk over the session's state.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ClientConfig, ConnectionError, DatagramEvent, Dir, Event, ReadError, StreamEvent, StreamId,
    VarInt, WriteError,
};
use switchboard_proto::close::CloseCode;
use switchboard_proto::frame::{self, FrameDecoder};
use switchboard_proto::v1::{
    client_frame, server_frame::Body, Ack, ClientFrame, InboxOpened, Resume, ServerFrame,
};
use switchboard_router::quic::{
    ack_now, exchange_endpoint_events, resume_when_sent, transmit, ConnTable, DatagramSocket,
    HandleSet, RecvBatch, TimerWheel, WakeTimer, RECV_BATCH,
};
use tokio::sync::mpsc;

use super::Shared;

/// Room for the largest UDP datagram quinn-proto writes.
const MAX_DATAGRAM: usize = 64 * 1024;
/// Largest stream read at once.
const READ_CHUNK: usize = 64 * 1024;
/// Commands handled per wake-up before driving sessions, and datagrams
/// received (in calls of [`RECV_BATCH`] buffers; a GRO buffer holds several).
const BATCH: usize = 256;
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

struct Session {
    quic: quinn_proto::Connection,
    index: u32,
    stream: Option<StreamId>,
    decoder: FrameDecoder,
    outbox: VecDeque<Bytes>,
    started: Instant,
    phase: Phase,
    /// The stream may hold unread bytes (quinn-proto said Readable); a read
    /// that finds it empty clears it.
    readable: bool,
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
    /// A reconnect of an earlier session (counted apart from first opens).
    resumed: bool,
}

impl Session {
    /// Ends the session on our side with the normal close code.
    fn close_normally(&mut self) {
        self.phase = Phase::Closed;
        self.quic.close(
            Instant::now(),
            VarInt::from_u32(CloseCode::Normal.to_code()),
            Bytes::new(),
        );
    }

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

/// One client socket and the sessions on it.
pub(super) struct ClientDriver {
    endpoint: quinn_proto::Endpoint,
    config: ClientConfig,
    server_name: String,
    socket: DatagramSocket,
    sessions: ConnTable<Session>,
    by_index: HashMap<u32, usize, foldhash::fast::RandomState>,
    timers: TimerWheel,
    commands: mpsc::UnboundedReceiver<Command>,
    dirty: HandleSet,
    blocked_on_send: HandleSet,
    send_buf: Vec<u8>,
    /// While a batch of received datagrams is driven: the time they were
    /// handed to quinn-proto with, which [`ack_now`] finds the ACK timers by.
    received_at: Option<Instant>,
    shared: Arc<Shared>,
}

impl ClientDriver {
    pub(super) fn new(
        socket: std::net::UdpSocket,
        config: ClientConfig,
        server_name: String,
        commands: mpsc::UnboundedReceiver<Command>,
        shared: Arc<Shared>,
    ) -> std::io::Result<ClientDriver> {
        Ok(ClientDriver {
            endpoint: quinn_proto::Endpoint::new(
                Arc::new(quinn_proto::EndpointConfig::default()),
                None,
                false,
                None,
            ),
            config,
            server_name,
            socket: DatagramSocket::new(socket)?,
            sessions: ConnTable::default(),
            by_index: HashMap::default(),
            timers: TimerWheel::default(),
            commands,
            dirty: HandleSet::default(),
            blocked_on_send: HandleSet::default(),
            send_buf: Vec::with_capacity(MAX_DATAGRAM),
            received_at: None,
            shared,
        })
    }

    /// Runs until the command channel closes and every session is drained.
    pub(super) async fn run(mut self) {
        let mut received = RecvBatch::default();
        let mut wake = WakeTimer::default();
        let mut commands_open = true;
        while commands_open || !self.sessions.is_empty() {
            wake.arm(self.timers.next());
            let send_blocked = self.socket.has_pending() || !self.blocked_on_send.is_empty();
            tokio::select! {
                biased;
                () = wake.fired() => {}
                command = self.commands.recv(), if commands_open => match command {
                    Some(command) => self.on_command(command),
                    None => commands_open = false,
                },
                Ok(()) = self.socket.writable(), if send_blocked => {
                    resume_when_sent(&mut self.socket, &mut self.blocked_on_send, &mut self.dirty);
                }
                Ok(()) = self.socket.readable() => {
                    // One receive time for the batch.
                    let now = Instant::now();
                    self.received_at = Some(now);
                    for _ in 0..BATCH / RECV_BATCH {
                        if self.socket.try_recv(&mut received).is_err() {
                            break;
                        }
                        for (remote, datagram) in received.datagrams() {
                            self.on_datagram(remote, datagram, now);
                        }
                    }
                }
            }
            self.on_timers(Instant::now());
            for _ in 0..BATCH {
                match self.commands.try_recv() {
                    Ok(command) => self.on_command(command),
                    Err(_) => break,
                }
            }
            // Read after the commands: quinn-proto must never see time go
            // back from the `now` a command (an open) gave it.
            let now = Instant::now();
            for handle in std::mem::take(&mut self.dirty) {
                self.drive(handle, now);
            }
            // What the turn produced leaves together; sessions that stopped
            // on a full send buffer go on at once if it drained.
            if resume_when_sent(&mut self.socket, &mut self.blocked_on_send, &mut self.dirty) {
                let now = Instant::now();
                for handle in std::mem::take(&mut self.dirty) {
                    self.drive(handle, now);
                }
                self.socket.flush();
            }
            self.received_at = None;
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Open {
                index,
                server,
                hello,
            } => self.open(index, server, hello),
            Command::Send { index, frame } => {
                let session = self
                    .by_index
                    .get(&index)
                    .and_then(|&h| Some((h, self.sessions.get_mut(h)?)));
                match session {
                    Some((handle, session)) if session.phase == Phase::Open => {
                        session.outbox.push_back(frame);
                        self.dirty.insert(handle);
                    }
                    _ => self.shared.send_failed(),
                }
            }
            Command::Reconnect {
                index,
                server,
                token,
            } => self.reconnect(index, server, token),
            Command::Close { index } => {
                let Some(&handle) = self.by_index.get(&index) else {
                    return;
                };
                if let Some(session) = self.sessions.get_mut(handle) {
                    if session.phase != Phase::Closed {
                        session.close_normally();
                        self.dirty.insert(handle);
                    }
                }
            }
        }
    }

    /// Closes an open session and opens its successor, resuming after the
    /// last message it handed on. Frames it had not written yet count as
    /// failed sends. A session not open (still opening, or gone) is left.
    fn reconnect(&mut self, index: u32, server: SocketAddr, token: String) {
        let Some(&handle) = self.by_index.get(&index) else {
            return;
        };
        let Some(session) = self.sessions.get_mut(handle) else {
            return;
        };
        if session.phase != Phase::Open {
            return;
        }
        let resume = Resume {
            epoch: session.epoch,
            last_seq: session.last_seq,
        };
        for _ in session.outbox.drain(..) {
            self.shared.send_failed();
        }
        session.close_normally();
        self.dirty.insert(handle);
        self.open(index, server, super::hello(token, Some(resume)));
        if let Some(session) = self
            .by_index
            .get(&index)
            .and_then(|&h| self.sessions.get_mut(h))
        {
            session.resumed = true;
        }
    }

    fn open(&mut self, index: u32, server: SocketAddr, hello: Bytes) {
        let now = Instant::now();
        match self
            .endpoint
            .connect(now, self.config.clone(), server, &self.server_name)
        {
            Ok((handle, quic)) => {
                let session = Session {
                    quic,
                    index,
                    stream: None,
                    decoder: FrameDecoder::new(MAX_FRAME_BYTES),
                    outbox: VecDeque::from([hello]),
                    started: now,
                    phase: Phase::Opening,
                    readable: false,
                    last_seq: 0,
                    acked: 0,
                    pending_ack: None,
                    epoch: 0,
                    unacked_since: None,
                    resumed: false,
                };
                self.sessions.insert(handle.0, session);
                self.by_index.insert(index, handle.0);
                self.dirty.insert(handle.0);
            }
            Err(error) => self.shared.open_failed(format!("connect: {error}")),
        }
    }

    fn on_datagram(&mut self, remote: SocketAddr, data: &[u8], now: Instant) {
        self.send_buf.clear();
        match self.endpoint.handle(
            now,
            remote,
            None,
            None,
            BytesMut::from(data),
            &mut self.send_buf,
        ) {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(session) = self.sessions.get_mut(handle.0) {
                    session.quic.handle_event(event);
                    self.dirty.insert(handle.0);
                }
            }
            Some(DatagramEvent::Response(transmit)) => {
                self.socket
                    .send(&self.send_buf[..transmit.size], transmit.destination);
            }
            // A client endpoint accepts no connections.
            Some(DatagramEvent::NewConnection(_)) | None => {}
        }
    }

    fn on_timers(&mut self, now: Instant) {
        while let Some(handle) = self.timers.pop_due(now) {
            if let Some(session) = self.sessions.get_mut(handle) {
                session.quic.handle_timeout(now);
                self.dirty.insert(handle);
            }
        }
    }

    /// Everything a session needs after its inputs changed.
    fn drive(&mut self, handle: usize, now: Instant) {
        let Some(session) = self.sessions.get_mut(handle) else {
            return;
        };
        exchange_endpoint_events(&mut self.endpoint, handle, &mut session.quic);
        while let Some(event) = session.quic.poll() {
            match event {
                Event::Connected => session.stream = session.quic.streams().open(Dir::Bi),
                Event::Stream(StreamEvent::Readable { id }) if session.stream == Some(id) => {
                    session.readable = true;
                }
                Event::ConnectionLost { reason } => {
                    end(&self.shared, session, describe(&reason));
                }
                _ => {}
            }
        }
        if session.phase != Phase::Closed {
            if Self::write(session, now) {
                self.read(handle, now);
                if let Some(session) = self.sessions.get_mut(handle) {
                    // What was read may have made an ack due.
                    if session.phase == Phase::Open && !Self::write(session, now) {
                        let reason = "the server stopped reading the stream".to_owned();
                        fail(&self.shared, session, reason, now);
                    }
                }
            } else {
                let reason = "the server stopped reading the stream".to_owned();
                fail(&self.shared, session, reason, now);
            }
        }
        let Some(session) = self.sessions.get_mut(handle) else {
            return;
        };
        // Frames just written carry the ACK anyway; with none, it goes alone.
        if let Some(received_at) = self.received_at {
            if session.phase == Phase::Open {
                ack_now(&mut session.quic, received_at);
            }
        }
        let sent_all = transmit(&mut session.quic, &mut self.socket, &mut self.send_buf, now);
        if !sent_all {
            self.blocked_on_send.insert(handle);
        }
        exchange_endpoint_events(&mut self.endpoint, handle, &mut session.quic);
        if session.quic.is_drained() {
            self.timers.set(handle, None);
            // A reconnect may have given the index to a newer session.
            if self.by_index.get(&session.index) == Some(&handle) {
                self.by_index.remove(&session.index);
            }
            self.sessions.remove(handle);
            self.blocked_on_send.remove(&handle);
            return;
        }
        let deadline = session.quic.poll_timeout();
        self.timers.set(handle, deadline);
    }

    /// Writes queued frames until the stream's flow control says stop;
    /// false when the stream can no longer be written.
    fn write(session: &mut Session, now: Instant) -> bool {
        let Some(id) = session.stream else {
            return true;
        };
        session.queue_ack(now);
        if let Some(ack) = session.pending_ack.take() {
            let mut chunk = [ack];
            match session.quic.send_stream(id).write_chunks(&mut chunk) {
                Ok(written) if written.chunks == 1 => {}
                Ok(_) => {
                    let [rest] = chunk;
                    session.pending_ack = Some(rest);
                    return true;
                }
                Err(WriteError::Blocked) => {
                    let [ack] = chunk;
                    session.pending_ack = Some(ack);
                    return true;
                }
                Err(_) => return false,
            }
        }
        while let Some(front) = session.outbox.front_mut() {
            let mut chunk = [front.clone()];
            match session.quic.send_stream(id).write_chunks(&mut chunk) {
                Ok(written) if written.chunks == 1 => {
                    session.outbox.pop_front();
                }
                Ok(_) => {
                    let [rest] = chunk;
                    *front = rest;
                    return true;
                }
                Err(WriteError::Blocked) => return true,
                Err(_) => return false,
            }
        }
        true
    }

    /// Reads and handles every complete frame the server sent.
    fn read(&mut self, handle: usize, now: Instant) {
        let Some(session) = self.sessions.get_mut(handle) else {
            return;
        };
        let Some(id) = session.stream else { return };
        loop {
            loop {
                match session.decoder.decode::<ServerFrame>() {
                    Ok(Some(frame)) => self.shared.on_frame(session, frame, now),
                    Ok(None) => break,
                    Err(error) => {
                        let reason = format!("undecodable frame from the server: {error}");
                        fail(&self.shared, session, reason, now);
                        return;
                    }
                }
            }
            if !session.readable {
                return;
            }
            let mut stream = session.quic.recv_stream(id);
            let Ok(mut chunks) = stream.read(true) else {
                return;
            };
            let outcome = chunks.next(READ_CHUNK);
            let _ = chunks.finalize();
            match outcome {
                Ok(Some(chunk)) => session.decoder.extend(&chunk.bytes),
                Ok(None) | Err(ReadError::Reset(_)) => {
                    fail(&self.shared, session, "server ended the stream".into(), now);
                    return;
                }
                Err(ReadError::Blocked) => {
                    session.readable = false;
                    return;
                }
            }
        }
    }
}

/// Marks a session closed and reports `reason`: a failed open, or a lost
/// session whose unwritten frames count as failed sends. False when it was
/// closed already.
fn end(shared: &Shared, session: &mut Session, reason: String) -> bool {
    match std::mem::replace(&mut session.phase, Phase::Closed) {
        Phase::Opening if session.resumed => shared.reopen_failed(reason),
        Phase::Opening => shared.open_failed(reason),
        Phase::Open => {
            shared.session_lost(reason);
            for _ in session.outbox.drain(..) {
                shared.send_failed();
            }
        }
        Phase::Closed => return false,
    }
    session.outbox.clear();
    true
}

/// Ends a session the client gave up on, reporting `reason`.
fn fail(shared: &Shared, session: &mut Session, reason: String, now: Instant) {
    if !end(shared, session, reason) {
        return;
    }
    session.quic.close(
        now,
        VarInt::from_u32(CloseCode::ProtocolViolation.to_code()),
        Bytes::new(),
    );
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
    fn on_frame(&self, session: &mut Session, frame: ServerFrame, now: Instant) {
        match (&session.phase, frame.body) {
            (Phase::Opening, Some(Body::Welcome(_))) => {
                session.phase = Phase::Open;
                if session.resumed {
                    self.reopened();
                } else {
                    self.opened(session.index, now - session.started);
                }
            }
            (Phase::Opening, other) => {
                let reason = format!("expected Welcome, got {other:?}");
                fail(self, session, reason, now);
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
