//! Room requests: validating them, handing them to the room's shard, and
//! answering the asking session (the rule itself is in `core::rooms`).

use switchboard_proto::v1::{server_frame, ErrorCode, RoomMembers, RoomResult};

use super::{user_record, Shard, ShardInput};
use crate::api::Actor;
use crate::dedupe::SendError;
use crate::ids::{RoomId, SessionId, UserId};
use crate::placement::{shard_of, shard_of_room};
use crate::rooms::{MembershipChange, RoomReply, RoomRequest};
use crate::stats::Rejection;

impl Shard {
    /// The member a Join/Leave names: `user`, or the session's own user when
    /// empty.
    pub(super) fn member_or_self(
        &self,
        session: SessionId,
        user: &str,
    ) -> Result<UserId, ErrorCode> {
        if user.is_empty() {
            return Ok(self.sessions[&session].user.clone());
        }
        UserId::parse(user).ok_or(ErrorCode::InvalidUserId)
    }

    /// Validates a room request's ids and hands it to the room's shard.
    pub(super) fn forward_room_request(
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
                self.stats
                    .frames_rejected
                    .add(Rejection::InvalidRoomRequest);
                return self.room_reply(session, request_ref, room, is_list, Err(error.into()));
            }
        };
        let actor = self.sessions[&session].user.clone();
        if let Err(throttled) = self.limiters.message(session, &actor, 0) {
            let error = self.throttled(throttled);
            return self.room_reply(session, request_ref, room.as_str(), is_list, Err(error));
        }
        // Adding someone else reaches a new recipient, as a direct message
        // to them would.
        if let RoomRequest::Join { member } = &request {
            if *member != actor {
                let record = user_record(&mut self.users, self.floors, &actor);
                let checked = self
                    .limiters
                    .recipient(&mut record.recipients, member, self.now);
                if let Err(throttled) = checked {
                    let error = self.throttled(throttled);
                    return self.room_reply(
                        session,
                        request_ref,
                        room.as_str(),
                        is_list,
                        Err(error),
                    );
                }
            }
        }
        let joins_self = match &request {
            RoomRequest::Create { .. } => true,
            RoomRequest::Join { member } => *member == actor,
            RoomRequest::Leave { .. } | RoomRequest::List => false,
        };
        let rooms = self.users.get(&actor).map_or(0, |r| r.rooms);
        if joins_self && rooms as usize >= self.limits.max_rooms_per_user {
            self.stats.frames_rejected.add(Rejection::RoomLimit);
            let error = Err(ErrorCode::RoomLimit.into());
            return self.room_reply(session, request_ref, room.as_str(), is_list, error);
        }
        let target = shard_of_room(&room, self.shard_count);
        if target == self.id {
            self.room_request(session, &actor, request_ref, &room, request);
        } else {
            self.forward(
                target,
                ShardInput::Room {
                    session,
                    actor,
                    request_ref,
                    room,
                    request,
                },
            );
        }
    }

    /// Room side: applies a room request and answers the asking session.
    pub(super) fn room_request(
        &mut self,
        session: SessionId,
        actor: &UserId,
        request_ref: u64,
        room: &RoomId,
        request: RoomRequest,
    ) {
        let is_list = request == RoomRequest::List;
        let result = self.rooms.apply(&Actor::User(actor.clone()), room, request);
        if result.is_err() {
            self.stats.frames_rejected.add(Rejection::RoomRefused);
        }
        self.dispatch_memberships();
        let result = result.map_err(SendError::from);
        self.room_reply(session, request_ref, room.as_str(), is_list, result);
    }

    /// Tells each member's shard of the memberships the rooms changed.
    pub(super) fn dispatch_memberships(&mut self) {
        for MembershipChange { user, joined } in self.rooms.take_changes() {
            let target = shard_of(&user, self.shard_count);
            if target == self.id {
                self.membership(&user, joined);
            } else {
                self.forward(target, ShardInput::Membership { user, joined });
            }
        }
    }

    /// Member side: `user` joined or left a room.
    pub(super) fn membership(&mut self, user: &UserId, joined: bool) {
        let record = user_record(&mut self.users, self.floors, user);
        if joined {
            record.rooms += 1;
        } else {
            record.rooms = record.rooms.saturating_sub(1);
            self.forget_if_idle(user);
        }
    }

    /// Answers a room request: RoomMembers for a List, RoomResult otherwise.
    pub(super) fn room_reply(
        &mut self,
        session: SessionId,
        request_ref: u64,
        room: &str,
        is_list: bool,
        result: Result<RoomReply, SendError>,
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
                retry_after_ms: 0,
            }),
            (true, Err(error)) => server_frame::Body::RoomMembers(RoomMembers {
                r#ref: request_ref,
                error: error.code as i32,
                room: room.to_owned(),
                retry_after_ms: error.retry_after_ms,
                ..RoomMembers::default()
            }),
            (_, result) => server_frame::Body::RoomResult(RoomResult {
                r#ref: request_ref,
                error: result.as_ref().err().map_or(0, |e| e.code as i32),
                room: room.to_owned(),
                retry_after_ms: result.as_ref().err().map_or(0, |e| e.retry_after_ms),
                members: match result {
                    Ok(RoomReply::Changed { members }) => members,
                    _ => 0,
                },
            }),
        };
        self.reply(session, body);
    }
}
