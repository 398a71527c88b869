//! Identifiers used by the core: [`SessionId`] (server-assigned),
//! [`ShardId`], and the validated client-chosen [`UserId`], [`DeviceId`] and
//! [`RoomId`]; and the maps and sets keyed by them ([`IdMap`], [`IdSet`],
//! [`SparseIdSet`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use switchboard_proto::ident::is_valid_id;

/// A hash map keyed by ids. foldhash is several times faster than the
/// standard SipHash on these short keys (a fan-out looks up thousands per
/// message) and is still seeded at random per map, which matters because
/// clients choose the ids.
pub type IdMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A hash set of ids; see [`IdMap`].
pub type IdSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// An [`IdSet`] that takes one pointer while empty, for the sets most
/// records never fill (who a session watches, who watches a user): an empty
/// `HashSet` is 40 bytes inline, held by every user and session record even
/// when chat is all a session does. The set is boxed on the first insert and
/// freed when it empties.
#[derive(Debug)]
pub struct SparseIdSet<K>(Option<Box<IdSet<K>>>);

impl<K> Default for SparseIdSet<K> {
    fn default() -> Self {
        SparseIdSet(None)
    }
}

impl<K: Eq + Hash> SparseIdSet<K> {
    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |set| set.len())
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: &K) -> bool {
        self.0.as_ref().is_some_and(|set| set.contains(id))
    }

    /// Adds `id`; false if it was already held.
    pub fn insert(&mut self, id: K) -> bool {
        self.0.get_or_insert_with(Default::default).insert(id)
    }

    /// Removes `id`; false if it was not held.
    pub fn remove(&mut self, id: &K) -> bool {
        let Some(set) = self.0.as_mut() else {
            return false;
        };
        let removed = set.remove(id);
        if set.is_empty() {
            self.0 = None;
        }
        removed
    }

    /// The ids held, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &K> {
        self.0.iter().flat_map(|set| set.iter())
    }
}

impl<K: Eq + Hash> Extend<K> for SparseIdSet<K> {
    fn extend<I: IntoIterator<Item = K>>(&mut self, ids: I) {
        for id in ids {
            self.insert(id);
        }
    }
}

impl<K> IntoIterator for SparseIdSet<K> {
    type Item = K;
    type IntoIter = std::iter::Flatten<std::option::IntoIter<IdSet<K>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.map(|set| *set).into_iter().flatten()
    }
}

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

#[cfg(test)]
mod tests {
    use super::{SessionId, SparseIdSet};

    #[test]
    fn a_sparse_set_is_one_pointer_boxed_only_while_it_holds_ids() {
        assert_eq!(std::mem::size_of::<SparseIdSet<SessionId>>(), 8);
        let mut set = SparseIdSet::default();
        assert!(set.is_empty() && set.0.is_none());
        assert!(set.insert(SessionId(1)));
        assert!(!set.insert(SessionId(1)));
        set.extend([SessionId(2), SessionId(3)]);
        assert_eq!(set.len(), 3);
        assert!(set.contains(&SessionId(2)) && !set.contains(&SessionId(4)));
        assert!(set.remove(&SessionId(2)));
        assert!(!set.remove(&SessionId(2)));
        let mut held: Vec<u64> = set.iter().map(|s| s.0).collect();
        held.sort_unstable();
        assert_eq!(held, [1, 3]);
        assert!(set.remove(&SessionId(1)) && set.remove(&SessionId(3)));
        assert!(set.is_empty() && set.0.is_none(), "emptied sets are freed");
        assert!(!set.remove(&SessionId(1)));
        set.insert(SessionId(9));
        assert_eq!(set.into_iter().map(|s| s.0).collect::<Vec<_>>(), [9]);
    }
}
