//! The admin listener over HTTP: `/metrics` shows the expected Prometheus
//! lines (sessions, routing, inboxes, rejections) after real traffic; `/livez` and `/readyz` answer.
//! (Its own test binary: it installs the process-global metrics recorder.)
//! The `ops` module checks the alert rules and the dashboard in `ops/`
//! against the same recorder's output.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use switchboard_client::Status;
use switchboard_client::{Client, ClientError};
use switchboard_proto::frame::encode;
use switchboard_proto::v1::{client_frame::Body, ClientFrame, Ping};
use switchboard_tests::{http_get, next_event, next_presence, raw_frame, TestServer};

// In a folder of its own, so that Cargo does not build it as a test binary.
#[path = "metrics/ops.rs"]
mod ops;

/// The process-global recorder, installed once for every test here (a
/// second install fails).
fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            switchboard_router::metrics::install_prometheus().expect("install recorder")
        })
        .clone()
}

#[tokio::test]
async fn metrics_livez_and_readyz() {
    let handle = recorder();
    // No grace: a user goes offline with their last session, so a watcher
    // learns when a close has been handled.
    let server =
        TestServer::start_full(|c| c.presence.offline_grace = Duration::ZERO, Some(handle)).await;
    let (alice, mut alice_events) = server.connect("alice", "phone").await;
    let (bob, mut bob_events) = server.connect("bob", "phone").await;
    alice.send("bob", &b"hi"[..]).await.unwrap();
    // Taking the message acks it; the ping after it is answered once the
    // ack has been handled (one session's frames are handled in order).
    next_event(&mut bob_events).await;
    bob.ping().await.unwrap();
    alice.send("nobody", &b"hi"[..]).await.unwrap();
    alice.send("not valid!", &b"hi"[..]).await.unwrap();
    // An unknown frame type: rejected and counted, the session goes on.
    alice
        .write_raw(raw_frame(&[0x08, 0x05, 0x98, 0x06, 0x01]))
        .await
        .unwrap();
    next_event(&mut alice_events).await;
    // A forged token, a frame before Hello, and a clean goodbye.
    let mut forged = server.options("mallory", "d");
    forged.token = switchboard_proto::token::mint(
        b"not-the-server-secret-but-long-enough",
        "mallory",
        Duration::from_secs(60),
    );
    assert!(matches!(
        Client::connect(forged).await,
        Err(ClientError::Closed(_))
    ));
    let mut raw = server.raw().await;
    raw.write(&encode(&ClientFrame {
        r#ref: 0,
        body: Some(Body::Ping(Ping { nonce: 1 })),
    }))
    .await;
    raw.closed().await;
    let (carol, _carol_events) = server.connect("carol", "phone").await;
    alice.watch(&["carol"]).await.unwrap();
    let online = next_presence(&mut alice_events, "carol").await;
    assert_eq!(online.status, Status::Online as i32);
    carol.close().await;
    let offline = next_presence(&mut alice_events, "carol").await;
    assert_eq!(offline.status, Status::Offline as i32);

    // Everything above was seen to happen, and a shard exports what it
    // counted before anyone can see an output: the counters are final.
    let expected = [
        "# TYPE switchboard_sessions gauge",
        "switchboard_sessions 2",
        "switchboard_online_users 2",
        "switchboard_sessions_opened_total 3",
        // "nobody" is offline: the message waits in their inbox.
        "switchboard_messages_routed_total 2",
        "switchboard_messages_delivered_total 1",
        // bob's and nobody's inboxes, and alice's two copies (which need
        // no ack: her only device sent them); bob acked his.
        "switchboard_mailbox_stored_total 4",
        "switchboard_mailbox_messages 1",
        "switchboard_acks_total 1",
        "switchboard_messages_dropped_total{reason=\"invalid_recipient\"} 1",
        "switchboard_frames_rejected_total{reason=\"unknown_frame\"} 1",
        "switchboard_frames_rejected_total{reason=\"before_hello\"} 1",
        "switchboard_auth_failures_total{reason=\"bad_signature\"} 1",
        "switchboard_connections_closed_total{reason=\"token_invalid\"} 1",
        "switchboard_connections_closed_total{reason=\"protocol_violation\"} 1",
        "switchboard_connections_closed_total{reason=\"peer_closed\"} 1",
        "# TYPE switchboard_delivery_latency_seconds histogram",
        "switchboard_delivery_latency_seconds_count 1",
        "switchboard_delivery_latency_seconds_bucket{le=\"+Inf\"} 1",
        "switchboard_presence_events_sent_total 2",
        // alice was written carol's snapshot and her going offline.
        "# TYPE switchboard_presence_latency_seconds histogram",
        "switchboard_presence_latency_seconds_count 2",
        "# TYPE switchboard_handshake_duration_seconds histogram",
        "# TYPE switchboard_shard_queue_depth gauge",
        "# TYPE switchboard_outbox_bytes gauge",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_open_fds gauge",
        "# TYPE process_start_time_seconds gauge",
        // Series that nothing in this test touched exist at 0 from the start.
        "switchboard_auth_failures_total{reason=\"expired\"} 0",
        "switchboard_connections_closed_total{reason=\"idle_timeout\"} 0",
        "switchboard_api_requests_total{outcome=\"ROOM_FULL\"} 0",
        concat!(
            "switchboard_build_info{version=\"",
            env!("CARGO_PKG_VERSION"),
            "\"} 1"
        ),
    ];
    let (status, body) = http_get(server.admin, "/metrics").await;
    assert_eq!(status, 200);
    for line in expected {
        assert!(
            body.lines().any(|l| l == line),
            "missing line {line:?} in:\n{body}"
        );
    }
    for bucket in ["0.00005", "10"] {
        let line = format!("switchboard_delivery_latency_seconds_bucket{{le=\"{bucket}\"}} ");
        assert!(
            body.lines().any(|l| l.starts_with(&line)),
            "buckets from 50 us to 10 s:\n{body}"
        );
    }
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in:\n{body}"))
    };
    // Every connection whose handshake completed was timed.
    assert_eq!(
        value("switchboard_handshake_duration_seconds_count"),
        value("switchboard_connections_accepted_total")
    );
    assert!(value("switchboard_handshake_duration_seconds_count") >= 5.0);
    // Accepted minus closed is what is open: alice's and bob's.
    let closed: f64 = body
        .lines()
        .filter_map(|l| l.strip_prefix("switchboard_connections_closed_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        value("switchboard_connections_accepted_total") - closed,
        2.0
    );
    assert!(
        body.lines()
            .any(|l| l.starts_with("switchboard_shard_queue_depth{shard=\"0\"} ")),
        "a queue depth per shard:\n{body}"
    );
    let rss: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.parse().ok())
        .expect("process_resident_memory_bytes");
    assert!(rss > 1e6, "this process holds more than a megabyte: {rss}");

    assert_eq!(http_get(server.admin, "/livez").await, (200, "ok\n".into()));
    assert_eq!(
        http_get(server.admin, "/readyz").await,
        (200, "ready\n".into())
    );
}
