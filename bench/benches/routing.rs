//! The sans-IO core on its own: routing one direct message across two
//! shards (stored in the recipient's inbox, sent, and acked by the
//! recipient), the same among 100,000 users (random pairs, so each message
//! finds its users' state out of the caches, as a loaded router does; acks
//! ride on each user's next send), and
//! one presence change fanned out to 1,000 watchers (one encoded frame
//! shared by every watcher).
#![allow(missing_docs)]

mod common;

use bytes::Bytes;
use common::{frame_input, send, Cluster};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use switchboard_core::{CoreLimits, SessionId, UserId};
use switchboard_proto::v1::{client_frame, Ack, SetStatus, Status, Watch};

/// Users (one session each) in the at-scale routing benchmark.
const USERS_AT_SCALE: u64 = 100_000;

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("core");
    // Two users on different shards.
    let mut cluster = Cluster::new(2, CoreLimits::default());
    let alice = "alice";
    let bob = ["bob", "carol", "dave", "erin", "frank"]
        .into_iter()
        .find(|u| cluster.shard(u) != cluster.shard(alice))
        .expect("users spread over 2 shards");
    cluster.open(1, alice);
    cluster.open(2, bob);
    let payload = Bytes::from(vec![7u8; 80]);
    group.throughput(Throughput::Elements(1));
    let mut bob_seq = 0;
    group.bench_function("route_direct_message_across_shards", |b| {
        b.iter(|| {
            let frames = cluster.frame(1, alice, send(bob, "", &payload));
            assert_eq!(frames, 2); // Deliver to bob + SendResult to alice
            bob_seq += 1;
            let acked = cluster.frame(2, bob, client_frame::Body::Ack(Ack { seq: bob_seq }));
            assert_eq!(acked, 0);
        })
    });

    // Random pairs among 100,000 users on two shards. Like
    // switchboard-load's sessions, a user acks what its inbox holds when it
    // next sends (the ack rides with the send), so deliveries stay unacked
    // for a while and the shard's ack and expiry timers hold tens of
    // thousands of them, as a loaded router's do.
    let mut cluster = Cluster::new(2, CoreLimits::default());
    let users: Vec<(String, UserId, usize)> = (0..USERS_AT_SCALE)
        .map(|i| {
            let name = format!("user{i}");
            let id = UserId::parse(&name).expect("valid id");
            let shard = cluster.shard(&name);
            (name, id, shard)
        })
        .collect();
    for (i, (name, _, _)) in users.iter().enumerate() {
        cluster.open(i as u64, name);
    }
    let mut acked = vec![0u64; users.len()];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut pick = move || {
        // xorshift64: a fixed sequence, so runs compare.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % USERS_AT_SCALE) as usize
    };
    group.throughput(Throughput::Elements(1));
    group.bench_function("route_direct_message_among_100k_users", |b| {
        b.iter(|| {
            let from = pick();
            let to = std::iter::repeat_with(&mut pick)
                .find(|&to| to != from)
                .expect("another user");
            let (_, sender, sender_shard) = &users[from];
            let session = SessionId(from as u64);
            let seq = cluster.shards[*sender_shard].inbox_last_seq(sender);
            if seq > acked[from] {
                acked[from] = seq;
                let ack = client_frame::Body::Ack(Ack { seq });
                let frames = cluster.deliver(*sender_shard, frame_input(session, ack));
                assert_eq!(frames, 0, "acks get no reply");
            }
            let send = send(&users[to].0, "", &payload);
            let frames = cluster.deliver(*sender_shard, frame_input(session, send));
            assert_eq!(
                frames, 2,
                "Deliver to the recipient, SendResult to the sender"
            );
        })
    });

    // 1,000 watchers of one user; each status change reaches all of them.
    let mut cluster = Cluster::new(4, CoreLimits::default());
    cluster.open(1, "star");
    for w in 0..1_000u64 {
        let user = format!("fan{w}");
        cluster.open(10 + w, &user);
        let watch = Watch {
            users: vec!["star".into()],
        };
        cluster.frame(10 + w, &user, client_frame::Body::Watch(watch));
    }
    let mut flip = false;
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("presence_fan_out_1k_watchers", |b| {
        b.iter_batched(
            || {
                flip = !flip;
                if flip {
                    Status::Away
                } else {
                    Status::Busy
                }
            },
            |status| {
                let frames = cluster.frame(
                    1,
                    "star",
                    client_frame::Body::SetStatus(SetStatus {
                        status: status as i32,
                        text: String::new(),
                    }),
                );
                assert_eq!(frames, 1_000);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
