//! The router on the Redis engine (`engine = "redis"`), over real QUIC and
//! a real `redis-server`: inboxes of direct messages outlive the router,
//! a device resumes from its ack point under the same epoch with nothing
//! acknowledged lost and nothing twice, and a Redis that cannot be reached
//! gives a retryable refusal, never a silent drop.

use std::time::Duration;

use switchboard_client::{ErrorCode, Resume};
use switchboard_router::config::{Config, EngineKind};
use switchboard_tests::redis::RedisServer;
use switchboard_tests::{next_counter, TestServer};

fn on_redis(redis: &RedisServer) -> impl FnOnce(&mut Config) + '_ {
    move |config| {
        config.shards = 2;
        config.engine = EngineKind::Redis;
        config.redis.urls = vec![redis.url()];
        config.redis.buckets = 64;
        config.redis.command_timeout = Duration::from_millis(300);
        config.redis.connect_timeout = Duration::from_millis(300);
    }
}

#[tokio::test]
async fn inboxes_outlive_the_router_and_resume_from_the_ack_point() {
    let redis = RedisServer::start();
    let server = TestServer::start_with(on_redis(&redis)).await;
    let mut options = server.options("bob", "phone");
    options.auto_ack = false;
    let (bob, mut bob_events, opened) = server.connect_with(options).await;
    let epoch = opened.epoch;
    let (alice, _alice_events) = server.connect("alice", "phone").await;
    let mut old_ids = std::collections::BTreeSet::new();
    for i in 0..5u32 {
        let result = alice.send("bob", i.to_be_bytes().to_vec()).await.unwrap();
        assert_eq!(result.error, ErrorCode::None as i32, "{result:?}");
        assert_eq!(result.devices, 1, "bob's phone is attached");
        old_ids.insert(result.message_id);
    }
    for i in 0..5u32 {
        assert_eq!(next_counter(&mut bob_events).await, (u64::from(i) + 1, i));
    }
    bob.ack(2).await.unwrap();
    bob.close().await;
    // Acknowledged while bob is away.
    for i in 5..8u32 {
        let result = alice.send("bob", i.to_be_bytes().to_vec()).await.unwrap();
        assert_eq!((result.error, result.devices), (ErrorCode::None as i32, 0));
    }
    drop(alice);
    // The router goes (its task aborted, as a crash would end it) and a new
    // one starts on the same Redis, with nothing in memory.
    drop(server);
    let server = TestServer::start_with(on_redis(&redis)).await;
    let mut options = server.options("bob", "phone");
    options.resume = Some(Resume { epoch, last_seq: 2 });
    let (_bob, mut bob_events, opened) = server.connect_with(options).await;
    assert_eq!(opened.epoch, epoch, "the epoch is kept in Redis");
    assert!(!opened.epoch_changed);
    assert_eq!((opened.resume_after, opened.last_seq), (2, 8));
    for i in 2..8u32 {
        assert_eq!(
            next_counter(&mut bob_events).await,
            (u64::from(i) + 1, i),
            "in order, nothing lost, nothing twice"
        );
    }
    // A message of the new run: its id is not one of the old run's.
    let (alice, _alice_events) = server.connect("alice", "phone").await;
    let result = alice
        .send("bob", 8u32.to_be_bytes().to_vec())
        .await
        .unwrap();
    assert!(
        !old_ids.contains(&result.message_id),
        "id {} repeats one of the first run's",
        result.message_id
    );
}

#[tokio::test]
async fn a_redis_that_cannot_be_reached_refuses_sends_with_a_retry_hint() {
    let mut redis = RedisServer::start();
    let server = TestServer::start_with(on_redis(&redis)).await;
    let (alice, _alice_events) = server.connect("alice", "phone").await;
    let result = alice.send("bob", b"stored".to_vec()).await.unwrap();
    assert_eq!(result.error, ErrorCode::None as i32);
    redis.kill();
    let result = alice.send("bob", b"refused".to_vec()).await.unwrap();
    assert_eq!(result.error, ErrorCode::ServerBusy as i32, "{result:?}");
    assert!(result.retry_after_ms > 0);
    // Redis comes back (empty: this one keeps nothing on disk); the node
    // reconnects by itself and stores again.
    redis.restart();
    let mut stored = false;
    for _ in 0..50 {
        let result = alice.send("bob", b"again".to_vec()).await.unwrap();
        if result.error == ErrorCode::None as i32 {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored, "the node never stored again after Redis came back");
}

#[tokio::test]
async fn room_messages_reach_members_through_redis_in_one_order() {
    let redis = RedisServer::start();
    let server = TestServer::start_with(on_redis(&redis)).await;
    let (alice, _alice_events) = server.connect("alice", "phone").await;
    let (bob, mut bob_events) = server.connect("bob", "phone").await;
    let (carol, mut carol_events) = server.connect("carol", "phone").await;
    assert_eq!(alice.create_room("r", true).await.unwrap().error, 0);
    assert_eq!(bob.join_room("r", "").await.unwrap().error, 0);
    assert_eq!(carol.join_room("r", "").await.unwrap().error, 0);
    for i in 0..4u32 {
        let sender = if i % 2 == 0 { &alice } else { &bob };
        let result = sender
            .send_to_room("r", i.to_be_bytes().to_vec(), "")
            .await
            .unwrap();
        assert_eq!(result.error, ErrorCode::None as i32, "{result:?}");
    }
    let mut carol_order = Vec::new();
    for _ in 0..4 {
        carol_order.push(next_counter(&mut carol_events).await.1);
    }
    assert_eq!(carol_order, [0, 1, 2, 3], "the room's one order");
    let mut bob_order = Vec::new();
    for _ in 0..2 {
        bob_order.push(next_counter(&mut bob_events).await.1);
    }
    assert_eq!(bob_order, [0, 2], "alice's, not his own");
}

#[tokio::test]
async fn two_nodes_on_one_redis_chat_and_a_device_moves_between_them() {
    let redis = RedisServer::start();
    let node_a = TestServer::start_with(on_redis(&redis)).await;
    let node_b = TestServer::start_with(on_redis(&redis)).await;
    let (alice, mut alice_events) = node_a.connect("alice", "phone").await;
    let mut options = node_b.options("bob", "phone");
    options.auto_ack = false;
    let (bob, mut bob_events, opened) = node_b.connect_with(options).await;
    let epoch = opened.epoch;
    for i in 0..3u32 {
        let result = alice.send("bob", i.to_be_bytes().to_vec()).await.unwrap();
        assert_eq!(result.error, ErrorCode::None as i32, "{result:?}");
        assert_eq!(result.devices, 1, "bob's phone, on the other node");
    }
    for i in 0..3u32 {
        assert_eq!(
            next_counter(&mut bob_events).await,
            (u64::from(i) + 1, i),
            "across nodes, in order"
        );
    }
    let reply = bob
        .send("alice", 100u32.to_be_bytes().to_vec())
        .await
        .unwrap();
    assert_eq!(reply.error, ErrorCode::None as i32);
    assert_eq!(next_counter(&mut alice_events).await.1, 100, "and back");
    bob.ack(1).await.unwrap();
    bob.close().await;
    // Bob moves to node A and resumes from his ack point.
    let mut options = node_a.options("bob", "phone");
    options.resume = Some(Resume { epoch, last_seq: 1 });
    let (_bob, mut bob_events, opened) = node_a.connect_with(options).await;
    assert_eq!((opened.epoch, opened.resume_after), (epoch, 1));
    for i in 1..3u32 {
        assert_eq!(next_counter(&mut bob_events).await, (u64::from(i) + 1, i));
    }
    // His own send to alice is in his inbox, not sent to the sending device.
    let result = alice
        .send("bob", 3u32.to_be_bytes().to_vec())
        .await
        .unwrap();
    assert_eq!(result.error, ErrorCode::None as i32);
    assert_eq!(
        next_counter(&mut bob_events).await,
        (5, 3),
        "seq 4 is his own send"
    );
}
