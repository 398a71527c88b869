//! The sans-IO core on its own: routing one direct message across two
//! shards (stored in the recipient's inbox, sent, and acked by the
//! recipient), and one presence change fanned out to 1,000 watchers (one
//! encoded frame shared by every watcher).
#![allow(missing_docs)]

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use switchboard_proto::v1::{client_frame, Ack, ClientFrame, Send, SetStatus, Status, Watch};
use switchboard_router::core::placement::shard_of;
use switchboard_router::core::{
    CoreLimits, DeviceId, Now, Output, SessionId, Shard, ShardId, ShardInput, UserId,
};

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    }
}

/// Shards plus a pump that forwards between them; counts transmitted frames.
struct Cluster {
    shards: Vec<Shard>,
}

impl Cluster {
    fn new(count: u32) -> Self {
        Self {
            shards: (0..count)
                .map(|i| Shard::new(ShardId(i), count, CoreLimits::default()))
                .collect(),
        }
    }

    fn shard(&self, user: &str) -> usize {
        shard_of(&UserId::parse(user).unwrap(), self.shards.len() as u32).0 as usize
    }

    /// Delivers `input` and pumps to quiescence; returns frames transmitted.
    fn deliver(&mut self, shard: usize, input: ShardInput) -> usize {
        let mut queue = vec![(shard, input)];
        let mut transmitted = 0;
        let now = now();
        while let Some((shard, input)) = queue.pop() {
            self.shards[shard].handle(now, input);
            while let Some(output) = self.shards[shard].poll_output() {
                match output {
                    Output::Transmit { frame, .. } => {
                        black_box(frame);
                        transmitted += 1;
                    }
                    Output::Close { .. } => {}
                    Output::Forward { shard, input } => queue.push((shard.0 as usize, input)),
                }
            }
        }
        transmitted
    }

    fn open(&mut self, session: u64, user: &str) {
        let shard = self.shard(user);
        self.deliver(
            shard,
            ShardInput::Open {
                session: SessionId(session),
                user: UserId::parse(user).unwrap(),
                device: DeviceId::parse("d").unwrap(),
                initial_status: None,
                resume: None,
            },
        );
    }

    fn frame(&mut self, session: u64, user: &str, body: client_frame::Body) -> usize {
        let shard = self.shard(user);
        self.deliver(
            shard,
            ShardInput::Frame {
                session: SessionId(session),
                frame: ClientFrame {
                    r#ref: 1,
                    body: Some(body),
                },
            },
        )
    }
}

/// Two users on different shards.
fn two_shard_pair() -> (Cluster, &'static str, &'static str) {
    let cluster = Cluster::new(2);
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
    let mut cluster = Cluster::new(4);
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
