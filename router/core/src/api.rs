//! Requests from app backends, made through the server API on the admin
//! listener, and their replies. The shell picks an [`ApiToken`], hands the
//! shard named by [`ApiRequest::shard`] a `ShardInput::Api`, and gets the
//! answer as an `Output::ApiReply` with the same token.
//!
//! API sends go through the same path as a session's: the same checks,
//! inboxes, idempotency window and copy in the sender's inbox. They are sent
//! in the name of `from` from the reserved device [`API_DEVICE`], so every
//! device of `from` gets the copy.

use bytes::Bytes;
use switchboard_proto::v1::ErrorCode;

use super::dedupe::{SendError, SendOutcome};
use super::ids::{DeviceId, RoomId, SessionId, ShardId, UserId};
use super::placement::{shard_of, shard_of_room};
use super::presence::{PresenceView, Sharing};
use super::rooms::{RoomReply, RoomRequest};
use super::shard::Recipient;

/// The device id API sends come from. Clients cannot use it: a session with
/// this device id would skip the API's copies as its own.
pub const API_DEVICE: &str = "server-api";

/// Chosen by the shell to match a reply to its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiToken(pub u64);

/// Who asked for something and gets the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// A session, with the request's `ref`.
    Session(SessionId, u64),
    /// A server API call.
    Api(ApiToken),
    /// Nobody waits for an answer (a receipt).
    Nobody,
}

/// Who a room request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A user, under the room rule.
    User(UserId),
    /// The app backend: every request is allowed, and a room it creates has
    /// no owner and no member.
    Admin,
}

/// What an app backend asks.
#[derive(Debug, Clone)]
pub enum ApiRequest {
    /// Send a message in `from`'s name.
    Send {
        /// The user the message is from.
        from: UserId,
        /// A user or a room (`from` must then be a member).
        to: Recipient,
        /// The opaque payload.
        payload: Bytes,
        /// Idempotency key (empty: none), in `from`'s window.
        client_msg_id: String,
        /// Ask recipients for receipts.
        want_receipts: bool,
    },
    /// A user's presence and open sessions.
    Presence {
        /// The user.
        user: UserId,
    },
    /// Close a user's sessions (of one device, or all).
    Disconnect {
        /// The user.
        user: UserId,
        /// Only this device's session; `None`: every session.
        device: Option<DeviceId>,
    },
    /// Set who may see `user`'s presence and last-seen time.
    Sharing {
        /// The user.
        user: UserId,
        /// Everyone, these users, or no one.
        sharing: Sharing,
    },
    /// Manage a room.
    Room {
        /// The room.
        room: RoomId,
        /// Acting as a user (under the rule) or as the backend.
        actor: Actor,
        /// What to do.
        request: RoomRequest,
    },
}

impl ApiRequest {
    /// The shard that must handle this request.
    pub fn shard(&self, shard_count: u32) -> ShardId {
        match self {
            ApiRequest::Send { from, .. } => shard_of(from, shard_count),
            ApiRequest::Presence { user }
            | ApiRequest::Disconnect { user, .. }
            | ApiRequest::Sharing { user, .. } => shard_of(user, shard_count),
            ApiRequest::Room { room, .. } => shard_of_room(room, shard_count),
        }
    }
}

/// A shard's answer to an [`ApiRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum ApiReply {
    /// The send's result, as a `SendResult` would carry it.
    Sent {
        /// Stored (with where), or why not.
        result: Result<SendOutcome, SendError>,
        /// A repeat of an idempotency key: nothing was sent again.
        duplicate: bool,
    },
    /// The user's presence as watchers see it, and their open sessions.
    Presence {
        /// What watchers see.
        view: PresenceView,
        /// Open sessions with their devices, in open order.
        sessions: Vec<(SessionId, DeviceId)>,
    },
    /// How many sessions were closed.
    Disconnected {
        /// Sessions closed.
        sessions: u32,
    },
    /// Sharing set; this many watchers are looked at again.
    SharingSet {
        /// Sessions that watched the user.
        watchers: u32,
    },
    /// A room request's outcome.
    Room(Result<RoomReply, ErrorCode>),
}
