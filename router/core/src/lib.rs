//! The sans-IO routing core: sessions, presence and direct-message routing as
//! a deterministic state machine with no sockets, no tokio and no clock.
//!
//! Users are partitioned over shards by [`placement::shard_of`]; each
//! [`Shard`] owns the sessions, presence records and inboxes
//! ([`mailbox::Mailbox`]) of its users and is driven
//! by one owner (the shell's shard task, or a test):
//!
//! 1. inputs: [`Shard::handle`] with a [`ShardInput`] (a session opened or
//!    closed, a client frame, or a message from another shard) and
//!    [`Shard::handle_timeout`] when [`Shard::poll_timeout`]'s deadline passes;
//! 2. outputs: drain [`Shard::poll_output`] until `None` after every input:
//!    frames to write to sessions, sessions to close, and inputs to forward to
//!    other shards ([`Output`]).
//!
//! Time is always an argument ([`Now`]), so tests drive grace periods with a
//! virtual clock. Nor does the core record metrics: each shard counts into a
//! [`ShardStats`] that its owner takes ([`Shard::take_stats`]) and exports.
//! The main types: [`Shard`], [`ShardInput`], [`Output`], [`CoreLimits`],
//! [`ShardStats`], and the ids in [`ids`].
//!
//! The crate depends on no runtime, socket or clock: `cargo tree -p
//! switchboard-core` shows only the wire schema and data-structure crates.
#![forbid(unsafe_code)]

pub mod api;
pub mod dedupe;
pub mod engine;
pub mod ids;
pub mod mailbox;
pub mod placement;
mod presence;
pub mod rate;
pub mod remote_inbox;
pub mod rooms;
mod shard;
pub mod stats;

pub use api::{Actor, ApiReply, ApiRequest, ApiToken, Requester, API_DEVICE};
pub use dedupe::{DedupeLimits, SendError, SendOutcome};
pub use ids::{DeviceId, RoomId, SessionId, ShardId, UserId};
pub use mailbox::{InboxBudget, MailboxLimits, StoredMessage};
pub use presence::{PresenceView, Sharing};
pub use rate::{Rate, RateLimits, SendRates, Throttle};
pub use shard::{
    coalescing_key, CoreLimits, FrameClass, Now, Output, Recipient, RelayedSignal, RoutedMessage,
    Shard, ShardInput, MAX_CLIENT_MSG_ID_BYTES, SIGNAL_TTL_MS,
};
pub use stats::ShardStats;

#[cfg(test)]
mod tests;
