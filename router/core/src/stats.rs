//! [`ShardStats`]: what a shard counted, handed to its owner instead of
//! recorded into a global metrics registry.
//!
//! The core knows nothing of how numbers are exported. Each [`crate::Shard`]
//! adds to one `ShardStats` as it works; the owner takes it with
//! [`crate::Shard::take_stats`] (which leaves a zeroed one behind) and
//! exports the deltas however it likes: the router adds them to its
//! Prometheus counters and gauges, and tests assert on them directly.
//!
//! Gauges travel as what changed them: sessions opened and closed, users
//! that came online and went offline, messages stored and released. The
//! owner keeps the running totals.

/// Defines a reason enum: its variants with their metric labels, `as_str`,
/// and its [`Reason`] slots (declaration order).
macro_rules! reasons {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $label:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// The metric label.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }
        }

        impl Reason for $name {
            const ALL: &'static [Self] = &[$($name::$variant),*];
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

reasons! {
    /// Why a client frame was refused by the core (the `reason` label of the
    /// router's rejected-frames counter).
    Rejection {
        /// A frame with no body the server knows.
        UnknownFrame => "unknown_frame",
        /// A second Hello on an open session.
        SecondHello => "second_hello",
        /// A `Signal` with a bad target or kind.
        InvalidSignal => "invalid_signal",
        /// A room request with a bad room or member id.
        InvalidRoomRequest => "invalid_room_request",
        /// A room request the room refused (not a member, full, ...).
        RoomRefused => "room_refused",
        /// A `CreateRoom` or `JoinRoom` past `max_rooms_per_user`.
        RoomLimit => "room_limit",
        /// A `Receipt` for no valid message.
        InvalidReceipt => "invalid_receipt",
        /// `Hello.resume` past the inbox's last sequence number.
        ResumeAhead => "resume_ahead",
        /// An `Ack` of a sequence number never sent.
        InvalidAck => "invalid_ack",
        /// A `SetStatus` with a status that cannot be set, or a text too long.
        InvalidStatus => "invalid_status",
        /// A `Watch` naming an invalid user id.
        InvalidUserId => "invalid_user_id",
        /// A `Watch` beyond `max_watched_users`.
        WatchLimit => "watch_limit",
    }
}

reasons! {
    /// Why a `Send` was not routed (the `reason` label of the router's
    /// dropped-messages counter).
    Refusal {
        /// `Send.to` is not a valid user id.
        InvalidRecipient => "invalid_recipient",
        /// `Send.room` is not a valid room id.
        InvalidRoom => "invalid_room",
        /// The payload is over `max_payload_bytes`.
        PayloadTooLarge => "payload_too_large",
        /// `Send.client_msg_id` is too long.
        InvalidClientMsgId => "invalid_client_msg_id",
        /// The room does not exist or the sender may not post to it.
        RoomRefused => "room_refused",
        /// Over a rate limit (see [`Throttle`] for which).
        RateLimited => "rate_limited",
        /// The node's inbox memory budget is spent.
        InboxBudget => "inbox_budget",
        /// The recipient's inbox is full and the sender holds half of it.
        InboxShare => "inbox_share",
    }
}

reasons! {
    /// Which rate limit refused a request (the `limit` label of the
    /// router's rate-limited counter).
    Throttle {
        /// The session's messages or bytes per second.
        Session => "session",
        /// The user's messages or bytes per second.
        User => "user",
        /// The user's new recipients per minute.
        NewRecipients => "new_recipients",
        /// The room's deliveries per second.
        Room => "room",
        /// The device's sessions opened per minute.
        Reconnects => "reconnects",
    }
}

/// Inbox activity: messages stored, released (acknowledged by every device,
/// evicted or expired) and evicted before every device had them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MailboxStats {
    /// Messages stored (recipients' inboxes and senders' copies).
    pub stored: u64,
    /// Encoded bytes of those messages.
    pub stored_bytes: u64,
    /// Messages that left an inbox, for any reason.
    pub released: u64,
    /// Encoded bytes of those messages.
    pub released_bytes: u64,
    /// Messages evicted by the count or byte limit.
    pub evicted_by_limit: u64,
    /// Messages evicted by age.
    pub evicted_by_age: u64,
}

impl MailboxStats {
    pub(crate) fn stored(&mut self, bytes: usize) {
        self.stored += 1;
        self.stored_bytes += bytes as u64;
    }

    pub(crate) fn released(&mut self, count: usize, bytes: usize) {
        self.released += count as u64;
        self.released_bytes += bytes as u64;
    }
}

/// A reason label: one of a fixed set, each with its own counter slot.
pub trait Reason: Copy + 'static {
    /// Every reason, each at the index of its slot.
    const ALL: &'static [Self];
    /// The slot of this reason.
    fn index(self) -> usize;
}

/// Most reasons one [`Reason`] type may have.
const MAX_REASONS: usize = 16;

/// Counts by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReasonCounts<R> {
    counts: [u64; MAX_REASONS],
    reason: std::marker::PhantomData<R>,
}

impl<R> Default for ReasonCounts<R> {
    fn default() -> Self {
        ReasonCounts {
            counts: [0; MAX_REASONS],
            reason: std::marker::PhantomData,
        }
    }
}

impl<R: Reason> ReasonCounts<R> {
    /// Counts one event for `reason`.
    pub(crate) fn add(&mut self, reason: R) {
        self.counts[reason.index()] += 1;
    }

    /// The count for `reason`.
    pub fn get(&self, reason: R) -> u64 {
        self.counts[reason.index()]
    }

    /// Each reason counted at least once, with its count.
    pub fn iter(&self) -> impl Iterator<Item = (R, u64)> + '_ {
        R::ALL
            .iter()
            .map(|&r| (r, self.get(r)))
            .filter(|(_, n)| *n > 0)
    }
}

/// What one shard counted since its stats were last taken; see the module
/// docs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShardStats {
    /// Sessions opened.
    pub sessions_opened: u64,
    /// Sessions closed (any reason).
    pub sessions_closed: u64,
    /// Users that came online (first session, after being offline).
    pub users_came_online: u64,
    /// Users that went offline (grace period over).
    pub users_went_offline: u64,
    /// Messages accepted into their recipients' inboxes.
    pub messages_routed: u64,
    /// Sends answered from the idempotency window.
    pub duplicate_sends: u64,
    /// Acks accepted.
    pub acks: u64,
    /// Gap frames sent.
    pub inbox_gaps: u64,
    /// Requests to an external inbox engine that it could not answer
    /// (unreachable, timed out, out of memory).
    pub engine_failures: u64,
    /// Presence events queued to watchers.
    pub presence_events: u64,
    /// Signals queued to sessions.
    pub signals_relayed: u64,
    /// Sessions closed for holding messages unacked past `ack_timeout`.
    pub ack_timeouts: u64,
    /// Inbox activity.
    pub mailbox: MailboxStats,
    /// Client frames refused, by reason.
    pub frames_rejected: ReasonCounts<Rejection>,
    /// Sends not routed, by reason.
    pub sends_refused: ReasonCounts<Refusal>,
    /// Requests refused by a rate limit, by limit.
    pub throttled: ReasonCounts<Throttle>,
    /// User records forgotten (nothing left to keep).
    pub users_forgotten: u64,
    /// Rooms deleted for being idle past `room_idle_ttl` (rooms emptied by
    /// their last member's leave are not counted).
    pub rooms_reclaimed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_own_slots() {
        for (i, reason) in <Rejection as Reason>::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
        }
        for (i, reason) in <Refusal as Reason>::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
        }
        assert!(<Rejection as Reason>::ALL.len() <= MAX_REASONS);
        let mut counts = ReasonCounts::<Rejection>::default();
        counts.add(Rejection::WatchLimit);
        counts.add(Rejection::WatchLimit);
        counts.add(Rejection::UnknownFrame);
        let seen: Vec<_> = counts.iter().collect();
        assert_eq!(
            seen,
            [(Rejection::UnknownFrame, 1), (Rejection::WatchLimit, 2)]
        );
    }
}
