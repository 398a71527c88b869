//! The lean shell: one [`Driver`] task per UDP socket drives `quinn-proto`
//! directly. Its connections live in one map owned by that task, with one
//! timer set for all of them: no task, channel or timer per connection, and
//! only the session stream the protocol needs.
//!
//! The driver loops: receive datagrams / shard commands / timer expiries ->
//! hand them to `quinn_proto` -> drive every connection touched (endpoint
//! events, stream reads into the [`FrameDecoder`], queued frames into the
//! stream, transmits, next deadline). Sessions reach their shard over the
//! shard's never-blocking inbox; per-session credits (as in the task shell)
//! bound what one session has in flight, and a session whose credit runs out
//! simply stops being read, so QUIC flow control pushes back on the client.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ConnectionError, DatagramEvent, Dir, Event, ReadError, StreamEvent, StreamId, VarInt,
    WriteError,
};
use switchboard_proto::close::CloseCode;
use switchboard_proto::frame::{DecodeError, FrameDecoder, OutFrame, LENGTH_PREFIX_BYTES};
use switchboard_proto::v1::{client_frame::Body, ClientFrame, Hello};
use tokio::sync::{mpsc, watch, Notify, Semaphore};

use super::directory::{DriverCommand, QueuedFrame, SessionSink};
use super::handshake::{self, MAX_HELLO_FRAME_BYTES};
use super::outbox::Outbox;
use super::shard_task::{Credit, SessionInput};
use super::ServerContext;
use crate::metrics;
use crate::quic::{
    ack_now, exchange_endpoint_events, resume_when_sent, transmit, ConnTable, DatagramSocket,
    HandleSet, RecvBatch, TimerWheel, WakeTimer, RECV_BATCH,
};
use switchboard_core::{placement::shard_of, FrameClass, SessionId, ShardInput};

/// Room for the largest UDP datagram quinn-proto writes.
const MAX_DATAGRAM: usize = 64 * 1024;
/// Largest stream read at once.
const READ_CHUNK: usize = 64 * 1024;
/// Commands handled per wake-up before driving connections, and datagrams
/// received (in calls of [`RECV_BATCH`] buffers; a GRO buffer holds several).
const BATCH: usize = 256;
/// A driver turn longer than this is logged: every connection on the
/// socket waited that long.
const SLOW_TURN: std::time::Duration = std::time::Duration::from_millis(200);

/// Where a connection is in its life.
enum Phase {
    /// Waiting for a valid Hello until `deadline`, which starts when the
    /// QUIC handshake completes (as in the task shell): a handshake slowed
    /// by packet loss does not eat into the client's time to authenticate.
    Hello { deadline: Option<Instant> },
    /// The session is open.
    Open {
        session: SessionId,
        shard: usize,
        credit: Credit,
    },
    /// Closed (by either side); waiting for quinn-proto to drain it.
    Closed,
}

/// One connection and its session state.
struct Conn {
    quic: quinn_proto::Connection,
    stream: Option<StreamId>,
    decoder: FrameDecoder,
    phase: Phase,
    /// Frames waiting for room in the stream.
    outbox: Outbox,
    /// Why it ended, for the disconnect metric.
    ending: Option<&'static str>,
    handshake_done: bool,
    /// The stream may hold unread bytes: set by quinn-proto's Opened and
    /// Readable events, cleared when a read finds it empty. Reading only
    /// then spares every ACK and keep-alive a stream lookup.
    readable: bool,
    /// A frame read since the connection was last driven will be answered
    /// (every request but `Ack`), so the answer can carry the QUIC ACK of
    /// its packet; without one, [`ack_now`] sends the ACK at once.
    reply_due: bool,
}

/// One endpoint (UDP socket) and every connection on it.
pub(crate) struct Driver {
    endpoint: quinn_proto::Endpoint,
    socket: DatagramSocket,
    conns: ConnTable<Conn>,
    timers: TimerWheel,
    commands: mpsc::UnboundedReceiver<DriverCommand>,
    commands_tx: mpsc::UnboundedSender<DriverCommand>,
    ctx: Arc<ServerContext>,
    dirty: HandleSet,
    /// Connections with frames waiting for credit; re-driven when a shard
    /// gives credit back (`credit_returned`).
    stalled: HandleSet,
    credit_returned: Arc<Notify>,
    /// Connections that stopped transmitting on a full send buffer, driven
    /// again once it drains.
    blocked_on_send: HandleSet,
    send_buf: Vec<u8>,
    draining: watch::Receiver<bool>,
    /// Requests in flight per session (credits).
    budget: usize,
    /// When this turn's datagrams were received, if any were.
    received_at: Option<Instant>,
}

impl Driver {
    /// A driver for `socket` (non-blocking, already bound).
    pub(crate) fn new(
        socket: std::net::UdpSocket,
        server_config: quinn_proto::ServerConfig,
        ctx: Arc<ServerContext>,
    ) -> std::io::Result<Driver> {
        let socket = DatagramSocket::new(socket)?;
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            Some(Arc::new(server_config)),
            false,
            None,
        );
        let budget = (ctx.config.limits.session_queue_frames / 2).max(1);
        Ok(Driver {
            endpoint,
            socket,
            conns: ConnTable::default(),
            timers: TimerWheel::default(),
            commands,
            commands_tx,
            draining: ctx.draining.clone(),
            ctx,
            dirty: HandleSet::default(),
            stalled: HandleSet::default(),
            credit_returned: Arc::new(Notify::new()),
            blocked_on_send: HandleSet::default(),
            send_buf: Vec::with_capacity(MAX_DATAGRAM),
            budget,
            received_at: None,
        })
    }

    /// Runs until aborted.
    pub(crate) async fn run(mut self) {
        let mut received = RecvBatch::default();
        let mut wake = WakeTimer::default();
        loop {
            wake.arm(self.timers.next());
            let stalled = !self.stalled.is_empty();
            let send_blocked = self.socket.has_pending() || !self.blocked_on_send.is_empty();
            // What is already due first, then commands (shard frames and
            // shutdown), credit and send space, then new datagrams: a busy
            // socket must not starve timers, commands or credit.
            tokio::select! {
                biased;
                () = wake.fired() => {}
                Some(command) = self.commands.recv() => self.on_command(command),
                () = self.credit_returned.notified(), if stalled => {}
                Ok(()) = self.socket.writable(), if send_blocked => {
                    resume_when_sent(&mut self.socket, &mut self.blocked_on_send, &mut self.dirty);
                }
                Ok(()) = self.socket.readable() => {
                    // One receive time for the batch, which
                    // `ack_now` finds the ACK timers by.
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
            // Whatever woke us, also take what else is ready.
            let turn_started = Instant::now();
            self.on_timers(turn_started);
            for _ in 0..BATCH {
                match self.commands.try_recv() {
                    Ok(command) => self.on_command(command),
                    Err(_) => break,
                }
            }
            self.dirty.extend(self.stalled.drain());
            // Read after the commands: quinn-proto must never see time go
            // back from the `now` a command (a close) gave it.
            let now = Instant::now();
            for ch in std::mem::take(&mut self.dirty) {
                self.drive(ch, now);
            }
            // What the turn produced leaves together; connections that
            // stopped on a full send buffer go on at once if it drained.
            if resume_when_sent(&mut self.socket, &mut self.blocked_on_send, &mut self.dirty) {
                let now = Instant::now();
                for ch in std::mem::take(&mut self.dirty) {
                    self.drive(ch, now);
                }
                self.socket.flush();
            }
            self.received_at = None;
            let turn = turn_started.elapsed();
            if turn > SLOW_TURN {
                tracing::warn!(
                    turn_ms = turn.as_millis() as u64,
                    connections = self.conns.len(),
                    "lean driver turn was slow; timers and handshakes ran late"
                );
            }
        }
    }

    fn on_datagram(&mut self, remote: std::net::SocketAddr, data: &[u8], now: Instant) {
        self.send_buf.clear();
        let event = self.endpoint.handle(
            now,
            remote,
            None,
            None,
            BytesMut::from(data),
            &mut self.send_buf,
        );
        match event {
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.send_buf.clear();
                if *self.draining.borrow() {
                    let transmit = self.endpoint.refuse(incoming, &mut self.send_buf);
                    self.send(&transmit);
                    return;
                }
                match self
                    .endpoint
                    .accept(incoming, now, &mut self.send_buf, None)
                {
                    Ok((ch, quic)) => {
                        let conn = Conn {
                            quic,
                            stream: None,
                            decoder: FrameDecoder::new(
                                MAX_HELLO_FRAME_BYTES.min(self.ctx.config.limits.max_frame_bytes),
                            ),
                            phase: Phase::Hello { deadline: None },
                            outbox: Outbox::default(),
                            ending: None,
                            handshake_done: false,
                            readable: false,
                            reply_due: false,
                        };
                        self.conns.insert(ch.0, conn);
                        self.dirty.insert(ch.0);
                    }
                    Err(error) => {
                        metrics::disconnected("handshake_failed");
                        if let Some(transmit) = error.response {
                            self.send(&transmit);
                        }
                    }
                }
            }
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(conn) = self.conns.get_mut(ch.0) {
                    conn.quic.handle_event(event);
                    self.dirty.insert(ch.0);
                }
            }
            Some(DatagramEvent::Response(transmit)) => {
                self.send(&transmit);
            }
            None => {}
        }
    }

    /// Queues what `send_buf` holds for `transmit`; false while the socket
    /// is blocked on a full send buffer.
    fn send(&mut self, transmit: &quinn_proto::Transmit) -> bool {
        self.socket
            .send(&self.send_buf[..transmit.size], transmit.destination)
    }

    fn on_command(&mut self, command: DriverCommand) {
        match command {
            DriverCommand::Frame {
                conn,
                session,
                queued,
            } => self.on_frame(conn, session, queued),
            DriverCommand::Close {
                conn,
                session,
                code,
                reason,
            } => {
                if self
                    .conns
                    .get(conn)
                    .is_some_and(|c| c.session() == Some(session))
                {
                    self.close_conn(conn, code, reason);
                }
            }
            DriverCommand::Drain => self.go_away_all(),
            DriverCommand::CloseAll => self.close_all(),
        }
    }

    /// A sender of commands to this driver; shutdown reaches it this way
    /// (a `watch::Receiver::changed()` in the driver's loop registered and
    /// removed a waiter on every turn: ~5% of the router's instructions per
    /// chat message, with two such channels).
    pub(crate) fn commands(&self) -> mpsc::UnboundedSender<DriverCommand> {
        self.commands_tx.clone()
    }

    /// The connection `conn` if it still carries `session`; a message for
    /// a session that has gone is counted as dropped.
    fn conn_of_session(
        &mut self,
        conn: usize,
        session: SessionId,
        is_message: bool,
    ) -> Option<&mut Conn> {
        let found = self
            .conns
            .get_mut(conn)
            .filter(|c| c.session() == Some(session));
        if found.is_none() && is_message {
            metrics::message_dropped("session_gone");
        }
        found
    }

    /// Queues a frame from a shard for the session on `conn`, or sends a
    /// signal as a datagram when the client takes them.
    fn on_frame(&mut self, conn: usize, session: SessionId, queued: QueuedFrame) {
        let limit = self.ctx.config.limits.session_queue_frames;
        let is_message = matches!(queued.class, FrameClass::Message { .. });
        let Some(c) = self.conn_of_session(conn, session, is_message) else {
            return;
        };
        if let FrameClass::Ephemeral { .. } = queued.class {
            // A signal goes as a datagram when the client takes them:
            // the length prefix is dropped, and a newer datagram
            // pushes out an older one still queued.
            let fits = c
                .quic
                .datagrams()
                .max_size()
                .is_some_and(|max| queued.frame.len() - LENGTH_PREFIX_BYTES <= max);
            if fits && queued.frame.shared.is_empty() {
                let datagram = queued.frame.head.slice(LENGTH_PREFIX_BYTES..);
                if c.quic.datagrams().send(datagram, true).is_ok() {
                    metrics::signal_sent("datagram");
                    self.dirty.insert(conn);
                    return;
                }
            }
            metrics::signal_sent("stream");
        }
        if c.outbox.len() >= limit {
            // Full may only mean that replies arrived faster than this
            // driver's turns write them (the shards run on other threads):
            // write what the stream takes before judging the client slow.
            self.flush(conn);
        }
        let Some(c) = self.conn_of_session(conn, session, is_message) else {
            return;
        };
        if c.outbox.push(queued, limit).is_err() {
            metrics::slow_consumer("queue_full");
            if is_message {
                metrics::message_dropped("slow_consumer");
            }
            self.close_conn(conn, CloseCode::SlowConsumer, "session queue full");
            return;
        }
        self.dirty.insert(conn);
    }

    fn on_timers(&mut self, now: Instant) {
        while let Some(ch) = self.timers.pop_due(now) {
            let Some(conn) = self.conns.get_mut(ch) else {
                continue;
            };
            if let Phase::Hello {
                deadline: Some(deadline),
            } = conn.phase
            {
                if deadline <= now {
                    metrics::auth_failed("timeout");
                    self.close_conn(
                        ch,
                        CloseCode::AuthTimeout,
                        "no valid Hello within the auth timeout",
                    );
                }
            }
            if let Some(conn) = self.conns.get_mut(ch) {
                conn.quic.handle_timeout(now);
            }
            self.dirty.insert(ch);
        }
    }

    fn go_away_all(&mut self) {
        let go_away = handshake::go_away();
        for (ch, conn) in self.conns.iter_mut() {
            if matches!(conn.phase, Phase::Open { .. }) {
                // Control frames are never refused (usize::MAX: no limit).
                let go_away = QueuedFrame {
                    frame: go_away.clone().into(),
                    class: FrameClass::Reply,
                };
                let _ = conn.outbox.push(go_away, usize::MAX);
                self.dirty.insert(ch);
            }
        }
    }

    fn close_all(&mut self) {
        let all = self.conns.handles();
        for ch in all {
            self.close_conn(ch, CloseCode::GoingAway, "server shutting down");
        }
    }

    /// Closes a connection with `code` (once) and ends its session.
    fn close_conn(&mut self, ch: usize, code: CloseCode, reason: &'static str) {
        let Some(conn) = self.conns.get_mut(ch) else {
            return;
        };
        if conn.ending.is_none() {
            conn.ending = Some(code.as_str());
            conn.quic.close(
                Instant::now(),
                VarInt::from_u32(code.to_code()),
                Bytes::from_static(reason.as_bytes()),
            );
        }
        self.end_session(ch);
        self.dirty.insert(ch);
    }

    /// Unregisters the connection's session (if any) and tells its shard.
    fn end_session(&mut self, ch: usize) {
        let Some(conn) = self.conns.get_mut(ch) else {
            return;
        };
        if let Phase::Open { session, shard, .. } =
            std::mem::replace(&mut conn.phase, Phase::Closed)
        {
            self.ctx.directory.remove(session);
            let _ = self.ctx.shards[shard]
                .peers
                .send(ShardInput::Closed { session }.into());
        }
        conn.outbox.clear();
    }

    /// Everything a connection needs after its inputs changed.
    fn drive(&mut self, ch: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(ch) else {
            return;
        };
        exchange_endpoint_events(&mut self.endpoint, ch, &mut conn.quic);
        let mut lost = None;
        let mut datagrams = false;
        while let Some(event) = conn.quic.poll() {
            match event {
                Event::Connected => {
                    conn.handshake_done = true;
                    if let Phase::Hello { deadline } = &mut conn.phase {
                        *deadline = Some(now + self.ctx.config.auth.timeout);
                    }
                    metrics::connection_accepted();
                }
                Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) if conn.stream.is_none() => {
                    conn.stream = conn.quic.streams().accept(Dir::Bi);
                    conn.readable = true;
                }
                Event::Stream(StreamEvent::Readable { id }) if conn.stream == Some(id) => {
                    conn.readable = true;
                }
                Event::DatagramReceived => datagrams = true,
                Event::ConnectionLost { reason } => lost = Some(reason),
                _ => {}
            }
        }
        if datagrams {
            self.read_datagrams(ch);
        }
        let Some(conn) = self.conns.get_mut(ch) else {
            return;
        };
        if let Some(reason) = lost {
            if conn.ending.is_none() {
                conn.ending = Some(ending_of(&reason, conn.handshake_done));
            }
            self.end_session(ch);
        } else {
            self.read(ch, now);
            self.flush(ch);
        }
        let Some(conn) = self.conns.get_mut(ch) else {
            return;
        };
        // Requests and signals get an answer, which carries the ACK.
        let answer_due = std::mem::take(&mut conn.reply_due) || datagrams;
        if let Some(received_at) = self.received_at.filter(|_| !answer_due) {
            if matches!(conn.phase, Phase::Open { .. }) {
                ack_now(&mut conn.quic, received_at);
            }
        }
        // Transmit until quinn-proto has nothing more, or the socket's send
        // buffer is full: then the rest waits until it drains.
        let sent_all = transmit(&mut conn.quic, &mut self.socket, &mut self.send_buf, now);
        if !sent_all {
            self.blocked_on_send.insert(ch);
        }
        exchange_endpoint_events(&mut self.endpoint, ch, &mut conn.quic);
        if conn.quic.is_drained() {
            self.timers.set(ch, None);
            let ending = conn.ending.unwrap_or("peer_closed");
            self.end_session(ch);
            self.conns.remove(ch);
            self.stalled.remove(&ch);
            self.blocked_on_send.remove(&ch);
            metrics::disconnected(ending);
            return;
        }
        let deadline = match conn.phase {
            Phase::Hello {
                deadline: Some(hello_deadline),
            } => Some(
                conn.quic
                    .poll_timeout()
                    .map_or(hello_deadline, |t| t.min(hello_deadline)),
            ),
            _ => conn.quic.poll_timeout(),
        };
        self.timers.set(ch, deadline);
    }

    /// Hands the signals in received datagrams to the shard; drops (and
    /// counts) anything else, and signals that find the session out of
    /// credit: they are unreliable by design.
    fn read_datagrams(&mut self, ch: usize) {
        let Some(conn) = self.conns.get_mut(ch) else {
            return;
        };
        while let Some(bytes) = conn.quic.datagrams().recv() {
            let Phase::Open {
                session,
                shard,
                credit,
            } = &conn.phase
            else {
                metrics::frame_rejected("datagram_before_hello");
                continue;
            };
            let frame = match handshake::datagram_signal(&bytes) {
                Ok(frame) => frame,
                Err(reason) => {
                    metrics::frame_rejected(reason);
                    continue;
                }
            };
            let Ok(permit) = credit.permits.clone().try_acquire_owned() else {
                metrics::frame_rejected("datagram_no_credit");
                continue;
            };
            permit.forget(); // the shard task gives it back
            let input = SessionInput {
                input: ShardInput::Frame {
                    session: *session,
                    frame,
                },
                credit: Some(credit.clone()),
            };
            let _ = self.ctx.shards[*shard].peers.send(input);
        }
    }

    /// Decodes what is buffered, then reads more, until the stream is empty,
    /// the session runs out of credit, or the connection closes.
    fn read(&mut self, ch: usize, now: Instant) {
        loop {
            if !self.process_frames(ch) {
                return;
            }
            let Some(conn) = self.conns.get_mut(ch) else {
                return;
            };
            let Some(id) = conn.stream.filter(|_| conn.readable) else {
                return;
            };
            let mut stream = conn.quic.recv_stream(id);
            let Ok(mut chunks) = stream.read(true) else {
                return;
            };
            let mut read = false;
            let mut finished = false;
            match chunks.next(READ_CHUNK) {
                Ok(Some(chunk)) => {
                    conn.decoder.extend(&chunk.bytes);
                    read = true;
                }
                Ok(None) | Err(ReadError::Reset(_)) => finished = true,
                Err(ReadError::Blocked) => conn.readable = false,
            }
            let _ = chunks.finalize();
            if finished {
                // The client finished its side: a clean goodbye.
                conn.ending.get_or_insert("peer_closed");
                conn.quic.close(
                    now,
                    VarInt::from_u32(CloseCode::Normal.to_code()),
                    Bytes::new(),
                );
                self.end_session(ch);
                return;
            }
            if !read {
                return;
            }
        }
    }

    /// Handles every complete frame in the decoder; false when reading
    /// must stop (no credit, or the connection was closed).
    fn process_frames(&mut self, ch: usize) -> bool {
        loop {
            let Some(conn) = self.conns.get_mut(ch) else {
                return false;
            };
            match &conn.phase {
                Phase::Closed => return false,
                Phase::Hello { .. } => match conn.decoder.decode::<ClientFrame>() {
                    Ok(None) => return true,
                    Ok(Some(ClientFrame {
                        body: Some(Body::Hello(hello)),
                        ..
                    })) => {
                        conn.reply_due = true;
                        self.open_session(ch, hello);
                    }
                    Ok(Some(_)) => {
                        metrics::frame_rejected("before_hello");
                        self.close_conn(
                            ch,
                            CloseCode::ProtocolViolation,
                            "the first frame must be Hello",
                        );
                        return false;
                    }
                    Err(error) => {
                        self.reject(ch, error);
                        return false;
                    }
                },
                Phase::Open {
                    session,
                    shard,
                    credit,
                } => {
                    if !conn.decoder.has_frame() {
                        return true;
                    }
                    let (session, shard, credit) = (*session, *shard, credit.clone());
                    let Ok(permit) = credit.permits.clone().try_acquire_owned() else {
                        // Re-driven when a shard gives credit back.
                        conn.reply_due = true;
                        self.stalled.insert(ch);
                        return false;
                    };
                    match conn.decoder.decode::<ClientFrame>() {
                        Ok(Some(frame)) => {
                            conn.reply_due |= !matches!(frame.body, Some(Body::Ack(_)));
                            permit.forget(); // the shard task gives it back
                            let input = SessionInput {
                                input: ShardInput::Frame { session, frame },
                                credit: Some(credit),
                            };
                            let _ = self.ctx.shards[shard].peers.send(input);
                        }
                        Ok(None) => return true,
                        Err(error) => {
                            self.reject(ch, error);
                            return false;
                        }
                    }
                }
            }
        }
    }

    fn reject(&mut self, ch: usize, error: DecodeError) {
        let (code, reason) = handshake::rejection(&error);
        self.close_conn(ch, code, reason);
    }

    fn open_session(&mut self, ch: usize, hello: Hello) {
        let auth = match handshake::authenticate(&self.ctx, hello) {
            Ok(auth) => auth,
            Err((code, reason)) => return self.close_conn(ch, code, reason),
        };
        if *self.draining.borrow() {
            return self.close_conn(ch, CloseCode::GoingAway, "server shutting down");
        }
        let Some(conn) = self.conns.get_mut(ch) else {
            return;
        };
        let session = SessionId(self.ctx.next_session_id());
        let shard = shard_of(&auth.user, self.ctx.shards.len() as u32).0 as usize;
        conn.decoder
            .set_max_frame_bytes(self.ctx.config.limits.max_frame_bytes);
        conn.outbox.push_first(QueuedFrame {
            frame: handshake::welcome(&self.ctx, session, &auth.user).into(),
            class: FrameClass::Reply,
        });
        conn.phase = Phase::Open {
            session,
            shard,
            credit: Credit {
                permits: Arc::new(Semaphore::new(self.budget)),
                wake: Some(self.credit_returned.clone()),
            },
        };
        self.ctx.directory.insert(
            session,
            SessionSink::Driver {
                commands: self.commands_tx.clone(),
                conn: ch,
            },
        );
        let open = handshake::open_session(session, auth);
        let _ = self.ctx.shards[shard].peers.send(open.into());
    }

    /// Writes queued frames until the stream's flow control says stop.
    fn flush(&mut self, ch: usize) {
        let Some(conn) = self.conns.get_mut(ch) else {
            return;
        };
        let Some(id) = conn.stream else { return };
        while let Some(front) = conn.outbox.front_mut() {
            let mut chunks = [front.frame.head.clone(), front.frame.shared.clone()];
            match conn.quic.send_stream(id).write_chunks(&mut chunks) {
                Ok(written) if written.chunks == chunks.len() => {
                    let done = conn.outbox.pop_front().expect("front exists");
                    if let FrameClass::Message { accepted_at } = done.class {
                        metrics::message_delivered(accepted_at.elapsed());
                    }
                }
                Ok(_) => {
                    // Partly written: keep the rest for when the stream
                    // is writable again (write_chunks left it in `chunks`).
                    let [head, shared] = chunks;
                    front.frame = OutFrame { head, shared };
                    conn.outbox.started_front();
                    return;
                }
                Err(WriteError::Blocked) => return,
                Err(_) => {
                    // The client stopped reading our stream: it is leaving.
                    let dropped = conn.outbox.clear();
                    for _ in 0..dropped {
                        metrics::message_dropped("session_gone");
                    }
                    conn.ending.get_or_insert("peer_closed");
                    return self.close_conn(ch, CloseCode::Normal, "stream stopped");
                }
            }
        }
    }
}

impl Conn {
    fn session(&self) -> Option<SessionId> {
        match self.phase {
            Phase::Open { session, .. } => Some(session),
            _ => None,
        }
    }
}

/// The disconnect-metric reason for a connection lost without our close.
fn ending_of(error: &ConnectionError, handshake_done: bool) -> &'static str {
    match error {
        _ if !handshake_done => "handshake_failed",
        ConnectionError::ApplicationClosed(_) | ConnectionError::ConnectionClosed(_) => {
            "peer_closed"
        }
        ConnectionError::TimedOut => "idle_timeout",
        _ => "transport_error",
    }
}
