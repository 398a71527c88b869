//! Which shard owns a user or a room: a stable hash of the id modulo the
//! shard count, the same in every shard and every run.

use std::hash::{Hash, Hasher};

use super::ids::{RoomId, ShardId, UserId};

/// The shard that owns `user` when there are `shard_count` shards.
pub fn shard_of(user: &UserId, shard_count: u32) -> ShardId {
    shard_of_key(user.as_str(), shard_count)
}

/// The shard that owns `room` (and orders its messages).
pub fn shard_of_room(room: &RoomId, shard_count: u32) -> ShardId {
    shard_of_key(room.as_str(), shard_count)
}

fn shard_of_key(key: &str, shard_count: u32) -> ShardId {
    // SipHash with fixed zero keys: deterministic across processes, unlike
    // `RandomState`, so placement can be reasoned about and tested.
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    key.hash(&mut hasher);
    ShardId((hasher.finish() % u64::from(shard_count.max(1))) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable_and_in_range() {
        let alice = UserId::parse("alice").unwrap();
        assert_eq!(shard_of(&alice, 8), shard_of(&alice, 8));
        assert_eq!(shard_of(&alice, 1), ShardId(0));
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            let user = UserId::parse(&format!("user{i}")).unwrap();
            let shard = shard_of(&user, 4);
            assert!(shard.0 < 4);
            seen.insert(shard);
        }
        assert_eq!(seen.len(), 4, "1000 users spread over all 4 shards");
    }
}
