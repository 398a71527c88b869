//! Each session's view of its user's inbox: where it starts
//! (`InboxOpened`), acks, the delivery window, and the expiry deadline.

use std::time::{Duration, Instant};

use switchboard_proto::close::CloseCode;
use switchboard_proto::frame;
use switchboard_proto::v1::{server_frame, ErrorCode, Gap, Resume, ServerFrame};

use super::external::EngineWait;
use super::{FrameClass, Output, Shard};
use crate::engine::EngineRequest;
use crate::ids::{SessionId, UserId};
use crate::mailbox::Next;
use crate::stats::Rejection;

impl Shard {
    /// Tells a new session where its delivery starts, then sends its
    /// backlog (after a Gap if part of it is gone).
    pub(super) fn open_inbox(&mut self, session: SessionId, resume: Option<Resume>) {
        let epoch = self.limits.inbox_epoch;
        let (requested, epoch_changed) = match resume {
            Some(r) if r.epoch == epoch => (Some(r.last_seq), false),
            Some(_) => (None, true),
            None => (None, false),
        };
        if self.inboxes_external() {
            return self.attach_external(session, requested, epoch_changed);
        }
        let record = self.sessions.get_mut(&session).expect("just opened");
        let user = self
            .users
            .get_mut(&record.user)
            .expect("a session's user has a record");
        let last_seq = user.mailbox.last_seq();
        let resume_after = user
            .mailbox
            .attach(&record.device, requested, &mut self.stats.mailbox);
        record.sent_through = resume_after;
        let user_id = record.user.clone();
        self.inbox_opened(session, resume_after, last_seq, requested, epoch_changed);
        self.pump(session);
        self.schedule_expiry(&user_id);
    }

    /// `session`'s device processed everything up to `seq`.
    pub(super) fn ack(&mut self, session: SessionId, request_ref: u64, seq: u64) {
        let record = self.sessions.get_mut(&session).expect("caller checked");
        if seq > record.sent_through || record.sent_through == super::external::ATTACHING {
            self.stats.frames_rejected.add(Rejection::InvalidAck);
            return self.reply_error(
                session,
                request_ref,
                ErrorCode::InvalidAck,
                "Ack.seq is beyond what this session was sent",
            );
        }
        self.stats.acks += 1;
        if let Some(pending) = record.pending.as_mut() {
            let before = pending.unacked.len();
            while pending.unacked.front().is_some_and(|s| *s <= seq) {
                pending.unacked.pop_front();
            }
            if pending.unacked.len() < before {
                // Progress: the ack deadline starts over (or ends). Its
                // timer entry stays where it is, at or before the deadline.
                pending.ack_deadline =
                    (!pending.unacked.is_empty()).then(|| self.now + self.limits.ack_timeout);
                // Usually a no-op: the entry filed for an earlier deadline
                // stays (none is filed only after a timeout closed the
                // session).
                pending.file_ack_check(session, &mut self.ack_timers);
            }
            record.settle();
        }
        let (user, device) = (record.user.clone(), record.device.clone());
        if self.inboxes_external() {
            if let Some(mirror) = self.mirrors.get_mut(&user) {
                mirror.note_acked(crate::remote_inbox::device_key(&device), seq);
            }
            let request = EngineRequest::Ack {
                user: user.clone(),
                device: device.clone(),
                seq,
            };
            self.ask_engine(request, EngineWait::Nothing);
        } else if let Some(user_record) = self.users.get_mut(&user) {
            user_record
                .mailbox
                .ack(&device, seq, &mut self.stats.mailbox);
        }
        self.schedule_expiry(&user);
        self.pump(session);
    }

    /// Sends `session` what its inbox holds beyond what it was sent, up to
    /// the delivery window. Returns how many messages it sent.
    pub(super) fn pump(&mut self, session: SessionId) -> u32 {
        if self.inboxes_external() {
            return self.pump_external(session);
        }
        let Some(record) = self.sessions.get_mut(&session) else {
            return 0;
        };
        let Some(user) = self.users.get(&record.user) else {
            return 0;
        };
        let mut sent = 0;
        let outstanding =
            |r: &super::SessionRecord| r.pending.as_ref().map_or(0, |p| p.unacked.len());
        while outstanding(record) < self.limits.delivery_window {
            match user.mailbox.next_for(&record.device, record.sent_through) {
                Next::UpToDate => break,
                Next::Gap { from, to } => {
                    self.stats.inbox_gaps += 1;
                    self.outputs.push_back(gap_frame(session, from, to));
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
                    let deadline = self.now + self.limits.ack_timeout;
                    owe_ack(record, session, seq, deadline, &mut self.ack_timers);
                    sent += 1;
                }
            }
        }
        sent
    }

    /// Closes the sessions whose ack deadline passed: they hold sent
    /// messages and acked none of them for `ack_timeout` (not reading, or
    /// not acking). They resume from their ack point when they return.
    ///
    /// An ack moves its session's deadline without touching `ack_timers`:
    /// with acks that ride on a session's next send, tens of thousands of
    /// sessions hold unacked messages, and removing and refiling an entry
    /// per ack would walk a tree that has left the caches. So an entry may fire
    /// before its session's deadline; it is then filed again at the
    /// deadline, about once per `ack_timeout` for a session that keeps
    /// acking.
    pub(super) fn close_sessions_without_acks(&mut self, now: Instant) {
        while let Some((at, session)) = super::pop_due(&mut self.ack_timers, now) {
            let Some(record) = self.sessions.get_mut(&session) else {
                continue;
            };
            let pending = record.pending.as_mut();
            let Some(pending) = pending.filter(|p| p.ack_timer == Some(at)) else {
                continue;
            };
            pending.ack_timer = None;
            match pending.ack_deadline {
                None => record.settle(),
                Some(deadline) if deadline > now => {
                    pending.ack_timer = Some(deadline);
                    self.ack_timers.insert((deadline, session));
                }
                Some(_) => {
                    pending.ack_deadline = None;
                    self.stats.ack_timeouts += 1;
                    self.outputs.push_back(Output::Close {
                        session,
                        code: CloseCode::SlowConsumer,
                        reason: "no ack within the ack timeout".into(),
                    });
                }
            }
        }
    }

    /// [`Shard::pump`]s every session of `user`; returns how many sessions
    /// were sent something.
    pub(super) fn pump_user(&mut self, user: &UserId) -> u32 {
        let mut reached = 0;
        let mut index = 0;
        // Index by index: pump never adds or removes sessions.
        while let Some(&session) = self.users.get(user).and_then(|r| r.sessions.get(index)) {
            reached += u32::from(self.pump(session) > 0);
            index += 1;
        }
        if self.inboxes_external() {
            self.trim_mirror(user);
        }
        reached
    }

    /// Keeps `user`'s entry in `mailbox_timers` at or before the inbox's
    /// expiry, when it has one. An entry earlier than needed (the inbox
    /// emptied, or its oldest message was acked) stays: when it fires,
    /// [`Shard::handle_timeout`] expires what is due and files the entry
    /// again. So storing a message in an inbox that acks emptied, and the
    /// ack that empties it again, cost no update of a tree holding every
    /// user with unacked messages.
    pub(super) fn schedule_expiry(&mut self, user: &UserId) {
        let Some(record) = self.users.get_mut(user) else {
            return;
        };
        // A user shown online and now offline is forgotten once their
        // last-seen time is `remember_last_seen` old (if nothing else holds
        // the record then).
        let forget = (record.view.version > 0 && !record.is_online()).then(|| {
            let remember_ms = self.limits.remember_last_seen.as_millis() as u64;
            let at_ms = record.last_seen_ms.saturating_add(remember_ms);
            self.now + Duration::from_millis(at_ms.saturating_sub(self.now_ms))
        });
        // Past already but the record is held: its holder lets it go later.
        let forget = forget.filter(|at| *at > self.now);
        let expiry = record.mailbox.next_expiry(&self.limits.mailbox);
        let Some(wanted) = expiry.into_iter().chain(forget).min() else {
            return;
        };
        if record.mailbox_timer.is_some_and(|filed| filed <= wanted) {
            return;
        }
        if let Some(old) = record.mailbox_timer.take() {
            self.mailbox_timers.remove(&(old, user.clone()));
        }
        self.mailbox_timers.insert((wanted, user.clone()));
        record.mailbox_timer = Some(wanted);
    }
}

/// The Gap frame telling `session` that `from..=to` are gone.
pub(super) fn gap_frame(session: SessionId, from: u64, to: u64) -> Output {
    let gap = ServerFrame {
        body: Some(server_frame::Body::Gap(Gap {
            from_seq: from,
            to_seq: to,
        })),
    };
    Output::Transmit {
        session,
        frame: frame::encode(&gap).into(),
        class: FrameClass::Gap,
    }
}

/// `session` (its `record`) was sent `seq` and owes its ack: by
/// `deadline`, if it owed none before.
pub(super) fn owe_ack(
    record: &mut super::SessionRecord,
    session: SessionId,
    seq: u64,
    deadline: Instant,
    ack_timers: &mut std::collections::BTreeSet<(Instant, SessionId)>,
) {
    record.sent_through = seq;
    let pending = record.pending();
    pending.unacked.push_back(seq);
    if pending.ack_deadline.is_none() {
        pending.ack_deadline = Some(deadline);
        pending.file_ack_check(session, ack_timers);
    }
}
