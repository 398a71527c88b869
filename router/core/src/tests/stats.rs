//! What shards count for their owner ([`crate::ShardStats`]): the shell
//! exports these as metrics, so each must match what happened.

use super::*;
use crate::stats::{Refusal, Rejection};

impl Cluster {
    /// Every shard's stats since the last call, added up.
    fn take_stats(&mut self) -> crate::ShardStats {
        let mut total = crate::ShardStats::default();
        for shard in &mut self.shards {
            let stats = shard.take_stats();
            total.sessions_opened += stats.sessions_opened;
            total.sessions_closed += stats.sessions_closed;
            total.users_came_online += stats.users_came_online;
            total.users_went_offline += stats.users_went_offline;
            total.messages_routed += stats.messages_routed;
            total.acks += stats.acks;
            total.presence_events += stats.presence_events;
            total.mailbox.stored += stats.mailbox.stored;
            total.mailbox.stored_bytes += stats.mailbox.stored_bytes;
            total.mailbox.released += stats.mailbox.released;
            total.mailbox.released_bytes += stats.mailbox.released_bytes;
            for (reason, count) in stats.frames_rejected.iter() {
                for _ in 0..count {
                    total.frames_rejected.add(reason);
                }
            }
            for (reason, count) in stats.sends_refused.iter() {
                for _ in 0..count {
                    total.sends_refused.add(reason);
                }
            }
        }
        total
    }
}

#[test]
fn sessions_users_and_messages_are_counted_once_each() {
    let mut cluster = Cluster::new(2);
    let alice = cluster.open("alice", "phone");
    let bob = cluster.open("bob", "phone");
    let stats = cluster.take_stats();
    assert_eq!(stats.sessions_opened, 2);
    assert_eq!(stats.users_came_online, 2);

    cluster.send(alice, 1, "bob", b"hi");
    let stats = cluster.take_stats();
    assert_eq!(stats.messages_routed, 1);
    // Bob's inbox and Alice's copy, which her only device (the sender)
    // needs no more.
    assert_eq!(stats.mailbox.stored, 2);
    assert_eq!(stats.mailbox.released, 1);
    assert!(stats.mailbox.stored_bytes > 0);

    // Seq 1, bob's first message: an ack of anything unsent is refused.
    cluster.ack(bob, 1);
    let stats = cluster.take_stats();
    assert_eq!(stats.acks, 1);
    assert_eq!(stats.mailbox.released, 1, "bob's copy left his inbox");

    cluster.close(alice);
    cluster.advance(GRACE + Duration::from_millis(1));
    let stats = cluster.take_stats();
    assert_eq!(stats.sessions_closed, 1);
    assert_eq!(stats.users_went_offline, 1);
    assert_eq!(cluster.take_stats(), crate::ShardStats::default(), "taken");
}

#[test]
fn refused_frames_and_sends_are_counted_by_reason() {
    let mut cluster = Cluster::new(1);
    let alice = cluster.open("alice", "phone");
    cluster.take_stats();
    cluster.watch(alice, &["not valid!"]);
    cluster.frame(alice, 3, None);
    cluster.send(alice, 4, "not valid!", b"x");
    cluster.send(alice, 5, "bob", &[0; 101]);
    let stats = cluster.take_stats();
    assert_eq!(stats.frames_rejected.get(Rejection::InvalidUserId), 1);
    assert_eq!(stats.frames_rejected.get(Rejection::UnknownFrame), 1);
    assert_eq!(stats.frames_rejected.iter().count(), 2);
    assert_eq!(stats.sends_refused.get(Refusal::InvalidRecipient), 1);
    assert_eq!(stats.sends_refused.get(Refusal::PayloadTooLarge), 1);
    assert_eq!(stats.messages_routed, 0);
}
