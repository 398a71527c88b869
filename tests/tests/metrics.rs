//! The admin listener over HTTP: `/metrics` shows the expected Prometheus
//! lines after real traffic; `/livez` and `/readyz` answer.
//! (Its own test binary: it installs the global metrics recorder.)

use std::time::Duration;

use switchboard_client::{Client, ClientError};
use switchboard_tests::{http_get, next_event, TestServer};

#[tokio::test]
async fn metrics_livez_and_readyz() {
    let handle = switchboard_router::metrics::install_prometheus().expect("install recorder");
    let server = TestServer::start_full(|_| {}, Some(handle)).await;
    let (alice, _alice_events) = server.connect("alice", "phone").await;
    let (_bob, mut bob_events) = server.connect("bob", "phone").await;
    alice.send("bob", &b"hi"[..]).await.unwrap();
    next_event(&mut bob_events).await;
    alice.send("nobody", &b"hi"[..]).await.unwrap();
    let mut forged = server.options("mallory", "d");
    forged.token = switchboard_router::auth::mint_token(
        b"not-the-server-secret-but-long-enough",
        "mallory",
        Duration::from_secs(60),
    );
    assert!(matches!(
        Client::connect(forged).await,
        Err(ClientError::Closed(_))
    ));

    let (status, body) = http_get(server.admin, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "# TYPE switchboard_sessions gauge",
        "switchboard_sessions 2",
        "switchboard_online_users 2",
        "switchboard_connects_total 2",
        "switchboard_messages_routed_total 1",
        "switchboard_messages_delivered_total 1",
        "switchboard_messages_dropped_total{reason=\"recipient_offline\"} 1",
        "switchboard_auth_failures_total{reason=\"bad_signature\"} 1",
        "# TYPE switchboard_delivery_latency_seconds histogram",
        "switchboard_delivery_latency_seconds_count 1",
        "switchboard_delivery_latency_seconds_bucket{le=\"+Inf\"} 1",
        "switchboard_delivery_latency_seconds_bucket{le=\"0.0001\"}",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(line)),
            "missing {line:?} in:\n{body}"
        );
    }
    assert!(
        body.contains("switchboard_disconnects_total{reason=\"token_invalid\"} 1"),
        "{body}"
    );

    assert_eq!(http_get(server.admin, "/livez").await, (200, "ok\n".into()));
    assert_eq!(
        http_get(server.admin, "/readyz").await,
        (200, "ready\n".into())
    );
}
