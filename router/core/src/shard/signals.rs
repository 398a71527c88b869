//! Ephemeral signals (typing): checked, encoded once, and relayed to the
//! target user's (or room members') sessions online now, as
//! `FrameClass::Ephemeral` frames the shell may send as QUIC datagrams.
//! Nothing is stored; a signal expires on its own after [`SIGNAL_TTL_MS`].

use std::sync::Arc;

use switchboard_proto::frame;
use switchboard_proto::v1::{
    server_frame, ErrorCode, ServerFrame, Signal, SignalEvent, SignalKind,
};

use super::{coalescing_key, FrameClass, Output, Recipient, RelayedSignal, Shard, ShardInput};
use crate::ids::{RoomId, SessionId, UserId};
use crate::stats::Rejection;

/// How long a signal holds unless replaced (`SignalEvent.expires_in_ms`).
pub const SIGNAL_TTL_MS: u32 = 5_000;

impl Shard {
    /// A session's Signal: checked, encoded and sent towards its target.
    pub(super) fn signal(&mut self, session: SessionId, request_ref: u64, signal: Signal) {
        let kind_known = matches!(
            SignalKind::try_from(signal.kind),
            Ok(SignalKind::Typing | SignalKind::StoppedTyping)
        );
        let to = match (signal.to_user.is_empty(), signal.room.is_empty()) {
            (false, true) => UserId::parse(&signal.to_user).map(Recipient::User),
            (true, false) => RoomId::parse(&signal.room).map(Recipient::Room),
            _ => None,
        };
        let Some(to) = to.filter(|_| kind_known) else {
            return self.refuse_signal(session, request_ref);
        };
        let user = self.sessions[&session].user.clone();
        if let Err(throttled) = self.limiters.message(session, &user, 0) {
            let error = self.throttled(throttled);
            return self.reply_refusal(session, request_ref, error, "over a rate limit");
        }
        let sender = &self.sessions[&session];
        self.signal_clock += 1;
        let event = SignalEvent {
            from_user: sender.user.as_str().to_owned(),
            from_device: sender.device.as_str().to_owned(),
            to_user: signal.to_user,
            room: signal.room,
            kind: signal.kind,
            version: self.signal_clock,
            expires_in_ms: SIGNAL_TTL_MS,
        };
        let key = coalescing_key((session.0, &event.to_user, &event.room));
        let relayed = Arc::new(RelayedSignal {
            frame: frame::encode(&ServerFrame {
                body: Some(server_frame::Body::Signal(event)),
            }),
            from_session: session,
            from: sender.user.clone(),
            key,
        });
        let target = to.shard(self.shard_count);
        if target == self.id {
            self.relay_signal(relayed, to);
        } else {
            self.forward(
                target,
                ShardInput::Signal {
                    signal: relayed,
                    to,
                },
            );
        }
    }

    /// Target side: to the user's sessions, or through the room to its
    /// members' shards.
    pub(super) fn relay_signal(&mut self, signal: Arc<RelayedSignal>, to: Recipient) {
        let room = match to {
            Recipient::User(user) => return self.signal_members(&signal, &[user]),
            Recipient::Room(room) => room,
        };
        let groups = match self.rooms.fan_out(&room, &signal.from) {
            Ok(groups) => groups,
            // Errors to signals are best effort too, and carry no ref.
            Err(_) => return self.refuse_signal(signal.from_session, 0),
        };
        // A signal reaches every member, as a message does: the room's
        // deliveries per second bound both. Over them it is dropped,
        // counted, and not answered (signals are best effort).
        let reached = groups.iter().map(|(_, share)| share.len()).sum();
        if let Err(throttled) = self.limiters.room(&room, reached) {
            self.throttled(throttled);
            return;
        }
        for (shard, members) in groups.iter() {
            if *shard == self.id {
                self.signal_members(&signal, members);
            } else {
                self.forward(
                    *shard,
                    ShardInput::SignalMembers {
                        signal: signal.clone(),
                        members: members.clone(),
                    },
                );
            }
        }
    }

    /// Sends the signal to every open session of `members` but the sender's.
    pub(super) fn signal_members(&mut self, signal: &RelayedSignal, members: &[UserId]) {
        let mut sent: u64 = 0;
        for member in members {
            let Some(record) = self.users.get(member) else {
                continue;
            };
            for session in &record.sessions {
                if *session == signal.from_session {
                    continue;
                }
                self.outputs.push_back(Output::Transmit {
                    session: *session,
                    frame: signal.frame.clone().into(),
                    class: FrameClass::Ephemeral { key: signal.key },
                });
                sent += 1;
            }
        }
        self.stats.signals_relayed += sent;
    }

    fn refuse_signal(&mut self, session: SessionId, request_ref: u64) {
        self.stats.frames_rejected.add(Rejection::InvalidSignal);
        self.reply_error(
            session,
            request_ref,
            ErrorCode::InvalidSignal,
            "a Signal needs one valid user or room (of which the sender is a member) and a kind",
        );
    }
}
