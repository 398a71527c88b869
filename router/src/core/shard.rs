//! [`Shard`]: the sans-IO state machine that owns a partition of the users,
//! their sessions, presence and inboxes, and routes direct messages.
//!
//! A direct message is stored in the recipient's inbox ([`Mailbox`]) on the
//! recipient's shard, which sends it to the recipient's devices at once;
//! the sender's shard then stores a copy in the sender's inbox (for the
//! sender's other devices) and answers the `SendResult`. Each session is
//! sent its inbox in order, at most `delivery_window` messages beyond its
//! last ack; acks release the window and trim the inbox.
//!
//! Call order: after every [`Shard::handle`] or [`Shard::handle_timeout`],
//! drain [`Shard::poll_output`]; sleep until [`Shard::poll_timeout`]. Inputs
//! from one source must be handed in the order they were produced (the shell
//! keeps one FIFO channel per shard), which is what keeps each sender's
//! messages in send order.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use switchboard_proto::close::CloseCode;
use switchboard_proto::frame::{self, OutFrame};
use switchboard_proto::v1::{
    client_frame::Body, server_frame, ClientFrame, Error as ErrorFrame, ErrorCode, Gap,
    InboxOpened, Message, Pong, Resume, RoomMembers, RoomResult, Send, SendResult, ServerFrame,
    Status,
};

use super::dedupe::{DedupeLimits, KeyState, SendOutcome};
use super::ids::{DeviceId, IdMap, IdSet, RoomId, SessionId, ShardId, UserId};
use super::mailbox::{MailboxLimits, Next, StoredMessage};
use super::placement::{shard_of, shard_of_room};
use super::presence::UserRecord;
use super::rooms::{RoomReply, RoomRequest, Rooms};
use crate::metrics;

/// Longest `Send.client_msg_id`, in bytes.
pub const MAX_CLIENT_MSG_ID_BYTES: usize = 64;

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
    /// What each user's inbox keeps for devices that have not acked.
    pub mailbox: MailboxLimits,
    /// Each user's idempotency window for `Send.client_msg_id`.
    pub dedupe: DedupeLimits,
    /// Most Deliver frames sent to a session beyond its last ack.
    pub delivery_window: usize,
    /// Most members one room may have.
    pub max_room_members: usize,
    /// Epoch of every inbox this shard creates (`InboxOpened.epoch`): the
    /// shell passes one per server run, so sequence numbers of an earlier
    /// run are never mistaken for this run's.
    pub inbox_epoch: u64,
}

impl Default for CoreLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 64 * 1024,
            max_watched_users: 1000,
            max_status_text_bytes: 128,
            offline_grace: Duration::from_secs(5),
            mailbox: MailboxLimits::default(),
            dedupe: DedupeLimits::default(),
            delivery_window: 256,
            max_room_members: 100_000,
            inbox_epoch: 1,
        }
    }
}

/// Who a message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A user (direct message).
    User(UserId),
    /// Every member of a room.
    Room(RoomId),
}

/// A message on its way from the sender's shard to the recipient's (or the
/// room's) shard, and back with its result.
#[derive(Debug)]
pub struct RoutedMessage {
    /// The message, as every inbox stores it.
    pub message: Arc<StoredMessage>,
    /// The sending session (gets the SendResult).
    pub from_session: SessionId,
    /// Recipient.
    pub to: Recipient,
    /// The Send's idempotency key, if it had one.
    pub client_msg_id: Option<Box<str>>,
    /// For a room message: the sequence number of the sender's copy, set
    /// when the fan-out stores it in the sender's inbox (before the result
    /// comes back).
    pub sender_seq: OnceLock<u64>,
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
        /// Where the device's delivery resumes (Hello.resume), if given.
        resume: Option<Resume>,
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
    /// Deliver a message to a user (or room) owned by this shard.
    Route(Arc<RoutedMessage>),
    /// Store a room message for these members, all owned by this shard.
    RoomDeliver {
        /// The message.
        message: Arc<RoutedMessage>,
        /// The members of this shard.
        members: Arc<[UserId]>,
    },
    /// A room request for a room owned by this shard.
    Room {
        /// The asking session (gets the reply).
        session: SessionId,
        /// Its user.
        actor: UserId,
        /// The request's `ref`.
        request_ref: u64,
        /// The room.
        room: RoomId,
        /// What is asked.
        request: RoomRequest,
    },
    /// The recipient's shard stored (or refused) a message from a user of this
    /// shard: copy it to the sender's inbox and tell the sender.
    RouteResult {
        /// The message.
        message: Arc<RoutedMessage>,
        /// `None` when routed; otherwise why not.
        error: ErrorCode,
        /// How many recipient devices it was sent to at once.
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
    /// Inbox bookkeeping (InboxOpened, Gap).
    Control,
}

/// An action for the shard's owner.
#[derive(Debug)]
pub enum Output {
    /// Write this encoded frame to `session` (which may live on any shard).
    Transmit {
        /// The target session.
        session: SessionId,
        /// One length-prefixed `ServerFrame`, in parts shared between
        /// recipients.
        frame: OutFrame,
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
    watching: IdSet<UserId>,
    /// Messages sent by this session whose routing result is not yet
    /// released, in send order. Results and copies to the sender's inbox
    /// are released from the front only, so both keep send order even when
    /// recipients live on shards that answer at different speeds.
    in_flight: VecDeque<InFlight>,
    /// Highest inbox sequence number sent to (or skipped for) this session.
    sent_through: u64,
    /// Sequence numbers of Deliver frames sent and not yet acked (at most
    /// `delivery_window`).
    unacked: VecDeque<u64>,
}

/// A sent message waiting for its routing result.
#[derive(Debug)]
struct InFlight {
    message: Arc<RoutedMessage>,
    /// The Send's `ref`, echoed in its SendResult.
    request_ref: u64,
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
    sessions: IdMap<SessionId, SessionRecord>,
    users: IdMap<UserId, UserRecord>,
    /// The rooms this shard owns.
    rooms: Rooms,
    /// Grace-period deadlines; stale entries are skipped when they fire.
    offline_timers: BTreeSet<(Instant, UserId)>,
    /// Inbox expiry deadlines, one per user (`UserRecord::mailbox_timer`).
    mailbox_timers: BTreeSet<(Instant, UserId)>,
    outputs: VecDeque<Output>,
    next_message_seq: u64,
    /// Source of presence versions: one counter per shard, so a user's
    /// version only grows even if an empty record is forgotten and recreated.
    version_clock: u64,
}

impl Shard {
    /// Shard `id` of `shard_count`.
    pub fn new(id: ShardId, shard_count: u32, limits: CoreLimits) -> Self {
        let rooms = Rooms::new(shard_count, limits.max_room_members);
        Self {
            id,
            shard_count,
            limits,
            sessions: IdMap::default(),
            users: IdMap::default(),
            rooms,
            offline_timers: BTreeSet::new(),
            mailbox_timers: BTreeSet::new(),
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

    /// The highest sequence number assigned in `user`'s inbox (0 if none).
    pub fn inbox_last_seq(&self, user: &UserId) -> u64 {
        self.users.get(user).map_or(0, |r| r.mailbox.last_seq())
    }

    /// Messages held in the inboxes of this shard's users.
    pub fn stored_messages(&self) -> usize {
        self.users.values().map(|r| r.mailbox.len()).sum()
    }

    /// The earliest deadline at which [`Shard::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let grace = self.offline_timers.first().map(|(at, _)| *at);
        let mailbox = self.mailbox_timers.first().map(|(at, _)| *at);
        grace.into_iter().chain(mailbox).min()
    }

    /// Processes one input.
    pub fn handle(&mut self, now: Now, input: ShardInput) {
        match input {
            ShardInput::Open {
                session,
                user,
                device,
                initial_status,
                resume,
            } => self.open(now, session, user, device, initial_status, resume),
            ShardInput::Frame { session, frame } => self.frame(now, session, frame),
            ShardInput::Closed { session } => self.closed(now, session),
            ShardInput::Route(message) => self.route(now, message),
            ShardInput::RoomDeliver { message, members } => {
                self.room_deliver(now, &message, &members)
            }
            ShardInput::Room {
                session,
                actor,
                request_ref,
                room,
                request,
            } => self.room_request(session, &actor, request_ref, &room, request),
            ShardInput::RouteResult {
                message,
                error,
                devices,
            } => self.route_result(now, message, error, devices),
            ShardInput::Watch { watcher, user } => self.add_watcher(watcher, user),
            ShardInput::Unwatch { watcher, user } => self.handle_unwatch_local(watcher, &user),
        }
    }

    /// Fires every grace-period and inbox-expiry deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some((at, _)) = self.mailbox_timers.first() {
            if *at > now.instant {
                break;
            }
            let (at, user) = self.mailbox_timers.pop_first().expect("first exists");
            let Some(record) = self.users.get_mut(&user) else {
                continue;
            };
            if record.mailbox_timer != Some(at) {
                continue;
            }
            record.mailbox_timer = None;
            record.mailbox.expire(now.instant, &self.limits.mailbox);
            self.schedule_expiry(&user);
        }
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
        resume: Option<Resume>,
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
                watching: IdSet::default(),
                in_flight: VecDeque::new(),
                sent_through: 0,
                unacked: VecDeque::new(),
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
        self.open_inbox(session, resume);
    }

    /// Tells a new session where its delivery starts, then sends its
    /// backlog (after a Gap if part of it is gone).
    fn open_inbox(&mut self, session: SessionId, resume: Option<Resume>) {
        let epoch = self.limits.inbox_epoch;
        let (requested, epoch_changed) = match resume {
            Some(r) if r.epoch == epoch => (Some(r.last_seq), false),
            Some(_) => (None, true),
            None => (None, false),
        };
        let record = self.sessions.get_mut(&session).expect("just opened");
        let user = self
            .users
            .get_mut(&record.user)
            .expect("a session's user has a record");
        let last_seq = user.mailbox.last_seq();
        let ahead = requested.is_some_and(|seq| seq > last_seq);
        let resume_after = user.mailbox.attach(&record.device, requested);
        record.sent_through = resume_after;
        let user_id = record.user.clone();
        self.reply_as(
            session,
            server_frame::Body::InboxOpened(InboxOpened {
                epoch,
                resume_after,
                last_seq,
                epoch_changed,
            }),
            FrameClass::Control,
        );
        if ahead {
            metrics::frame_rejected("resume_ahead");
            self.reply_error(
                session,
                0,
                ErrorCode::InvalidAck,
                "Hello.resume.last_seq is beyond this inbox; resumed from its end",
            );
        }
        self.pump(session);
        self.schedule_expiry(&user_id);
    }

    fn closed(&mut self, now: Now, session: SessionId) {
        let Some(record) = self.sessions.remove(&session) else {
            return; // already closed (e.g. replaced)
        };
        metrics::session_closed();
        for watched in record.watching {
            self.send_unwatch(session, watched);
        }
        // Sends whose result came back but waited behind an earlier one:
        // store their copies now (later results find no session and are
        // released as they come).
        for done in record.in_flight {
            if let Some((error, devices)) = done.outcome {
                let (result, waiting) = self.release(now, &done.message, error, devices);
                self.answer_repeats(waiting, result);
            }
        }
        let Some(user) = self.users.get_mut(&record.user) else {
            return;
        };
        user.sessions.retain(|s| *s != session);
        let device_still_open = user.sessions.iter().any(|s| {
            self.sessions
                .get(s)
                .is_some_and(|r| r.device == record.device)
        });
        if !device_still_open {
            user.mailbox.detach(&record.device, now.instant);
            self.schedule_expiry(&record.user);
        }
        let Some(user) = self.users.get_mut(&record.user) else {
            return;
        };
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
            Some(Body::Send(send)) => self.send(now, session, request_ref, send),
            Some(Body::Ack(ack)) => self.ack(session, request_ref, ack.seq),
            Some(Body::CreateRoom(create)) => {
                let request = RoomRequest::Create { open: create.open };
                self.forward_room_request(session, request_ref, &create.room, Ok(request))
            }
            Some(Body::JoinRoom(join)) => {
                let member = self.member_or_self(session, &join.user);
                let request = member.map(|member| RoomRequest::Join { member });
                self.forward_room_request(session, request_ref, &join.room, request)
            }
            Some(Body::LeaveRoom(leave)) => {
                let member = self.member_or_self(session, &leave.user);
                let request = member.map(|member| RoomRequest::Leave { member });
                self.forward_room_request(session, request_ref, &leave.room, request)
            }
            Some(Body::ListMembers(list)) => {
                self.forward_room_request(session, request_ref, &list.room, Ok(RoomRequest::List))
            }
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

    fn send(&mut self, now: Now, session: SessionId, request_ref: u64, send: Send) {
        let to = if send.room.is_empty() {
            let Some(user) = UserId::parse(&send.to) else {
                metrics::message_dropped("invalid_recipient");
                let error = Err(ErrorCode::InvalidUserId);
                return self.send_result(session, request_ref, error, false);
            };
            Recipient::User(user)
        } else {
            let Some(room) = RoomId::parse(&send.room).filter(|_| send.to.is_empty()) else {
                metrics::message_dropped("invalid_room");
                let error = Err(ErrorCode::InvalidRoomId);
                return self.send_result(session, request_ref, error, false);
            };
            Recipient::Room(room)
        };
        if send.payload.len() > self.limits.max_payload_bytes {
            metrics::message_dropped("payload_too_large");
            return self.send_result(session, request_ref, Err(ErrorCode::PayloadTooLarge), false);
        }
        if send.client_msg_id.len() > MAX_CLIENT_MSG_ID_BYTES {
            metrics::message_dropped("invalid_client_msg_id");
            let error = Err(ErrorCode::InvalidClientMsgId);
            return self.send_result(session, request_ref, error, false);
        }
        let sender = &self.sessions[&session];
        let from = sender.user.clone();
        let from_device = sender.device.clone();
        if !send.client_msg_id.is_empty() {
            let record = self
                .users
                .get_mut(&from)
                .expect("a session's user has a record");
            let window = record.dedupe.get_or_insert_with(Default::default);
            let key = send.client_msg_id.as_str();
            match window.get_mut(key, now.instant, &self.limits.dedupe) {
                Some(KeyState::Done(outcome)) => {
                    let outcome = *outcome;
                    metrics::duplicate_send();
                    return self.send_result(session, request_ref, Ok(outcome), true);
                }
                Some(KeyState::Pending(waiting)) => {
                    metrics::duplicate_send();
                    waiting.push((session, request_ref));
                    return;
                }
                None => window.insert_pending(key, now.instant, &self.limits.dedupe),
            }
        }
        self.next_message_seq += 1;
        let message_id = (u64::from(self.id.0) << 48) | self.next_message_seq;
        let encoded = Message {
            message_id,
            from_user: from.as_str().to_owned(),
            from_device: from_device.as_str().to_owned(),
            to_user: send.to,
            payload: send.payload,
            sent_at_ms: now.unix_ms,
            client_msg_id: send.client_msg_id.clone(),
            room: send.room,
        }
        .encode_to_vec();
        let routed = Arc::new(RoutedMessage {
            message: Arc::new(StoredMessage {
                message_id,
                from,
                from_device,
                encoded: Bytes::from(encoded),
                accepted_at: now.instant,
            }),
            from_session: session,
            to,
            client_msg_id: (!send.client_msg_id.is_empty())
                .then(|| send.client_msg_id.into_boxed_str()),
            sender_seq: OnceLock::new(),
        });
        self.sessions
            .get_mut(&session)
            .expect("checked by the caller")
            .in_flight
            .push_back(InFlight {
                message: routed.clone(),
                request_ref,
                outcome: None,
            });
        let target = match &routed.to {
            Recipient::User(user) => shard_of(user, self.shard_count),
            Recipient::Room(room) => shard_of_room(room, self.shard_count),
        };
        if target == self.id {
            self.route(now, routed);
        } else {
            self.outputs.push_back(Output::Forward {
                shard: target,
                input: ShardInput::Route(routed),
            });
        }
    }

    /// Recipient side: store the message in the recipient's inbox and send
    /// it to their online devices. A message to oneself is stored once, by
    /// [`Shard::route_result`], in order with the sender's other messages.
    /// A room message goes to [`Shard::route_to_room`].
    fn route(&mut self, now: Now, routed: Arc<RoutedMessage>) {
        let to = match &routed.to {
            Recipient::User(user) => user.clone(),
            Recipient::Room(room) => {
                let room = room.clone();
                return self.route_to_room(now, routed, &room);
            }
        };
        let devices = if routed.message.from == to {
            0
        } else {
            self.store(now, &to, &routed.message, false);
            self.pump_user(&to)
        };
        metrics::message_routed();
        self.answer_route(now, routed, ErrorCode::None, devices);
    }

    /// Room side: the room's shard puts its messages in one order and hands
    /// each shard its members' share (the sender's own shard first, so the
    /// sender's copy is stored before the result comes back).
    fn route_to_room(&mut self, now: Now, routed: Arc<RoutedMessage>, room: &RoomId) {
        let groups = match self.rooms.fan_out(room, &routed.message.from) {
            Ok(groups) => groups,
            Err(error) => {
                metrics::message_dropped("room_refused");
                return self.answer_route(now, routed, error, 0);
            }
        };
        metrics::message_routed();
        let mut members = 0u32;
        for (shard, share) in groups.iter() {
            members += share.len() as u32;
            if *shard == self.id {
                self.room_deliver(now, &routed, share);
            } else {
                self.outputs.push_back(Output::Forward {
                    shard: *shard,
                    input: ShardInput::RoomDeliver {
                        message: routed.clone(),
                        members: share.clone(),
                    },
                });
            }
        }
        // Everyone but the sender.
        self.answer_route(now, routed, ErrorCode::None, members.saturating_sub(1));
    }

    /// Stores a room message for `members` (owned by this shard) and sends
    /// it to their online devices; the sender's copy records its seq.
    fn room_deliver(&mut self, now: Now, routed: &RoutedMessage, members: &[UserId]) {
        for member in members {
            let own = *member == routed.message.from;
            let seq = self.store(now, member, &routed.message, own);
            if own {
                let _ = routed.sender_seq.set(seq);
            }
            self.pump_user(member);
        }
    }

    /// Appends `message` to `user`'s inbox (creating the user's record for a
    /// user never seen) and keeps its expiry deadline; returns the seq.
    fn store(&mut self, now: Now, user: &UserId, message: &Arc<StoredMessage>, own: bool) -> u64 {
        let record = self
            .users
            .entry(user.clone())
            .or_insert_with(UserRecord::new);
        let front = record.mailbox.front_stored_at();
        let seq = record
            .mailbox
            .append(message.clone(), own, now.instant, &self.limits.mailbox);
        // Only a new front can move the deadline (appends don't touch the
        // devices); checking saves a timer update per stored message.
        if record.mailbox.front_stored_at() != front {
            self.schedule_expiry(user);
        }
        seq
    }

    /// Sends a routing outcome back to the sender's shard.
    fn answer_route(
        &mut self,
        now: Now,
        routed: Arc<RoutedMessage>,
        error: ErrorCode,
        devices: u32,
    ) {
        let origin = shard_of(&routed.message.from, self.shard_count);
        if origin == self.id {
            self.route_result(now, routed, error, devices);
        } else {
            self.outputs.push_back(Output::Forward {
                shard: origin,
                input: ShardInput::RouteResult {
                    message: routed,
                    error,
                    devices,
                },
            });
        }
    }

    /// Sender side: record the outcome, then release every finished message
    /// at the front of the session's in-flight queue: the copy in the
    /// sender's inbox (if stored), then the SendResult.
    fn route_result(
        &mut self,
        now: Now,
        routed: Arc<RoutedMessage>,
        error: ErrorCode,
        devices: u32,
    ) {
        let session = routed.from_session;
        let Some(record) = self.sessions.get_mut(&session) else {
            // The sending session is gone; the copy is still stored.
            let (result, waiting) = self.release(now, &routed, error, devices);
            self.answer_repeats(waiting, result);
            return;
        };
        let message_id = routed.message.message_id;
        if let Some(entry) = record
            .in_flight
            .iter_mut()
            .find(|e| e.message.message.message_id == message_id)
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
            let (result, waiting) = self.release(now, &done.message, error, devices);
            self.send_result(session, done.request_ref, result, false);
            self.answer_repeats(waiting, result);
        }
    }

    /// Stores the sender's copy of a routed message (if it was stored for the
    /// recipient) and settles its idempotency key. Returns the Send's result
    /// and the repeats of its key that wait for it.
    fn release(
        &mut self,
        now: Now,
        routed: &RoutedMessage,
        error: ErrorCode,
        devices: u32,
    ) -> (Result<SendOutcome, ErrorCode>, Vec<(SessionId, u64)>) {
        let from = &routed.message.from;
        let result = match (&routed.to, error) {
            (_, ErrorCode::None) if matches!(routed.to, Recipient::Room(_)) => Ok(SendOutcome {
                message_id: routed.message.message_id,
                devices,
                seq: routed.sender_seq.get().copied().unwrap_or(0),
            }),
            (Recipient::User(to), ErrorCode::None) => {
                let seq = self.store(now, from, &routed.message, true);
                let copies = self.pump_user(from);
                Ok(SendOutcome {
                    message_id: routed.message.message_id,
                    devices: if to == from { copies } else { devices },
                    seq,
                })
            }
            (_, error) => Err(error),
        };
        let Some(key) = routed.client_msg_id.as_deref() else {
            return (result, Vec::new());
        };
        let Some(window) = self.users.get_mut(from).and_then(|r| r.dedupe.as_mut()) else {
            return (result, Vec::new());
        };
        let waiting = match result {
            Ok(outcome) => window.complete(key, outcome),
            Err(_) => window.remove(key),
        };
        (result, waiting)
    }

    /// Gives each repeat of an idempotency key its first Send's result.
    fn answer_repeats(
        &mut self,
        waiting: Vec<(SessionId, u64)>,
        result: Result<SendOutcome, ErrorCode>,
    ) {
        for (session, request_ref) in waiting {
            if self.sessions.contains_key(&session) {
                self.send_result(session, request_ref, result, true);
            }
        }
    }

    /// The member a Join/Leave names: `user`, or the session's own user when
    /// empty.
    fn member_or_self(&self, session: SessionId, user: &str) -> Result<UserId, ErrorCode> {
        if user.is_empty() {
            return Ok(self.sessions[&session].user.clone());
        }
        UserId::parse(user).ok_or(ErrorCode::InvalidUserId)
    }

    /// Validates a room request's ids and hands it to the room's shard.
    fn forward_room_request(
        &mut self,
        session: SessionId,
        request_ref: u64,
        room: &str,
        request: Result<RoomRequest, ErrorCode>,
    ) {
        let is_list = matches!(request, Ok(RoomRequest::List));
        let request = RoomId::parse(room)
            .ok_or(ErrorCode::InvalidRoomId)
            .and_then(|room| request.map(|request| (room, request)));
        let (room, request) = match request {
            Ok(valid) => valid,
            Err(error) => {
                metrics::frame_rejected("invalid_room_request");
                return self.room_reply(session, request_ref, room, is_list, Err(error));
            }
        };
        let actor = self.sessions[&session].user.clone();
        let target = shard_of_room(&room, self.shard_count);
        if target == self.id {
            self.room_request(session, &actor, request_ref, &room, request);
        } else {
            self.outputs.push_back(Output::Forward {
                shard: target,
                input: ShardInput::Room {
                    session,
                    actor,
                    request_ref,
                    room,
                    request,
                },
            });
        }
    }

    /// Room side: applies a room request and answers the asking session.
    fn room_request(
        &mut self,
        session: SessionId,
        actor: &UserId,
        request_ref: u64,
        room: &RoomId,
        request: RoomRequest,
    ) {
        let is_list = request == RoomRequest::List;
        let result = self.rooms.apply(actor, room, request);
        if result.is_err() {
            metrics::frame_rejected("room_refused");
        }
        self.room_reply(session, request_ref, room.as_str(), is_list, result);
    }

    /// Answers a room request: RoomMembers for a List, RoomResult otherwise.
    fn room_reply(
        &mut self,
        session: SessionId,
        request_ref: u64,
        room: &str,
        is_list: bool,
        result: Result<RoomReply, ErrorCode>,
    ) {
        let body = match (is_list, result) {
            (
                _,
                Ok(RoomReply::Members {
                    owner,
                    open,
                    members,
                }),
            ) => server_frame::Body::RoomMembers(RoomMembers {
                r#ref: request_ref,
                error: ErrorCode::None as i32,
                room: room.to_owned(),
                owner: owner.map(|o| o.as_str().to_owned()).unwrap_or_default(),
                open,
                members: members.iter().map(|m| m.as_str().to_owned()).collect(),
            }),
            (true, Err(error)) => server_frame::Body::RoomMembers(RoomMembers {
                r#ref: request_ref,
                error: error as i32,
                room: room.to_owned(),
                ..RoomMembers::default()
            }),
            (_, result) => server_frame::Body::RoomResult(RoomResult {
                r#ref: request_ref,
                error: result.as_ref().err().map_or(0, |e| *e as i32),
                room: room.to_owned(),
                members: match result {
                    Ok(RoomReply::Changed { members }) => members,
                    _ => 0,
                },
            }),
        };
        self.reply(session, body);
    }

    /// `session`'s device processed everything up to `seq`.
    fn ack(&mut self, session: SessionId, request_ref: u64, seq: u64) {
        let record = self.sessions.get_mut(&session).expect("caller checked");
        if seq > record.sent_through {
            metrics::frame_rejected("invalid_ack");
            return self.reply_error(
                session,
                request_ref,
                ErrorCode::InvalidAck,
                "Ack.seq is beyond what this session was sent",
            );
        }
        metrics::ack_accepted();
        while record.unacked.front().is_some_and(|s| *s <= seq) {
            record.unacked.pop_front();
        }
        let user = record.user.clone();
        if let Some(user_record) = self.users.get_mut(&user) {
            user_record.mailbox.ack(&record.device, seq);
        }
        self.schedule_expiry(&user);
        self.pump(session);
    }

    /// Sends `session` what its inbox holds beyond what it was sent, up to
    /// the delivery window. Returns how many messages it sent.
    fn pump(&mut self, session: SessionId) -> u32 {
        let Some(record) = self.sessions.get_mut(&session) else {
            return 0;
        };
        let Some(user) = self.users.get(&record.user) else {
            return 0;
        };
        let mut sent = 0;
        while record.unacked.len() < self.limits.delivery_window {
            match user.mailbox.next_for(&record.device, record.sent_through) {
                Next::UpToDate => break,
                Next::Gap { from, to } => {
                    metrics::inbox_gap();
                    let gap = ServerFrame {
                        body: Some(server_frame::Body::Gap(Gap {
                            from_seq: from,
                            to_seq: to,
                        })),
                    };
                    self.outputs.push_back(Output::Transmit {
                        session,
                        frame: frame::encode(&gap).into(),
                        class: FrameClass::Control,
                    });
                    record.sent_through = to;
                }
                Next::Skip(seq) => record.sent_through = seq,
                Next::Deliver(seq, message) => {
                    self.outputs.push_back(Output::Transmit {
                        session,
                        frame: frame::encode_deliver(seq, &message.encoded),
                        class: FrameClass::Message {
                            accepted_at: message.accepted_at,
                        },
                    });
                    record.sent_through = seq;
                    record.unacked.push_back(seq);
                    sent += 1;
                }
            }
        }
        sent
    }

    /// [`Shard::pump`]s every session of `user`; returns how many sessions
    /// were sent something.
    fn pump_user(&mut self, user: &UserId) -> u32 {
        let mut reached = 0;
        let mut index = 0;
        // Index by index: pump never adds or removes sessions.
        while let Some(&session) = self.users.get(user).and_then(|r| r.sessions.get(index)) {
            reached += u32::from(self.pump(session) > 0);
            index += 1;
        }
        reached
    }

    /// Keeps one expiry deadline per user in `mailbox_timers`, matching the
    /// user's inbox.
    fn schedule_expiry(&mut self, user: &UserId) {
        let Some(record) = self.users.get_mut(user) else {
            return;
        };
        let wanted = record.mailbox.next_expiry(&self.limits.mailbox);
        if wanted == record.mailbox_timer {
            return;
        }
        if let Some(old) = record.mailbox_timer.take() {
            self.mailbox_timers.remove(&(old, user.clone()));
        }
        if let Some(at) = wanted {
            self.mailbox_timers.insert((at, user.clone()));
        }
        record.mailbox_timer = wanted;
    }

    fn send_result(
        &mut self,
        session: SessionId,
        request_ref: u64,
        result: Result<SendOutcome, ErrorCode>,
        duplicate: bool,
    ) {
        let body = match result {
            Ok(outcome) => SendResult {
                r#ref: request_ref,
                error: ErrorCode::None as i32,
                message_id: outcome.message_id,
                devices: outcome.devices,
                seq: outcome.seq,
                duplicate,
            },
            Err(error) => SendResult {
                r#ref: request_ref,
                error: error as i32,
                duplicate,
                ..SendResult::default()
            },
        };
        self.reply(session, server_frame::Body::SendResult(body));
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
        let new: IdSet<UserId> = users
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
            frame: frame::encode(&event).into(),
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
                frame: bytes.clone().into(),
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
        self.reply_as(session, body, FrameClass::Reply);
    }

    fn reply_as(&mut self, session: SessionId, body: server_frame::Body, class: FrameClass) {
        let frame = frame::encode(&ServerFrame { body: Some(body) }).into();
        self.outputs.push_back(Output::Transmit {
            session,
            frame,
            class,
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
