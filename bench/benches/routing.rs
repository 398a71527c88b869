//! The sans-IO core on its own: routing one direct message across two
//! shards (stored in the recipient's inbox, sent, and acked by the
//! recipient), and one presence change fanned out to 1,000 watchers (one
//! encoded frame shared by every watcher).
#![allow(missing_docs)]

mod common;

use bytes::Bytes;
use common::Cluster;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use switchboard_proto::v1::{client_frame, Ack, Send, SetStatus, Status, Watch};
use switchboard_router::core::CoreLimits;

/// Two users on different shards.
fn two_shard_pair() -> (Cluster, &'static str, &'static str) {
    let cluster = Cluster::new(2, CoreLimits::default());
    let users = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let a = users[0];
    let b = users
        .iter()
        .find(|u| cluster.shard(u) != cluster.shard(a))
        .expect("users spread over 2 shards");
    (cluster, a, b)
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("core");
    let (mut cluster, alice, bob) = two_shard_pair();
    cluster.open(1, alice);
    cluster.open(2, bob);
    let payload = Bytes::from(vec![7u8; 80]);
    group.throughput(Throughput::Elements(1));
    let mut bob_seq = 0;
    group.bench_function("route_direct_message_across_shards", |b| {
        b.iter(|| {
            let frames = cluster.frame(
                1,
                alice,
                client_frame::Body::Send(Send {
                    to: bob.into(),
                    payload: payload.clone(),
                    ..Send::default()
                }),
            );
            assert_eq!(frames, 2); // Deliver to bob + SendResult to alice
            bob_seq += 1;
            let acked = cluster.frame(2, bob, client_frame::Body::Ack(Ack { seq: bob_seq }));
            assert_eq!(acked, 0);
        })
    });

    // 1,000 watchers of one user; each status change reaches all of them.
    let mut cluster = Cluster::new(4, CoreLimits::default());
    cluster.open(1, "star");
    for w in 0..1_000u64 {
        let user = format!("fan{w}");
        cluster.open(10 + w, &user);
        cluster.frame(
            10 + w,
            &user,
            client_frame::Body::Watch(Watch {
                users: vec!["star".into()],
            }),
        );
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
