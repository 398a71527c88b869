//! A-1 of the hardening issue: a flood of QUIC Initials that are never
//! answered. Above `limits.retry_above_handshakes` handshakes in progress
//! the router answers with a stateless Retry, and above
//! `limits.max_handshakes` it refuses, so the flood leaves next to no
//! state: sessions already open keep working, a real client still gets in,
//! and the process's memory grows by far less than the flood would cost
//! with a connection kept per Initial.
//!
//! It is a test binary of its own: memory is read for the whole process,
//! which must hold nothing but this router and this test.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_client::{quic_config, Trust};
use switchboard_tests::{next_event, TestServer};
use tokio::net::UdpSocket;

/// Initials in the flood, and sockets they come from.
const INITIALS: usize = 3_000;
const SOURCES: usize = 50;
/// What one handshake in progress costs the router (measured, A-1).
const HANDSHAKE_BYTES: usize = 26 * 1024;

/// Resident memory of this process (the router runs in it), bytes.
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("procfs");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// `count` distinct client Initials (one per connection attempt), as a real
/// QUIC client sends them, caught on a socket that never answers.
async fn initials(count: usize, fingerprint: [u8; 32]) -> Vec<Vec<u8>> {
    let tap = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tap_addr = tap.local_addr().unwrap();
    let config = quic_config(&Trust::Fingerprint(fingerprint), Duration::from_secs(5)).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    let mut attempts = Vec::with_capacity(count);
    let mut seen = HashSet::new();
    let mut caught = Vec::with_capacity(count);
    let mut buf = vec![0u8; 2048];
    while caught.len() < count {
        attempts.push(endpoint.connect(tap_addr, "localhost").unwrap());
        let (len, _) = tap.recv_from(&mut buf).await.unwrap();
        // A long header: byte 5 is the DCID length, the DCID follows.
        let dcid = buf[6..6 + usize::from(buf[5])].to_vec();
        if seen.insert(dcid) {
            caught.push(buf[..len].to_vec());
        }
    }
    drop(attempts);
    endpoint.close(0u32.into(), b"");
    caught
}

#[tokio::test]
async fn an_initial_flood_leaves_no_state_and_sessions_keep_working() {
    let server = TestServer::start_with(|c| {
        c.limits.retry_above_handshakes = 64;
        c.limits.max_handshakes = 128;
    })
    .await;
    let (alice, _alice_events) = server.connect("alice", "phone").await;
    let (_bob, mut bob_events) = server.connect("bob", "phone").await;
    let flood = initials(INITIALS, server.fingerprint).await;

    let before = rss_bytes();
    let mut sockets = Vec::new();
    for _ in 0..SOURCES {
        sockets.push(Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()));
    }
    let target: SocketAddr = server.addr;
    for (i, initial) in flood.iter().enumerate() {
        sockets[i % SOURCES].send_to(initial, target).await.unwrap();
        if i % 200 == 199 {
            tokio::task::yield_now().await;
        }
    }
    // The router answers every Initial; let it work through the flood.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss_bytes().saturating_sub(before);
    eprintln!("RSS grew {} KiB under {INITIALS} Initials", grown / 1024);

    // A session opened before the flood still chats...
    let sent = alice.send("bob", "still here").await.unwrap();
    assert_eq!(sent.error, 0);
    let got = next_event(&mut bob_events).await;
    assert!(format!("{got:?}").contains("still here"), "{got:?}");
    // ... and a new client gets in (after a Retry, which quinn answers).
    let (carol, _carol_events) = server.connect("carol", "phone").await;
    assert_eq!(carol.send("alice", "hi").await.unwrap().error, 0);

    // One connection kept per Initial would cost INITIALS × 26 KiB (75 MiB);
    // at most `max_handshakes` are kept, and the rest got a stateless Retry
    // or a refusal.
    let bound = 128 * HANDSHAKE_BYTES + 16 * 1024 * 1024;
    assert!(
        grown < bound,
        "memory grew {} KiB under the flood (bound {} KiB)",
        grown / 1024,
        bound / 1024
    );
}
