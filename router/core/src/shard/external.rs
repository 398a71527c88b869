//! Inboxes kept by an engine ([`InboxAuthority::External`]): the shard asks
//! where it would change its own `Mailbox`, and delivers from an
//! [`InboxMirror`] of each user it holds sessions of.
//!
//! - A direct message is one request ([`EngineRequest::Deliver`]): the
//!   recipient's copy, then the sender's. The engine applies a shard's
//!   requests in order, so the sender's copies keep send order; the
//!   `SendResult` waits for the answer, and is released in send order from
//!   the session's in-flight queue: a message is in the engine before it is
//!   acknowledged. A note to self has only the sender's copy, asked for
//!   when it reaches the front of that queue.
//! - A session's `InboxOpened` waits for the engine's attach, which says
//!   where delivery starts and brings the first entries.
//! - A room message is appended to each member's inbox by the member's
//!   shard, in the order the room's shard handed it over (one engine write
//!   per member, for now); the sender's copy's answer releases the result.
//! - Entries appended by anyone arrive as [`ShardInput::Appended`] and
//!   extend the mirror; a session that needs what the mirror lacks fetches.
//! - Acks and detaches go to the engine, which trims and expires there.
//!
//! An engine that cannot answer gives `SERVER_BUSY` to a send (nothing
//! acknowledged), and closes a session it could not attach or feed with
//! `GOING_AWAY`, from which the client resumes.

use std::sync::Arc;
use std::time::Duration;

use switchboard_proto::close::CloseCode;
use switchboard_proto::frame;
use switchboard_proto::v1::{server_frame, ErrorCode, InboxOpened};

use super::inbox::{gap_frame, owe_ack};
use super::{FrameClass, Now, Output, Recipient, RoutedMessage, Shard};
use crate::dedupe::SendError;
use crate::engine::{AppendedEntry, EngineReply, EngineRequest, EngineTicket, InboxAuthority};
use crate::ids::{SessionId, UserId};
use crate::remote_inbox::{device_key, WindowNext};
use crate::stats::{Refusal, Rejection};

/// What an engine request's reply is for.
#[derive(Debug)]
pub(super) enum EngineWait {
    /// A direct message's copies, the recipient's and the sender's.
    Deliver(Arc<RoutedMessage>),
    /// The sender's copy of a direct message, with the recipient's
    /// devices it reached.
    AppendOwn(Arc<RoutedMessage>, u32),
    /// A member's copy of a room message; `true` for the sender's own.
    RoomCopy(Arc<RoutedMessage>, UserId, bool),
    /// Where a new session's delivery starts.
    Attach {
        session: SessionId,
        requested: Option<u64>,
        epoch_changed: bool,
    },
    /// More of a user's inbox, for the user's sessions here, read for a
    /// device (its key).
    Fetch(UserId, u64),
    /// Nothing waits for it (acks, detaches).
    Nothing,
}

/// A sender's copy of its direct message, in an engine-kept inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum OwnCopy {
    /// Not asked for (yet, or never: kept locally, or not stored).
    #[default]
    Unasked,
    /// Asked for; the release waits for the answer.
    Asked,
    /// Stored under `seq`; `copies` of the sender's devices have sessions.
    Stored { seq: u64, copies: u32 },
    /// The engine could not store it.
    Failed,
}

/// `SessionRecord::sent_through` of a session whose attach is not answered
/// yet: it is sent nothing (its `InboxOpened` comes first) and may ack
/// nothing.
pub(super) const ATTACHING: u64 = u64::MAX;

/// A send refused because the engine could not answer: retry soon.
pub(super) const ENGINE_BUSY: SendError = SendError {
    code: ErrorCode::ServerBusy,
    retry_after_ms: 1_000,
};

impl Shard {
    /// True when an engine keeps the inboxes.
    pub(super) fn inboxes_external(&self) -> bool {
        self.limits.inbox_authority == InboxAuthority::External
    }

    /// Emits `request` for the engine and remembers what waits for it.
    pub(super) fn ask_engine(&mut self, request: EngineRequest, wait: EngineWait) {
        self.next_ticket += 1;
        let ticket = EngineTicket(self.next_ticket);
        self.engine_waits.insert(ticket, wait);
        self.outputs.push_back(Output::Engine { ticket, request });
    }

    /// Stores a direct message in its recipient's engine-kept inbox. A
    /// message to oneself has only the sender's copy.
    pub(super) fn append_for_recipient(&mut self, now: Now, routed: Arc<RoutedMessage>) {
        let Recipient::User(to) = &routed.to else {
            unreachable!("rooms are routed by their shard")
        };
        if *to == routed.message.from {
            return self.route_result(now, routed, ErrorCode::None.into(), 0);
        }
        let request = EngineRequest::Deliver {
            to: to.clone(),
            message: routed.message.clone(),
        };
        self.ask_engine(request, EngineWait::Deliver(routed));
    }

    /// True when releasing `routed` with `error` needs the sender's copy
    /// stored by the engine first (asked for at release for a direct
    /// message; by the room's fan-out for a room message).
    pub(super) fn needs_own_copy(&self, error: SendError) -> bool {
        self.inboxes_external() && error.code == ErrorCode::None
    }

    /// Stores a room message in the engine-kept inboxes of `members` (of
    /// this shard), in the order the room's shard handed them over, so
    /// every member's inbox has the room's one order. The sender's copy's
    /// answer releases the sender's result.
    ///
    /// One engine write per member: fine for small rooms, not for large
    /// ones (a room log in the engine is the planned layout).
    pub(super) fn room_deliver_external(
        &mut self,
        routed: &Arc<RoutedMessage>,
        members: &[UserId],
    ) {
        for member in members {
            let own = *member == routed.message.from;
            let request = EngineRequest::Append {
                user: member.clone(),
                message: routed.message.clone(),
                own,
                check_share: false,
            };
            let wait = EngineWait::RoomCopy(routed.clone(), member.clone(), own);
            self.ask_engine(request, wait);
        }
    }

    /// Asks the engine for the sender's copy of `routed`.
    pub(super) fn append_own_copy(&mut self, routed: Arc<RoutedMessage>, devices: u32) {
        let request = EngineRequest::Append {
            user: routed.message.from.clone(),
            message: routed.message.clone(),
            own: true,
            check_share: false,
        };
        self.ask_engine(request, EngineWait::AppendOwn(routed, devices));
    }

    /// The engine answered request `ticket`.
    pub(super) fn engine_reply(&mut self, now: Now, ticket: EngineTicket, reply: EngineReply) {
        let Some(wait) = self.engine_waits.remove(&ticket) else {
            return;
        };
        match (wait, reply) {
            (
                EngineWait::Deliver(routed),
                EngineReply::Delivered {
                    seq,
                    devices,
                    own_seq,
                    own_devices,
                    ..
                },
            ) => {
                self.stats.messages_routed += 1;
                if let (Recipient::User(to), 0, false) =
                    (&routed.to, devices, routed.message.is_receipt)
                {
                    self.outputs.push_back(Output::StoredForOffline {
                        user: to.clone(),
                        seq,
                        message: routed.message.clone(),
                    });
                }
                let copy = OwnCopy::Stored {
                    seq: own_seq,
                    copies: own_devices,
                };
                if !self.note_own_copy(&routed, copy) {
                    // No session waits for it (an API call, a receipt, or
                    // a session gone): released at once.
                    let ok = ErrorCode::None.into();
                    let (result, waiting) = self.release(now, &routed, ok, devices, copy);
                    self.answer(routed.from, result, false);
                    return self.answer_repeats(waiting, result);
                }
                self.route_result(now, routed, ErrorCode::None.into(), devices);
            }
            (EngineWait::Deliver(routed), EngineReply::ShareRefused) => {
                self.stats.sends_refused.add(Refusal::InboxShare);
                self.route_result(now, routed, super::messaging::INBOX_FULL, 0);
            }
            (EngineWait::Deliver(routed), _) => {
                self.stats.engine_failures += 1;
                self.route_result(now, routed, ENGINE_BUSY, 0);
            }
            (EngineWait::RoomCopy(routed, member, own), reply) => {
                let copy = match reply {
                    EngineReply::Appended { seq, devices, .. } => {
                        if !own && devices == 0 && !routed.message.is_receipt {
                            self.outputs.push_back(Output::StoredForOffline {
                                user: member,
                                seq,
                                message: routed.message.clone(),
                            });
                        }
                        OwnCopy::Stored {
                            seq,
                            copies: devices,
                        }
                    }
                    _ => {
                        // A member's copy lost to the engine: the member's
                        // inbox lacks it (counted; the Redis engine fails
                        // whole, so its sends are refused meanwhile).
                        self.stats.engine_failures += 1;
                        OwnCopy::Failed
                    }
                };
                if own {
                    self.own_copy_done(now, routed, 0, copy);
                }
            }
            (EngineWait::AppendOwn(routed, devices), reply) => {
                let copy = match reply {
                    EngineReply::Appended { seq, devices, .. } => OwnCopy::Stored {
                        seq,
                        copies: devices,
                    },
                    _ => {
                        self.stats.engine_failures += 1;
                        OwnCopy::Failed
                    }
                };
                self.own_copy_done(now, routed, devices, copy);
            }
            (
                EngineWait::Attach {
                    session,
                    requested,
                    epoch_changed,
                },
                EngineReply::Attached { after, window },
            ) => {
                if !self.sessions.contains_key(&session) {
                    return; // closed meanwhile; its detach is on its way
                }
                let user = self.sessions[&session].user.clone();
                let last_seq = window.last_seq;
                let acked = window.acked;
                let device = device_key(&self.sessions[&session].device);
                let mirror = self.mirrors.entry(user).or_default();
                mirror.refresh(device, window);
                let record = self.sessions.get_mut(&session).expect("checked above");
                // The device's cursor may be past `after` (its own sends).
                record.sent_through = after.max(acked);
                self.inbox_opened(session, after, last_seq, requested, epoch_changed);
                self.pump(session);
            }
            (EngineWait::Attach { session, .. }, _) => {
                self.stats.engine_failures += 1;
                self.close_for_engine(session);
            }
            (EngineWait::Fetch(user, device), reply) => {
                let Some(mirror) = self.mirrors.get_mut(&user) else {
                    return;
                };
                mirror.fetching = false;
                match reply {
                    EngineReply::Fetched(window) => {
                        mirror.refresh(device, window);
                        self.pump_user(&user);
                    }
                    _ => {
                        self.stats.engine_failures += 1;
                        let sessions = self.users.get(&user).map(|r| r.sessions.clone());
                        for session in sessions.unwrap_or_default() {
                            self.close_for_engine(session);
                        }
                    }
                }
            }
            (EngineWait::Nothing, EngineReply::Unavailable) => self.stats.engine_failures += 1,
            (EngineWait::Nothing, _) => {}
        }
    }

    /// Records `copy` on the in-flight send of `routed` in its session's
    /// queue; false when no session's queue holds it.
    fn note_own_copy(&mut self, routed: &RoutedMessage, copy: OwnCopy) -> bool {
        let crate::api::Requester::Session(session, _) = routed.from else {
            return false;
        };
        let entry = self.sessions.get_mut(&session).and_then(|record| {
            let id = routed.message.message_id;
            record
                .pending
                .as_mut()?
                .in_flight
                .iter_mut()
                .find(|e| e.message.message.message_id == id)
        });
        match entry {
            Some(entry) => {
                entry.own_copy = copy;
                true
            }
            None => false,
        }
    }

    /// The sender's copy of `routed` is stored (or failed): release it,
    /// in order behind the session's earlier sends.
    fn own_copy_done(&mut self, now: Now, routed: Arc<RoutedMessage>, devices: u32, copy: OwnCopy) {
        let queued = match routed.from {
            crate::api::Requester::Session(session, _) if self.note_own_copy(&routed, copy) => {
                Some(session)
            }
            _ => None,
        };
        match queued {
            Some(session) => self.release_front(now, session),
            None => {
                let error = ErrorCode::None.into();
                let (result, waiting) = self.release(now, &routed, error, devices, copy);
                self.answer(routed.from, result, false);
                self.answer_repeats(waiting, result);
            }
        }
    }

    /// Asks where `session`'s delivery starts; `InboxOpened` waits for it.
    pub(super) fn attach_external(
        &mut self,
        session: SessionId,
        requested: Option<u64>,
        epoch_changed: bool,
    ) {
        let record = self.sessions.get_mut(&session).expect("just opened");
        record.sent_through = ATTACHING;
        let request = EngineRequest::Attach {
            user: record.user.clone(),
            device: record.device.clone(),
            resume: requested,
            count: self.limits.delivery_window,
        };
        self.ask_engine(
            request,
            EngineWait::Attach {
                session,
                requested,
                epoch_changed,
            },
        );
    }

    /// An entry appended to a user's inbox (by any node): sent on to the
    /// user's sessions here.
    pub(super) fn appended(&mut self, entry: AppendedEntry) {
        let Some(mirror) = self.mirrors.get_mut(&entry.user) else {
            return; // no session of the user attached here
        };
        mirror.appended(entry.seq, entry.header, entry.message);
        self.pump_user(&entry.user);
        if let Some(mirror) = self.mirrors.get_mut(&entry.user) {
            mirror.raise_first(entry.first_seq);
        }
    }

    /// [`Shard::pump`] from the user's mirror: sends `session` what it has
    /// not been sent, up to the delivery window, fetching what the mirror
    /// lacks.
    pub(super) fn pump_external(&mut self, session: SessionId) -> u32 {
        let Some(record) = self.sessions.get_mut(&session) else {
            return 0;
        };
        if record.sent_through == ATTACHING {
            return 0; // InboxOpened comes first
        }
        let Some(mirror) = self.mirrors.get_mut(&record.user) else {
            return 0;
        };
        let device = device_key(&record.device);
        let (mut sent, mut fetch) = (0, None);
        let outstanding =
            |r: &super::SessionRecord| r.pending.as_ref().map_or(0, |p| p.unacked.len());
        while outstanding(record) < self.limits.delivery_window {
            match mirror.next_for(device, record.sent_through) {
                WindowNext::UpToDate => break,
                WindowNext::Beyond(_) => {
                    if !mirror.fetching {
                        mirror.fetching = true;
                        fetch = Some(EngineRequest::Fetch {
                            user: record.user.clone(),
                            device: record.device.clone(),
                            after: record.sent_through,
                            count: self.limits.delivery_window,
                        });
                    }
                    break;
                }
                WindowNext::Gap { from, to } => {
                    self.stats.inbox_gaps += 1;
                    self.outputs.push_back(gap_frame(session, from, to));
                    record.sent_through = to;
                }
                WindowNext::Skip(seq) => record.sent_through = seq,
                WindowNext::Deliver(seq, header, message) => {
                    // Its age by the wall clock, for the delivery-latency
                    // histogram: it may have been stored by another node.
                    let age = self.now_ms.saturating_sub(header.stored_ms);
                    let accepted_at = self.now.checked_sub(Duration::from_millis(age));
                    self.outputs.push_back(Output::Transmit {
                        session,
                        frame: frame::encode_deliver(seq, message),
                        class: FrameClass::Message {
                            accepted_at: accepted_at.unwrap_or(self.now),
                        },
                    });
                    let deadline = self.now + self.limits.ack_timeout;
                    owe_ack(record, session, seq, deadline, &mut self.ack_timers);
                    sent += 1;
                }
            }
        }
        if let Some(request) = fetch {
            let user = self.sessions[&session].user.clone();
            self.ask_engine(request, EngineWait::Fetch(user, device));
        }
        sent
    }

    /// Reads again, for each user with sessions here, the inbox from where
    /// its furthest-behind session is: entries appended while this node
    /// could not hear of them reach the sessions, Gaps included.
    pub(super) fn resync_mirrors(&mut self) {
        let users: Vec<UserId> = self.mirrors.keys().cloned().collect();
        for user in users {
            let behind = self.users.get(&user).and_then(|record| {
                record
                    .sessions
                    .iter()
                    .filter_map(|s| self.sessions.get(s))
                    .filter(|r| r.sent_through != ATTACHING)
                    .min_by_key(|r| r.sent_through)
                    .map(|r| (r.device.clone(), r.sent_through))
            });
            let Some((device, after)) = behind else {
                continue;
            };
            let Some(mirror) = self.mirrors.get_mut(&user) else {
                continue;
            };
            if mirror.fetching {
                continue; // its answer is newer than the loss
            }
            mirror.fetching = true;
            let key = device_key(&device);
            let request = EngineRequest::Fetch {
                user: user.clone(),
                device,
                after,
                count: self.limits.delivery_window,
            };
            self.ask_engine(request, EngineWait::Fetch(user, key));
        }
    }

    /// Lets the mirror of `user` go of what every session here was sent,
    /// or go altogether once no session of the user is here.
    pub(super) fn trim_mirror(&mut self, user: &UserId) {
        let sessions = self.users.get(user).map(|r| r.sessions.as_slice());
        let lowest = sessions
            .unwrap_or_default()
            .iter()
            .filter_map(|s| self.sessions.get(s))
            .map(|r| r.sent_through)
            .min();
        match lowest {
            Some(seq) => {
                if let Some(mirror) = self.mirrors.get_mut(user) {
                    mirror.release_through(seq);
                }
            }
            None => {
                self.mirrors.remove(user);
            }
        }
    }

    /// Closes a session the engine could not attach or feed: it resumes
    /// from its ack point when it reconnects.
    fn close_for_engine(&mut self, session: SessionId) {
        self.outputs.push_back(Output::Close {
            session,
            code: CloseCode::GoingAway,
            reason: "inbox storage unavailable; retry_after_ms=1000".into(),
        });
    }

    /// The InboxOpened frame (and the error for a resume point beyond the
    /// inbox), shared by both authorities.
    pub(super) fn inbox_opened(
        &mut self,
        session: SessionId,
        resume_after: u64,
        last_seq: u64,
        requested: Option<u64>,
        epoch_changed: bool,
    ) {
        let epoch = self.limits.inbox_epoch;
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
        if requested.is_some_and(|seq| seq > last_seq) {
            self.stats.frames_rejected.add(Rejection::ResumeAhead);
            self.reply_error(
                session,
                0,
                ErrorCode::InvalidAck,
                "Hello.resume.last_seq is beyond this inbox; resumed from its end",
            );
        }
    }
}
