//! Identifiers used by the core: [`SessionId`] (server-assigned),
//! [`ShardId`], and the validated client-chosen [`UserId`], [`DeviceId`] and
//! [`RoomId`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use switchboard_proto::ident::is_valid_id;

/// A hash map keyed by ids. foldhash is several times faster than the
/// standard SipHash on these short keys (a fan-out looks up thousands per
/// message) and is still seeded at random per map, which matters because
/// clients choose the ids.
pub type IdMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A hash set of ids; see [`IdMap`].
pub type IdSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// Server-assigned id of one session, unique within a server run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Index of a shard, `0..shard_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u32);

macro_rules! validated_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Parses an id, `None` unless it is 1-64 bytes of `[A-Za-z0-9._@-]`.
            pub fn parse(id: &str) -> Option<Self> {
                is_valid_id(id).then(|| Self(Arc::from(id)))
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_id!(
    /// A user id (a token's `sub`); cheap to clone.
    UserId
);
validated_id!(
    /// A client-chosen stable device id; cheap to clone.
    DeviceId
);
validated_id!(
    /// A room (group) id chosen by its creator; cheap to clone.
    RoomId
);
