//! Room fan-out in the sans-IO core: one message to a room of 10,000
//! members, each with an online session, over two shards. Measured: storing
//! the message in every member's inbox, encoding each member's Deliver head
//! over the shared message bytes, and queueing 10,000 frames (9,999 Delivers
//! and the SendResult). The members' acks, which keep the delivery window
//! open, run outside the timed part.
#![allow(missing_docs)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{send, Cluster};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard_core::CoreLimits;
use switchboard_proto::v1::{client_frame, Ack};

const MEMBERS: u64 = 10_000;
/// Room messages between two rounds of acks (well inside the window).
const ACK_EVERY: u64 = 100;

fn member(i: u64) -> String {
    format!("member{i}")
}

fn room_fan_out(c: &mut Criterion) {
    let mut cluster = Cluster::new(2, CoreLimits::default());
    cluster.town(&(0..MEMBERS).map(member).collect::<Vec<_>>());
    let payload = Bytes::from(vec![7u8; 80]);
    let mut sent = 0u64;
    let mut group = c.benchmark_group("rooms");
    group.throughput(Throughput::Elements(MEMBERS));
    group.bench_function("fan_out_80B_to_10k_members", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let send = send("", "town", &payload);
                let started = Instant::now();
                let frames = cluster.frame(1, &member(0), send);
                timed += started.elapsed();
                assert_eq!(frames as u64, MEMBERS, "9,999 Delivers + the SendResult");
                sent += 1;
                if sent % ACK_EVERY == 0 {
                    for i in 0..MEMBERS {
                        let ack = client_frame::Body::Ack(Ack { seq: sent });
                        assert_eq!(cluster.frame(i + 1, &member(i), ack), 0);
                    }
                }
            }
            timed
        })
    });
    group.finish();
}

criterion_group!(benches, room_fan_out);
criterion_main!(benches);
