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
//! This module holds the types, the dispatch and the session life cycle;
//! the work is split by concern: `messaging` (sends, routing, release),
//! `inbox` (where a session starts, acks, the delivery window, expiry),
//! `rooms` (room requests), `presence` (status and watchers).
//!
//! Call order: after every [`Shard::handle`] or [`Shard::handle_timeout`],
//! drain [`Shard::poll_output`]; sleep until [`Shard::poll_timeout`]. Inputs
//! from one source must be handed in the order they were produced (the shell
//! keeps one FIFO channel per shard), which is what keeps each sender's
//! messages in send order.

use std::borrow::Cow;
use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use switchboard_proto::close::CloseCode;
use switchboard_proto::frame::{self, OutFrame};
use switchboard_proto::v1::{
    client_frame::Body, server_frame, ClientFrame, Error as ErrorFrame, ErrorCode, Pong, Resume,
    ServerFrame, Status,
};

use super::api::{ApiReply, ApiRequest, ApiToken, Requester};
use super::dedupe::{DedupeLimits, SendError};
use super::engine::{AppendedEntry, EngineReply, EngineRequest, EngineTicket, InboxAuthority};
use super::ids::{DeviceId, IdMap, RoomId, SessionId, ShardId, SparseIdSet, UserId};
use super::mailbox::{InboxBudget, MailboxLimits, StoredMessage, ENTRY_COST};
use super::placement::{shard_of, shard_of_room};
use super::presence::{Floors, UserRecord};
use super::rate::{Limiters, RateLimits};
use super::remote_inbox::InboxMirror;
use super::rooms::{RoomRequest, Rooms};
use messaging::retry_after_ms;
use presence::is_settable;

mod api;
mod external;
mod inbox;
mod signals;

pub use signals::SIGNAL_TTL_MS;
mod messaging;
mod presence;
mod rooms;
use crate::stats::{Rejection, ShardStats};

/// How often the rate limits' idle keys are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// How often idle rooms are looked for (a pass over the shard's rooms).
const ROOM_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

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
    /// How long the record of a user who was shown online is kept, for
    /// their last-seen time, once they are offline and it holds nothing
    /// else. A user never shown online is forgotten as soon as it holds
    /// nothing.
    pub remember_last_seen: Duration,
    /// What each user's inbox keeps for devices that have not acked.
    pub mailbox: MailboxLimits,
    /// Each user's idempotency window for `Send.client_msg_id`.
    pub dedupe: DedupeLimits,
    /// Most Deliver frames sent to a session beyond its last ack.
    pub delivery_window: usize,
    /// Longest a session may hold sent messages without acking any of
    /// them; then it is closed as a slow consumer (and resumes later from
    /// its ack point).
    pub ack_timeout: Duration,
    /// Most members one room may have.
    pub max_room_members: usize,
    /// Most sessions one user may have open at once (on this node).
    pub max_sessions_per_user: usize,
    /// Most rooms a user may create or join (an owner adding them to more
    /// is bounded by the owner's own limit).
    pub max_rooms_per_user: usize,
    /// A room with no message, signal or change for this long is deleted.
    pub room_idle_ttl: Duration,
    /// Messages, bytes, recipients and room deliveries per unit of time.
    pub rates: RateLimits,
    /// The node's memory budget for inboxes, shared by every shard.
    pub inbox_budget: Arc<InboxBudget>,
    /// Epoch of every inbox this shard creates (`InboxOpened.epoch`): the
    /// shell passes one per server run, so sequence numbers of an earlier
    /// run are never mistaken for this run's.
    pub inbox_epoch: u64,
    /// Who keeps the inboxes: the shard (default) or an engine
    /// ([`crate::engine`]).
    pub inbox_authority: InboxAuthority,
    /// This node run's number, part of every message id (its low 12 bits),
    /// so that ids stay unique across runs whose messages an engine keeps.
    /// 0 in memory, where nothing outlives the run.
    pub message_id_run: u64,
}

impl Default for CoreLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 64 * 1024,
            max_watched_users: 1000,
            max_status_text_bytes: 128,
            offline_grace: Duration::from_secs(5),
            remember_last_seen: Duration::from_secs(30 * 24 * 3600),
            mailbox: MailboxLimits::default(),
            dedupe: DedupeLimits::default(),
            delivery_window: 256,
            ack_timeout: Duration::from_secs(60),
            max_room_members: 100_000,
            max_sessions_per_user: 32,
            max_rooms_per_user: 1_000,
            room_idle_ttl: Duration::from_secs(90 * 24 * 3600),
            rates: RateLimits::default(),
            inbox_budget: Arc::new(InboxBudget::unlimited()),
            inbox_epoch: 1,
            inbox_authority: InboxAuthority::Local,
            message_id_run: 0,
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

impl Recipient {
    /// The shard that owns the user, or the room.
    fn shard(&self, shard_count: u32) -> ShardId {
        match self {
            Recipient::User(user) => shard_of(user, shard_count),
            Recipient::Room(room) => shard_of_room(room, shard_count),
        }
    }
}

/// A message on its way from the sender's shard to the recipient's (or the
/// room's) shard, and back with its result.
#[derive(Debug)]
pub struct RoutedMessage {
    /// The message, as every inbox stores it.
    pub message: Arc<StoredMessage>,
    /// Who sent it and gets the result: a session, or a server API call.
    pub from: Requester,
    /// Recipient.
    pub to: Recipient,
    /// The Send's idempotency key, if it had one.
    pub client_msg_id: Option<Box<str>>,
    /// For a room message: the sequence number of the sender's copy, set
    /// when the fan-out stores it in the sender's inbox (before the result
    /// comes back).
    pub sender_seq: OnceLock<u64>,
}

/// An encoded signal on its way to its recipients.
#[derive(Debug)]
pub struct RelayedSignal {
    /// The length-prefixed `ServerFrame{signal}`.
    pub frame: Bytes,
    /// The sending session (gets errors; never gets its own signal).
    pub from_session: SessionId,
    /// The sending user.
    pub from: UserId,
    /// Coalescing key (sender session and conversation).
    pub key: u64,
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
        /// When the shell read it: a message's delivery latency counts
        /// from here, so it includes the wait for the shard.
        received_at: Instant,
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
    /// A server API request for a user or room owned by this shard.
    Api {
        /// Echoed in the reply.
        token: ApiToken,
        /// What is asked.
        request: ApiRequest,
    },
    /// Relay a signal to a user (or room) owned by this shard.
    Signal {
        /// The encoded signal and who sent it.
        signal: Arc<RelayedSignal>,
        /// Its target.
        to: Recipient,
    },
    /// Relay a room signal to these members, all owned by this shard.
    SignalMembers {
        /// The encoded signal and who sent it.
        signal: Arc<RelayedSignal>,
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
        /// `ErrorCode::None` when routed; otherwise why not.
        error: SendError,
        /// How many recipient devices it was sent to at once.
        devices: u32,
    },
    /// `watcher` (on any shard) starts watching `user` (owned by this shard).
    Watch {
        /// The watching session.
        watcher: SessionId,
        /// Its user (whom `user` may or may not share presence with).
        watcher_user: UserId,
        /// The watched user.
        user: UserId,
    },
    /// `user` changed who may see them: those of `watchers` that are
    /// sessions of this shard and still watch `user` watch anew.
    Recheck {
        /// The watched user.
        user: UserId,
        /// Every session that watched the user.
        watchers: Arc<[SessionId]>,
    },
    /// `user` (owned by this shard) joined or left a room.
    Membership {
        /// The member.
        user: UserId,
        /// Joined (true) or left (false).
        joined: bool,
    },
    /// `watcher` stops watching `user`.
    Unwatch {
        /// The watching session.
        watcher: SessionId,
        /// The watched user.
        user: UserId,
    },
    /// The engine's answer to this shard's [`Output::Engine`].
    EngineReply {
        /// The request's ticket.
        ticket: EngineTicket,
        /// The answer.
        reply: EngineReply,
    },
    /// An entry was appended to the engine-kept inbox of a user owned by
    /// this shard (by this node or another).
    Appended(AppendedEntry),
    /// Entries may have been appended without this node hearing of it (its
    /// subscription was down): every mirror reads its inbox again.
    Resync,
}

/// What a frame written to a session is, for queueing and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameClass {
    /// A direct message; `accepted_at` feeds the delivery-latency histogram.
    Message {
        /// When the router accepted the message.
        accepted_at: Instant,
    },
    /// A presence event; a newer one with the same `key` (the watched
    /// user) makes it obsolete.
    Presence {
        /// Coalescing key.
        key: u64,
        /// When the change was handled; feeds the presence-latency
        /// histogram.
        changed_at: Instant,
    },
    /// A reply to the session's own request (SendResult, Error, Pong).
    Reply,
    /// Where the inbox starts (InboxOpened): before anything else.
    Control,
    /// A Gap: in order with the session's messages.
    Gap,
    /// An ephemeral signal (typing): may go as a QUIC datagram; a newer one
    /// with the same `key` (sender session and conversation) makes it
    /// obsolete.
    Ephemeral {
        /// Coalescing key.
        key: u64,
    },
}

/// A coalescing key for [`FrameClass`]: the same within one run for equal
/// parts.
pub fn coalescing_key(parts: impl std::hash::Hash) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::default().hash_one(parts)
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
        reason: Cow<'static, str>,
    },
    /// A message was stored for `user`, who has no open session: the shell
    /// tells the app backend (webhook) so it can send a push notification.
    StoredForOffline {
        /// The recipient.
        user: UserId,
        /// Where it sits in the recipient's inbox.
        seq: u64,
        /// The message.
        message: Arc<StoredMessage>,
    },
    /// The answer to a server API request.
    ApiReply {
        /// The request's token.
        token: ApiToken,
        /// The answer.
        reply: ApiReply,
    },
    /// Hand `input` to shard `shard`, in order with earlier forwards.
    Forward {
        /// The target shard.
        shard: ShardId,
        /// The input.
        input: ShardInput,
    },
    /// Ask the inbox engine; hand its answer back as
    /// [`ShardInput::EngineReply`] with `ticket`. A shard's requests are
    /// applied in the order emitted.
    Engine {
        /// Pairs the answer with the request.
        ticket: EngineTicket,
        /// What is asked.
        request: EngineRequest,
    },
}

#[derive(Debug)]
struct SessionRecord {
    user: UserId,
    device: DeviceId,
    watching: SparseIdSet<UserId>,
    /// Highest inbox sequence number sent to (or skipped for) this session.
    sent_through: u64,
    /// What the session has outstanding; `None` while it has nothing (an
    /// idle session, most of a million, keeps a null pointer once its last
    /// ack check has fired, at most `ack_timeout` after its last delivery).
    pending: Option<Box<Pending>>,
}

impl SessionRecord {
    /// The outstanding state, created on first use.
    fn pending(&mut self) -> &mut Pending {
        self.pending.get_or_insert_with(Box::default)
    }

    /// Frees the outstanding state once nothing is outstanding.
    fn settle(&mut self) {
        if self.pending.as_ref().is_some_and(|p| p.is_idle()) {
            self.pending = None;
        }
    }
}

/// A session's outstanding sends and deliveries.
#[derive(Debug, Default)]
struct Pending {
    /// Messages sent by this session whose routing result is not yet
    /// released, in send order. Results and copies to the sender's inbox
    /// are released from the front only, so both keep send order even when
    /// recipients live on shards that answer at different speeds.
    in_flight: VecDeque<InFlight>,
    /// Sequence numbers of Deliver frames sent and not yet acked (at most
    /// `delivery_window`).
    unacked: VecDeque<u64>,
    /// While messages are unacked: when the session is closed unless an
    /// ack makes progress first.
    ack_deadline: Option<Instant>,
    /// The session's entry in `ack_timers`, at or before `ack_deadline`
    /// while that is set. An ack that makes progress only moves
    /// `ack_deadline`; the entry, when it fires early, is filed again at the
    /// deadline then current (see [`Shard::close_sessions_without_acks`]).
    ack_timer: Option<Instant>,
}

impl Pending {
    /// Files a check for the ack deadline in `ack_timers` unless one is
    /// filed already (it is then at or before the deadline, and will do).
    fn file_ack_check(
        &mut self,
        session: SessionId,
        ack_timers: &mut BTreeSet<(Instant, SessionId)>,
    ) {
        if let (Some(at), None) = (self.ack_deadline, self.ack_timer) {
            self.ack_timer = Some(at);
            ack_timers.insert((at, session));
        }
    }

    fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
            && self.unacked.is_empty()
            && self.ack_deadline.is_none()
            && self.ack_timer.is_none()
    }
}

/// A sent message waiting for its routing result.
#[derive(Debug)]
struct InFlight {
    message: Arc<RoutedMessage>,
    /// The Send's `ref`, echoed in its SendResult.
    request_ref: u64,
    /// `(error, devices)` once the recipient's shard answered.
    outcome: Option<(SendError, u32)>,
    /// The sender's copy in an engine-kept inbox.
    own_copy: external::OwnCopy,
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
    /// Inbox expiry checks, at most one per user (`UserRecord::mailbox_timer`),
    /// each at or before the user's inbox expiry ([`Shard::schedule_expiry`]).
    mailbox_timers: BTreeSet<(Instant, UserId)>,
    /// Ack deadline checks, at most one per session (`Pending::ack_timer`),
    /// each at or before the session's ack deadline.
    ack_timers: BTreeSet<(Instant, SessionId)>,
    /// When idle rooms were last looked for.
    rooms_swept_at: Instant,
    /// The time of the input being handled.
    now: Instant,
    /// Its wall-clock time, Unix ms.
    now_ms: u64,
    /// Where new user records start (above every record forgotten).
    floors: Floors,
    /// What was counted since the owner last took it.
    stats: ShardStats,
    outputs: VecDeque<Output>,
    next_message_seq: u64,
    /// Source of signal versions (grows per shard, so per session too).
    signal_clock: u64,
    /// The rate limits' buckets.
    pub(crate) limiters: Limiters,
    /// When the buckets' idle keys were last dropped.
    swept_at: Instant,
    /// What `stats.mailbox` held at the last charge of the inbox budget:
    /// [`ENTRY_COST`] per entry stored and released.
    charged: (u64, u64),
    /// Engine requests waiting for their answer.
    engine_waits: IdMap<EngineTicket, external::EngineWait>,
    /// The last engine ticket given.
    next_ticket: u64,
    /// With engine-kept inboxes: what this shard holds of each inbox
    /// whose user has sessions here.
    mirrors: IdMap<UserId, InboxMirror>,
}

impl Shard {
    /// Shard `id` of `shard_count`, starting at `now` (inputs carry later
    /// times).
    pub fn new(id: ShardId, shard_count: u32, limits: CoreLimits, now: Instant) -> Self {
        let rooms = Rooms::new(shard_count, limits.max_room_members);
        let limits_rates = limits.rates.clone();
        Self {
            id,
            shard_count,
            limits,
            sessions: IdMap::default(),
            users: IdMap::default(),
            rooms,
            offline_timers: BTreeSet::new(),
            mailbox_timers: BTreeSet::new(),
            ack_timers: BTreeSet::new(),
            rooms_swept_at: now,
            now,
            now_ms: 0,
            floors: Floors::default(),
            stats: ShardStats::default(),
            outputs: VecDeque::new(),
            next_message_seq: 0,
            signal_clock: 0,
            limiters: Limiters::new(&limits_rates, now),
            swept_at: now,
            charged: (0, 0),
            engine_waits: IdMap::default(),
            next_ticket: 0,
            mirrors: IdMap::default(),
        }
    }

    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// The view watchers currently have of `user`, if this shard knows them.
    pub fn presence(&self, user: &UserId) -> Option<super::PresenceView> {
        self.users.get(user).map(|r| r.view.clone())
    }

    /// What this shard counted since the last call; see [`ShardStats`].
    pub fn take_stats(&mut self) -> ShardStats {
        self.charge_budget();
        self.charged = (0, 0);
        std::mem::take(&mut self.stats)
    }

    /// Counts in the node's inbox budget what this shard's inboxes stored
    /// and released since the last charge.
    fn charge_budget(&mut self) {
        // Entries only: each message's bytes are charged by the message
        // itself (`BudgetCharge`), once however many inboxes share it.
        let m = &self.stats.mailbox;
        let stored = m.stored * ENTRY_COST;
        let released = m.released * ENTRY_COST;
        if (stored, released) != self.charged {
            let (was_stored, was_released) = self.charged;
            let budget = &self.limits.inbox_budget;
            budget.charge(stored - was_stored, released - was_released);
            self.charged = (stored, released);
        }
    }

    /// Next output, `None` when drained.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The highest sequence number assigned in `user`'s inbox (0 if none).
    pub fn inbox_last_seq(&self, user: &UserId) -> u64 {
        self.users.get(user).map_or(0, |r| r.mailbox.last_seq())
    }

    /// User records held (users online, watched, or with something stored).
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Messages held in the inboxes of this shard's users.
    pub fn stored_messages(&self) -> usize {
        self.users.values().map(|r| r.mailbox.len()).sum()
    }

    /// The earliest deadline at which [`Shard::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let grace = self.offline_timers.first().map(|(at, _)| *at);
        let mailbox = self.mailbox_timers.first().map(|(at, _)| *at);
        let acks = self.ack_timers.first().map(|(at, _)| *at);
        let rooms = (!self.rooms.is_empty()).then_some(self.rooms_swept_at + ROOM_SWEEP_INTERVAL);
        grace
            .into_iter()
            .chain(mailbox)
            .chain(acks)
            .chain(rooms)
            .min()
    }

    /// Processes one input.
    pub fn handle(&mut self, now: Now, input: ShardInput) {
        self.set_now(now);
        match input {
            ShardInput::Open {
                session,
                user,
                device,
                initial_status,
                resume,
            } => self.open(now, session, user, device, initial_status, resume),
            ShardInput::Frame {
                session,
                frame,
                received_at,
            } => self.frame(now, session, frame, received_at),
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
            ShardInput::Api { token, request } => self.api(now, token, request),
            ShardInput::Signal { signal, to } => self.relay_signal(signal, to),
            ShardInput::SignalMembers { signal, members } => self.signal_members(&signal, &members),
            ShardInput::RouteResult {
                message,
                error,
                devices,
            } => self.route_result(now, message, error, devices),
            ShardInput::Watch {
                watcher,
                watcher_user,
                user,
            } => self.add_watcher(watcher, &watcher_user, user),
            input @ ShardInput::Recheck { .. } => self.handle_recheck(input),
            ShardInput::Unwatch { watcher, user } => self.handle_unwatch_local(watcher, &user),
            ShardInput::Membership { user, joined } => self.membership(&user, joined),
            ShardInput::EngineReply { ticket, reply } => self.engine_reply(now, ticket, reply),
            ShardInput::Appended(entry) => self.appended(entry),
            ShardInput::Resync => self.resync_mirrors(),
        }
        self.charge_budget();
    }

    /// Fires every grace-period and inbox-expiry deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        self.set_now(now);
        self.close_sessions_without_acks(now.instant);
        while let Some((at, user)) = pop_due(&mut self.mailbox_timers, now.instant) {
            let record = self.users.get_mut(&user);
            let Some(record) = record.filter(|r| r.mailbox_timer == Some(at)) else {
                continue;
            };
            record.mailbox_timer = None;
            record
                .mailbox
                .expire(now.instant, &self.limits.mailbox, &mut self.stats.mailbox);
            self.schedule_expiry(&user);
            self.forget_if_idle(&user);
        }
        while let Some((at, user)) = pop_due(&mut self.offline_timers, now.instant) {
            let Some(record) = self.users.get_mut(&user) else {
                continue;
            };
            if record.offline_at != Some(at) || !record.sessions.is_empty() {
                continue; // cancelled by a reconnect or superseded
            }
            record.offline_at = None;
            self.stats.users_went_offline += 1;
            self.publish(&user);
            self.schedule_expiry(&user);
            self.forget_if_idle(&user);
        }
        self.charge_budget();
    }

    /// Moves the shard's time (and its buckets') to `now`, and now and
    /// then drops the buckets of keys that went quiet.
    fn set_now(&mut self, now: Now) {
        self.now = now.instant;
        self.now_ms = now.unix_ms;
        self.limiters.set_now(now.instant);
        if now.instant >= self.swept_at + SWEEP_INTERVAL {
            self.swept_at = now.instant;
            self.limiters.sweep();
        }
        self.rooms.set_now(now.instant);
        if now.instant >= self.rooms_swept_at + ROOM_SWEEP_INTERVAL {
            self.rooms_swept_at = now.instant;
            let reclaimed = self.rooms.reclaim_idle(self.limits.room_idle_ttl);
            self.stats.rooms_reclaimed += reclaimed as u64;
            self.dispatch_memberships();
        }
    }

    /// Forgets `user`'s record if it holds nothing worth keeping: see
    /// [`UserRecord::holds_nothing`]; a user once shown online is kept
    /// until `remember_last_seen` after they were last seen.
    pub(super) fn forget_if_idle(&mut self, user: &UserId) {
        let (now, now_ms) = (self.now, self.now_ms);
        let Some(record) = self.users.get_mut(user) else {
            return;
        };
        if let Some(window) = record.dedupe.as_mut() {
            window.forget_expired(now, &self.limits.dedupe);
            if window.is_empty() {
                record.dedupe = None;
            }
        }
        if record.recipients.as_ref().is_some_and(|w| w.is_over(now)) {
            record.recipients = None;
        }
        let remember_ms = self.limits.remember_last_seen.as_millis() as u64;
        let remembered =
            record.view.version > 0 && now_ms < record.last_seen_ms.saturating_add(remember_ms);
        if !record.holds_nothing() || remembered {
            return;
        }
        self.floors.cover(record);
        if let Some(at) = record.mailbox_timer {
            self.mailbox_timers.remove(&(at, user.clone()));
        }
        self.users.remove(user);
        self.stats.users_forgotten += 1;
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
        if let Err(throttled) = self.limiters.connect(&user, &device) {
            self.stats.throttled.add(throttled.by);
            let wait = retry_after_ms(throttled.retry_after);
            self.outputs.push_back(Output::Close {
                session,
                code: CloseCode::ReconnectingTooFast,
                reason: format!("retry_after_ms={wait}").into(),
            });
            return;
        }
        let record = user_record(&mut self.users, self.floors, &user);
        let replaced: Vec<SessionId> = record
            .sessions
            .iter()
            .copied()
            .filter(|s| self.sessions.get(s).is_some_and(|r| r.device == device))
            .collect();
        // A device that reconnects replaces its session: it never counts twice.
        if record.sessions.len() - replaced.len() >= self.limits.max_sessions_per_user {
            self.outputs.push_back(Output::Close {
                session,
                code: CloseCode::TooManySessions,
                reason: "this user has limits.max_sessions_per_user sessions open".into(),
            });
            return;
        }
        let was_online = record.is_online();
        if !was_online {
            record.chosen = Status::Online;
            record.text.clear();
            self.stats.users_came_online += 1;
        }
        record.offline_at = None;
        if let Some(status) = initial_status.filter(|s| is_settable(*s)) {
            record.chosen = status;
        }
        // One more, not room for four: most users hold one session.
        record.sessions.reserve_exact(1);
        record.sessions.push(session);
        if record.chosen == Status::Invisible {
            record.mark_seen_if_shown(now.unix_ms);
        }
        self.sessions.insert(
            session,
            SessionRecord {
                user: user.clone(),
                device,
                watching: SparseIdSet::default(),
                sent_through: 0,
                pending: None,
            },
        );
        self.stats.sessions_opened += 1;
        for old in replaced {
            self.outputs.push_back(Output::Close {
                session: old,
                code: CloseCode::SessionReplaced,
                reason: "another session opened with this device id".into(),
            });
            self.closed(now, old);
        }
        self.publish(&user);
        self.open_inbox(session, resume);
    }

    fn closed(&mut self, now: Now, session: SessionId) {
        let Some(record) = self.sessions.remove(&session) else {
            return; // already closed (e.g. replaced)
        };
        self.stats.sessions_closed += 1;
        let pending = record.pending.map(|p| *p).unwrap_or_default();
        if let Some(at) = pending.ack_timer {
            self.ack_timers.remove(&(at, session));
        }
        for watched in record.watching {
            self.send_unwatch(session, watched);
        }
        // Sends whose result came back but waited behind an earlier one:
        // store their copies now (later results find no session and are
        // released as they come).
        for done in pending.in_flight {
            let Some((error, devices)) = done.outcome else {
                continue;
            };
            match done.own_copy {
                // Its answer finds no session and releases it then.
                external::OwnCopy::Asked => {}
                external::OwnCopy::Unasked if self.needs_own_copy(error) => {
                    // A room's fan-out stores the copy and its answer
                    // releases the send; a direct message's is asked now.
                    if let Recipient::User(_) = done.message.to {
                        self.append_own_copy(done.message, devices)
                    }
                }
                own_copy => {
                    let (result, waiting) =
                        self.release(now, &done.message, error, devices, own_copy);
                    self.answer_repeats(waiting, result);
                }
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
            if self.limits.inbox_authority == InboxAuthority::External {
                let request = EngineRequest::Detach {
                    user: record.user.clone(),
                    device: record.device.clone(),
                };
                self.ask_engine(request, external::EngineWait::Nothing);
                self.trim_mirror(&record.user);
            } else {
                user.mailbox.detach(&record.device, now.instant);
                self.schedule_expiry(&record.user);
            }
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

    fn frame(&mut self, now: Now, session: SessionId, frame: ClientFrame, received_at: Instant) {
        if !self.sessions.contains_key(&session) {
            return; // raced with close
        }
        let request_ref = frame.r#ref;
        match frame.body {
            None => {
                self.stats.frames_rejected.add(Rejection::UnknownFrame);
                self.reply_error(
                    session,
                    request_ref,
                    ErrorCode::UnknownFrame,
                    "unknown frame type",
                );
            }
            Some(Body::Hello(_)) => {
                self.stats.frames_rejected.add(Rejection::SecondHello);
                self.outputs.push_back(Output::Close {
                    session,
                    code: CloseCode::ProtocolViolation,
                    reason: "Hello sent twice".into(),
                });
            }
            Some(Body::Ping(ping)) => self.reply(
                session,
                server_frame::Body::Pong(Pong { nonce: ping.nonce }),
            ),
            Some(Body::Send(send)) => self.send(now, session, request_ref, send, received_at),
            Some(Body::Ack(ack)) => self.ack(session, request_ref, ack.seq),
            Some(Body::Receipt(receipt)) => self.receipt(now, session, request_ref, receipt),
            Some(Body::Signal(signal)) => self.signal(session, request_ref, signal),
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

    /// An Error frame for a refusal, with its retry hint.
    fn reply_refusal(
        &mut self,
        session: SessionId,
        request_ref: u64,
        error: SendError,
        message: &str,
    ) {
        self.reply(
            session,
            server_frame::Body::Error(ErrorFrame {
                r#ref: request_ref,
                code: error.code as i32,
                message: message.to_owned(),
                retry_after_ms: error.retry_after_ms,
            }),
        );
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
                retry_after_ms: 0,
            }),
        );
    }

    /// Hands `input` to another shard, in order with earlier forwards.
    fn forward(&mut self, shard: ShardId, input: ShardInput) {
        self.outputs.push_back(Output::Forward { shard, input });
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

/// The record of `user`, created (above the floors) if there is none.
fn user_record<'a>(
    users: &'a mut IdMap<UserId, UserRecord>,
    floors: Floors,
    user: &UserId,
) -> &'a mut UserRecord {
    users
        .entry(user.clone())
        .or_insert_with(|| UserRecord::after(floors))
}

/// Takes the earliest entry of `timers` if it is due at `now`.
fn pop_due<K: Ord>(timers: &mut BTreeSet<(Instant, K)>, now: Instant) -> Option<(Instant, K)> {
    if timers.first()?.0 > now {
        return None;
    }
    timers.pop_first()
}
