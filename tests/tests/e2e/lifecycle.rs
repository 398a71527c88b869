//! Session life cycle over real QUIC: replacement by the same device id, slow
//! consumers, and graceful shutdown with GoAway.

use std::time::Duration;

use switchboard_client::{CloseCode, Event};
use switchboard_tests::{next_close, next_event, TestServer};

#[tokio::test]
async fn same_device_id_replaces_the_old_session() {
    let server = TestServer::start().await;
    let (_old, mut old_events) = server.connect("alice", "phone").await;
    let (new, _new_events) = server.connect("alice", "phone").await;
    let code = next_close(&mut old_events).await;
    assert_eq!(code, Some(CloseCode::SessionReplaced));
    new.ping().await.expect("the new session works");
}

#[tokio::test]
async fn a_session_that_does_not_read_is_closed_as_slow_consumer() {
    let server = TestServer::start_with(|c| {
        c.limits.session_queue_frames = 4;
        c.delivery.delivery_window = 2;
        c.delivery.ack_timeout = Duration::from_millis(300);
    })
    .await;
    switchboard_tests::assert_non_reader_is_closed_as_slow_consumer(&server).await;
}

#[tokio::test]
async fn shutdown_sends_go_away_then_closes_with_going_away() {
    let server = TestServer::start().await;
    let admin = server.admin;
    let (client, mut events) = server.connect("alice", "phone").await;
    client.ping().await.unwrap();
    let shutdown = tokio::spawn(server.shutdown());
    match next_event(&mut events).await {
        Event::GoAway(go_away) => assert!(!go_away.reason.is_empty()),
        other => panic!("expected GoAway, got {other:?}"),
    }
    let (status, _) = switchboard_tests::http_get(admin, "/readyz").await;
    assert_eq!(status, 503, "not ready while draining");
    assert_eq!(next_close(&mut events).await, Some(CloseCode::GoingAway));
    // The client never left on its own: the server closed it when the
    // drain ran out, and then it was done.
    shutdown.await.unwrap().unwrap();
}

#[tokio::test]
async fn normal_close_by_the_client_is_seen_as_a_goodbye() {
    let server = TestServer::start_with(|c| c.presence.offline_grace = Duration::ZERO).await;
    let (carol, mut carol_events) = server.connect("carol", "d").await;
    let (alice, _e) = server.connect("alice", "phone").await;
    carol.watch(&["alice"]).await.unwrap();
    let _online = switchboard_tests::next_presence(&mut carol_events, "alice").await;
    alice.close().await; // CloseCode::Normal
    let offline = switchboard_tests::next_presence(&mut carol_events, "alice").await;
    assert_eq!(offline.status, switchboard_client::Status::Offline as i32);
}

#[tokio::test]
async fn a_server_on_every_address_answers_from_the_one_each_client_used() {
    let server = TestServer::start_with(|c| c.listen = "0.0.0.0:0".parse().unwrap()).await;
    // Two addresses of one host: a reply from the wrong one would be
    // dropped by the client as coming from an unknown peer.
    for (device, ip) in [("first", [127, 0, 0, 1]), ("second", [127, 0, 0, 2])] {
        let mut options = server.options("alice", device);
        options.server = std::net::SocketAddr::from((ip, server.addr.port()));
        let (client, _events, _) = server.connect_with(options).await;
        client.ping().await.expect("the session works");
    }
}
