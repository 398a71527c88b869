//! The delivery contract over real QUIC: an offline user receives on
//! connect, a device whose connection dies mid-stream resumes with no loss
//! and no duplicate, a device without a resume point continues after its
//! last ack, and a repeated client_msg_id sends nothing new.

use std::time::Duration;

use switchboard_client::{ErrorCode, ReceiptKind, Resume, Send};
use switchboard_tests::{next_counter, next_message, TestServer};

/// A message sent last: when it is the next one to arrive, nothing else
/// (a duplicate) came before it.
const MARKER: u32 = u32::MAX;

#[tokio::test]
async fn an_offline_user_receives_stored_messages_on_connect() {
    let server = TestServer::start_with(|c| c.shards = 2).await;
    let (alice, _alice_events) = server.connect("alice", "phone").await;
    for i in 0..3u32 {
        let result = alice.send("bob", i.to_be_bytes().to_vec()).await.unwrap();
        assert_eq!((result.error, result.devices), (ErrorCode::None as i32, 0));
    }
    let (_bob, mut bob_events, opened) = server.connect_with(server.options("bob", "phone")).await;
    assert_eq!((opened.resume_after, opened.last_seq), (0, 3));
    for i in 0..3u32 {
        assert_eq!(next_counter(&mut bob_events).await, (u64::from(i) + 1, i));
    }
}

#[tokio::test]
async fn a_connection_killed_mid_stream_resumes_with_no_loss_or_duplicate() {
    const TOTAL: u32 = 400;
    // Faster than a client may send by default: this is about resume.
    let server = TestServer::start_with(|c| {
        c.shards = 3;
        c.limits.session_messages_per_second = 0;
        c.limits.user_messages_per_second = 0;
    })
    .await;
    let (alice, _alice_events) = server.connect("alice", "phone").await;
    let mut options = server.options("bob", "phone");
    options.auto_ack = false;
    let (bob, mut bob_events, _) = server.connect_with(options.clone()).await;

    // Alice keeps sending while bob's connection dies under him.
    let sender = tokio::spawn(async move {
        for i in 0..TOTAL {
            let result = alice.send("bob", i.to_be_bytes().to_vec()).await.unwrap();
            assert_eq!(result.error, ErrorCode::None as i32);
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        alice
    });
    let mut processed = 0;
    let mut last_seq = 0;
    while processed < 120 {
        let (seq, counter) = next_counter(&mut bob_events).await;
        assert_eq!(counter, processed, "in order, nothing missing");
        processed += 1;
        last_seq = seq;
        if processed == 60 {
            bob.ack(seq).await.unwrap();
        }
    }
    let epoch = bob_events.position().expect("a position").epoch;
    bob.close().await; // whatever was in flight to this connection is lost

    options.resume = Some(Resume { epoch, last_seq });
    let (bob, mut bob_events, opened) = server.connect_with(options).await;
    assert_eq!(opened.resume_after, last_seq);
    assert!(!opened.epoch_changed);
    while processed < TOTAL {
        let (seq, counter) = next_counter(&mut bob_events).await;
        assert_eq!(counter, processed, "resumed in order with no duplicate");
        processed += 1;
        if processed % 50 == 0 {
            bob.ack(seq).await.unwrap(); // keep the delivery window open
        }
    }
    // Nothing more: a last message is the next thing bob gets.
    let alice = sender.await.unwrap();
    alice
        .send("bob", MARKER.to_be_bytes().to_vec())
        .await
        .unwrap();
    assert_eq!(
        next_counter(&mut bob_events).await.1,
        MARKER,
        "no duplicate"
    );
}

#[tokio::test]
async fn without_a_resume_point_delivery_continues_after_the_last_ack() {
    let server = TestServer::start().await;
    let (alice, _alice_events) = server.connect("alice", "phone").await;
    let mut options = server.options("bob", "phone");
    options.auto_ack = false;
    let (bob, mut bob_events, _) = server.connect_with(options.clone()).await;
    for i in 0..4u32 {
        alice.send("bob", i.to_be_bytes().to_vec()).await.unwrap();
    }
    for i in 0..4u32 {
        let (seq, _) = next_counter(&mut bob_events).await;
        if i == 1 {
            bob.ack(seq).await.unwrap();
        }
    }
    bob.ping().await.unwrap(); // the ack has been handled
    bob.close().await;
    let (_bob, mut bob_events, opened) = server.connect_with(options).await;
    assert_eq!(opened.resume_after, 2);
    assert_eq!(next_counter(&mut bob_events).await, (3, 2));
    assert_eq!(next_counter(&mut bob_events).await, (4, 3));
}

#[tokio::test]
async fn a_repeated_client_msg_id_is_sent_once_and_answered_twice() {
    let server = TestServer::start_with(|c| c.shards = 2).await;
    let (alice, _alice_events) = server.connect("alice", "phone").await;
    let (_bob, mut bob_events) = server.connect("bob", "phone").await;
    let first = alice
        .send_idempotent("bob", 7u32.to_be_bytes().to_vec(), "msg-1")
        .await
        .unwrap();
    // The result was "lost"; the app resends on a new session.
    alice.close().await;
    let (alice, _alice_events) = server.connect("alice", "phone").await;
    let again = alice
        .send_idempotent("bob", 7u32.to_be_bytes().to_vec(), "msg-1")
        .await
        .unwrap();
    assert_eq!(first.error, ErrorCode::None as i32);
    assert!(!first.duplicate && again.duplicate);
    assert_eq!((again.message_id, again.seq), (first.message_id, first.seq));
    assert_eq!(next_counter(&mut bob_events).await.1, 7);
    alice
        .send("bob", MARKER.to_be_bytes().to_vec())
        .await
        .unwrap();
    assert_eq!(next_counter(&mut bob_events).await.1, MARKER, "sent once");
}

#[tokio::test]
async fn a_read_receipt_travels_back_to_the_sender() {
    let server = TestServer::start_with(|c| c.shards = 2).await;
    let (alice, mut alice_events) = server.connect("alice", "phone").await;
    let (bob, mut bob_events) = server.connect("bob", "phone").await;
    let sent = alice
        .send_message(Send {
            to: "bob".into(),
            payload: b"did you read this?".to_vec().into(),
            want_receipts: true,
            ..Send::default()
        })
        .await
        .unwrap();
    let message = next_message(&mut bob_events).await;
    assert!(message.want_receipts);
    bob.receipt("alice", message.message_id, ReceiptKind::Read)
        .await
        .unwrap();
    let message = next_message(&mut alice_events).await;
    let receipt = message.receipt.expect("a receipt");
    assert_eq!(receipt.message_id, sent.message_id);
    assert_eq!(receipt.kind, ReceiptKind::Read as i32);
}
