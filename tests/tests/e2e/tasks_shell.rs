//! The task-per-connection shell (`shell = "tasks"`, the fallback to the default lean shell),
//! which the rest of the suite, run on the lean shell, does not use: chat, presence, a bad frame, a slow
//! consumer and shutdown, over real QUIC. (`SWITCHBOARD_TEST_SHELL=tasks
//! cargo test -p switchboard-tests` runs the whole suite on it.)

use std::time::Duration;

use switchboard_client::{CloseCode, ErrorCode, Event, Status};
use switchboard_router::config::{Config, ShellKind};
use switchboard_tests::{next_event, next_presence, raw_frame, TestServer};

async fn tasks_server(tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.shell = ShellKind::Tasks;
        tweak(c);
    })
    .await
}

#[tokio::test]
async fn chat_and_presence_work_on_the_tasks_shell() {
    let server = tasks_server(|c| c.presence.offline_grace = Duration::from_millis(100)).await;
    let (carol, mut carol_events) = server.connect("carol", "d").await;
    let (alice, _alice_events) = server.connect("alice", "phone").await;
    let (_bob, mut bob_events) = server.connect("bob", "phone").await;
    carol.watch(&["alice"]).await.unwrap();
    assert_eq!(
        next_presence(&mut carol_events, "alice").await.status,
        Status::Online as i32
    );
    let result = alice.send("bob", &b"hi"[..]).await.unwrap();
    assert_eq!((result.error, result.devices), (ErrorCode::None as i32, 1));
    match next_event(&mut bob_events).await {
        Event::Message(m) => assert_eq!(m.message.unwrap().payload.as_ref(), b"hi"),
        other => panic!("expected a message, got {other:?}"),
    }
    alice.close().await;
    assert_eq!(
        next_presence(&mut carol_events, "alice").await.status,
        Status::Offline as i32
    );
}

#[tokio::test]
async fn malformed_frame_and_slow_consumer_are_closed_on_the_tasks_shell() {
    let server = tasks_server(|c| {
        c.limits.session_queue_frames = 4;
        c.delivery.delivery_window = 2;
        c.delivery.ack_timeout = Duration::from_millis(300);
    })
    .await;
    let (client, mut events) = server.connect("mallory", "d").await;
    client.write_raw(raw_frame(&[0x0a, 0xff])).await.unwrap();
    match next_event(&mut events).await {
        Event::Closed(Some(info)) => assert_eq!(info.known, Some(CloseCode::MalformedFrame)),
        other => panic!("expected MALFORMED_FRAME, got {other:?}"),
    }

    switchboard_tests::assert_non_reader_is_closed_as_slow_consumer(&server).await;
}

#[tokio::test]
async fn shutdown_sends_go_away_on_the_tasks_shell() {
    let server = tasks_server(|_| {}).await;
    let (client, mut events) = server.connect("alice", "phone").await;
    client.ping().await.unwrap();
    let shutdown = tokio::spawn(server.shutdown());
    assert!(matches!(next_event(&mut events).await, Event::GoAway(_)));
    match next_event(&mut events).await {
        Event::Closed(Some(info)) => assert_eq!(info.known, Some(CloseCode::GoingAway)),
        other => panic!("expected GOING_AWAY, got {other:?}"),
    }
    shutdown.await.unwrap().unwrap();
}
