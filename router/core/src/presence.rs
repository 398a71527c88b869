//! One user's record: the devices online, the chosen status, the
//! grace-period deadline, the watchers and the versioned view they see, and
//! the user's inbox ([`Mailbox`]) and idempotency window ([`DedupeWindow`]).
//!
//! [`UserRecord::refresh`] recomputes the [`PresenceView`] watchers may see and
//! raises its version by one only when that view changed: a user's versions
//! count its visible changes from 1, and invisible users never leak through
//! a changed version.

use std::time::Instant;

use switchboard_proto::v1::{Presence, Status};

use super::dedupe::DedupeWindow;
use super::ids::{IdSet, SessionId, SparseIdSet, UserId};
use super::mailbox::Mailbox;
use super::rate::RecipientWindow;

/// What watchers see of a user: the shown status, text and last-seen time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceView {
    /// OFFLINE, ONLINE, AWAY or BUSY (never INVISIBLE).
    pub status: Status,
    /// Status text; empty when offline.
    pub text: String,
    /// Unix ms the user was last online; 0 while shown online or never seen.
    pub last_seen_ms: u64,
    /// Per-user version of this view: 0 before the first visible change,
    /// then one more per change.
    pub version: u64,
}

impl PresenceView {
    /// The view of a user never seen: offline, version 0.
    pub(crate) fn never_seen() -> Self {
        PresenceView {
            status: Status::Offline,
            text: String::new(),
            last_seen_ms: 0,
            version: 0,
        }
    }

    /// The protobuf event for `user`. A view that shows nothing (offline,
    /// never seen) always goes as version 0, whatever its version: a
    /// watcher then cannot tell a user the server forgot, or one who does
    /// not share their presence with it, from an id never seen, and
    /// version 0 replaces what it held (PROTOCOL.md §9.5).
    pub fn to_event(&self, user: &UserId) -> Presence {
        let shows_nothing =
            self.status == Status::Offline && self.text.is_empty() && self.last_seen_ms == 0;
        Presence {
            user_id: user.as_str().to_owned(),
            status: self.status as i32,
            text: self.text.clone(),
            version: if shows_nothing { 0 } else { self.version },
            last_seen_ms: self.last_seen_ms,
        }
    }
}

/// Where the records a shard creates start: above every inbox sequence
/// number and presence version of a record it forgot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Floors {
    /// Highest `last_seq` of a forgotten inbox.
    pub(super) seq: u64,
    /// One above the highest version of a forgotten user (0 if none).
    pub(super) version: u64,
}

impl Floors {
    /// Raises the floors over a record about to be forgotten.
    pub(super) fn cover(&mut self, record: &UserRecord) {
        self.seq = self.seq.max(record.mailbox.last_seq());
        if record.view.version > 0 {
            self.version = self.version.max(record.view.version + 1);
        }
    }
}

/// Who may see a user's presence and last-seen time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Sharing {
    /// Every watcher (the default).
    #[default]
    Everyone,
    /// Only these users.
    Only(IdSet<UserId>),
    /// No one.
    Nobody,
}

impl Sharing {
    /// Whether `watcher` may see the user `of`; a user always sees
    /// themselves.
    pub fn allows(&self, of: &UserId, watcher: &UserId) -> bool {
        watcher == of
            || match self {
                Sharing::Everyone => true,
                Sharing::Only(users) => users.contains(watcher),
                Sharing::Nobody => false,
            }
    }
}

/// A user's sharing choice other than everyone, and the watchers it keeps
/// the presence from: they were sent the view of a user never seen and get
/// no change.
#[derive(Debug, Default)]
pub(super) struct Privacy {
    pub(super) sharing: Sharing,
    pub(super) hidden_from: SparseIdSet<SessionId>,
}

/// Presence state of one user owned by this shard.
#[derive(Debug)]
pub(super) struct UserRecord {
    /// Open sessions of this user, in open order.
    pub(super) sessions: Vec<SessionId>,
    /// The status the user chose (ONLINE, AWAY, BUSY or INVISIBLE).
    pub(super) chosen: Status,
    /// The status text the user chose.
    pub(super) text: String,
    /// While the last session has closed but the grace period runs: when the
    /// user goes offline.
    pub(super) offline_at: Option<Instant>,
    /// Unix ms the user was last seen online (by watchers).
    pub(super) last_seen_ms: u64,
    /// Sessions (on any shard) watching this user.
    pub(super) watchers: SparseIdSet<SessionId>,
    /// What watchers last saw.
    pub(super) view: PresenceView,
    /// The user's sequenced inbox.
    pub(super) mailbox: Mailbox,
    /// This user's entry in the shard's inbox-expiry timers: at or before
    /// the inbox's expiry while it has one (`Shard::schedule_expiry`).
    pub(super) mailbox_timer: Option<Instant>,
    /// Recent `Send.client_msg_id`s, created on first use.
    pub(super) dedupe: Option<Box<DedupeWindow>>,
    /// The users this user sent to in the current minute, while sending.
    pub(super) recipients: Option<Box<RecipientWindow>>,
    /// Rooms this user is a member of (counted from the rooms' changes).
    pub(super) rooms: u32,
    /// Who may see this user; `None`: everyone.
    pub(super) privacy: Option<Box<Privacy>>,
}

impl Default for UserRecord {
    fn default() -> Self {
        Self {
            sessions: Vec::new(),
            chosen: Status::Online,
            text: String::new(),
            offline_at: None,
            last_seen_ms: 0,
            watchers: SparseIdSet::default(),
            view: PresenceView::never_seen(),
            mailbox: Mailbox::default(),
            mailbox_timer: None,
            dedupe: None,
            recipients: None,
            rooms: 0,
            privacy: None,
        }
    }
}

impl UserRecord {
    /// Online means a session is open or the grace period still runs.
    pub(super) fn is_online(&self) -> bool {
        !self.sessions.is_empty() || self.offline_at.is_some()
    }

    /// Whether watchers see this user online (online and not invisible).
    fn shown_online(&self) -> bool {
        self.is_online() && self.chosen != Status::Invisible
    }

    /// Recomputes the view; returns true if it changed, in which case its
    /// version goes up by one (the first visible change makes it 1).
    pub(super) fn refresh(&mut self) -> bool {
        let (status, text, last_seen_ms) = if self.shown_online() {
            (self.chosen, self.text.clone(), 0)
        } else {
            (Status::Offline, String::new(), self.last_seen_ms)
        };
        let view = &mut self.view;
        if view.status == status && view.text == text && view.last_seen_ms == last_seen_ms {
            return false;
        }
        view.status = status;
        view.text = text;
        view.last_seen_ms = last_seen_ms;
        view.version += 1;
        true
    }

    /// A record for a user first seen (or seen again after being
    /// forgotten): versions and inbox numbers continue above `floors`, so a
    /// watcher's version and a device's position never go backwards.
    pub(super) fn after(floors: Floors) -> Self {
        let mut record = Self {
            mailbox: Mailbox::starting_after(floors.seq),
            ..Self::default()
        };
        record.view.version = floors.version;
        record
    }

    /// True for a record that holds nothing but its presence view: offline,
    /// no watcher, no room, no stored message, no remembered device, no
    /// idempotency key or recipient window.
    pub(super) fn holds_nothing(&self) -> bool {
        !self.is_online()
            && self.watchers.is_empty()
            && self.mailbox.is_idle()
            && self.dedupe.is_none()
            && self.recipients.is_none()
            && self.rooms == 0
            && self.privacy.is_none()
    }

    /// Records `now_ms` as last-seen if watchers currently see the user online.
    pub(super) fn mark_seen_if_shown(&mut self, now_ms: u64) {
        if self.view.status != Status::Offline {
            self.last_seen_ms = now_ms;
        }
    }
}
