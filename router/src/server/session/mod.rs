//! [`Sessions`]: the router's side of its QUIC connections, the
//! [`Application`] each endpoint driver runs. A connection's [`Session`]
//! waits for a valid Hello within the auth timeout, then hands its frames to
//! the user's shard and writes what shards send it.
//!
//! - **Reading.** Frames are decoded from the session stream; before the
//!   Hello only a Hello-sized frame is buffered. Each frame handed to a
//!   shard takes one of the session's credits ([`Credit`]), which the shard
//!   gives back once it has answered; a session out of credit is not read
//!   until credit returns (the driver is woken for it), so QUIC flow control
//!   pushes back on a client that pipelines faster than it is answered.
//! - **Writing.** Frames from shards wait in the session's [`Outbox`] for
//!   room in the stream. An outbox full of frames that may not be dropped
//!   closes the session as a slow consumer (after writing what the stream
//!   takes: a full outbox may only mean the shards answered faster than this
//!   turn wrote).
//! - **Signals.** A signal goes as a QUIC datagram when it fits and the
//!   client takes datagrams, else on the stream; a client's signal datagram
//!   goes to the shard like a frame, or is dropped (and counted) when it is
//!   malformed or the session has no credit: signals are unreliable.
//! - **Acknowledgements.** A request's answer carries the QUIC ACK of its
//!   packet; a packet that gets no answer (a keep-alive, an `Ack`) is
//!   acknowledged in the same turn.
//! - **Draining.** Shutdown sends every session a GoAway, then closes what is
//!   left with GOING_AWAY.

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use quinn_proto::{ConnectionError, WriteError};
use switchboard_core::{placement::shard_of, FrameClass, SessionId, ShardInput};
use switchboard_proto::close::CloseCode;
use switchboard_proto::frame::{DecodeError, FrameDecoder, OutFrame, LENGTH_PREFIX_BYTES};
use switchboard_proto::v1::{client_frame::Body, ClientFrame, Hello};
use switchboard_quic::{
    Admission, Application, Conn, Connections, Driven, Events, HandleSet, StreamRead,
};
use tokio::sync::{mpsc, Notify, Semaphore};

use super::directory::{DriverCommand, QueuedFrame, SessionRoute};
use super::handshake::{self, MAX_HELLO_FRAME_BYTES};
use super::outbox::{Outbox, QueueLimits};
use super::shard_task::{Credit, SessionInput};
use super::ServerContext;
use crate::metrics;

/// Largest stream read at once.
const READ_CHUNK: usize = 64 * 1024;

/// Where a connection is in its life.
enum Phase {
    /// Before the QUIC handshake completes, `at` is when the connection
    /// was accepted (for the handshake-duration histogram); after it, the
    /// deadline for a valid Hello, which starts only then: a handshake
    /// slowed by packet loss does not eat into the client's time to
    /// authenticate. One field for both keeps a million idle sessions
    /// 16 bytes smaller.
    Hello { at: Instant },
    /// The session is open.
    Open {
        session: SessionId,
        shard: usize,
        credit: Credit,
    },
    /// Closed (by either side); waiting for quinn-proto to drain it.
    Closed,
}

/// One connection's session state.
pub(crate) struct Session {
    decoder: FrameDecoder,
    phase: Phase,
    /// Frames waiting for room in the stream.
    outbox: Outbox,
    /// Why it ended (the disconnect metric's reason), once it did.
    ending: Option<&'static str>,
    handshake_done: bool,
    /// Counted in `ServerContext::handshakes` (until the handshake is done
    /// or the connection ends).
    in_handshake: bool,
    /// A frame read since the connection was last driven will be answered
    /// (every request but `Ack`), and the answer will carry the QUIC ACK of
    /// its packet.
    reply_due: bool,
}

impl Session {
    /// Records why the connection ended, the first time it is told: the
    /// disconnect metric counts it now, not when quinn-proto has drained
    /// the connection, so it is counted before the peer can see the close.
    fn ended(&mut self, reason: &'static str) {
        if self.ending.is_none() {
            self.ending = Some(reason);
            // A connection counts as closed only once it counted as
            // accepted (handshake done): accepted - closed is what is open.
            if self.handshake_done {
                metrics::disconnected(reason);
            } else {
                metrics::handshake_failed(reason);
            }
        }
    }

    fn id(&self) -> Option<SessionId> {
        match self.phase {
            Phase::Open { session, .. } => Some(session),
            _ => None,
        }
    }
}

/// The router's sessions on one endpoint; see the module docs.
pub(crate) struct Sessions {
    ctx: Arc<ServerContext>,
    /// This driver's command channel, which the directory hands to shards.
    commands: mpsc::UnboundedSender<DriverCommand>,
    /// Notified when a shard gives a session credit back.
    credit_returned: Arc<Notify>,
    /// Connections with frames waiting for credit; driven again when a shard
    /// gives credit back.
    stalled: HandleSet,
    /// Requests in flight per session (credits).
    budget: usize,
    /// Bytes this driver's outboxes gained (or lost, below 0) since the
    /// outbox-bytes gauge was last moved: the gauge is moved once a turn,
    /// not once a frame.
    outbox_bytes_change: Cell<i64>,
}

impl Sessions {
    /// Runs `op` on a session's outbox, counting what it changed in the
    /// queued bytes.
    fn queue<R>(&self, outbox: &mut Outbox, op: impl FnOnce(&mut Outbox) -> R) -> R {
        let before = outbox.bytes();
        let result = op(outbox);
        let change = outbox.bytes() as i64 - before as i64;
        self.outbox_bytes_change
            .set(self.outbox_bytes_change.get() + change);
        result
    }

    /// Takes a connection out of the handshakes in progress, once.
    fn handshake_over(&self, session: &mut Session) {
        if std::mem::take(&mut session.in_handshake) {
            self.ctx.handshakes.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The sessions of a driver whose commands come through `commands` and
    /// who is woken by `credit_returned`.
    pub(crate) fn new(
        ctx: Arc<ServerContext>,
        commands: mpsc::UnboundedSender<DriverCommand>,
        credit_returned: Arc<Notify>,
    ) -> Sessions {
        let budget = (ctx.config.limits.session_queue_frames / 2).max(1);
        Sessions {
            ctx,
            commands,
            credit_returned,
            stalled: HandleSet::default(),
            budget,
            outbox_bytes_change: Cell::new(0),
        }
    }

    /// Closes a connection with `code` (once) and ends its session. The
    /// end counts as `code` unless a reason was recorded already.
    fn close(
        &self,
        conn: &mut Conn<Session>,
        code: CloseCode,
        reason: impl Into<Cow<'static, str>>,
        now: Instant,
    ) {
        conn.session.ended(code.as_str());
        if !conn.quic.is_closed() {
            conn.close(now, code.to_code(), reason);
        }
        self.end_session(&mut conn.session);
    }

    /// Unregisters the session (if it opened) and tells its shard.
    fn end_session(&self, session: &mut Session) {
        if let Phase::Open {
            session: id, shard, ..
        } = std::mem::replace(&mut session.phase, Phase::Closed)
        {
            self.ctx.directory.remove(id);
            let _ = self.ctx.shards[shard].send(ShardInput::Closed { session: id }.into());
        }
        // Messages not yet written stay in the inbox, for the device's next
        // session.
        self.queue(&mut session.outbox, Outbox::clear);
    }

    /// Queues a frame from a shard for the session on `conn`, or sends a
    /// signal as a datagram when the client takes them.
    fn on_frame(&mut self, conn: &mut Conn<Session>, queued: QueuedFrame, now: Instant) {
        let limits = &self.ctx.config.limits;
        let limits = QueueLimits {
            frames: limits.session_queue_frames,
            bytes: limits.session_queue_bytes,
        };
        let is_message = matches!(queued.class, FrameClass::Message { .. });
        if let FrameClass::Ephemeral { .. } = queued.class {
            // The length prefix is dropped, and a newer datagram pushes out
            // an older one still queued.
            let fits = conn
                .quic
                .datagrams()
                .max_size()
                .is_some_and(|max| queued.frame.len() - LENGTH_PREFIX_BYTES <= max);
            if fits && queued.frame.shared.is_empty() {
                let datagram = queued.frame.head.slice(LENGTH_PREFIX_BYTES..);
                if conn.quic.datagrams().send(datagram, true).is_ok() {
                    metrics::signal_sent("datagram");
                    return;
                }
            }
            metrics::signal_sent("stream");
        }
        if conn.session.outbox.len() >= limits.frames
            || conn.session.outbox.bytes() + queued.frame.len() > limits.bytes
        {
            self.flush(conn, now);
            if conn.session.id().is_none() {
                // Writing found the client gone.
                if is_message {
                    metrics::message_dropped("session_gone");
                }
                return;
            }
        }
        let pushed = self.queue(&mut conn.session.outbox, |o| o.push(queued, limits));
        if pushed.is_err() {
            metrics::slow_consumer("queue_full");
            if is_message {
                metrics::message_dropped("slow_consumer");
            }
            self.close(conn, CloseCode::SlowConsumer, "session queue full", now);
        }
    }

    /// Hands the signals in received datagrams to the shard; drops (and
    /// counts) anything else, and signals that find the session out of
    /// credit.
    fn read_datagrams(&self, conn: &mut Conn<Session>, now: Instant) {
        while let Some(bytes) = conn.quic.datagrams().recv() {
            let Phase::Open {
                session,
                shard,
                credit,
            } = &conn.session.phase
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
            self.hand_over(*shard, *session, frame, credit.clone(), now);
        }
    }

    /// Hands a client frame, which took one of `credit`'s permits, to the
    /// session's shard.
    fn hand_over(
        &self,
        shard: usize,
        session: SessionId,
        frame: ClientFrame,
        credit: Credit,
        received_at: Instant,
    ) {
        let input = ShardInput::Frame {
            session,
            frame,
            received_at,
        };
        let _ = self.ctx.shards[shard].send(SessionInput {
            input,
            credit: Some(credit),
        });
    }

    /// Decodes what is buffered, then reads more, until the stream is empty,
    /// the session runs out of credit, or the connection closes.
    fn read(&mut self, conn: &mut Conn<Session>, now: Instant) {
        while self.process_frames(conn, now) {
            match conn.read(READ_CHUNK) {
                StreamRead::Data(bytes) => conn.session.decoder.extend(&bytes),
                StreamRead::Empty => return,
                StreamRead::Finished => {
                    // The client finished its side: a clean goodbye.
                    conn.session.ended("peer_closed");
                    return self.close(conn, CloseCode::Normal, "", now);
                }
            }
        }
    }

    /// Handles every complete frame in the decoder; false when reading
    /// must stop (no credit, or the connection was closed).
    fn process_frames(&mut self, conn: &mut Conn<Session>, now: Instant) -> bool {
        loop {
            let session = &mut conn.session;
            match &session.phase {
                Phase::Closed => return false,
                Phase::Hello { .. } => match session.decoder.decode::<ClientFrame>() {
                    Ok(None) => return true,
                    Ok(Some(ClientFrame {
                        body: Some(Body::Hello(hello)),
                        ..
                    })) => {
                        session.reply_due = true;
                        self.open_session(conn, hello, now);
                    }
                    Ok(Some(_)) => {
                        metrics::frame_rejected("before_hello");
                        let reason = "the first frame must be Hello";
                        self.close(conn, CloseCode::ProtocolViolation, reason, now);
                        return false;
                    }
                    Err(error) => {
                        self.reject(conn, &error, now);
                        return false;
                    }
                },
                Phase::Open {
                    session: id,
                    shard,
                    credit,
                } => {
                    if !session.decoder.has_frame() {
                        return true;
                    }
                    let (id, shard, credit) = (*id, *shard, credit.clone());
                    let Ok(permit) = credit.permits.clone().try_acquire_owned() else {
                        // Driven again when a shard gives credit back.
                        session.reply_due = true;
                        self.stalled.insert(conn.handle);
                        return false;
                    };
                    match session.decoder.decode::<ClientFrame>() {
                        Ok(Some(frame)) => {
                            session.reply_due |= !matches!(frame.body, Some(Body::Ack(_)));
                            permit.forget(); // the shard task gives it back
                            self.hand_over(shard, id, frame, credit, now);
                        }
                        Ok(None) => return true,
                        Err(error) => {
                            self.reject(conn, &error, now);
                            return false;
                        }
                    }
                }
            }
        }
    }

    fn reject(&self, conn: &mut Conn<Session>, error: &DecodeError, now: Instant) {
        let (code, reason) = handshake::rejection(error);
        self.close(conn, code, reason, now);
    }

    fn open_session(&mut self, conn: &mut Conn<Session>, hello: Hello, now: Instant) {
        let auth = match handshake::authenticate(&self.ctx, hello) {
            Ok(auth) => auth,
            Err((code, reason)) => return self.close(conn, code, reason, now),
        };
        if *self.ctx.draining.borrow() {
            return self.close(conn, CloseCode::GoingAway, "server shutting down", now);
        }
        if self.ctx.directory.len() >= self.ctx.config.limits.max_sessions {
            let reason = "this node holds limits.max_sessions sessions";
            return self.close(conn, CloseCode::ServerFull, reason, now);
        }
        let session = SessionId(self.ctx.next_session_id());
        let shard = shard_of(&auth.user, self.ctx.shards.len() as u32).0 as usize;
        let state = &mut conn.session;
        state
            .decoder
            .set_max_frame_bytes(self.ctx.config.limits.max_frame_bytes);
        let welcome = QueuedFrame {
            frame: handshake::welcome(&self.ctx, session, &auth.user).into(),
            class: FrameClass::Reply,
        };
        self.queue(&mut state.outbox, |o| o.push_first(welcome));
        state.phase = Phase::Open {
            session,
            shard,
            credit: Credit {
                permits: Arc::new(Semaphore::new(self.budget)),
                wake: self.credit_returned.clone(),
            },
        };
        self.ctx.directory.insert(
            session,
            SessionRoute {
                commands: self.commands.clone(),
                conn: conn.handle,
            },
        );
        let open = handshake::open_session(session, auth);
        let _ = self.ctx.shards[shard].send(open.into());
    }

    /// Writes queued frames until the stream's flow control says stop.
    fn flush(&self, conn: &mut Conn<Session>, now: Instant) {
        while let Some(front) = conn.session.outbox.front() {
            let mut chunks = [front.frame.head.clone(), front.frame.shared.clone()];
            let written = conn.write(&mut chunks);
            match written {
                Ok(written) if written.chunks == chunks.len() => {
                    let done = self.queue(&mut conn.session.outbox, Outbox::pop_front);
                    let done = done.expect("front exists");
                    match done.class {
                        FrameClass::Message { accepted_at } => {
                            metrics::message_delivered(now.saturating_duration_since(accepted_at))
                        }
                        FrameClass::Presence { changed_at, .. } => {
                            metrics::presence_delivered(now.saturating_duration_since(changed_at))
                        }
                        _ => {}
                    }
                }
                Ok(_) => {
                    // Partly written: keep the rest for when the stream is
                    // writable again (write_chunks left it in `chunks`).
                    let [head, shared] = chunks;
                    let rest = OutFrame { head, shared };
                    self.queue(&mut conn.session.outbox, |o| o.wrote_part_of_front(rest));
                    return;
                }
                Err(WriteError::Blocked) => return,
                Err(_) => {
                    // The client stopped reading our stream: it is leaving,
                    // and will not get what is queued for it.
                    for _ in 0..self.queue(&mut conn.session.outbox, Outbox::clear) {
                        metrics::message_dropped("session_gone");
                    }
                    conn.session.ended("peer_closed");
                    return self.close(conn, CloseCode::Normal, "stream stopped", now);
                }
            }
        }
    }

    /// Shutdown has begun: a GoAway for every open session.
    fn go_away_all(&self, conns: &mut Connections<Session>) {
        let go_away = handshake::go_away();
        let mut touched = Vec::new();
        for conn in conns.iter_mut() {
            if matches!(conn.session.phase, Phase::Open { .. }) {
                // Control frames are never refused (usize::MAX: no limit).
                let go_away = QueuedFrame {
                    frame: go_away.clone().into(),
                    class: FrameClass::Reply,
                };
                let _ = self.queue(&mut conn.session.outbox, |o| {
                    o.push(go_away, QueueLimits::NONE)
                });
                touched.push(conn.handle);
            }
        }
        for handle in touched {
            conns.touch(handle);
        }
    }
}

impl Application for Sessions {
    type Session = Session;
    type Command = DriverCommand;

    fn accept(&mut self, now: Instant, address_validated: bool) -> Admission<Session> {
        if *self.ctx.draining.borrow() {
            metrics::handshake_turned_away("draining");
            return Admission::Refuse;
        }
        let limits = &self.ctx.config.limits;
        let in_progress = self.ctx.handshakes.load(Ordering::Relaxed);
        if in_progress >= limits.max_handshakes {
            metrics::handshake_turned_away("over_limit");
            return Admission::Refuse;
        }
        if !address_validated && in_progress >= limits.retry_above_handshakes {
            metrics::handshake_turned_away("retry");
            return Admission::Retry;
        }
        self.ctx.handshakes.fetch_add(1, Ordering::Relaxed);
        Admission::Accept(Session {
            decoder: FrameDecoder::new(
                MAX_HELLO_FRAME_BYTES.min(self.ctx.config.limits.max_frame_bytes),
            ),
            phase: Phase::Hello { at: now },
            outbox: Outbox::default(),
            ending: None,
            handshake_done: false,
            in_handshake: true,
            reply_due: false,
        })
    }

    fn accept_failed(&mut self) {
        // The session `accept` made was dropped with the connection.
        self.ctx.handshakes.fetch_sub(1, Ordering::Relaxed);
        metrics::handshake_failed("refused");
    }

    fn command(&mut self, conns: &mut Connections<Session>, command: DriverCommand, now: Instant) {
        match command {
            DriverCommand::Frame {
                conn,
                session,
                queued,
            } => {
                let is_message = matches!(queued.class, FrameClass::Message { .. });
                match conns.get_mut(conn) {
                    Some(c) if c.session.id() == Some(session) => {
                        self.on_frame(c, queued, now);
                        conns.touch(conn);
                    }
                    _ if is_message => metrics::message_dropped("session_gone"),
                    _ => {}
                }
            }
            DriverCommand::Close {
                conn,
                session,
                code,
                reason,
            } => {
                if let Some(c) = conns.get_mut(conn) {
                    if c.session.id() == Some(session) {
                        self.close(c, code, reason, now);
                        conns.touch(conn);
                    }
                }
            }
            DriverCommand::Drain => self.go_away_all(conns),
            DriverCommand::CloseAll => {
                for handle in conns.handles() {
                    if let Some(conn) = conns.get_mut(handle) {
                        self.close(conn, CloseCode::GoingAway, "server shutting down", now);
                        conns.touch(handle);
                    }
                }
            }
        }
    }

    fn before_drive(&mut self, conns: &mut Connections<Session>) {
        for handle in self.stalled.drain() {
            conns.touch(handle);
        }
        let change = self.outbox_bytes_change.take();
        if change != 0 {
            metrics::outbox_bytes(change);
        }
    }

    fn waits_for_wakeup(&self) -> bool {
        !self.stalled.is_empty()
    }

    fn drive(&mut self, conn: &mut Conn<Session>, events: Events, now: Instant) -> Driven {
        if events.connected || events.lost.is_some() {
            self.handshake_over(&mut conn.session);
        }
        if events.connected {
            conn.session.handshake_done = true;
            if let Phase::Hello { at } = &mut conn.session.phase {
                metrics::handshake_completed(now.saturating_duration_since(*at));
                *at = now + self.ctx.config.auth.timeout;
            }
            metrics::connection_accepted();
        }
        if events.datagrams {
            self.read_datagrams(conn, now);
        }
        if let Some(reason) = events.lost {
            let session = &mut conn.session;
            session.ended(ending_of(&reason));
            self.end_session(session);
        } else {
            self.read(conn, now);
            self.flush(conn, now);
        }
        // Requests and signals get an answer, which carries the ACK.
        let answer_due = std::mem::take(&mut conn.session.reply_due) || events.datagrams;
        Driven {
            ack_now: !answer_due && matches!(conn.session.phase, Phase::Open { .. }),
        }
    }

    fn deadline(&self, conn: &Conn<Session>) -> Option<Instant> {
        match conn.session.phase {
            Phase::Hello { at } if conn.session.handshake_done => Some(at),
            _ => None,
        }
    }

    fn timeout(&mut self, conn: &mut Conn<Session>, now: Instant) {
        if let Some(deadline) = self.deadline(conn) {
            if deadline <= now {
                metrics::auth_failed("timeout");
                let reason = "no valid Hello within the auth timeout";
                self.close(conn, CloseCode::AuthTimeout, reason, now);
            }
        }
    }

    fn drained(&mut self, mut conn: Conn<Session>) {
        self.handshake_over(&mut conn.session);
        self.end_session(&mut conn.session);
        self.stalled.remove(&conn.handle);
        // Every end is recorded as it happens; this is for one that was not.
        conn.session.ended("peer_closed");
    }
}

/// The disconnect-metric reason for a connection lost without our close.
fn ending_of(error: &ConnectionError) -> &'static str {
    match error {
        ConnectionError::ApplicationClosed(_) | ConnectionError::ConnectionClosed(_) => {
            "peer_closed"
        }
        ConnectionError::TimedOut => "idle_timeout",
        _ => "transport_error",
    }
}

#[cfg(test)]
mod tests;
