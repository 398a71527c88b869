//! Presence: status changes, watch lists, and versioned presence events
//! fanned out to watchers (encoded once).

use switchboard_proto::frame;
use switchboard_proto::v1::{server_frame, ErrorCode, ServerFrame, Status};

use super::{coalescing_key, user_record, FrameClass, Now, Output, Shard, ShardInput};
use crate::ids::{IdSet, SessionId, UserId};
use crate::placement::shard_of;
use crate::stats::Rejection;

impl Shard {
    pub(super) fn set_status(
        &mut self,
        now: Now,
        session: SessionId,
        request_ref: u64,
        status: Status,
        text: String,
    ) {
        let max_text = self.limits.max_status_text_bytes;
        let refused = if !is_settable(status) {
            Some("status must be ONLINE, AWAY, BUSY or INVISIBLE".to_owned())
        } else if text.len() > max_text {
            Some(format!(
                "status text is {} bytes; at most {max_text} (Welcome.max_status_text_bytes)",
                text.len()
            ))
        } else {
            None
        };
        if let Some(why) = refused {
            self.stats.frames_rejected.add(Rejection::InvalidStatus);
            return self.reply_error(session, request_ref, ErrorCode::InvalidStatus, &why);
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

    pub(super) fn watch(&mut self, session: SessionId, request_ref: u64, users: Vec<String>) {
        let Some(users) = users
            .iter()
            .map(|u| UserId::parse(u))
            .collect::<Option<Vec<_>>>()
        else {
            self.stats.frames_rejected.add(Rejection::InvalidUserId);
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
            self.stats.frames_rejected.add(Rejection::WatchLimit);
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
                self.forward(
                    target,
                    ShardInput::Watch {
                        watcher: session,
                        user,
                    },
                );
            }
        }
    }

    pub(super) fn send_unwatch(&mut self, watcher: SessionId, user: UserId) {
        let target = shard_of(&user, self.shard_count);
        if target == self.id {
            self.handle_unwatch_local(watcher, &user);
        } else {
            self.forward(target, ShardInput::Unwatch { watcher, user });
        }
    }

    pub(super) fn handle_unwatch_local(&mut self, watcher: SessionId, user: &UserId) {
        let Some(record) = self.users.get_mut(user) else {
            return;
        };
        record.watchers.remove(&watcher);
        // A user only ever watched is forgotten at once, so watching random
        // ids cannot grow the table.
        self.forget_if_idle(user);
    }

    /// Watched side: register the watcher and send it the current state.
    pub(super) fn add_watcher(&mut self, watcher: SessionId, user: UserId) {
        let record = user_record(&mut self.users, self.floors, &user);
        record.watchers.insert(watcher);
        let event = server_frame::Body::Presence(record.view.to_event(&user));
        self.stats.presence_events += 1;
        let key = coalescing_key(user.as_str());
        self.reply_as(watcher, event, FrameClass::Presence { key });
    }

    /// Recomputes `user`'s view and, if it changed, sends it to every watcher
    /// (encoded once).
    pub(super) fn publish(&mut self, user: &UserId) {
        let Some(record) = self.users.get_mut(user) else {
            return;
        };
        if !record.refresh() || record.watchers.is_empty() {
            return;
        }
        let event = ServerFrame {
            body: Some(server_frame::Body::Presence(record.view.to_event(user))),
        };
        let bytes = frame::encode(&event);
        self.stats.presence_events += record.watchers.len() as u64;
        let key = coalescing_key(user.as_str());
        for watcher in record.watchers.iter() {
            self.outputs.push_back(Output::Transmit {
                session: *watcher,
                frame: bytes.clone().into(),
                class: FrameClass::Presence { key },
            });
        }
    }
}

/// Statuses a client may choose.
pub(super) fn is_settable(status: Status) -> bool {
    matches!(
        status,
        Status::Online | Status::Away | Status::Busy | Status::Invisible
    )
}
