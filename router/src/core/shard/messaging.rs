//! Sending: validating a `Send`, routing it to the recipient's (or room's)
//! shard, storing it in every recipient inbox, and releasing the sender's
//! copy and `SendResult` in send order, with idempotency keys settled.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use prost::Message as _;
use switchboard_proto::v1::{server_frame, ErrorCode, Message, Send, SendResult};

use super::{
    InFlight, Now, Output, Recipient, RoutedMessage, Shard, ShardInput, MAX_CLIENT_MSG_ID_BYTES,
};
use crate::core::dedupe::{KeyState, SendOutcome};
use crate::core::ids::{RoomId, SessionId, UserId};
use crate::core::mailbox::StoredMessage;
use crate::core::placement::{shard_of, shard_of_room};
use crate::core::presence::UserRecord;
use crate::metrics;

impl Shard {
    pub(super) fn send(&mut self, now: Now, session: SessionId, request_ref: u64, send: Send) {
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
    pub(super) fn route(&mut self, now: Now, routed: Arc<RoutedMessage>) {
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
    pub(super) fn route_to_room(&mut self, now: Now, routed: Arc<RoutedMessage>, room: &RoomId) {
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
    pub(super) fn room_deliver(&mut self, now: Now, routed: &RoutedMessage, members: &[UserId]) {
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
    pub(super) fn store(
        &mut self,
        now: Now,
        user: &UserId,
        message: &Arc<StoredMessage>,
        own: bool,
    ) -> u64 {
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
    pub(super) fn answer_route(
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
    pub(super) fn route_result(
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
    pub(super) fn release(
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
    pub(super) fn answer_repeats(
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

    pub(super) fn send_result(
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
}
