//! [`Mailbox`]: one user's sequenced inbox. Every message to the user, and a
//! copy of every message the user sends, gets the next sequence number and
//! stays until each of the user's known devices has acknowledged it, or the
//! [`MailboxLimits`] evict it (count, bytes, age).
//!
//! Devices are tracked by a cursor each: the highest sequence number the
//! device acknowledged, and whether it is online. A device that stays offline
//! longer than `max_age` is forgotten: everything it could still want has aged
//! out by then. A device never receives its own sends (it got a `SendResult`
//! for them): its cursor moves over them by itself whenever it reaches one,
//! so they never wait for its ack and never look like a gap to it.
//!
//! Entries are contiguous: the mailbox holds exactly the sequence numbers
//! `first_seq()..=last_seq()`; what is below `first_seq()` is gone. What a
//! device gets next is [`Mailbox::next_for`]'s answer, which reports a gone
//! range as [`Next::Gap`] rather than skipping it silently.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::ids::{DeviceId, RoomId, UserId};
use crate::stats::MailboxStats;

/// A message as accepted, shared by every inbox that stores it.
#[derive(Debug)]
pub struct StoredMessage {
    /// Server-assigned message id.
    pub message_id: u64,
    /// Sender.
    pub from: UserId,
    /// The sender's device.
    pub from_device: DeviceId,
    /// The room, for a room message.
    pub room: Option<RoomId>,
    /// The encoded `Message` protobuf, shared by every recipient's frame.
    pub encoded: Bytes,
    /// When the router accepted it (for the delivery-latency metric).
    pub accepted_at: Instant,
    /// The same moment on the wall clock, Unix milliseconds.
    pub sent_at_ms: u64,
    /// A receipt rather than a message: no push notification for it.
    pub is_receipt: bool,
    /// Its encoded bytes in the node's [`InboxBudget`], given back when the
    /// last inbox lets go of it.
    pub charge: BudgetCharge,
}

/// Bytes charged to an [`InboxBudget`] for as long as this lives.
#[derive(Debug)]
pub struct BudgetCharge {
    budget: Arc<InboxBudget>,
    bytes: u64,
}

impl BudgetCharge {
    /// Charges `bytes` to `budget` until dropped.
    pub fn new(budget: &Arc<InboxBudget>, bytes: usize) -> Self {
        let bytes = bytes as u64;
        budget.used.fetch_add(bytes, Ordering::Relaxed);
        Self {
            budget: budget.clone(),
            bytes,
        }
    }
}

impl Drop for BudgetCharge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// What one inbox entry costs beside its message, in bytes, as the node's
/// [`InboxBudget`] counts it: the entry and its share of the queue.
pub const ENTRY_COST: u64 = 64;

/// The node's memory budget for inboxes, shared by every shard: each
/// message's encoded bytes once (a room message is one copy shared by every
/// member's inbox; [`BudgetCharge`]) plus [`ENTRY_COST`] per inbox entry.
/// While it is spent, new messages are refused with `SERVER_BUSY` (never
/// stored and then dropped).
#[derive(Debug)]
pub struct InboxBudget {
    limit: u64,
    used: AtomicU64,
}

impl InboxBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
        }
    }

    /// No budget: nothing is ever refused for memory.
    pub fn unlimited() -> Self {
        Self::new(u64::MAX)
    }

    /// Bytes counted now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// True while new messages must be refused.
    pub fn is_spent(&self) -> bool {
        self.used() >= self.limit
    }

    /// True when `entries` more inbox entries would not fit.
    pub fn lacks_room_for(&self, entries: usize) -> bool {
        self.used().saturating_add(entries as u64 * ENTRY_COST) > self.limit
    }

    /// Counts what a shard's entries stored and released since its last
    /// charge.
    pub(crate) fn charge(&self, stored: u64, released: u64) {
        // Each shard releases only what it stored, so adding first keeps the
        // sum from ever going below zero.
        self.used.fetch_add(stored, Ordering::Relaxed);
        self.used.fetch_sub(released, Ordering::Relaxed);
    }
}

/// Per-user bounds on what an inbox keeps for devices that have not
/// acknowledged it. The oldest entries go first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxLimits {
    /// Most messages kept per user.
    pub max_messages: usize,
    /// Most encoded message bytes kept per user.
    pub max_bytes: usize,
    /// Longest a message is kept; also how long an offline device is
    /// remembered.
    pub max_age: Duration,
    /// The share of a full inbox, in percent of its count or bytes, beyond
    /// which one sender's next direct message is refused (`INBOX_FULL`)
    /// rather than evicting others'. 100: no share, the oldest go.
    pub sender_share_percent: usize,
}

impl Default for MailboxLimits {
    fn default() -> Self {
        Self {
            max_messages: 1_000,
            max_bytes: 1024 * 1024,
            max_age: Duration::from_secs(24 * 3600),
            sender_share_percent: 50,
        }
    }
}

#[derive(Debug)]
struct Entry {
    message: Arc<StoredMessage>,
    stored_at: Instant,
    /// A copy of a message this inbox's own user sent: the sending device
    /// neither receives it nor has to ack it.
    own: bool,
}

impl Entry {
    fn sent_by(&self, device: &DeviceId) -> bool {
        self.own && self.message.from_device == *device
    }
}

#[derive(Debug)]
struct DeviceCursor {
    device: DeviceId,
    /// Highest sequence number the device acknowledged.
    acked: u64,
    /// When the device's last session closed; `None` while online.
    offline_since: Option<Instant>,
}

/// What a device should get after sequence number `after`.
#[derive(Debug)]
pub enum Next<'a> {
    /// Nothing more is stored.
    UpToDate,
    /// `from..=to` are gone; continue after `to`.
    Gap {
        /// First missing sequence number.
        from: u64,
        /// Last missing sequence number.
        to: u64,
    },
    /// The device's own send: skip it.
    Skip(u64),
    /// Deliver this message with this sequence number.
    Deliver(u64, &'a Arc<StoredMessage>),
}

/// One user's inbox; see the module docs.
#[derive(Debug, Default)]
pub struct Mailbox {
    last_seq: u64,
    /// The last message released because every device had acked it: a
    /// new device starts after it, so what the limits dropped after it,
    /// before the device ever connected, comes to it as a Gap.
    released_through: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
    devices: Vec<DeviceCursor>,
}

impl Mailbox {
    /// Highest sequence number assigned so far (0 before the first message).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The last message released because every device had acked it: where
    /// a new device starts.
    pub fn released_through(&self) -> u64 {
        self.released_through
    }

    /// What `device` acknowledged (or moved over as its own sends), if
    /// the inbox knows the device.
    pub fn device_acked(&self, device: &DeviceId) -> Option<u64> {
        self.devices
            .iter()
            .find(|c| c.device == *device)
            .map(|c| c.acked)
    }

    /// The entry under `seq`, if still held: its message, whether it is a
    /// copy of the user's own send, and when it was stored.
    pub fn entry(&self, seq: u64) -> Option<(&Arc<StoredMessage>, bool, Instant)> {
        let index = seq.checked_sub(self.first_seq())?;
        let entry = self.entries.get(usize::try_from(index).ok()?)?;
        Some((&entry.message, entry.own, entry.stored_at))
    }

    /// Lowest sequence number still held (`last_seq() + 1` when empty).
    pub fn first_seq(&self) -> u64 {
        self.last_seq + 1 - self.entries.len() as u64
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no message is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the oldest message held was stored.
    pub fn front_stored_at(&self) -> Option<Instant> {
        self.entries.front().map(|e| e.stored_at)
    }

    /// An empty inbox whose numbers continue after `seq`: a new device
    /// starts after it, and a position at or below it resumes with a Gap.
    pub fn starting_after(seq: u64) -> Self {
        Self {
            last_seq: seq,
            released_through: seq,
            ..Self::default()
        }
    }

    /// True for a mailbox that holds no message and knows no device.
    pub fn is_idle(&self) -> bool {
        self.entries.is_empty() && self.devices.is_empty()
    }

    /// True when appending a message of `size` encoded bytes would evict
    /// the oldest entries.
    pub fn is_full_for(&self, size: usize, limits: &MailboxLimits) -> bool {
        self.entries.len() >= limits.max_messages
            || (self.bytes + size > limits.max_bytes && !self.entries.is_empty())
    }

    /// True when `sender`'s messages (not the inbox user's own copies) take
    /// `sender_share_percent` of the inbox's count or bytes or more. Only
    /// asked of a full inbox: it reads every entry.
    pub fn holds_its_share_from(&self, sender: &UserId, limits: &MailboxLimits) -> bool {
        let share = limits.sender_share_percent;
        if share >= 100 {
            return false;
        }
        let (count, bytes) = self
            .entries
            .iter()
            .filter(|e| !e.own && e.message.from == *sender)
            .fold((0, 0), |(n, b), e| (n + 1, b + e.message.encoded.len()));
        count * 100 >= limits.max_messages * share || bytes * 100 >= limits.max_bytes * share
    }

    /// Stores `message` under the next sequence number and returns it,
    /// evicting the oldest entries beyond the count and byte limits. `own`
    /// marks a copy of a message this inbox's user sent.
    pub fn append(
        &mut self,
        message: Arc<StoredMessage>,
        own: bool,
        now: Instant,
        limits: &MailboxLimits,
        stats: &mut MailboxStats,
    ) -> u64 {
        self.last_seq += 1;
        let size = message.encoded.len();
        stats.stored(size);
        self.bytes += size;
        let own_device = own.then(|| message.from_device.clone());
        self.entries.push_back(Entry {
            message,
            stored_at: now,
            own,
        });
        if let Some(device) = own_device {
            self.advance_over_own(&device);
        }
        while self.entries.len() > limits.max_messages
            || (self.bytes > limits.max_bytes && self.entries.len() > 1)
        {
            stats.released(1, self.pop_front());
            stats.evicted_by_limit += 1;
        }
        self.trim(stats);
        self.last_seq
    }

    /// Drops entries older than `max_age` and forgets devices offline for
    /// longer than that.
    pub fn expire(&mut self, now: Instant, limits: &MailboxLimits, stats: &mut MailboxStats) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.stored_at + limits.max_age <= now)
        {
            stats.released(1, self.pop_front());
            stats.evicted_by_age += 1;
        }
        let before = self.devices.len();
        self.devices
            .retain(|c| c.offline_since.is_none_or(|t| t + limits.max_age > now));
        if self.devices.len() != before {
            self.trim(stats);
        }
    }

    /// When [`Mailbox::expire`] next has something to do.
    pub fn next_expiry(&self, limits: &MailboxLimits) -> Option<Instant> {
        let message = self.entries.front().map(|e| e.stored_at);
        let device = self.devices.iter().filter_map(|c| c.offline_since).min();
        [message, device]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t + limits.max_age)
    }

    /// A session of `device` opened. Returns the sequence number its delivery
    /// continues after: `resume_from` if given (at most `last_seq()`), else
    /// what the device last acknowledged, else (a new device) the last
    /// message every device had acked: messages the limits dropped since
    /// then reach it as a Gap, not as silence.
    pub fn attach(
        &mut self,
        device: &DeviceId,
        resume_from: Option<u64>,
        stats: &mut MailboxStats,
    ) -> u64 {
        let resume_from = resume_from.map(|seq| seq.min(self.last_seq));
        let start = self.released_through;
        let after = match self.devices.iter_mut().find(|c| c.device == *device) {
            Some(cursor) => {
                cursor.offline_since = None;
                if let Some(seq) = resume_from {
                    // Lower: keep what is still held for it. Higher: the
                    // device processed more than it acked.
                    cursor.acked = seq;
                }
                cursor.acked
            }
            None => {
                let after = resume_from.unwrap_or(start);
                // Room for exactly one more: most users have one or two
                // devices, and `push` would make room for four (192 bytes
                // per user where one cursor takes 48).
                self.devices.reserve_exact(1);
                self.devices.push(DeviceCursor {
                    device: device.clone(),
                    acked: after,
                    offline_since: None,
                });
                after
            }
        };
        self.advance_over_own(device);
        self.trim(stats);
        after
    }

    /// The last session of `device` closed.
    pub fn detach(&mut self, device: &DeviceId, now: Instant) {
        if let Some(cursor) = self.devices.iter_mut().find(|c| c.device == *device) {
            cursor.offline_since = Some(now);
        }
    }

    /// `device` processed everything up to `seq` (cumulative; a lower value
    /// than before is ignored).
    pub fn ack(&mut self, device: &DeviceId, seq: u64, stats: &mut MailboxStats) {
        if let Some(cursor) = self.devices.iter_mut().find(|c| c.device == *device) {
            cursor.acked = cursor.acked.max(seq.min(self.last_seq));
            self.advance_over_own(device);
            self.trim(stats);
        }
    }

    /// Moves `device`'s cursor over the entries it sent that directly
    /// follow it: the device has them already (as its own sends).
    fn advance_over_own(&mut self, device: &DeviceId) {
        let first = self.first_seq();
        let Some(cursor) = self.devices.iter_mut().find(|c| c.device == *device) else {
            return;
        };
        while cursor.acked + 1 >= first
            && self
                .entries
                .get((cursor.acked + 1 - first) as usize)
                .is_some_and(|e| e.sent_by(device))
        {
            cursor.acked += 1;
        }
    }

    /// What `device` gets after sequence number `after` (or after its
    /// cursor, if that is further: it moved over the device's own sends).
    pub fn next_for(&self, device: &DeviceId, after: u64) -> Next<'_> {
        let first = self.first_seq();
        let acked = self
            .devices
            .iter()
            .find(|c| c.device == *device)
            .map_or(0, |c| c.acked);
        if acked > after {
            return Next::Skip(acked);
        }
        if after + 1 < first {
            return Next::Gap {
                from: after + 1,
                to: first - 1,
            };
        }
        let seq = after + 1;
        match self.entries.get((seq - first) as usize) {
            None => Next::UpToDate,
            Some(entry) if entry.sent_by(device) => Next::Skip(seq),
            Some(entry) => Next::Deliver(seq, &entry.message),
        }
    }

    /// Drops front entries every known device has acknowledged (or moved
    /// over as its own). With no known device, nothing is acknowledged: the
    /// messages wait for the user's first device.
    fn trim(&mut self, stats: &mut MailboxStats) {
        if self.devices.is_empty() {
            return;
        }
        let (mut count, mut bytes) = (0, 0);
        while !self.entries.is_empty() && self.devices.iter().all(|c| c.acked >= self.first_seq()) {
            bytes += self.pop_front();
            count += 1;
        }
        if count > 0 {
            self.released_through = self.first_seq() - 1;
        }
        stats.released(count, bytes);
    }

    /// Drops the front entry (there is one) and returns its size. Cursors
    /// behind the new front stay there: next_for reports the gap. An inbox
    /// left empty lets go of its queue: most inboxes are empty most of the
    /// time, and each would otherwise keep the room of its busiest moment
    /// for the user's life.
    fn pop_front(&mut self) -> usize {
        let size = self
            .entries
            .pop_front()
            .expect("front exists")
            .message
            .encoded
            .len();
        self.bytes -= size;
        if self.entries.is_empty() {
            self.entries = VecDeque::new();
        }
        size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str) -> DeviceId {
        DeviceId::parse(name).unwrap()
    }

    fn limits() -> MailboxLimits {
        MailboxLimits {
            max_messages: 3,
            max_bytes: 100,
            max_age: Duration::from_secs(60),
            sender_share_percent: 100,
        }
    }

    /// Appends message `id` of `size` bytes from `from_device` (`own`: a
    /// copy of the user's own send), stored at `now`.
    fn append(
        mailbox: &mut Mailbox,
        id: u64,
        from_device: &str,
        own: bool,
        size: usize,
        now: Instant,
    ) {
        let message = Arc::new(StoredMessage {
            message_id: id,
            from: UserId::parse("sender").unwrap(),
            from_device: device(from_device),
            room: None,
            encoded: Bytes::from(vec![0u8; size]),
            accepted_at: Instant::now(),
            sent_at_ms: 0,
            is_receipt: false,
            charge: BudgetCharge::new(&Arc::new(InboxBudget::unlimited()), size),
        });
        mailbox.append(message, own, now, &limits(), &mut MailboxStats::default());
    }

    /// Every sequence number `device` would get after `after`, with gaps.
    fn drain(mailbox: &Mailbox, device: &DeviceId, mut after: u64) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match mailbox.next_for(device, after) {
                Next::UpToDate => return out,
                Next::Gap { from, to } => {
                    out.push(format!("gap {from}-{to}"));
                    after = to;
                }
                Next::Skip(seq) => after = seq,
                Next::Deliver(seq, m) => {
                    out.push(format!("{seq}:{}", m.message_id));
                    after = seq;
                }
            }
        }
    }

    #[test]
    fn device_cursors_take_only_the_room_they_need() {
        let (mut mailbox, stats) = (Mailbox::default(), &mut MailboxStats::default());
        mailbox.attach(&device("phone"), None, stats);
        assert_eq!(mailbox.devices.capacity(), 1);
        mailbox.attach(&device("laptop"), None, stats);
        assert_eq!(mailbox.devices.capacity(), 2);
        mailbox.attach(&device("phone"), None, stats);
        assert_eq!(mailbox.devices.len(), 2, "a known device adds no cursor");
    }

    #[test]
    fn an_inbox_emptied_by_acks_lets_go_of_its_queue() {
        let (mut mailbox, stats) = (Mailbox::default(), &mut MailboxStats::default());
        let phone = device("phone");
        mailbox.attach(&phone, None, stats);
        for id in 1..=3 {
            append(&mut mailbox, id, "x", false, 5, Instant::now());
        }
        assert!(mailbox.entries.capacity() >= 3);
        mailbox.ack(&phone, 2, stats);
        assert_eq!(mailbox.len(), 1, "what is not acked stays");
        assert!(mailbox.entries.capacity() >= 1);
        mailbox.ack(&phone, 3, stats);
        assert!(mailbox.is_empty());
        assert_eq!(
            mailbox.entries.capacity(),
            0,
            "the busiest moment's room is gone"
        );
        // And it numbers on from where it was.
        append(&mut mailbox, 4, "x", false, 5, Instant::now());
        assert_eq!((mailbox.first_seq(), mailbox.last_seq()), (4, 4));
    }

    #[test]
    fn messages_wait_for_the_first_device() {
        let (mut mailbox, stats) = (Mailbox::default(), &mut MailboxStats::default());
        append(&mut mailbox, 10, "x", false, 5, Instant::now());
        append(&mut mailbox, 11, "x", false, 5, Instant::now());
        let phone = device("phone");
        let after = mailbox.attach(&phone, None, stats);
        assert_eq!(after, 0);
        assert_eq!(drain(&mailbox, &phone, after), ["1:10", "2:11"]);
        mailbox.ack(&phone, 2, stats);
        assert!(mailbox.is_empty());
        assert_eq!(mailbox.first_seq(), 3);
    }

    #[test]
    fn an_entry_stays_until_every_known_device_acked_it() {
        let now = Instant::now();
        let (mut mailbox, stats) = (Mailbox::default(), &mut MailboxStats::default());
        let (phone, laptop) = (device("phone"), device("laptop"));
        mailbox.attach(&phone, None, stats);
        mailbox.attach(&laptop, None, stats);
        append(&mut mailbox, 1, "x", false, 5, now);
        mailbox.ack(&phone, 1, stats);
        assert_eq!(mailbox.len(), 1);
        mailbox.detach(&laptop, now);
        assert_eq!(mailbox.len(), 1, "an offline device still counts");
        mailbox.ack(&laptop, 1, stats);
        assert!(mailbox.is_empty());
    }

    #[test]
    fn own_sends_are_skipped_and_need_no_ack_from_the_sender() {
        let (mut mailbox, stats) = (Mailbox::default(), &mut MailboxStats::default());
        let (phone, laptop) = (device("phone"), device("laptop"));
        mailbox.attach(&phone, None, stats);
        mailbox.attach(&laptop, None, stats);
        append(&mut mailbox, 1, "phone", true, 5, Instant::now());
        assert_eq!(drain(&mailbox, &phone, 0), Vec::<String>::new());
        assert_eq!(drain(&mailbox, &laptop, 0), ["1:1"]);
        mailbox.ack(&laptop, 1, stats);
        assert!(mailbox.is_empty(), "the sender need not ack its own send");
    }

    #[test]
    fn limits_evict_the_oldest_and_resume_reports_the_gap() {
        let now = Instant::now();
        let mut mailbox = Mailbox::default();
        let phone = device("phone");
        mailbox.attach(&phone, None, &mut MailboxStats::default());
        for id in 1..=5 {
            append(&mut mailbox, id, "x", false, 5, now);
        }
        assert_eq!(mailbox.len(), 3);
        assert_eq!(drain(&mailbox, &phone, 0), ["gap 1-2", "3:3", "4:4", "5:5"]);
        // Bytes: one 96-byte message pushes out all but itself.
        append(&mut mailbox, 6, "x", false, 96, now);
        assert_eq!(drain(&mailbox, &phone, 0), ["gap 1-5", "6:6"]);
        assert_eq!(mailbox.bytes, 96);
    }

    #[test]
    fn age_evicts_and_forgets_long_offline_devices() {
        let start = Instant::now();
        let limits = limits();
        let (mut mailbox, stats) = (Mailbox::default(), &mut MailboxStats::default());
        let (phone, old) = (device("phone"), device("old"));
        mailbox.attach(&phone, None, stats);
        mailbox.attach(&old, None, stats);
        mailbox.detach(&old, start);
        let later = start + Duration::from_secs(30);
        append(&mut mailbox, 1, "x", false, 5, start);
        append(&mut mailbox, 2, "x", false, 5, later);
        assert_eq!(mailbox.next_expiry(&limits), Some(start + limits.max_age));
        mailbox.expire(start + limits.max_age, &limits, stats);
        // Message 1 aged out and "old" is forgotten; 2 waits for "phone".
        assert_eq!(drain(&mailbox, &phone, 0), ["gap 1-1", "2:2"]);
        mailbox.ack(&phone, 2, stats);
        assert!(mailbox.is_empty(), "the forgotten device no longer pins");
        assert_eq!(mailbox.next_expiry(&limits), None);
    }

    /// R-4 of the hardening issue: messages the limits dropped before a
    /// user's first device ever connected were lost in silence.
    #[test]
    fn a_first_device_hears_of_what_the_limits_dropped_before_it_came() {
        let now = Instant::now();
        let mut mailbox = Mailbox::default();
        for id in 1..=5 {
            append(&mut mailbox, id, "x", false, 5, now);
        }
        let phone = device("phone");
        let after = mailbox.attach(&phone, None, &mut MailboxStats::default());
        assert_eq!(after, 0);
        assert_eq!(
            drain(&mailbox, &phone, after),
            ["gap 1-2", "3:3", "4:4", "5:5"]
        );
        // Once every device acked, a new device starts after what they
        // all had: nothing of that is its loss.
        mailbox.ack(&phone, 5, &mut MailboxStats::default());
        append(&mut mailbox, 6, "x", false, 5, now);
        let tablet = device("tablet");
        let after = mailbox.attach(&tablet, None, &mut MailboxStats::default());
        assert_eq!(after, 5);
        assert_eq!(drain(&mailbox, &tablet, after), ["6:6"]);
    }

    #[test]
    fn resume_point_is_clamped_and_can_go_back_over_what_is_held() {
        let now = Instant::now();
        let (mut mailbox, stats) = (Mailbox::default(), &mut MailboxStats::default());
        let (phone, laptop) = (device("phone"), device("laptop"));
        mailbox.attach(&phone, None, stats);
        mailbox.attach(&laptop, None, stats);
        for id in 1..=3 {
            append(&mut mailbox, id, "x", false, 5, now);
        }
        mailbox.ack(&phone, 3, stats);
        mailbox.detach(&phone, now);
        // The phone lost its state and resumes from 1: 2 and 3 are held
        // for the laptop, so it gets them again.
        assert_eq!(mailbox.attach(&phone, Some(1), stats), 1);
        assert_eq!(drain(&mailbox, &phone, 1), ["2:2", "3:3"]);
        let clamped = mailbox.attach(&phone, Some(99), stats);
        assert_eq!(clamped, 3, "clamped to last_seq");
        // A new device with no resume point starts at the oldest held.
        assert_eq!(mailbox.attach(&device("tablet"), None, stats), 0);
    }
}
