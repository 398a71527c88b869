//! Inboxes in Redis keep the in-memory inbox's rules: the same random
//! operations (messages from others and copies of the user's own sends,
//! sessions attaching with and without a resume point, acks, detaches,
//! time passing) run on a core `Mailbox` and on `InboxStore`'s Lua
//! scripts against a real `redis-server`, and every answer must agree:
//! sequence numbers, refusals by the share rule, where a device starts,
//! and what each device is sent next, Gaps and skipped own sends included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use redis::aio::MultiplexedConnection;
use switchboard_core::engine::EngineReply;
use switchboard_core::mailbox::{
    BudgetCharge, InboxBudget, Mailbox, MailboxLimits, Next, StoredMessage,
};
use switchboard_core::remote_inbox::{
    device_key, sender_key, EntryHeader, InboxWindow, WindowNext,
};
use switchboard_core::stats::MailboxStats;
use switchboard_core::{DeviceId, UserId};
use switchboard_router::engine::inbox::{self, InboxStore};
use switchboard_tests::redis::RedisServer;

/// Small limits, so that eviction, the share rule and expiry all happen.
fn limits() -> MailboxLimits {
    MailboxLimits {
        max_messages: 6,
        max_bytes: 400,
        max_age: Duration::from_secs(10),
        sender_share_percent: 50,
    }
}

const BASE_MS: u64 = 1_765_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    /// A message to the user from sender 1 or 2, or (sender 0) a copy of
    /// the user's own send from `device`.
    Append { sender: u8, device: u8, size: usize },
    /// A session of `device` opens, resuming after `resume` if given.
    Attach { device: u8, resume: Option<u64> },
    /// The device's last session closes.
    Detach { device: u8 },
    /// The device acks up to `seq`.
    Ack { device: u8, seq: u64 },
    /// Time passes.
    Wait { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 0u8..3, 1usize..160).prop_map(|(sender, device, size)| Op::Append { sender, device, size }),
        2 => (0u8..3, proptest::option::of(0u64..12)).prop_map(|(device, resume)| Op::Attach { device, resume }),
        1 => (0u8..3).prop_map(|device| Op::Detach { device }),
        2 => (0u8..3, 0u64..14).prop_map(|(device, seq)| Op::Ack { device, seq }),
        // Exact multiples of the age limit's halves hit its boundary.
        1 => prop_oneof![Just(5_000u64), Just(10_000), 1u64..7_000].prop_map(|ms| Op::Wait { ms }),
    ]
}

fn device(index: u8) -> DeviceId {
    DeviceId::parse(&format!("d{index}")).unwrap()
}

/// A drain of what `device` is sent after 0, as text.
fn drain_memory(mailbox: &Mailbox, device: &DeviceId) -> Vec<String> {
    let (mut out, mut after) = (Vec::new(), 0);
    loop {
        match mailbox.next_for(device, after) {
            Next::UpToDate => return out,
            Next::Gap { from, to } => {
                out.push(format!("gap {from}-{to}"));
                after = to;
            }
            Next::Skip(seq) => {
                out.push(format!("skip {seq}"));
                after = seq;
            }
            Next::Deliver(seq, message) => {
                out.push(format!("{seq}: {}", message_id(&message.encoded)));
                after = seq;
            }
        }
    }
}

fn drain_window(window: &InboxWindow, device: u64) -> Vec<String> {
    let (mut out, mut after) = (Vec::new(), 0);
    loop {
        match window.next_for(device, after) {
            WindowNext::UpToDate => return out,
            WindowNext::Gap { from, to } => {
                out.push(format!("gap {from}-{to}"));
                after = to;
            }
            WindowNext::Skip(seq) => {
                out.push(format!("skip {seq}"));
                after = seq;
            }
            WindowNext::Deliver(seq, _, message) => {
                out.push(format!("{seq}: {}", message_id(message)));
                after = seq;
            }
            WindowNext::Beyond(seq) => {
                out.push(format!("beyond {seq}"));
                return out;
            }
        }
    }
}

fn message_id(encoded: &[u8]) -> u64 {
    u64::from_be_bytes(encoded[..8].try_into().unwrap())
}

/// Runs one of `store`'s commands.
async fn run(
    redis: &mut MultiplexedConnection,
    store: &InboxStore,
    cmd: &redis::Cmd,
) -> redis::Value {
    store.run(redis, cmd).await.unwrap()
}

/// Runs `ops` on a fresh inbox of `user` in memory and in Redis.
async fn run_both(
    redis: &mut MultiplexedConnection,
    store: &InboxStore,
    user: &UserId,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let limits = limits();
    let budget = Arc::new(InboxBudget::unlimited());
    let stats = &mut MailboxStats::default();
    let mut memory = Mailbox::default();
    let start = Instant::now();
    let mut now_ms = BASE_MS;
    let mut next_id = 0u64;
    // Devices attached and not detached since (never expired: online).
    let mut online = std::collections::BTreeSet::new();
    for (step, op) in ops.iter().enumerate() {
        let at = start + Duration::from_millis(now_ms - BASE_MS);
        // The in-memory inbox's expiry timers fire on time.
        memory.expire(at, &limits, stats);
        match *op {
            Op::Append {
                sender,
                device: d,
                size,
            } => {
                next_id += 1;
                let own = sender == 0;
                let from = if own {
                    user.clone()
                } else {
                    UserId::parse(&format!("s{sender}")).unwrap()
                };
                let from_device = if own {
                    device(d)
                } else {
                    DeviceId::parse("x").unwrap()
                };
                let mut encoded = next_id.to_be_bytes().to_vec();
                encoded.resize(size.max(8), 0);
                let entry = EntryHeader {
                    stored_ms: now_ms,
                    own,
                    sender: sender_key(&from),
                    device: device_key(&from_device),
                }
                .encode_with(&encoded);
                let message = Arc::new(StoredMessage {
                    message_id: next_id,
                    from: from.clone(),
                    from_device,
                    room: None,
                    charge: BudgetCharge::new(&budget, encoded.len()),
                    encoded: Bytes::from(encoded),
                    accepted_at: at,
                    sent_at_ms: now_ms,
                    is_receipt: false,
                });
                // The recipient shard's share rule (messaging.rs), then
                // the append.
                let refused = !own
                    && memory.is_full_for(message.encoded.len(), &limits)
                    && memory.holds_its_share_from(&from, &limits);
                let expected = if refused {
                    EngineReply::ShareRefused
                } else {
                    let seq = memory.append(message, own, at, &limits, stats);
                    EngineReply::Appended {
                        seq,
                        first_seq: memory.first_seq(),
                        devices: online.len() as u32,
                    }
                };
                let cmd = store.append_cmd(user, &entry, own, !own, now_ms, 1);
                let got = inbox::parse_appended(run(redis, store, &cmd).await).unwrap();
                prop_assert_eq!(got, expected, "step {}: {:?}", step, op);
            }
            Op::Attach { device: d, resume } => {
                let expected = memory.attach(&device(d), resume, stats);
                online.insert(d);
                let cmd = store.attach_cmd(user, device_key(&device(d)), resume, 100, now_ms, 1);
                let got = inbox::parse_attached(run(redis, store, &cmd).await).unwrap();
                let EngineReply::Attached { after, .. } = got else {
                    panic!("attach answered {got:?}");
                };
                prop_assert_eq!(after, expected, "step {}: {:?}", step, op);
            }
            Op::Detach { device: d } => {
                memory.detach(&device(d), at);
                online.remove(&d);
                let cmd = store.detach_cmd(user, device_key(&device(d)), now_ms);
                inbox::parse_bounds(run(redis, store, &cmd).await).unwrap();
            }
            Op::Ack { device: d, seq } => {
                memory.ack(&device(d), seq, stats);
                let cmd = store.ack_cmd(user, device_key(&device(d)), seq, now_ms);
                let got = inbox::parse_bounds(run(redis, store, &cmd).await).unwrap();
                prop_assert_eq!(
                    got,
                    (memory.first_seq(), memory.last_seq()),
                    "step {}: {:?}",
                    step,
                    op
                );
            }
            Op::Wait { ms } => now_ms += ms,
        }
        // Every device's view agrees after every step (with what the
        // in-memory timers expired by now).
        let at = start + Duration::from_millis(now_ms - BASE_MS);
        memory.expire(at, &limits, stats);
        for d in 0..3 {
            let key = device_key(&device(d));
            let cmd = store.fetch_cmd(user, key, 0, 100, now_ms);
            let window = inbox::parse_window(run(redis, store, &cmd).await).unwrap();
            prop_assert_eq!(
                (window.first_seq, window.last_seq, window.acked),
                (
                    memory.first_seq(),
                    memory.last_seq(),
                    memory.device_acked(&device(d)).unwrap_or(0)
                ),
                "step {}: {:?}, device d{}",
                step,
                op,
                d
            );
            prop_assert_eq!(
                drain_window(&window, key),
                drain_memory(&memory, &device(d)),
                "step {}: {:?}, device d{}",
                step,
                op,
                d
            );
        }
    }
    Ok(())
}

#[test]
fn redis_inboxes_follow_the_in_memory_rules() {
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let redis = runtime
        .block_on(client.get_multiplexed_async_connection())
        .unwrap();
    let store = InboxStore::new("sbtest", 64, limits());
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    let cases = AtomicU64::new(0);
    runner
        .run(&proptest::collection::vec(op(), 1..60), |ops| {
            // A user of its own per case: nothing to clear in between.
            let case = cases.fetch_add(1, Ordering::Relaxed);
            let user = UserId::parse(&format!("u{case}")).unwrap();
            let mut redis = redis.clone();
            runtime.block_on(run_both(&mut redis, &store, &user, &ops))
        })
        .unwrap();
}

/// The row and entries sit in the user's bucket: one hash slot, so each
/// script touches one Redis Cluster node.
#[test]
fn an_inbox_keys_share_one_hash_tag() {
    let store = InboxStore::new("sb", 4096, limits());
    let alice = UserId::parse("alice").unwrap();
    let bucket = store.bucket_of(&alice);
    assert!(bucket < 4096);
    assert_eq!(store.rows_key(&alice), format!("sb:{{{bucket}}}:ib"));
    assert_eq!(store.list_key(&alice), format!("sb:{{{bucket}}}:il:alice"));
}
