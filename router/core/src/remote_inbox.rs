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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub entries: Vec<(EntryHeader, Bytes)>,
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
    /// Deliver this message with this sequence number.
    Deliver(u64, &'a Bytes),
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
            Some((_, message)) => WindowNext::Deliver(seq, message),
        }
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
            entries: vec![
                (header(false), Bytes::from_static(b"five")),
                (header(true), Bytes::from_static(b"six")),
            ],
        };
        assert_eq!(window.next_for(9, 1), WindowNext::Skip(2));
        assert_eq!(window.next_for(9, 2), WindowNext::Gap { from: 3, to: 4 });
        assert!(matches!(window.next_for(9, 4), WindowNext::Deliver(5, _)));
        assert_eq!(window.next_for(9, 5), WindowNext::Skip(6));
        assert!(matches!(window.next_for(1, 5), WindowNext::Deliver(6, _)));
        assert_eq!(window.next_for(9, 6), WindowNext::Beyond(7));
        assert_eq!(window.next_for(9, 8), WindowNext::UpToDate);
    }
}
