//! Sending: validating a `Send`, routing it to the recipient's (or room's)
//! shard, storing it in every recipient inbox, and releasing the sender's
//! copy and `SendResult` in send order, with idempotency keys settled.
//!
//! Why a room has one order: the room's shard is the one place that orders
//! a room's messages. It handles them in its input order and forwards each
//! member shard its share as one `RoomDeliver`, over that shard's inbox,
//! which is FIFO per producer; each member shard appends in arrival order.
//! One FIFO per (room shard, member shard) pair therefore keeps the room's
//! order in every member's inbox. A session's messages and room requests
//! reach the room's shard in send order (one FIFO from the sender's shard),
//! so a `JoinRoom` followed by a `Send` is applied in that order. The
//! sender's copy is stored before the `RouteResult` is handled: both travel
//! room shard -> sender's shard on the same FIFO, and the `RoomDeliver`s
//! are emitted first. Not ordered with each other: a sender's direct and
//! room messages, or its messages to two rooms, which take different
//! paths.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use prost::Message as _;
use switchboard_proto::v1::{
    server_frame, ErrorCode, Message, Receipt, ReceiptKind, Send, SendResult,
};

use super::external::{OwnCopy, ENGINE_BUSY};
use super::{
    user_record, InFlight, Now, Output, Recipient, RoutedMessage, Shard, ShardInput,
    MAX_CLIENT_MSG_ID_BYTES,
};
use crate::api::{ApiReply, ApiToken, Requester, API_DEVICE};
use crate::dedupe::{KeyState, SendError, SendOutcome};
use crate::ids::{DeviceId, RoomId, SessionId, UserId};
use crate::mailbox::{BudgetCharge, StoredMessage};
use crate::placement::shard_of;
use crate::rate::Throttled;
use crate::stats::{Refusal, Rejection};

impl Shard {
    /// A session's Send: accepted, remembered in the session's in-flight
    /// queue (results are released in send order), and routed.
    pub(super) fn send(
        &mut self,
        now: Now,
        session: SessionId,
        request_ref: u64,
        send: Send,
        received_at: std::time::Instant,
    ) {
        let sender = &self.sessions[&session];
        let (from, device) = (sender.user.clone(), sender.device.clone());
        let requester = Requester::Session(session, request_ref);
        let limited = Some(session);
        let received = Now {
            instant: received_at.min(now.instant),
            ..now
        };
        let Some(routed) = self.accept(received, requester, from, device, send, None, limited)
        else {
            return;
        };
        self.sessions
            .get_mut(&session)
            .expect("checked by the caller")
            .pending()
            .in_flight
            .push_back(InFlight {
                message: routed.clone(),
                request_ref,
                outcome: None,
                own_copy: OwnCopy::Unasked,
            });
        self.dispatch_route(now, routed);
    }

    /// A server API send in `from`'s name.
    pub(super) fn api_send(&mut self, now: Now, token: ApiToken, from: UserId, send: Send) {
        let device = DeviceId::parse(API_DEVICE).expect("a valid device id");
        let requester = Requester::Api(token);
        if let Some(routed) = self.accept(now, requester, from, device, send, None, None) {
            self.dispatch_route(now, routed);
        }
    }

    /// A receipt: a message with no payload to the original sender (and a
    /// copy to this user's other devices), answered by nobody.
    pub(super) fn receipt(
        &mut self,
        now: Now,
        session: SessionId,
        request_ref: u64,
        receipt: Receipt,
    ) {
        let kind_known = matches!(
            ReceiptKind::try_from(receipt.kind),
            Ok(ReceiptKind::Delivered | ReceiptKind::Read)
        );
        if UserId::parse(&receipt.to_user).is_none() || receipt.message_id == 0 || !kind_known {
            self.stats.frames_rejected.add(Rejection::InvalidReceipt);
            return self.reply_error(
                session,
                request_ref,
                ErrorCode::InvalidReceipt,
                "a Receipt needs a valid to_user, a message id and a kind",
            );
        }
        let sender = &self.sessions[&session];
        let (from, device) = (sender.user.clone(), sender.device.clone());
        let to = UserId::parse(&receipt.to_user).expect("checked above");
        let checked = self.check_budget();
        let checked = checked.and_then(|()| self.throttle(session, &from, &Recipient::User(to), 0));
        if let Err(error) = checked {
            return self.reply_refusal(session, request_ref, error, "over a rate limit");
        }
        let send = Send {
            to: receipt.to_user.clone(),
            ..Send::default()
        };
        let receipt = Some(receipt);
        if let Some(routed) = self.accept(now, Requester::Nobody, from, device, send, receipt, None)
        {
            self.dispatch_route(now, routed);
        }
    }

    /// Checks a Send (and, for a session's, its rate limits) and settles
    /// its idempotency key: `None` when it was answered already (refused, or
    /// a repeat), else the message to route.
    #[allow(clippy::too_many_arguments)]
    fn accept(
        &mut self,
        now: Now,
        requester: Requester,
        from: UserId,
        from_device: DeviceId,
        send: Send,
        receipt: Option<Receipt>,
        limited: Option<SessionId>,
    ) -> Option<Arc<RoutedMessage>> {
        let to = match check_send(&send, self.limits.max_payload_bytes) {
            Ok(to) => to,
            Err((error, reason)) => {
                self.stats.sends_refused.add(reason);
                self.answer(requester, Err(error.into()), false);
                return None;
            }
        };
        let mut checked = self.check_budget();
        if let (Ok(()), Some(session)) = (checked, limited) {
            checked = self.throttle(session, &from, &to, send.payload.len());
            if checked.is_err() {
                self.stats.sends_refused.add(Refusal::RateLimited);
            }
        }
        if let Err(error) = checked {
            self.answer(requester, Err(error), false);
            return None;
        }
        if !send.client_msg_id.is_empty() {
            let record = user_record(&mut self.users, self.floors, &from);
            let window = record.dedupe.get_or_insert_with(Default::default);
            let key = send.client_msg_id.as_str();
            match window.get_mut(key, now.instant, &self.limits.dedupe) {
                Some(KeyState::Done(outcome)) => {
                    let outcome = *outcome;
                    self.stats.duplicate_sends += 1;
                    self.answer(requester, Ok(outcome), true);
                    return None;
                }
                Some(KeyState::Pending(waiting)) => {
                    self.stats.duplicate_sends += 1;
                    waiting.push(requester);
                    return None;
                }
                None => window.insert_pending(key, now.instant, &self.limits.dedupe),
            }
        }
        self.next_message_seq += 1;
        let message_id = message_id(self.limits.message_id_run, self.id, self.next_message_seq);
        let is_receipt = receipt.is_some();
        let encoded = Message {
            message_id,
            from_user: from.as_str().to_owned(),
            from_device: from_device.as_str().to_owned(),
            to_user: send.to,
            payload: send.payload,
            sent_at_ms: now.unix_ms,
            client_msg_id: send.client_msg_id.clone(),
            room: send.room,
            want_receipts: send.want_receipts,
            receipt,
        }
        .encode_to_vec();
        let room = match &to {
            Recipient::Room(room) => Some(room.clone()),
            Recipient::User(_) => None,
        };

        Some(Arc::new(RoutedMessage {
            message: Arc::new(StoredMessage {
                message_id,
                from,
                from_device,
                room,
                charge: BudgetCharge::new(&self.limits.inbox_budget, encoded.len()),
                encoded: Bytes::from(encoded),
                accepted_at: now.instant,
                sent_at_ms: now.unix_ms,
                is_receipt,
            }),
            from: requester,
            to,
            client_msg_id: (!send.client_msg_id.is_empty())
                .then(|| send.client_msg_id.into_boxed_str()),
            sender_seq: OnceLock::new(),
        }))
    }

    /// Hands an accepted message to the recipient's (or room's) shard.
    fn dispatch_route(&mut self, now: Now, routed: Arc<RoutedMessage>) {
        if self.inboxes_external() && matches!(routed.to, Recipient::User(_)) {
            return self.append_for_recipient(now, routed);
        }
        let target = routed.to.shard(self.shard_count);
        if target == self.id {
            self.route(now, routed);
        } else {
            self.forward(target, ShardInput::Route(routed));
        }
    }

    /// Recipient side: store the message in the recipient's inbox and send
    /// it to their online devices. A message to oneself is stored once, by
    /// [`Shard::route_result`], in order with the sender's other messages.
    /// A room message goes to [`Shard::route_to_room`].
    pub(super) fn route(&mut self, now: Now, routed: Arc<RoutedMessage>) {
        let to = match &routed.to {
            Recipient::User(user) => user.clone(),
            Recipient::Room(room) => {
                let room = room.clone();
                return self.route_to_room(now, routed, &room);
            }
        };
        if routed.message.from != to && self.over_inbox_share(&to, &routed.message) {
            self.stats.sends_refused.add(Refusal::InboxShare);
            return self.answer_route(now, routed, INBOX_FULL, 0);
        }
        let devices = if routed.message.from == to {
            0
        } else {
            self.store(now, &to, &routed.message, false);
            self.pump_user(&to)
        };
        self.stats.messages_routed += 1;
        self.answer_route(now, routed, ErrorCode::None.into(), devices);
    }

    /// Room side: the room's shard puts its messages in one order and hands
    /// each shard its members' share. The share for the sender's shard is
    /// queued before the result on the same ordered channel, so the sender's
    /// copy is stored (and its seq known) before the result is released.
    pub(super) fn route_to_room(&mut self, now: Now, routed: Arc<RoutedMessage>, room: &RoomId) {
        let groups = match self.rooms.fan_out(room, &routed.message.from) {
            Ok(groups) => groups,
            Err(error) => {
                self.stats.sends_refused.add(Refusal::RoomRefused);
                return self.answer_route(now, routed, error.into(), 0);
            }
        };
        let reached = groups.iter().map(|(_, share)| share.len()).sum();
        if let Err(throttled) = self.limiters.room(room, reached) {
            let error = self.throttled(throttled);
            self.stats.sends_refused.add(Refusal::RateLimited);
            return self.answer_route(now, routed, error, 0);
        }
        // One entry per member: refused whole if they would not fit.
        if self.limits.inbox_budget.lacks_room_for(reached) {
            self.stats.sends_refused.add(Refusal::InboxBudget);
            return self.answer_route(now, routed, SERVER_BUSY, 0);
        }
        self.stats.messages_routed += 1;
        let mut members = 0u32;
        for (shard, share) in groups.iter() {
            members += share.len() as u32;
            if *shard == self.id {
                self.room_deliver(now, &routed, share);
            } else {
                self.forward(
                    *shard,
                    ShardInput::RoomDeliver {
                        message: routed.clone(),
                        members: share.clone(),
                    },
                );
            }
        }
        // Everyone but the sender.
        let sent = ErrorCode::None.into();
        self.answer_route(now, routed, sent, members.saturating_sub(1));
    }

    /// Stores a room message for `members` (owned by this shard) and sends
    /// it to their online devices; the sender's copy records its seq.
    pub(super) fn room_deliver(
        &mut self,
        now: Now,
        routed: &Arc<RoutedMessage>,
        members: &[UserId],
    ) {
        if self.inboxes_external() {
            return self.room_deliver_external(routed, members);
        }
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
    /// user never seen) and keeps its expiry deadline; returns the seq. A
    /// message for a user with no open session is also reported to the shell
    /// (`Output::StoredForOffline`) for the webhook.
    pub(super) fn store(
        &mut self,
        now: Now,
        user: &UserId,
        message: &Arc<StoredMessage>,
        own: bool,
    ) -> u64 {
        let record = user_record(&mut self.users, self.floors, user);
        let front = record.mailbox.front_stored_at();
        let seq = record.mailbox.append(
            message.clone(),
            own,
            now.instant,
            &self.limits.mailbox,
            &mut self.stats.mailbox,
        );
        // Only a new front can move the deadline (appends don't touch the
        // devices); checking saves a timer update per stored message.
        let offline = !own && !message.is_receipt && record.sessions.is_empty();
        if record.mailbox.front_stored_at() != front {
            self.schedule_expiry(user);
        }
        if offline {
            self.outputs.push_back(Output::StoredForOffline {
                user: user.clone(),
                seq,
                message: message.clone(),
            });
        }
        seq
    }

    /// Sends a routing outcome back to the sender's shard.
    pub(super) fn answer_route(
        &mut self,
        now: Now,
        routed: Arc<RoutedMessage>,
        error: SendError,
        devices: u32,
    ) {
        let origin = shard_of(&routed.message.from, self.shard_count);
        if origin == self.id {
            self.route_result(now, routed, error, devices);
        } else {
            self.forward(
                origin,
                ShardInput::RouteResult {
                    message: routed,
                    error,
                    devices,
                },
            );
        }
    }

    /// Sender side: record the outcome, then release every finished message
    /// at the front of the session's in-flight queue: the copy in the
    /// sender's inbox (if stored), then the SendResult.
    pub(super) fn route_result(
        &mut self,
        now: Now,
        routed: Arc<RoutedMessage>,
        error: SendError,
        devices: u32,
    ) {
        let sender = match routed.from {
            Requester::Session(session, _) => self.sessions.get_mut(&session).map(|r| (session, r)),
            Requester::Api(_) | Requester::Nobody => None,
        };
        let Some((session, record)) = sender else {
            // An API call, a receipt, or a session gone (its copy is stored
            // all the same, and `answer` skips it).
            return self.release_unqueued(now, routed, error, devices);
        };
        let message_id = routed.message.message_id;
        if let Some(entry) = record
            .pending()
            .in_flight
            .iter_mut()
            .find(|e| e.message.message.message_id == message_id)
        {
            entry.outcome = Some((error, devices));
        }
        self.release_front(now, session);
    }

    /// Releases a send that waits in no session's queue: an API call, a
    /// receipt, or the send of a session that closed.
    pub(super) fn release_unqueued(
        &mut self,
        now: Now,
        routed: Arc<RoutedMessage>,
        error: SendError,
        devices: u32,
    ) {
        if self.needs_own_copy(error) {
            return match routed.to {
                Recipient::User(_) => self.append_own_copy(routed, devices),
                // The room's fan-out stores the copy; its answer releases.
                Recipient::Room(_) => {}
            };
        }
        let (result, waiting) = self.release(now, &routed, error, devices, OwnCopy::Unasked);
        self.answer(routed.from, result, false);
        self.answer_repeats(waiting, result);
    }

    /// Releases the finished sends at the front of `session`'s in-flight
    /// queue, in send order. With engine-kept inboxes the sender's copy is
    /// asked for first, and the release waits for it.
    pub(super) fn release_front(&mut self, now: Now, session: SessionId) {
        loop {
            let external = self.inboxes_external();
            let Some(record) = self.sessions.get_mut(&session) else {
                return;
            };
            let pending = record.pending();
            let Some(front) = pending.in_flight.front_mut() else {
                record.settle();
                return;
            };
            let Some((error, devices)) = front.outcome else {
                return;
            };
            let wants_copy = external && error.code == ErrorCode::None;
            match (front.own_copy, &front.message.to) {
                (OwnCopy::Asked, _) => return,
                // The room's fan-out stores it, in room order; its answer
                // releases this.
                (OwnCopy::Unasked, Recipient::Room(_)) if wants_copy => return,
                (OwnCopy::Unasked, Recipient::User(_)) if wants_copy => {
                    front.own_copy = OwnCopy::Asked;
                    let routed = front.message.clone();
                    return self.append_own_copy(routed, devices);
                }
                _ => {}
            }
            let done = pending.in_flight.pop_front().expect("front exists");
            let (result, waiting) = self.release(now, &done.message, error, devices, done.own_copy);
            self.send_result(session, done.request_ref, result, false);
            self.answer_repeats(waiting, result);
        }
    }

    /// Stores the sender's copy of a routed message (if it was stored for the
    /// recipient; with engine-kept inboxes, `own_copy` is what the engine
    /// did with it) and settles its idempotency key. Returns the Send's
    /// result and the repeats of its key that wait for it.
    pub(super) fn release(
        &mut self,
        now: Now,
        routed: &RoutedMessage,
        error: SendError,
        devices: u32,
        own_copy: OwnCopy,
    ) -> (Result<SendOutcome, SendError>, Vec<Requester>) {
        let from = &routed.message.from;
        let result = match (&routed.to, error.code) {
            (_, ErrorCode::None) if matches!(routed.to, Recipient::Room(_)) => {
                let seq = match own_copy {
                    OwnCopy::Stored { seq, .. } => seq,
                    OwnCopy::Failed => return self.settle_key(routed, Err(ENGINE_BUSY)),
                    OwnCopy::Unasked | OwnCopy::Asked => {
                        routed.sender_seq.get().copied().unwrap_or(0)
                    }
                };
                Ok(SendOutcome {
                    message_id: routed.message.message_id,
                    devices,
                    seq,
                })
            }
            (Recipient::User(to), ErrorCode::None) => {
                let (seq, copies) = match own_copy {
                    OwnCopy::Stored { seq, copies } => (seq, copies),
                    OwnCopy::Failed => return self.settle_key(routed, Err(ENGINE_BUSY)),
                    OwnCopy::Unasked | OwnCopy::Asked => {
                        let seq = self.store(now, from, &routed.message, true);
                        (seq, self.pump_user(from))
                    }
                };
                Ok(SendOutcome {
                    message_id: routed.message.message_id,
                    devices: if to == from { copies } else { devices },
                    seq,
                })
            }
            (_, _) => Err(error),
        };
        self.settle_key(routed, result)
    }

    /// Settles the idempotency key of `routed` with `result`; returns it
    /// with the repeats of the key that wait for it.
    fn settle_key(
        &mut self,
        routed: &RoutedMessage,
        result: Result<SendOutcome, SendError>,
    ) -> (Result<SendOutcome, SendError>, Vec<Requester>) {
        let from = &routed.message.from;
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
    pub(super) fn answer_repeats(
        &mut self,
        waiting: Vec<Requester>,
        result: Result<SendOutcome, SendError>,
    ) {
        for requester in waiting {
            self.answer(requester, result, true);
        }
    }

    /// Answers a send: a SendResult to a session still open, or an API reply.
    pub(super) fn answer(
        &mut self,
        requester: Requester,
        result: Result<SendOutcome, SendError>,
        duplicate: bool,
    ) {
        match requester {
            Requester::Session(session, request_ref) => {
                if self.sessions.contains_key(&session) {
                    self.send_result(session, request_ref, result, duplicate);
                }
            }
            Requester::Api(token) => self.outputs.push_back(Output::ApiReply {
                token,
                reply: ApiReply::Sent { result, duplicate },
            }),
            Requester::Nobody => {}
        }
    }

    pub(super) fn send_result(
        &mut self,
        session: SessionId,
        request_ref: u64,
        result: Result<SendOutcome, SendError>,
        duplicate: bool,
    ) {
        let outcome = result.unwrap_or_default();
        let body = SendResult {
            r#ref: request_ref,
            error: result.err().map_or(ErrorCode::None, |e| e.code) as i32,
            message_id: outcome.message_id,
            devices: outcome.devices,
            seq: outcome.seq,
            duplicate,
            retry_after_ms: result.err().map_or(0, |e| e.retry_after_ms),
        };
        self.reply(session, server_frame::Body::SendResult(body));
    }
}

impl Shard {
    /// Takes one message of `bytes` payload bytes from the session's and
    /// user's buckets and, for a direct message, a place among the user's
    /// recipients of the minute.
    pub(super) fn throttle(
        &mut self,
        session: SessionId,
        from: &UserId,
        to: &Recipient,
        bytes: usize,
    ) -> Result<(), SendError> {
        let mut checked = self.limiters.message(session, from, bytes);
        if let (Ok(()), Recipient::User(to)) = (checked, to) {
            if to != from {
                let record = user_record(&mut self.users, self.floors, from);
                checked = self
                    .limiters
                    .recipient(&mut record.recipients, to, self.now);
            }
        }
        checked.map_err(|throttled| self.throttled(throttled))
    }

    /// Counts a refusal by a rate limit and makes its error.
    pub(super) fn throttled(&mut self, throttled: Throttled) -> SendError {
        self.stats.throttled.add(throttled.by);
        SendError {
            code: ErrorCode::RateLimited,
            retry_after_ms: retry_after_ms(throttled.retry_after),
        }
    }

    /// True when storing `message` would evict from `to`'s full inbox
    /// while its sender already holds half of it: one sender cannot push
    /// everyone else's messages out of an inbox.
    fn over_inbox_share(&self, to: &UserId, message: &StoredMessage) -> bool {
        let limits = &self.limits.mailbox;
        self.users.get(to).is_some_and(|record| {
            record.mailbox.is_full_for(message.encoded.len(), limits)
                && record.mailbox.holds_its_share_from(&message.from, limits)
        })
    }

    /// Refuses a new message while the node's inbox budget is spent.
    fn check_budget(&mut self) -> Result<(), SendError> {
        if self.limits.inbox_budget.is_spent() {
            self.stats.sends_refused.add(Refusal::InboxBudget);
            return Err(SERVER_BUSY);
        }
        Ok(())
    }
}

/// The refusal of a message to a full inbox that holds half its share from
/// the sender already: the recipient's devices must read first, on no
/// schedule the server knows.
pub(super) const INBOX_FULL: SendError = SendError {
    code: ErrorCode::InboxFull,
    retry_after_ms: 10_000,
};

/// The refusal of a node whose inbox budget is spent, with its retry hint:
/// inboxes drain as devices ack and messages expire, on no schedule the
/// node can predict.
const SERVER_BUSY: SendError = SendError {
    code: ErrorCode::ServerBusy,
    retry_after_ms: 5_000,
};

/// Bits of a message id given to its node run, its shard and its
/// shard's counter: 12 + 10 + 42. The counter lasts 4.4e12 messages per
/// shard and run; a run number is reused after 4,096 runs (node starts),
/// long after the messages of the run it repeats have aged out.
const ID_RUN_BITS: u32 = 12;
const ID_SHARD_BITS: u32 = 10;
const ID_COUNTER_BITS: u32 = 64 - ID_RUN_BITS - ID_SHARD_BITS;

/// The id of the `counter`th message of `shard` in node run `run` (its
/// low bits): never 0, unique across shards and across the last 4,096
/// runs.
pub(super) fn message_id(run: u64, shard: crate::ids::ShardId, counter: u64) -> u64 {
    let run = run & ((1 << ID_RUN_BITS) - 1);
    let shard = u64::from(shard.0) & ((1 << ID_SHARD_BITS) - 1);
    let counter = counter & ((1 << ID_COUNTER_BITS) - 1);
    (run << (ID_SHARD_BITS + ID_COUNTER_BITS)) | (shard << ID_COUNTER_BITS) | counter
}

/// A wait as the whole milliseconds a client must wait: rounded up, at
/// least 1.
pub(super) fn retry_after_ms(wait: std::time::Duration) -> u32 {
    let ms = wait.as_nanos().div_ceil(1_000_000).max(1);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

/// Where a Send goes, or why it is refused.
fn check_send(send: &Send, max_payload_bytes: usize) -> Result<Recipient, (ErrorCode, Refusal)> {
    let to = if send.room.is_empty() {
        let user =
            UserId::parse(&send.to).ok_or((ErrorCode::InvalidUserId, Refusal::InvalidRecipient))?;
        Recipient::User(user)
    } else {
        let room = RoomId::parse(&send.room)
            .filter(|_| send.to.is_empty())
            .ok_or((ErrorCode::InvalidRoomId, Refusal::InvalidRoom))?;
        Recipient::Room(room)
    };
    if send.payload.len() > max_payload_bytes {
        return Err((ErrorCode::PayloadTooLarge, Refusal::PayloadTooLarge));
    }
    if send.client_msg_id.len() > MAX_CLIENT_MSG_ID_BYTES {
        return Err((ErrorCode::InvalidClientMsgId, Refusal::InvalidClientMsgId));
    }
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ShardId;

    #[test]
    fn message_ids_differ_across_runs_and_shards_and_are_never_zero() {
        let ids = [
            message_id(0, ShardId(0), 1),
            message_id(0, ShardId(1), 1),
            message_id(1, ShardId(0), 1),
            message_id(4095, ShardId(1023), (1 << 42) - 1),
        ];
        let distinct: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len(), "{ids:?}");
        assert!(ids.iter().all(|id| *id != 0));
        assert_eq!(ids[3], u64::MAX, "every bit in its place");
        // Run numbers repeat after 4,096 runs.
        assert_eq!(message_id(4096, ShardId(0), 1), ids[0]);
    }
}
