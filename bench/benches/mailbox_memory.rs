//! Heap held per stored message, measured with dhat's counting allocator
//! (not criterion: this is bytes, not time). Prints two figures:
//!
//! * a direct message (80-byte payload) waiting in an offline user's inbox:
//!   the shared `StoredMessage` with its encoded `Message`, plus one inbox
//!   entry (the sender's copy is released at once: its only device sent it);
//! * a room message waiting for 1,000 offline members: per member, one inbox
//!   entry pointing at the one shared message.
//!
//! `cargo bench -p switchboard-bench --bench mailbox_memory` stores 100,000
//! direct and 100 room messages; under `cargo test` it stores fewer, as a
//! smoke test.
#![allow(missing_docs)]

mod common;

use bytes::Bytes;
use common::{send, Cluster};
use switchboard_core::{CoreLimits, MailboxLimits};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// Live heap bytes now.
fn live() -> isize {
    dhat::HeapStats::get().curr_bytes as isize
}

fn limits(max_messages: usize) -> CoreLimits {
    CoreLimits {
        mailbox: MailboxLimits {
            max_messages,
            max_bytes: usize::MAX,
            // One sender fills the inbox on purpose.
            sender_share_percent: 100,
            ..MailboxLimits::default()
        },
        ..CoreLimits::default()
    }
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let benching = std::env::args().any(|a| a == "--bench");
    let (direct, room_messages) = if benching { (100_000, 100) } else { (2_000, 5) };
    let payload = Bytes::from(vec![7u8; 80]);

    // Direct messages to a user who is offline: they all wait.
    let mut cluster = Cluster::new(2, limits(direct));
    cluster.open(1, "alice");
    cluster.frame(1, "alice", send("bob", "", &payload)); // warm-up
    let before = live();
    for _ in 0..direct {
        cluster.frame(1, "alice", send("bob", "", &payload));
    }
    let per_direct = (live() - before) as f64 / direct as f64;
    assert!(
        per_direct > 80.0,
        "a stored message holds at least its payload"
    );

    // Room messages to 1,000 members who are all offline.
    const MEMBERS: u64 = 1_000;
    let mut cluster = Cluster::new(2, limits(1_000));
    cluster.town(&(0..MEMBERS).map(|i| format!("m{i}")).collect::<Vec<_>>());
    // Everyone but the sender goes offline; their inboxes keep it all.
    for i in 1..MEMBERS {
        cluster.close(i + 1, &format!("m{i}"));
    }
    cluster.frame(1, "m0", send("", "town", &payload)); // warm-up
    let before = live();
    for _ in 0..room_messages {
        cluster.frame(1, "m0", send("", "town", &payload));
    }
    let per_member = (live() - before) as f64 / (room_messages as f64 * (MEMBERS - 1) as f64);

    println!("mailbox memory, 80-byte payloads, heap bytes held:");
    println!(
        "  direct message waiting in one inbox: {per_direct:.0} B per message ({direct} stored)"
    );
    println!(
        "  room message waiting for {} offline members: {per_member:.1} B per member per message ({room_messages} stored)",
        MEMBERS - 1
    );
}
