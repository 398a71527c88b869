//! [`Shard`]: the sans-IO state machine that owns a partition of the users,
//! their sessions and presence, and routes direct messages.
//!
//! Call order: after every [`Shard::handle`] or [`Shard::handle_timeout`],
//! drain [`Shard::poll_output`]; sleep until [`Shard::poll_timeout`]. Inputs
//! from one source must be handed in the order they were produced (the shell
//! keeps one FIFO channel per shard), which is what keeps each sender's
//! messages in send order.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_proto::close::CloseCode;
use switchboard_proto::frame;
use switchboard_proto::v1::{
    client_frame::Body, server_frame, ClientFrame, Deliver, Error as ErrorFrame, ErrorCode, Pong,
    SendResult, ServerFrame, Status,
};

use super::ids::{DeviceId, SessionId, ShardId, UserId};
use super::placement::shard_of;
use super::presence::UserRecord;
use crate::metrics;

/// The current time, handed in by the owner: a monotonic instant for
/// deadlines and the wall clock for timestamps shown to clients.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time, for deadlines.
    pub instant: Instant,
    /// Wall clock, Unix milliseconds.
    pub unix_ms: u64,
}

/// Limits the core enforces (a slice of the server's `Config`).
#[derive(Debug, Clone)]
pub struct CoreLimits {
    /// Largest `Send.payload`, in bytes.
    pub max_payload_bytes: usize,
    /// Most users one session may watch.
    pub max_watched_users: usize,
    /// Longest status text, in bytes.
    pub max_status_text_bytes: usize,
    /// How long a user stays online after the last session closes.
    pub offline_grace: Duration,
}

impl Default for CoreLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 64 * 1024,
            max_watched_users: 1000,
            max_status_text_bytes: 128,
            offline_grace: Duration::from_secs(5),
        }
    }
}

/// A direct message on its way from the sender's shard to the recipient's.
#[derive(Debug)]
pub struct RoutedMessage {
    /// Server-assigned message id.
    pub message_id: u64,
    /// Sender.
    pub from: UserId,
    /// The sending session (gets the SendResult).
    pub from_session: SessionId,
    /// Recipient.
    pub to: UserId,
    /// The client's request reference, echoed in the SendResult.
    pub request_ref: u64,
    /// The encoded `Deliver` frame, shared by every recipient device.
    pub frame: Bytes,
    /// When the router accepted the message (for the delivery-latency metric).
    pub accepted_at: Instant,
}

/// An input to a shard: from the shell (session life cycle, client frames) or
/// forwarded from another shard.
#[derive(Debug)]
pub enum ShardInput {
    /// An authenticated session of a user owned by this shard opened.
    Open {
        /// The new session.
        session: SessionId,
        /// Its user.
        user: UserId,
        /// Its device.
        device: DeviceId,
        /// Status asked for in Hello, if any.
        initial_status: Option<Status>,
    },
    /// A decoded client frame (anything but the first Hello).
    Frame {
        /// The session that sent it.
        session: SessionId,
        /// The frame.
        frame: ClientFrame,
    },
    /// A session of this shard ended (any reason).
    Closed {
        /// The session.
        session: SessionId,
    },
    /// Deliver a message to a user owned by this shard.
    Route(Arc<RoutedMessage>),
    /// The recipient's shard routed (or refused) a message from a user of this
    /// shard: copy it to the sender's other devices and tell the sender.
    RouteResult {
        /// The message.
        message: Arc<RoutedMessage>,
        /// `None` when routed; otherwise why not.
        error: ErrorCode,
        /// How many recipient devices it reached.
        devices: u32,
    },
    /// `watcher` (on any shard) starts watching `user` (owned by this shard).
    Watch {
        /// The watching session.
        watcher: SessionId,
        /// The watched user.
        user: UserId,
    },
    /// `watcher` stops watching `user`.
    Unwatch {
        /// The watching session.
        watcher: SessionId,
        /// The watched user.
        user: UserId,
    },
}

/// What a frame written to a session is, for queueing and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameClass {
    /// A direct message; `accepted_at` feeds the delivery-latency histogram.
    Message {
        /// When the router accepted the message.
        accepted_at: Instant,
    },
    /// A presence event.
    Presence,
    /// A reply to the session's own request (SendResult, Error, Pong).
    Reply,
}

/// An action for the shard's owner.
#[derive(Debug)]
pub enum Output {
    /// Write this encoded frame to `session` (which may live on any shard).
    Transmit {
        /// The target session.
        session: SessionId,
        /// One length-prefixed `ServerFrame`, shared between recipients.
        frame: Bytes,
        /// What the frame is.
        class: FrameClass,
    },
    /// Close `session` with `code`. The owner later hands in `Closed`.
    Close {
        /// The session to close.
        session: SessionId,
        /// Why.
        code: CloseCode,
        /// Detail for the QUIC reason phrase.
        reason: &'static str,
    },
    /// Hand `input` to shard `shard`, in order with earlier forwards.
    Forward {
        /// The target shard.
        shard: ShardId,
        /// The input.
        input: ShardInput,
    },
}

#[derive(Debug)]
struct SessionRecord {
    user: UserId,
    device: DeviceId,
    watching: HashSet<UserId>,
    /// Messages sent by this session whose routing result is not yet
    /// released, in send order. Results and copies to the sender's other
    /// devices are released from the front only, so both keep send order
    /// even when recipients live on shards that answer at different speeds.
    in_flight: VecDeque<InFlight>,
}

/// A sent message waiting for its routing result.
#[derive(Debug)]
struct InFlight {
    message: Arc<RoutedMessage>,
    /// `(error, devices)` once the recipient's shard answered.
    outcome: Option<(ErrorCode, u32)>,
}

/// Owner of one partition of users: their sessions, presence and routing.
///
/// Inputs: [`Shard::handle`], [`Shard::handle_timeout`]. Outputs:
/// [`Shard::poll_output`], [`Shard::poll_timeout`]. See the module docs for
/// the call order.
#[derive(Debug)]
pub struct Shard {
    id: ShardId,
    shard_count: u32,
    limits: CoreLimits,
    sessions: HashMap<SessionId, SessionRecord>,
    users: HashMap<UserId, UserRecord>,
    /// Grace-period deadlines; stale entries are skipped when they fire.
    offline_timers: BTreeSet<(Instant, UserId)>,
    outputs: VecDeque<Output>,
    next_message_seq: u64,
    /// Source of presence versions: one counter per shard, so a user's
    /// version only grows even if an empty record is forgotten and recreated.
    version_clock: u64,
}

impl Shard {
    /// Shard `id` of `shard_count`.
    pub fn new(id: ShardId, shard_count: u32, limits: CoreLimits) -> Self {
        Self {
            id,
            shard_count,
            limits,
            sessions: HashMap::new(),
            users: HashMap::new(),
            offline_timers: BTreeSet::new(),
            outputs: VecDeque::new(),
            next_message_seq: 0,
            version_clock: 0,
        }
    }

    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// Number of open sessions on this shard.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The view watchers currently have of `user`, if this shard knows them.
    pub fn presence(&self, user: &UserId) -> Option<super::PresenceView> {
        self.users.get(user).map(|r| r.view.clone())
    }

    /// Next output, `None` when drained.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest deadline at which [`Shard::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.offline_timers.first().map(|(at, _)| *at)
    }

    /// Processes one input.
    pub fn handle(&mut self, now: Now, input: ShardInput) {
        match input {
            ShardInput::Open {
                session,
                user,
                device,
                initial_status,
            } => self.open(now, session, user, device, initial_status),
            ShardInput::Frame { session, frame } => self.frame(now, session, frame),
            ShardInput::Closed { session } => self.closed(now, session),
            ShardInput::Route(message) => self.route(message),
            ShardInput::RouteResult {
                message,
                error,
                devices,
            } => self.route_result(message, error, devices),
            ShardInput::Watch { watcher, user } => self.add_watcher(watcher, user),
            ShardInput::Unwatch { watcher, user } => self.handle_unwatch_local(watcher, &user),
        }
    }

    /// Fires every grace-period deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some((at, _)) = self.offline_timers.first() {
            if *at > now.instant {
                break;
            }
            let (at, user) = self.offline_timers.pop_first().expect("first exists");
            let Some(record) = self.users.get_mut(&user) else {
                continue;
            };
            if record.offline_at != Some(at) || !record.sessions.is_empty() {
                continue; // cancelled by a reconnect or superseded
            }
            record.offline_at = None;
            metrics::user_went_offline();
            self.publish(&user);
        }
    }

    fn open(
        &mut self,
        now: Now,
        session: SessionId,
        user: UserId,
        device: DeviceId,
        initial_status: Option<Status>,
    ) {
        debug_assert_eq!(shard_of(&user, self.shard_count), self.id);
        let record = self
            .users
            .entry(user.clone())
            .or_insert_with(UserRecord::new);
        let replaced: Vec<SessionId> = record
            .sessions
            .iter()
            .copied()
            .filter(|s| self.sessions.get(s).is_some_and(|r| r.device == device))
            .collect();
        let was_online = record.is_online();
        if !was_online {
            record.chosen = Status::Online;
            record.text.clear();
            metrics::user_came_online();
        }
        record.offline_at = None;
        if let Some(status) = initial_status.filter(|s| is_settable(*s)) {
            record.chosen = status;
        }
        record.sessions.push(session);
        if record.chosen == Status::Invisible {
            record.mark_seen_if_shown(now.unix_ms);
        }
        self.sessions.insert(
            session,
            SessionRecord {
                user: user.clone(),
                device,
                watching: HashSet::new(),
                in_flight: VecDeque::new(),
            },
        );
        metrics::session_opened();
        for old in replaced {
            self.outputs.push_back(Output::Close {
                session: old,
                code: CloseCode::SessionReplaced,
                reason: "another session opened with this device id",
            });
            self.closed(now, old);
        }
        self.publish(&user);
    }

    fn closed(&mut self, now: Now, session: SessionId) {
        let Some(record) = self.sessions.remove(&session) else {
            return; // already closed (e.g. replaced)
        };
        metrics::session_closed();
        for watched in record.watching {
            self.send_unwatch(session, watched);
        }
        let Some(user) = self.users.get_mut(&record.user) else {
            return;
        };
        user.sessions.retain(|s| *s != session);
        if user.sessions.is_empty() {
            user.mark_seen_if_shown(now.unix_ms);
            let deadline = now.instant + self.limits.offline_grace;
            user.offline_at = Some(deadline);
            self.offline_timers.insert((deadline, record.user));
        }
    }

    fn frame(&mut self, now: Now, session: SessionId, frame: ClientFrame) {
        if !self.sessions.contains_key(&session) {
            return; // raced with close
        }
        let request_ref = frame.r#ref;
        match frame.body {
            None => {
                metrics::frame_rejected("unknown_frame");
                self.reply_error(
                    session,
                    request_ref,
                    ErrorCode::UnknownFrame,
                    "unknown frame type",
                );
            }
            Some(Body::Hello(_)) => {
                metrics::frame_rejected("second_hello");
                self.outputs.push_back(Output::Close {
                    session,
                    code: CloseCode::ProtocolViolation,
                    reason: "Hello sent twice",
                });
            }
            Some(Body::Ping(ping)) => self.reply(
                session,
                server_frame::Body::Pong(Pong { nonce: ping.nonce }),
            ),
            Some(Body::Send(send)) => self.send(now, session, request_ref, send.to, send.payload),
            Some(Body::SetStatus(set)) => {
                let status = Status::try_from(set.status).unwrap_or(Status::Unspecified);
                self.set_status(now, session, request_ref, status, set.text)
            }
            Some(Body::Watch(watch)) => self.watch(session, request_ref, watch.users),
            Some(Body::Unwatch(unwatch)) => {
                let record = self.sessions.get_mut(&session).expect("checked above");
                let removed: Vec<UserId> = unwatch
                    .users
                    .iter()
                    .filter_map(|u| UserId::parse(u))
                    .filter(|u| record.watching.remove(u))
                    .collect();
                for user in removed {
                    self.send_unwatch(session, user);
                }
            }
        }
    }

    fn send(&mut self, now: Now, session: SessionId, request_ref: u64, to: String, payload: Bytes) {
        let Some(to) = UserId::parse(&to) else {
            metrics::message_dropped("invalid_recipient");
            return self.send_failed(session, request_ref, ErrorCode::InvalidUserId);
        };
        if payload.len() > self.limits.max_payload_bytes {
            metrics::message_dropped("payload_too_large");
            return self.send_failed(session, request_ref, ErrorCode::PayloadTooLarge);
        }
        let sender = &self.sessions[&session];
        self.next_message_seq += 1;
        let message_id = (u64::from(self.id.0) << 48) | self.next_message_seq;
        let deliver = ServerFrame {
            body: Some(server_frame::Body::Deliver(Deliver {
                message_id,
                from_user: sender.user.as_str().to_owned(),
                from_device: sender.device.as_str().to_owned(),
                to_user: to.as_str().to_owned(),
                payload,
                sent_at_ms: now.unix_ms,
            })),
        };
        let message = Arc::new(RoutedMessage {
            message_id,
            from: sender.user.clone(),
            from_session: session,
            to,
            request_ref,
            frame: frame::encode(&deliver),
            accepted_at: now.instant,
        });
        self.sessions
            .get_mut(&session)
            .expect("checked by the caller")
            .in_flight
            .push_back(InFlight {
                message: message.clone(),
                outcome: None,
            });
        let target = shard_of(&message.to, self.shard_count);
        if target == self.id {
            self.route(message);
        } else {
            self.outputs.push_back(Output::Forward {
                shard: target,
                input: ShardInput::Route(message),
            });
        }
    }

    /// Recipient side: deliver to every online device of `message.to`.
    /// A message to oneself reaches one's other devices, released in order
    /// with the sender's other messages by [`Shard::route_result`].
    fn route(&mut self, message: Arc<RoutedMessage>) {
        let to_self = message.from == message.to;
        let recipients = self.sessions_of_except(&message.to, message.from_session);
        let (error, devices) = if recipients.is_empty() && !to_self {
            metrics::message_dropped("recipient_offline");
            (ErrorCode::RecipientOffline, 0)
        } else {
            metrics::message_routed();
            if !to_self {
                for session in &recipients {
                    self.transmit_message(*session, &message);
                }
            }
            (ErrorCode::None, recipients.len() as u32)
        };
        let origin = shard_of(&message.from, self.shard_count);
        if origin == self.id {
            self.route_result(message, error, devices);
        } else {
            self.outputs.push_back(Output::Forward {
                shard: origin,
                input: ShardInput::RouteResult {
                    message,
                    error,
                    devices,
                },
            });
        }
    }

    /// Sender side: record the outcome, then release every finished message
    /// at the front of the session's in-flight queue: copies to the sender's
    /// other devices (if routed), then the SendResult.
    fn route_result(&mut self, message: Arc<RoutedMessage>, error: ErrorCode, devices: u32) {
        let session = message.from_session;
        let Some(record) = self.sessions.get_mut(&session) else {
            // The sending session is gone; its other devices still get it.
            if error == ErrorCode::None {
                self.copy_to_other_devices(&message);
            }
            return;
        };
        if let Some(entry) = record
            .in_flight
            .iter_mut()
            .find(|e| e.message.message_id == message.message_id)
        {
            entry.outcome = Some((error, devices));
        }
        while let Some((error, devices)) = self
            .sessions
            .get_mut(&session)
            .and_then(|r| r.in_flight.front().and_then(|e| e.outcome))
        {
            let done = self
                .sessions
                .get_mut(&session)
                .and_then(|r| r.in_flight.pop_front())
                .expect("front exists");
            if error == ErrorCode::None {
                self.copy_to_other_devices(&done.message);
            }
            let message_id = if error == ErrorCode::None {
                done.message.message_id
            } else {
                0
            };
            self.send_result(
                session,
                done.message.request_ref,
                error,
                message_id,
                devices,
            );
        }
    }

    /// The open sessions of `user` other than `except`.
    fn sessions_of_except(&self, user: &UserId, except: SessionId) -> Vec<SessionId> {
        self.users
            .get(user)
            .map(|r| {
                r.sessions
                    .iter()
                    .copied()
                    .filter(|s| *s != except)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn copy_to_other_devices(&mut self, message: &RoutedMessage) {
        let copies = self.sessions_of_except(&message.from, message.from_session);
        for session in copies {
            self.transmit_message(session, message);
        }
    }

    fn transmit_message(&mut self, session: SessionId, message: &RoutedMessage) {
        self.outputs.push_back(Output::Transmit {
            session,
            frame: message.frame.clone(),
            class: FrameClass::Message {
                accepted_at: message.accepted_at,
            },
        });
    }

    fn send_failed(&mut self, session: SessionId, request_ref: u64, error: ErrorCode) {
        self.send_result(session, request_ref, error, 0, 0);
    }

    fn send_result(
        &mut self,
        session: SessionId,
        request_ref: u64,
        error: ErrorCode,
        message_id: u64,
        devices: u32,
    ) {
        self.reply(
            session,
            server_frame::Body::SendResult(SendResult {
                r#ref: request_ref,
                error: error as i32,
                message_id,
                devices,
            }),
        );
    }

    fn set_status(
        &mut self,
        now: Now,
        session: SessionId,
        request_ref: u64,
        status: Status,
        text: String,
    ) {
        if !is_settable(status) || text.len() > self.limits.max_status_text_bytes {
            metrics::frame_rejected("invalid_status");
            return self.reply_error(
                session,
                request_ref,
                ErrorCode::InvalidStatus,
                "status must be ONLINE, AWAY, BUSY or INVISIBLE with a short text",
            );
        }
        let user = self.sessions[&session].user.clone();
        let record = self
            .users
            .get_mut(&user)
            .expect("a session's user has a record");
        if status == Status::Invisible {
            record.mark_seen_if_shown(now.unix_ms);
        }
        record.chosen = status;
        record.text = text;
        self.publish(&user);
    }

    fn watch(&mut self, session: SessionId, request_ref: u64, users: Vec<String>) {
        let Some(users) = users
            .iter()
            .map(|u| UserId::parse(u))
            .collect::<Option<Vec<_>>>()
        else {
            metrics::frame_rejected("invalid_user_id");
            return self.reply_error(
                session,
                request_ref,
                ErrorCode::InvalidUserId,
                "a watched user id is invalid",
            );
        };
        let record = self.sessions.get_mut(&session).expect("caller checked");
        let new: HashSet<UserId> = users
            .into_iter()
            .filter(|u| !record.watching.contains(u))
            .collect();
        if record.watching.len() + new.len() > self.limits.max_watched_users {
            metrics::frame_rejected("watch_limit");
            return self.reply_error(
                session,
                request_ref,
                ErrorCode::WatchLimit,
                "too many watched users",
            );
        }
        record.watching.extend(new.iter().cloned());
        for user in new {
            let target = shard_of(&user, self.shard_count);
            if target == self.id {
                self.add_watcher(session, user);
            } else {
                self.outputs.push_back(Output::Forward {
                    shard: target,
                    input: ShardInput::Watch {
                        watcher: session,
                        user,
                    },
                });
            }
        }
    }

    fn send_unwatch(&mut self, watcher: SessionId, user: UserId) {
        let target = shard_of(&user, self.shard_count);
        if target == self.id {
            self.handle_unwatch_local(watcher, &user);
        } else {
            self.outputs.push_back(Output::Forward {
                shard: target,
                input: ShardInput::Unwatch { watcher, user },
            });
        }
    }

    fn handle_unwatch_local(&mut self, watcher: SessionId, user: &UserId) {
        let Some(record) = self.users.get_mut(user) else {
            return;
        };
        record.watchers.remove(&watcher);
        if record.carries_nothing() {
            // A user only ever watched, never seen: forget it, so watching
            // random ids cannot grow the table.
            self.users.remove(user);
        }
    }

    /// Watched side: register the watcher and send it the current state.
    fn add_watcher(&mut self, watcher: SessionId, user: UserId) {
        let record = self
            .users
            .entry(user.clone())
            .or_insert_with(UserRecord::new);
        record.watchers.insert(watcher);
        let event = ServerFrame {
            body: Some(server_frame::Body::Presence(record.view.to_event(&user))),
        };
        metrics::presence_events_sent(1);
        self.outputs.push_back(Output::Transmit {
            session: watcher,
            frame: frame::encode(&event),
            class: FrameClass::Presence,
        });
    }

    /// Recomputes `user`'s view and, if it changed, sends it to every watcher
    /// (encoded once).
    fn publish(&mut self, user: &UserId) {
        let Some(record) = self.users.get_mut(user) else {
            return;
        };
        if !record.refresh(&mut self.version_clock) || record.watchers.is_empty() {
            return;
        }
        let event = ServerFrame {
            body: Some(server_frame::Body::Presence(record.view.to_event(user))),
        };
        let bytes = frame::encode(&event);
        metrics::presence_events_sent(record.watchers.len() as u64);
        for watcher in &record.watchers {
            self.outputs.push_back(Output::Transmit {
                session: *watcher,
                frame: bytes.clone(),
                class: FrameClass::Presence,
            });
        }
    }

    fn reply_error(
        &mut self,
        session: SessionId,
        request_ref: u64,
        code: ErrorCode,
        message: &str,
    ) {
        self.reply(
            session,
            server_frame::Body::Error(ErrorFrame {
                r#ref: request_ref,
                code: code as i32,
                message: message.to_owned(),
            }),
        );
    }

    fn reply(&mut self, session: SessionId, body: server_frame::Body) {
        let frame = frame::encode(&ServerFrame { body: Some(body) });
        self.outputs.push_back(Output::Transmit {
            session,
            frame,
            class: FrameClass::Reply,
        });
    }
}

/// Statuses a client may choose.
fn is_settable(status: Status) -> bool {
    matches!(
        status,
        Status::Online | Status::Away | Status::Busy | Status::Invisible
    )
}
