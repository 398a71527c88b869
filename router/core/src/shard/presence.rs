//! Presence: status changes, watch lists, and versioned presence events
//! fanned out to watchers (encoded once).

use switchboard_proto::frame;
use switchboard_proto::v1::{server_frame, ErrorCode, ServerFrame, Status};

use super::{coalescing_key, user_record, FrameClass, Now, Output, Shard, ShardInput};
use crate::ids::{IdSet, SessionId, UserId};
use crate::placement::shard_of;
use crate::presence::{PresenceView, Privacy, Sharing};
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
                let watcher_user = self.sessions[&session].user.clone();
                self.add_watcher(session, &watcher_user, user);
            } else {
                let watcher_user = self.sessions[&session].user.clone();
                self.forward(
                    target,
                    ShardInput::Watch {
                        watcher: session,
                        watcher_user,
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
        if let Some(privacy) = record.privacy.as_mut() {
            privacy.hidden_from.remove(&watcher);
        }
        // A user only ever watched is forgotten at once, so watching random
        // ids cannot grow the table.
        self.forget_if_idle(user);
    }

    /// Watched side: register the watcher and send it the current state,
    /// or, if the user does not share their presence with the watcher's
    /// user, the state of a user never seen, and nothing after it.
    pub(super) fn add_watcher(&mut self, watcher: SessionId, watcher_user: &UserId, user: UserId) {
        let record = user_record(&mut self.users, self.floors, &user);
        let view = match record.privacy.as_mut() {
            Some(privacy) if !privacy.sharing.allows(&user, watcher_user) => {
                privacy.hidden_from.insert(watcher);
                PresenceView::never_seen()
            }
            _ => {
                record.watchers.insert(watcher);
                record.view.clone()
            }
        };
        let event = server_frame::Body::Presence(view.to_event(&user));
        self.stats.presence_events += 1;
        let key = coalescing_key(user.as_str());
        let changed_at = self.now;
        self.reply_as(watcher, event, FrameClass::Presence { key, changed_at });
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
                class: FrameClass::Presence {
                    key,
                    changed_at: self.now,
                },
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

impl Shard {
    /// Sets who may see `user`. Every watcher is looked at again: its
    /// shard, asked with [`ShardInput::Recheck`], watches anew, and gets
    /// the view it may now see. Watchers that see the user get a new
    /// version; those that no longer may get the view of a user never seen
    /// (version 0) and nothing after it.
    pub(super) fn set_sharing(&mut self, user: &UserId, sharing: Sharing) -> u32 {
        let record = user_record(&mut self.users, self.floors, user);
        let mut watchers: Vec<SessionId> =
            std::mem::take(&mut record.watchers).into_iter().collect();
        if let Some(privacy) = record.privacy.take() {
            watchers.extend(privacy.hidden_from);
        }
        if sharing != Sharing::Everyone {
            record.privacy = Some(Box::new(Privacy {
                sharing,
                hidden_from: Default::default(),
            }));
        }
        // Those who may still see the user take the new version; the
        // others get version 0, which replaces whatever they held.
        record.view.version += 1;
        let count = watchers.len() as u32;
        if !watchers.is_empty() {
            let watchers: std::sync::Arc<[SessionId]> = watchers.into();
            for shard in 0..self.shard_count {
                let input = ShardInput::Recheck {
                    user: user.clone(),
                    watchers: watchers.clone(),
                };
                let shard = crate::ids::ShardId(shard);
                if shard == self.id {
                    self.handle_recheck(input);
                } else {
                    self.forward(shard, input);
                }
            }
        }
        self.forget_if_idle(user);
        count
    }

    /// Watcher side of [`Shard::set_sharing`]: each listed session of this
    /// shard that still watches `user` watches it anew.
    pub(super) fn handle_recheck(&mut self, input: ShardInput) {
        let ShardInput::Recheck { user, watchers } = input else {
            return;
        };
        let target = shard_of(&user, self.shard_count);
        for watcher in watchers.iter() {
            let Some(session) = self.sessions.get(watcher) else {
                continue;
            };
            if !session.watching.contains(&user) {
                continue;
            }
            let watcher_user = session.user.clone();
            if target == self.id {
                self.add_watcher(*watcher, &watcher_user, user.clone());
            } else {
                self.forward(
                    target,
                    ShardInput::Watch {
                        watcher: *watcher,
                        watcher_user,
                        user: user.clone(),
                    },
                );
            }
        }
    }
}
