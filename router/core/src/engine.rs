//! The boundary between a shard and an engine that keeps inboxes outside
//! the core (the Redis engine). The core stays sans-IO and does not know
//! which engine runs: with [`InboxAuthority::External`] a shard asks
//! ([`Output::Engine`](crate::Output::Engine) with an [`EngineRequest`])
//! where it would otherwise change its own [`Mailbox`](crate::mailbox::Mailbox),
//! and its owner hands the answer back
//! ([`ShardInput::EngineReply`](crate::ShardInput::EngineReply)) with the
//! request's [`EngineTicket`]. Whoever appends to an inbox, on any node,
//! the engine tells the shard of each node that holds the user's sessions
//! ([`ShardInput::Appended`](crate::ShardInput::Appended)).
//!
//! What the external authority covers so far: every inbox entry (direct
//! and room messages, receipts, the sender's copies) and each device's
//! place in its inbox (attach, fetch, ack, detach). Rooms' members and
//! presence are still kept by the shard.

use std::sync::Arc;

use bytes::Bytes;

use crate::ids::{DeviceId, UserId};
use crate::mailbox::StoredMessage;
use crate::remote_inbox::{EntryHeader, InboxWindow};

/// Who keeps the inboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InboxAuthority {
    /// The shard, in memory (one node, lost on restart). The default.
    #[default]
    Local,
    /// An engine outside the core, asked through [`EngineRequest`]s.
    External,
}

/// Pairs an [`EngineRequest`] with its reply; unique per shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EngineTicket(pub u64);

/// What a shard asks of the engine. Requests of one shard must be applied
/// in the order they were emitted (the Redis engine sends them down one
/// pipelined connection), so that one session's messages keep their order.
#[derive(Debug)]
pub enum EngineRequest {
    /// Store `message` in `user`'s inbox; `own` for a copy of the user's
    /// own send, `check_share` to apply the share rule.
    Append {
        /// The inbox's user.
        user: UserId,
        /// The message, as accepted.
        message: Arc<StoredMessage>,
        /// A copy of the user's own send.
        own: bool,
        /// Refuse it when the inbox is full and its sender holds its share.
        check_share: bool,
    },
    /// Store a direct message for `to` and then, unless refused, its
    /// sender's copy (for the sender's other devices): one request, so the
    /// engine can do both in one step. The sender's copies reach the
    /// engine in send order, as every request of a shard does.
    Deliver {
        /// The recipient (never the sender: a note to self is one
        /// [`EngineRequest::Append`]).
        to: UserId,
        /// The message, as accepted.
        message: Arc<StoredMessage>,
    },
    /// A session of `device` opened: where does its delivery start, and
    /// the first `count` entries from there.
    Attach {
        /// The inbox's user.
        user: UserId,
        /// The device.
        device: DeviceId,
        /// Where the device asked to resume (Hello.resume), if anywhere.
        resume: Option<u64>,
        /// Most entries to read.
        count: usize,
    },
    /// Up to `count` entries of `user`'s inbox after `after`.
    Fetch {
        /// The inbox's user.
        user: UserId,
        /// The device reading.
        device: DeviceId,
        /// Read after this sequence number.
        after: u64,
        /// Most entries to read.
        count: usize,
    },
    /// `device` processed everything up to `seq`.
    Ack {
        /// The inbox's user.
        user: UserId,
        /// The device.
        device: DeviceId,
        /// Cumulative ack.
        seq: u64,
    },
    /// The last session of `device` on this node closed.
    Detach {
        /// The inbox's user.
        user: UserId,
        /// The device.
        device: DeviceId,
    },
}

/// The engine's answer to an [`EngineRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineReply {
    /// Stored under `seq`.
    Appended {
        /// Its sequence number.
        seq: u64,
        /// The lowest sequence number the inbox still held after it.
        first_seq: u64,
        /// The user's devices with a session open, anywhere.
        devices: u32,
    },
    /// Not stored: the inbox is full and the sender holds its share.
    ShareRefused,
    /// The answer to [`EngineRequest::Deliver`]: stored for the recipient
    /// under `seq`, and the sender's copy under `own_seq`.
    Delivered {
        /// The recipient's entry.
        seq: u64,
        /// The lowest sequence number the recipient's inbox held after it.
        first_seq: u64,
        /// The recipient's devices with a session open, anywhere.
        devices: u32,
        /// The sender's copy.
        own_seq: u64,
        /// The lowest sequence number the sender's inbox held after it.
        own_first_seq: u64,
        /// The sender's devices with a session open, anywhere.
        own_devices: u32,
    },
    /// Where the device's delivery starts, and the inbox from there.
    Attached {
        /// Delivery continues after this sequence number.
        after: u64,
        /// The inbox from there on.
        window: InboxWindow,
    },
    /// Entries read.
    Fetched(InboxWindow),
    /// Done (an ack or detach).
    Done,
    /// The engine could not do it (unreachable, timed out, out of memory):
    /// nothing was changed, or nothing known; the client may retry.
    Unavailable,
}

/// An entry appended to a user's inbox, by any node: sent to the shard
/// that holds the user's sessions on each node.
#[derive(Debug, Clone)]
pub struct AppendedEntry {
    /// The inbox's user.
    pub user: UserId,
    /// The entry's sequence number.
    pub seq: u64,
    /// The lowest sequence number the inbox still held after it.
    pub first_seq: u64,
    /// Its header.
    pub header: EntryHeader,
    /// The encoded `Message`.
    pub message: Bytes,
}
