//! Presence over real QUIC: a watcher sees online -> away -> offline, with
//! versions one apart and the offline grace period.

use std::time::Duration;

use switchboard_client::{ErrorCode, Status};
use switchboard_tests::{next_error, next_presence, TestServer};

#[tokio::test]
async fn watcher_sees_online_then_away_then_offline() {
    let grace = Duration::from_millis(300);
    let server = TestServer::start_with(|c| c.presence.offline_grace = grace).await;
    let (carol, mut carol_events) = server.connect("carol", "d").await;
    carol.watch(&["alice"]).await.unwrap();
    let initial = next_presence(&mut carol_events, "alice").await;
    assert_eq!(
        (initial.status, initial.version),
        (Status::Offline as i32, 0)
    );

    let (alice, _alice_events) = server.connect("alice", "phone").await;
    let online = next_presence(&mut carol_events, "alice").await;
    assert_eq!(online.status, Status::Online as i32);
    assert_eq!(online.version, 1, "coming online is alice's first change");

    alice.set_status(Status::Away, "lunch").await.unwrap();
    let away = next_presence(&mut carol_events, "alice").await;
    assert_eq!(
        (away.status, away.text.as_str()),
        (Status::Away as i32, "lunch")
    );
    assert_eq!(away.version, 2);

    let closed_at = std::time::SystemTime::now();
    alice.close().await;
    let offline = next_presence(&mut carol_events, "alice").await;
    assert_eq!(offline.status, Status::Offline as i32);
    assert_eq!(offline.version, 3);
    assert!(offline.last_seen_ms > 0);
    assert!(
        closed_at.elapsed().unwrap() >= grace,
        "offline only after the grace period"
    );
}

#[tokio::test]
async fn quick_reconnect_within_grace_does_not_flap() {
    let grace = Duration::from_secs(1);
    let server = TestServer::start_with(|c| c.presence.offline_grace = grace).await;
    let (carol, mut carol_events) = server.connect("carol", "d").await;
    let (alice, _e) = server.connect("alice", "phone").await;
    carol.watch(&["alice"]).await.unwrap();
    let online = next_presence(&mut carol_events, "alice").await;
    assert_eq!(online.status, Status::Online as i32);
    alice.close().await;
    let (alice, _e) = server.connect("alice", "phone").await;
    // Past the grace period the old session's offline would have fired;
    // then a change of alice's own. It must be the next thing carol sees:
    // an offline (and online again) in between would be the flap.
    tokio::time::sleep(grace * 2).await;
    alice.set_status(Status::Away, "").await.unwrap();
    let next = next_presence(&mut carol_events, "alice").await;
    assert_eq!(next.status, Status::Away as i32, "no flap before: {next:?}");
}

#[tokio::test]
async fn invisible_looks_offline_and_bad_requests_get_errors() {
    let server = TestServer::start_with(|c| c.limits.max_watched_users = 2).await;
    let (carol, mut carol_events) = server.connect("carol", "d").await;
    let (alice, mut alice_events) = server.connect("alice", "phone").await;
    carol.watch(&["alice"]).await.unwrap();
    let online = next_presence(&mut carol_events, "alice").await;
    assert_eq!(online.status, Status::Online as i32);
    alice.set_status(Status::Invisible, "hidden").await.unwrap();
    let hidden = next_presence(&mut carol_events, "alice").await;
    assert_eq!(
        (hidden.status, hidden.text.as_str()),
        (Status::Offline as i32, "")
    );

    carol.watch(&["b", "c"]).await.unwrap();
    let error = next_error(&mut carol_events).await;
    assert_eq!(error.code, ErrorCode::WatchLimit as i32);
    alice.set_status(Status::Offline, "").await.unwrap();
    let error = next_error(&mut alice_events).await;
    assert_eq!(error.code, ErrorCode::InvalidStatus as i32);
    alice.watch(&["bad id!"]).await.unwrap();
    let error = next_error(&mut alice_events).await;
    assert_eq!(error.code, ErrorCode::InvalidUserId as i32);
}
