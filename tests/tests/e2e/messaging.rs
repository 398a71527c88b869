//! Direct messages over real QUIC: two users chat, every device receives,
//! order per sender holds, and failures come back as SendResults. Inbox
//! behaviour (offline delivery, resume, idempotency) is in `delivery.rs`.

use switchboard_client::ErrorCode;
use switchboard_tests::{next_message, TestServer};

#[tokio::test]
async fn two_users_chat() {
    let server = TestServer::start().await;
    let (alice, mut alice_events) = server.connect("alice", "phone").await;
    let (bob, mut bob_events) = server.connect("bob", "phone").await;

    let result = alice.send("bob", &b"hi bob"[..]).await.unwrap();
    assert_eq!(result.error, ErrorCode::None as i32);
    assert_eq!(result.devices, 1);
    let got = next_message(&mut bob_events).await;
    assert_eq!(
        (got.from_user.as_str(), got.payload.as_ref()),
        ("alice", &b"hi bob"[..])
    );
    assert_eq!(got.message_id, result.message_id);

    let reply = bob.send("alice", &b"hi alice"[..]).await.unwrap();
    assert_eq!(reply.error, ErrorCode::None as i32);
    let got = next_message(&mut alice_events).await;
    assert_eq!(
        (got.from_user.as_str(), got.payload.as_ref()),
        ("bob", &b"hi alice"[..])
    );
}

#[tokio::test]
async fn every_device_of_both_users_receives_in_send_order() {
    let server = TestServer::start_with(|c| c.shards = 3).await;
    let (alice_phone, _alice_phone_events) = server.connect("alice", "phone").await;
    let (_alice_laptop, mut alice_laptop_events) = server.connect("alice", "laptop").await;
    let (_bob_phone, mut bob_phone_events) = server.connect("bob", "phone").await;
    let (_bob_laptop, mut bob_laptop_events) = server.connect("bob", "laptop").await;

    for i in 0..100u32 {
        let result = alice_phone
            .send("bob", i.to_be_bytes().to_vec())
            .await
            .unwrap();
        assert_eq!((result.error, result.devices), (0, 2));
    }
    for events in [
        &mut bob_phone_events,
        &mut bob_laptop_events,
        &mut alice_laptop_events,
    ] {
        for i in 0..100u32 {
            let got = next_message(events).await;
            assert_eq!(got.payload.as_ref(), i.to_be_bytes(), "in send order");
            assert_eq!(
                (got.from_device.as_str(), got.to_user.as_str()),
                ("phone", "bob")
            );
        }
    }
}

#[tokio::test]
async fn invalid_user_and_oversize_payload_are_refused() {
    let server = TestServer::start_with(|c| c.limits.max_payload_bytes = 1_000).await;
    let (alice, _events) = server.connect("alice", "phone").await;
    let (_bob, _bob_events) = server.connect("bob", "phone").await;

    let invalid = alice.send("no spaces allowed", &b"x"[..]).await.unwrap();
    assert_eq!(invalid.error, ErrorCode::InvalidUserId as i32);
    let oversize = alice.send("bob", vec![0u8; 1_001]).await.unwrap();
    assert_eq!(oversize.error, ErrorCode::PayloadTooLarge as i32);
    let fits = alice.send("bob", vec![0u8; 1_000]).await.unwrap();
    assert_eq!(fits.error, ErrorCode::None as i32);
}
