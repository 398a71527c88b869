//! An inbox kept by an engine outside the core (the Redis engine's): the
//! entry format the core and the engine share, stable keys for devices and
//! senders, and [`InboxWindow`], a slice of such an inbox read back, which
//! answers "what does this device get next" exactly as
//! [`Mailbox::next_for`](crate::mailbox::Mailbox::next_for) does for an inbox in memory.
//!
//! An entry is an [`EntryHeader`] of [`ENTRY_HEADER_BYTES`] followed by
//! the encoded `Message`. The header holds what the engine's rules read
//! without decoding protobuf: when it was stored, whether it is a copy of
//! the inbox user's own send, and 48-bit keys of its sender and sending
//! device (the share rule counts by sender; a device skips its own sends).
//! Keys are 48 bits so that Redis's Lua, whose numbers are doubles, holds
//! them exactly; two devices of one user collide with a chance of 2^-48.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use bytes::Bytes;

use crate::ids::{DeviceId, UserId};

/// Bytes of an [`EntryHeader`] on the wire: 6 (stored at, Unix ms), 1
/// (flags), 6 (sender key), 6 (device key), all big-endian.
pub const ENTRY_HEADER_BYTES: usize = 19;

const KEY_MASK: u64 = (1 << 48) - 1;

/// A stable 48-bit key of `device`: the same in every node and run.
pub fn device_key(device: &DeviceId) -> u64 {
    stable_key(device.as_str())
}

/// A stable 48-bit key of `user`, as a sender.
pub fn sender_key(user: &UserId) -> u64 {
    stable_key(user.as_str())
}

fn stable_key(id: &str) -> u64 {
    // SipHash with fixed zero keys, as placement uses: deterministic
    // across processes and machines.
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    id.hash(&mut hasher);
    hasher.finish() & KEY_MASK
}

/// What the engine reads of an entry without decoding its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    /// When it was stored, Unix ms (its age limit counts from here).
    pub stored_ms: u64,
    /// A copy of a message the inbox's own user sent.
    pub own: bool,
    /// [`sender_key`] of the sender.
    pub sender: u64,
    /// [`device_key`] of the sending device.
    pub device: u64,
}

impl EntryHeader {
    /// The entry: this header, then `message` (an encoded `Message`).
    pub fn encode_with(&self, message: &[u8]) -> Vec<u8> {
        let mut entry = Vec::with_capacity(ENTRY_HEADER_BYTES + message.len());
        entry.extend_from_slice(&self.stored_ms.min(KEY_MASK).to_be_bytes()[2..]);
        entry.push(u8::from(self.own));
        entry.extend_from_slice(&(self.sender & KEY_MASK).to_be_bytes()[2..]);
        entry.extend_from_slice(&(self.device & KEY_MASK).to_be_bytes()[2..]);
        entry.extend_from_slice(message);
        entry
    }

    /// Splits an entry into its header and message; `None` when it is
    /// shorter than a header or its flags are unknown.
    pub fn split(entry: &Bytes) -> Option<(EntryHeader, Bytes)> {
        if entry.len() < ENTRY_HEADER_BYTES || entry[6] > 1 {
            return None;
        }
        let u48 = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes[2..].copy_from_slice(&entry[at..at + 6]);
            u64::from_be_bytes(bytes)
        };
        let header = EntryHeader {
            stored_ms: u48(0),
            own: entry[6] == 1,
            sender: u48(7),
            device: u48(13),
        };
        Some((header, entry.slice(ENTRY_HEADER_BYTES..)))
    }

    /// True for a copy of `device`'s own send.
    pub fn sent_by(&self, device: u64) -> bool {
        self.own && self.device == device
    }
}

/// A slice of an engine's inbox, as read back for one device: where the
/// inbox starts and ends, the device's cursor, and the entries from
/// `start` on (possibly not up to `last_seq`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxWindow {
    /// Lowest sequence number still held (`last_seq + 1` when empty).
    pub first_seq: u64,
    /// Highest sequence number assigned.
    pub last_seq: u64,
    /// What the device acknowledged (or moved over as its own sends).
    pub acked: u64,
    /// Sequence number of `entries[0]`.
    pub start: u64,
    /// Entries `start..`, in order.
    pub entries: VecDeque<(EntryHeader, Bytes)>,
}

/// What a device gets next from an [`InboxWindow`].
#[derive(Debug, PartialEq, Eq)]
pub enum WindowNext<'a> {
    /// Nothing more is stored.
    UpToDate,
    /// `from..=to` are gone; continue after `to`.
    Gap {
        /// First missing sequence number.
        from: u64,
        /// Last missing sequence number.
        to: u64,
    },
    /// The device's own send (or acked already): continue after it.
    Skip(u64),
    /// Deliver this entry (its header and message) with this sequence
    /// number.
    Deliver(u64, &'a EntryHeader, &'a Bytes),
    /// The next entry exists but lies outside the window: read more.
    Beyond(u64),
}

impl InboxWindow {
    /// What device `device` (its [`device_key`]) gets after sequence
    /// number `after`: the rules of `Mailbox::next_for`.
    pub fn next_for(&self, device: u64, after: u64) -> WindowNext<'_> {
        if self.acked > after {
            return WindowNext::Skip(self.acked);
        }
        if after + 1 < self.first_seq {
            return WindowNext::Gap {
                from: after + 1,
                to: self.first_seq - 1,
            };
        }
        let seq = after + 1;
        if seq > self.last_seq {
            return WindowNext::UpToDate;
        }
        let entry = seq
            .checked_sub(self.start)
            .and_then(|index| self.entries.get(index as usize));
        match entry {
            None => WindowNext::Beyond(seq),
            Some((header, _)) if header.sent_by(device) => WindowNext::Skip(seq),
            Some((header, message)) => WindowNext::Deliver(seq, header, message),
        }
    }
}

/// What a node holds of one user's engine-kept inbox for its sessions of
/// that user: a window that entries appended anywhere extend, and that a
/// fetch refills when a session needs what it lacks
/// ([`WindowNext::Beyond`]). Entries every local session was sent are
/// let go: the engine keeps them until the devices ack.
#[derive(Debug, Default)]
pub struct InboxMirror {
    window: InboxWindow,
    /// Where the engine last said each device's cursor was (it moves over
    /// a device's own sends by itself), by device key.
    acked: Vec<(u64, u64)>,
    /// A fetch is on its way: ask no second one.
    pub fetching: bool,
}

impl InboxMirror {
    /// The highest sequence number known to be assigned.
    pub fn last_seq(&self) -> u64 {
        self.window.last_seq
    }

    /// Takes a window read from the engine for `device`. Numbers only move
    /// forward: an entry appended after the read but reported before it
    /// stays known.
    pub fn refresh(&mut self, device: u64, mut window: InboxWindow) {
        self.note_acked(device, window.acked);
        window.acked = 0;
        window.first_seq = window.first_seq.max(self.window.first_seq);
        window.last_seq = window.last_seq.max(self.window.last_seq);
        self.window = window;
        self.drop_gone();
    }

    /// `device`'s cursor is at least `seq`.
    pub fn note_acked(&mut self, device: u64, seq: u64) {
        match self.acked.iter_mut().find(|(d, _)| *d == device) {
            Some((_, acked)) => *acked = (*acked).max(seq),
            None => self.acked.push((device, seq)),
        }
    }

    /// An entry appended to the inbox under `seq`: kept if it extends the
    /// window, else only its number is noted (a session that reaches it
    /// fetches). Send it on before [`InboxMirror::raise_first`]: the
    /// engine may have let it go already (a device's own send, which its
    /// other devices still get).
    pub fn appended(&mut self, seq: u64, header: EntryHeader, message: Bytes) {
        let window = &mut self.window;
        if seq == window.start + window.entries.len() as u64 && seq > window.last_seq {
            window.entries.push_back((header, message));
        }
        window.last_seq = window.last_seq.max(seq);
    }

    /// The engine holds nothing below `first_seq` any more.
    pub fn raise_first(&mut self, first_seq: u64) {
        self.window.first_seq = self.window.first_seq.max(first_seq);
        self.drop_gone();
    }

    /// Lets go of the entries up to `seq` (every local session was sent them).
    pub fn release_through(&mut self, seq: u64) {
        let window = &mut self.window;
        while window.start <= seq && window.entries.pop_front().is_some() {
            window.start += 1;
        }
    }

    /// Drops entries the engine no longer holds (evicted or expired).
    fn drop_gone(&mut self) {
        let first = self.window.first_seq;
        self.release_through(first.saturating_sub(1));
    }

    /// What `device` gets after `after`: [`InboxWindow::next_for`] with the
    /// device's cursor as last known.
    pub fn next_for(&self, device: u64, after: u64) -> WindowNext<'_> {
        let acked = self
            .acked
            .iter()
            .find(|(d, _)| *d == device)
            .map_or(0, |(_, a)| *a);
        if acked > after {
            return WindowNext::Skip(acked);
        }
        self.window.next_for(device, after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_goes_and_comes_back() {
        let header = EntryHeader {
            stored_ms: 1_765_000_000_123,
            own: true,
            sender: sender_key(&UserId::parse("alice").unwrap()),
            device: device_key(&DeviceId::parse("phone").unwrap()),
        };
        let entry = Bytes::from(header.encode_with(b"message"));
        assert_eq!(entry.len(), ENTRY_HEADER_BYTES + 7);
        let (back, message) = EntryHeader::split(&entry).unwrap();
        assert_eq!(back, header);
        assert_eq!(&message[..], b"message");
        assert!(EntryHeader::split(&entry.slice(..18)).is_none());
    }

    #[test]
    fn keys_are_stable_and_48_bits() {
        let phone = DeviceId::parse("phone").unwrap();
        assert_eq!(device_key(&phone), device_key(&phone));
        assert!(device_key(&phone) < 1 << 48);
        assert_ne!(
            device_key(&phone),
            device_key(&DeviceId::parse("laptop").unwrap())
        );
    }

    #[test]
    fn a_window_answers_gaps_skips_and_what_lies_beyond() {
        let header = |own| EntryHeader {
            stored_ms: 1,
            own,
            sender: 7,
            device: 9,
        };
        let window = InboxWindow {
            first_seq: 5,
            last_seq: 8,
            acked: 2,
            start: 5,
            entries: VecDeque::from([
                (header(false), Bytes::from_static(b"five")),
                (header(true), Bytes::from_static(b"six")),
            ]),
        };
        assert_eq!(window.next_for(9, 1), WindowNext::Skip(2));
        assert_eq!(window.next_for(9, 2), WindowNext::Gap { from: 3, to: 4 });
        assert!(matches!(
            window.next_for(9, 4),
            WindowNext::Deliver(5, _, _)
        ));
        assert_eq!(window.next_for(9, 5), WindowNext::Skip(6));
        assert!(matches!(
            window.next_for(1, 5),
            WindowNext::Deliver(6, _, _)
        ));
        assert_eq!(window.next_for(9, 6), WindowNext::Beyond(7));
        assert_eq!(window.next_for(9, 8), WindowNext::UpToDate);
    }

    #[test]
    fn a_mirror_extends_by_appends_and_asks_for_what_it_lacks() {
        let header = EntryHeader {
            stored_ms: 1,
            own: false,
            sender: 7,
            device: 9,
        };
        let message = Bytes::from_static(b"m");
        let mut mirror = InboxMirror::default();
        mirror.refresh(
            1,
            InboxWindow {
                first_seq: 3,
                last_seq: 2,
                acked: 0,
                start: 3,
                entries: VecDeque::new(),
            },
        );
        mirror.appended(3, header, message.clone());
        assert!(matches!(
            mirror.next_for(1, 2),
            WindowNext::Deliver(3, _, _)
        ));
        // 4 was missed (reported out of order): 5 is noted, not kept.
        mirror.appended(5, header, message.clone());
        assert_eq!(mirror.next_for(1, 3), WindowNext::Beyond(4));
        // The engine evicted up to 4: a gap, then a fetch for 5.
        mirror.appended(6, header, message.clone());
        mirror.raise_first(5);
        assert_eq!(mirror.next_for(1, 2), WindowNext::Gap { from: 3, to: 4 });
        assert_eq!(mirror.next_for(1, 4), WindowNext::Beyond(5));
        mirror.release_through(10);
        assert_eq!(mirror.next_for(1, 6), WindowNext::UpToDate);
        // The engine moved device 2's cursor over its own sends.
        mirror.note_acked(2, 6);
        assert_eq!(mirror.next_for(2, 2), WindowNext::Skip(6));
    }
}
