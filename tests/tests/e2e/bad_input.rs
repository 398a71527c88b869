//! Bad input over real QUIC: every malformed frame, protocol violation and bad
//! token gets its documented close code or error frame, and the server keeps
//! serving others.

use std::time::Duration;

use switchboard_client::{Client, ClientError, CloseCode, ErrorCode, Event};
use switchboard_proto::frame::encode;
use switchboard_proto::v1::{client_frame::Body, ClientFrame, Hello, Ping};
use switchboard_tests::{next_event, raw_frame, TestServer, SECRET};

fn hello(token: String, device: &str) -> ClientFrame {
    ClientFrame {
        r#ref: 0,
        body: Some(Body::Hello(Hello {
            token,
            device_id: device.into(),
            ..Default::default()
        })),
    }
}

async fn refused_with(server: &TestServer, token: String) -> CloseCode {
    let mut options = server.options("alice", "phone");
    options.token = token;
    match Client::connect(options).await {
        Err(ClientError::Closed(info)) => info.known.expect("a documented close code"),
        other => panic!("expected the server to close, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_tokens_get_token_invalid_or_expired() {
    let server = TestServer::start().await;
    assert_eq!(
        refused_with(&server, String::new()).await,
        CloseCode::TokenInvalid,
        "missing"
    );
    assert_eq!(
        refused_with(&server, "garbage".into()).await,
        CloseCode::TokenInvalid,
        "malformed"
    );
    let forged = switchboard_proto::token::mint(
        b"some-other-secret-that-is-long-enough",
        "alice",
        Duration::from_secs(60),
    );
    assert_eq!(
        refused_with(&server, forged).await,
        CloseCode::TokenInvalid,
        "forged"
    );
    let bad_subject = switchboard_proto::token::mint(SECRET, "not valid!", Duration::from_secs(60));
    assert_eq!(
        refused_with(&server, bad_subject).await,
        CloseCode::TokenInvalid,
        "bad sub"
    );
    let expired = switchboard_proto::token::mint_expiring(SECRET, "alice", 1_000_000, None);
    assert_eq!(
        refused_with(&server, expired).await,
        CloseCode::TokenExpired,
        "expired"
    );
    // The server still serves valid sessions.
    let (client, _events) = server.connect("alice", "phone").await;
    client.ping().await.unwrap();
}

#[tokio::test]
async fn silence_gets_auth_timeout() {
    let server = TestServer::start_with(|c| c.auth.timeout = Duration::from_millis(300)).await;
    let raw = server.raw().await;
    let (code, _) = raw.closed().await;
    assert_eq!(code, Some(CloseCode::AuthTimeout));
}

#[tokio::test]
async fn frame_before_hello_is_a_protocol_violation() {
    let server = TestServer::start().await;
    let mut raw = server.raw().await;
    let ping = ClientFrame {
        r#ref: 1,
        body: Some(Body::Ping(Ping { nonce: 1 })),
    };
    raw.write(&encode(&ping)).await;
    assert_eq!(raw.closed().await.0, Some(CloseCode::ProtocolViolation));
}

#[tokio::test]
async fn invalid_device_id_is_a_protocol_violation() {
    let server = TestServer::start().await;
    let mut raw = server.raw().await;
    raw.write(&encode(&hello(server.token("alice"), "bad device id")))
        .await;
    assert_eq!(raw.closed().await.0, Some(CloseCode::ProtocolViolation));
}

#[tokio::test]
async fn second_hello_is_a_protocol_violation() {
    let server = TestServer::start().await;
    let (client, mut events) = server.connect("alice", "phone").await;
    client
        .write_raw(encode(&hello(server.token("alice"), "phone")))
        .await
        .unwrap();
    match next_event(&mut events).await {
        Event::Closed(Some(info)) => assert_eq!(info.known, Some(CloseCode::ProtocolViolation)),
        other => panic!("expected PROTOCOL_VIOLATION, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_bytes_are_a_malformed_frame() {
    let server = TestServer::start().await;
    let mut raw = server.raw().await;
    raw.write(&raw_frame(&[0xff, 0xff, 0xff, 0xff])).await;
    assert_eq!(raw.closed().await.0, Some(CloseCode::MalformedFrame));

    // Also after a valid Hello.
    let (client, mut events) = server.connect("alice", "phone").await;
    client.write_raw(raw_frame(&[0x0a, 0xff])).await.unwrap();
    match next_event(&mut events).await {
        Event::Closed(Some(info)) => assert_eq!(info.known, Some(CloseCode::MalformedFrame)),
        other => panic!("expected MALFORMED_FRAME, got {other:?}"),
    }
}

#[tokio::test]
async fn oversize_frame_is_refused_before_it_is_buffered() {
    let server = TestServer::start_with(|c| c.limits.max_frame_bytes = 4_096).await;
    let mut raw = server.raw().await;
    // Announce 10 MB but send only the prefix: the server must not wait for it.
    raw.write(&10_000_000u32.to_be_bytes()).await;
    assert_eq!(raw.closed().await.0, Some(CloseCode::FrameTooLarge));
}

#[tokio::test]
async fn unknown_frame_type_gets_an_error_and_the_session_goes_on() {
    let server = TestServer::start().await;
    let (client, mut events) = server.connect("alice", "phone").await;
    // ClientFrame { ref: 5, field 99 (unknown): varint 1 }
    client
        .write_raw(raw_frame(&[0x08, 0x05, 0x98, 0x06, 0x01]))
        .await
        .unwrap();
    match next_event(&mut events).await {
        Event::Error(e) => assert_eq!((e.code, e.r#ref), (ErrorCode::UnknownFrame as i32, 5)),
        other => panic!("expected UNKNOWN_FRAME, got {other:?}"),
    }
    client.ping().await.expect("session still works");
}

#[tokio::test]
async fn oversize_frame_after_hello_and_oversize_hello_are_refused() {
    let server = TestServer::start_with(|c| c.limits.max_frame_bytes = 16_384).await;
    let (client, mut events) = server.connect("alice", "phone").await;
    client
        .write_raw(bytes::Bytes::from(20_000u32.to_be_bytes().to_vec()))
        .await
        .unwrap();
    match next_event(&mut events).await {
        Event::Closed(Some(info)) => assert_eq!(info.known, Some(CloseCode::FrameTooLarge)),
        other => panic!("expected FRAME_TOO_LARGE, got {other:?}"),
    }
    // Before authentication the cap is 8 KiB (max_frame_bytes is larger
    // here; the driver tests cover a smaller one).
    let mut raw = server.raw().await;
    raw.write(&encode(&hello("x".repeat(9_000), "phone"))).await;
    assert_eq!(raw.closed().await.0, Some(CloseCode::FrameTooLarge));
}

#[tokio::test]
async fn pipelined_requests_are_not_mistaken_for_a_slow_consumer() {
    use switchboard_proto::frame::FrameDecoder;
    use switchboard_proto::v1::{server_frame, ServerFrame};
    let server = TestServer::start_with(|c| {
        c.limits.session_queue_frames = 16;
        c.delivery.delivery_window = 8;
    })
    .await;
    let mut raw = server.raw().await;
    let mut burst = encode(&hello(server.token("alice"), "phone")).to_vec();
    for nonce in 0..2_000u64 {
        burst.extend_from_slice(&encode(&ClientFrame {
            r#ref: 0,
            body: Some(Body::Ping(Ping { nonce })),
        }));
    }
    raw.write(&burst).await;
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut pongs = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while pongs < 2_000 {
        let chunk = tokio::time::timeout_at(deadline, raw.recv.read_chunk(65_536, true))
            .await
            .expect("all pongs in time")
            .expect("stream open")
            .expect("not finished");
        decoder.extend(&chunk.bytes);
        while let Some(frame) = decoder.decode::<ServerFrame>().unwrap() {
            if let Some(server_frame::Body::Pong(pong)) = frame.body {
                assert_eq!(pong.nonce, pongs, "pongs in order");
                pongs += 1;
            }
        }
    }
    assert!(raw.connection.close_reason().is_none(), "still open");
}
