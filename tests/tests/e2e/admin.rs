//! The admin listener cannot be held by one peer (AD-1 of the hardening
//! issue: ~20k connections sending half a request line used up the fd limit
//! and `/readyz` timed out).

use std::time::Duration;

use switchboard_tests::{http_get, TestServer, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection that has sent half a request line and nothing more.
async fn half_request(server: &TestServer) -> TcpStream {
    let mut stream = TcpStream::connect(server.admin).await.unwrap();
    stream.write_all(b"GET /metr").await.unwrap();
    stream
}

/// Waits for the server to close `stream` (end of stream or a reset);
/// returns what it sent before.
async fn closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut sent = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return sent,
            Ok(Ok(n)) => sent.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept a silent connection open"),
        }
    }
}

const LIVEZ: &[u8] = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed() {
    let server = TestServer::start_with(|config| {
        config.admin.header_timeout = Duration::from_millis(300);
    })
    .await;
    let mut stream = half_request(&server).await;
    closed(&mut stream).await;
    // Nor may a kept-alive connection idle between requests for longer.
    let mut idle = TcpStream::connect(server.admin).await.unwrap();
    idle.write_all(LIVEZ).await.unwrap();
    let answer = closed(&mut idle).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
}

#[tokio::test]
async fn past_the_connection_cap_health_checks_still_answer_and_the_rest_is_refused() {
    let server = TestServer::start_with(|config| {
        config.admin.max_connections = 4;
        config.admin.header_timeout = Duration::from_secs(60);
    })
    .await;
    // Every regular slot held by a peer that never finishes a request.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(half_request(&server).await);
    }
    // Accepts are taken in the order the connections came.
    assert_eq!(http_get(server.admin, "/livez").await, (200, "ok\n".into()));
    assert_eq!(http_get(server.admin, "/readyz").await.0, 200);
    let (status, body) = http_get(server.admin, "/metrics").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("admin.max_connections"), "{body}");
    // The health-only slots, held too: a health check ends the oldest of
    // them and is answered; the peer it evicted is closed.
    let mut health_held = Vec::new();
    for _ in 0..16 {
        health_held.push(half_request(&server).await);
    }
    assert_eq!(http_get(server.admin, "/livez").await, (200, "ok\n".into()));
    assert_eq!(
        closed(&mut health_held[0]).await,
        b"",
        "the oldest was ended"
    );
    held.extend(health_held);
    // Closing the held connections frees their slots (as the server sees
    // each end): the whole API answers again.
    held.clear();
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_get(server.admin, "/metrics").await.0 != 404 {
        assert!(tokio::time::Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/metrics` and the health checks run on a thread of their own: with
/// the router's only runtime thread stuck, they still answer (scrapes took
/// 1.9 s under overload when they shared it).
#[test]
fn the_admin_listener_answers_while_the_routing_thread_is_stuck() {
    let routing = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = routing.block_on(async {
        let server = TestServer::start().await;
        // The server is running: its admin listener answers.
        assert_eq!(http_get(server.admin, "/livez").await.0, 200);
        server
    });
    let admin = server.admin;
    let stuck = std::thread::spawn(move || {
        // Holds the router's one thread, as a saturated shard would.
        routing.block_on(async { std::thread::sleep(Duration::from_secs(3)) });
        drop(server);
    });
    let asking = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = asking.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), http_get(admin, "/livez")).await
    });
    assert_eq!(
        answer.expect("an answer while the router is stuck"),
        (200, "ok\n".into())
    );
    stuck.join().unwrap();
}
