//! What one client can take, over real QUIC: a session over its message
//! rate, a user spraying never-seen ids, and a node whose inbox memory is
//! spent each get their documented refusal with a retry hint, and the
//! session keeps working after it.

use std::time::Duration;

use switchboard_client::ErrorCode;
use switchboard_tests::TestServer;

fn code(error: i32) -> ErrorCode {
    ErrorCode::try_from(error).expect("a known error code")
}

#[tokio::test]
async fn a_session_over_its_rate_is_refused_with_a_retry_hint_then_served() {
    let server = TestServer::start_with(|c| {
        c.limits.session_messages_per_second = 5;
        c.limits.session_message_burst = 5;
    })
    .await;
    let (alice, _events) = server.connect("alice", "phone").await;
    let mut results = Vec::new();
    for i in 0..6 {
        results.push(alice.send("bob", format!("m{i}")).await.unwrap());
    }
    assert!(results[..5]
        .iter()
        .all(|r| code(r.error) == ErrorCode::None));
    let refused = &results[5];
    assert_eq!(code(refused.error), ErrorCode::RateLimited);
    assert!(
        (1..=200).contains(&refused.retry_after_ms),
        "one token comes back every 200 ms: {}",
        refused.retry_after_ms
    );
    assert_eq!(refused.message_id, 0, "nothing was sent");
    tokio::time::sleep(Duration::from_millis(refused.retry_after_ms.into())).await;
    let again = alice.send("bob", "after the wait").await.unwrap();
    assert_eq!(code(again.error), ErrorCode::None);
}

#[tokio::test]
async fn spraying_never_seen_ids_stops_at_the_new_recipient_limit() {
    // one session sending to ever new user ids.
    let server = TestServer::start_with(|c| c.limits.new_recipients_per_minute = 100).await;
    let (alice, _events) = server.connect("alice", "phone").await;
    let mut first_refused = None;
    for i in 0..120 {
        let result = alice.send(&format!("ghost{i}"), "hi").await.unwrap();
        if code(result.error) != ErrorCode::None {
            assert_eq!(code(result.error), ErrorCode::RateLimited);
            assert!((1..=60_000).contains(&result.retry_after_ms));
            first_refused = Some(i);
            break;
        }
    }
    assert_eq!(first_refused, Some(100));
    // Someone she already wrote to this minute is no new recipient.
    let known = alice.send("ghost7", "still fine").await.unwrap();
    assert_eq!(code(known.error), ErrorCode::None);
}

#[tokio::test]
async fn a_spent_inbox_budget_refuses_new_messages_as_server_busy() {
    // 1 MiB for the node's inboxes: sixteen 64 KiB messages to offline
    // users spend it.
    let server = TestServer::start_with(|c| c.limits.inbox_memory_mib = 1).await;
    let (alice, _events) = server.connect("alice", "phone").await;
    let payload = vec![b'x'; 60_000];
    let mut busy = None;
    for i in 0..40 {
        let result = alice.send(&format!("offline{i}"), payload.clone()).await;
        let result = result.unwrap();
        if code(result.error) != ErrorCode::None {
            busy = Some(result);
            break;
        }
    }
    let busy = busy.expect("the budget was spent");
    assert_eq!(code(busy.error), ErrorCode::ServerBusy);
    assert_eq!(busy.retry_after_ms, 5_000);
    // What was stored before is kept and delivered, not dropped.
    let (_bob, mut events) = server.connect("offline0", "phone").await;
    let message = switchboard_tests::next_message(&mut events).await;
    assert_eq!(message.payload.len(), payload.len());
}

#[tokio::test]
async fn a_device_reconnecting_in_a_loop_is_closed_with_the_wait() {
    let server = TestServer::start_with(|c| c.limits.device_connects_per_minute = 3).await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(server.connect("alice", "phone").await);
    }
    let (_client, mut events) =
        switchboard_client::Client::connect(server.options("alice", "phone"))
            .await
            .expect("the handshake and Welcome");
    let info = loop {
        match switchboard_tests::next_event(&mut events).await {
            switchboard_client::Event::Closed(Some(info)) => break info,
            switchboard_client::Event::Closed(None) => panic!("closed without a code"),
            _ => continue,
        }
    };
    assert_eq!(
        info.known,
        Some(switchboard_client::CloseCode::ReconnectingTooFast)
    );
    let wait: u64 = info
        .reason
        .strip_prefix("retry_after_ms=")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("reason {:?}", info.reason));
    assert!((1..=20_000).contains(&wait), "one connect a 20 s: {wait}");
    // Her laptop is not held back by the phone.
    let (laptop, _laptop_events) = server.connect("alice", "laptop").await;
    assert_eq!(
        code(laptop.send("bob", "hi").await.unwrap().error),
        ErrorCode::None
    );
}
