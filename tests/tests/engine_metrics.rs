//! The Redis engine as an operator sees it: its requests, pipeline latency
//! and heartbeat age in `/metrics`, its errors counted by kind when Redis
//! goes, and `/readyz` answering 503 while Redis does not answer and 200
//! again once it is back. (Its own test binary: it installs the
//! process-global metrics recorder, and checks counts no other test may
//! move.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard_client::ErrorCode;
use switchboard_router::config::EngineKind;
use switchboard_tests::redis::RedisServer;
use switchboard_tests::{http_get, TestServer};

/// Polls `/readyz` until it answers `status`; panics after `within`.
async fn readyz_becomes(admin: SocketAddr, status: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (got, body) = http_get(admin, "/readyz").await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {got} ({body:?}), expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the series `line_start` in `/metrics`.
async fn value(admin: SocketAddr, line_start: &str) -> f64 {
    let (status, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|line| line.strip_prefix(line_start))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start:?} in:\n{body}"))
}

#[tokio::test]
async fn the_redis_engine_is_measured_and_readyz_follows_redis() {
    let handle = switchboard_router::metrics::install_prometheus().expect("install recorder");
    let mut redis = RedisServer::start_persistent();
    let url = redis.url();
    let server = TestServer::start_full(
        move |c| {
            c.engine = EngineKind::Redis;
            c.redis.urls = vec![url];
            c.redis.buckets = 64;
            c.redis.heartbeat_interval = Duration::from_millis(100);
            c.redis.node_timeout = Duration::from_secs(1);
            c.redis.command_timeout = Duration::from_millis(200);
            c.redis.connect_timeout = Duration::from_millis(200);
        },
        Some(handle),
    )
    .await;
    let admin = server.admin;
    assert_eq!(
        readyz_becomes(admin, 200, Duration::from_secs(5)).await,
        "ready\n"
    );
    let (alice, _alice_events) = server.connect("alice", "phone").await;
    let result = alice.send("bob", b"stored".to_vec()).await.unwrap();
    assert_eq!(result.error, ErrorCode::None as i32);
    assert_eq!(
        value(admin, "switchboard_engine_requests_total{op=\"deliver\"} ").await,
        1.0
    );
    assert_eq!(
        value(admin, "switchboard_engine_requests_total{op=\"attach\"} ").await,
        1.0
    );
    assert!(value(admin, "switchboard_engine_latency_seconds_count ").await >= 2.0);
    assert!(value(admin, "switchboard_engine_heartbeat_age_seconds ").await < 1.0);
    assert_eq!(
        value(
            admin,
            "switchboard_engine_errors_total{kind=\"connection\"} "
        )
        .await
            + value(admin, "switchboard_engine_errors_total{kind=\"timeout\"} ").await,
        0.0
    );

    redis.kill();
    let result = alice.send("bob", b"refused".to_vec()).await.unwrap();
    assert_eq!(result.error, ErrorCode::ServerBusy as i32);
    let errors = value(
        admin,
        "switchboard_engine_errors_total{kind=\"connection\"} ",
    )
    .await
        + value(admin, "switchboard_engine_errors_total{kind=\"timeout\"} ").await;
    assert!(errors >= 1.0, "the failed send is counted");
    assert_eq!(
        readyz_becomes(admin, 503, Duration::from_secs(5)).await,
        "redis unreachable\n"
    );

    // Redis comes back with its data (a Redis that lost it fences every
    // node: /readyz says so, and the node must be restarted).
    redis.restart();
    readyz_becomes(admin, 200, Duration::from_secs(10)).await;
    let result = alice.send("bob", b"again".to_vec()).await.unwrap();
    assert_eq!(result.error, ErrorCode::None as i32);
    assert_eq!(result.seq, 2, "alice's copies went on from where they were");
}
