//! What shards count for their owner ([`crate::ShardStats`]): the shell
//! exports these as metrics, so each must match what happened.

use super::*;
use crate::stats::{Refusal, Rejection};
use crate::ShardStats;

impl Cluster {
    /// Each shard's stats since the last call.
    fn take_stats(&mut self) -> Vec<ShardStats> {
        self.shards.iter_mut().map(Shard::take_stats).collect()
    }
}

/// `count` added up over every shard's `stats`.
fn sum(stats: &[ShardStats], count: fn(&ShardStats) -> u64) -> u64 {
    stats.iter().map(count).sum()
}

#[test]
fn sessions_users_and_messages_are_counted_once_each() {
    let mut cluster = Cluster::new(2);
    let alice = cluster.open("alice", "phone");
    let bob = cluster.open("bob", "phone");
    let stats = cluster.take_stats();
    assert_eq!(sum(&stats, |s| s.sessions_opened), 2);
    assert_eq!(sum(&stats, |s| s.users_came_online), 2);

    cluster.send(alice, 1, "bob", b"hi");
    let stats = cluster.take_stats();
    assert_eq!(sum(&stats, |s| s.messages_routed), 1);
    // Bob's inbox and Alice's copy, which her only device (the sender)
    // needs no more.
    assert_eq!(sum(&stats, |s| s.mailbox.stored), 2);
    assert_eq!(sum(&stats, |s| s.mailbox.released), 1);
    assert!(sum(&stats, |s| s.mailbox.stored_bytes) > 0);

    // Seq 1, bob's first message: an ack of anything unsent is refused.
    cluster.ack(bob, 1);
    let stats = cluster.take_stats();
    assert_eq!(sum(&stats, |s| s.acks), 1);
    let released = sum(&stats, |s| s.mailbox.released);
    assert_eq!(released, 1, "bob's copy left his inbox");

    cluster.close(alice);
    cluster.advance(GRACE + Duration::from_millis(1));
    let stats = cluster.take_stats();
    assert_eq!(sum(&stats, |s| s.sessions_closed), 1);
    assert_eq!(sum(&stats, |s| s.users_went_offline), 1);
    let taken = cluster.take_stats();
    assert!(taken.iter().all(|s| *s == ShardStats::default()), "taken");
}

#[test]
fn refused_frames_and_sends_are_counted_by_reason() {
    let mut cluster = Cluster::new(1);
    let alice = cluster.open("alice", "phone");
    cluster.shards[0].take_stats();
    cluster.watch(alice, &["not valid!"]);
    cluster.frame(alice, 3, None);
    cluster.send(alice, 4, "not valid!", b"x");
    cluster.send(alice, 5, "bob", &[0; 101]);
    let stats = cluster.shards[0].take_stats();
    assert_eq!(stats.frames_rejected.get(Rejection::InvalidUserId), 1);
    assert_eq!(stats.frames_rejected.get(Rejection::UnknownFrame), 1);
    assert_eq!(stats.frames_rejected.iter().count(), 2);
    assert_eq!(stats.sends_refused.get(Refusal::InvalidRecipient), 1);
    assert_eq!(stats.sends_refused.get(Refusal::PayloadTooLarge), 1);
    assert_eq!(stats.messages_routed, 0);
}
