//! Bad input over real QUIC: every malformed frame, protocol violation and bad
//! token gets its documented close code or error frame, and the server keeps
//! serving others.

use std::time::Duration;

use switchboard_client::{Client, ClientError, CloseCode, ErrorCode};
use switchboard_proto::frame::encode;
use switchboard_proto::token::{mint, mint_expiring};
use switchboard_proto::v1::{client_frame::Body, ClientFrame, Ping};
use switchboard_tests::{hello_frame, next_close, next_error, raw_frame, TestServer, SECRET};

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
    let minute = Duration::from_secs(60);
    let forged = mint(b"some-other-secret-that-is-long-enough", "alice", minute);
    let expired = mint_expiring(SECRET, "alice", 1_000_000, None);
    let cases = [
        ("missing", String::new(), CloseCode::TokenInvalid),
        ("malformed", "garbage".into(), CloseCode::TokenInvalid),
        ("forged", forged, CloseCode::TokenInvalid),
        (
            "bad sub",
            mint(SECRET, "not valid!", minute),
            CloseCode::TokenInvalid,
        ),
        ("expired", expired, CloseCode::TokenExpired),
    ];
    for (what, token, expected) in cases {
        assert_eq!(refused_with(&server, token).await, expected, "{what}");
    }
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
    raw.write(&hello_frame(&server.token("alice"), "bad device id"))
        .await;
    assert_eq!(raw.closed().await.0, Some(CloseCode::ProtocolViolation));
}

#[tokio::test]
async fn second_hello_is_a_protocol_violation() {
    let server = TestServer::start().await;
    let (client, mut events) = server.connect("alice", "phone").await;
    client
        .write_raw(hello_frame(&server.token("alice"), "phone"))
        .await
        .unwrap();
    let code = next_close(&mut events).await;
    assert_eq!(code, Some(CloseCode::ProtocolViolation));
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
    let code = next_close(&mut events).await;
    assert_eq!(code, Some(CloseCode::MalformedFrame));
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
    let error = next_error(&mut events).await;
    assert_eq!(error.code, ErrorCode::UnknownFrame as i32);
    assert_eq!(error.r#ref, 5);
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
    let code = next_close(&mut events).await;
    assert_eq!(code, Some(CloseCode::FrameTooLarge));
    // Before authentication the cap is 8 KiB (max_frame_bytes is larger
    // here; the driver tests cover a smaller one).
    let mut raw = server.raw().await;
    raw.write(&hello_frame(&"x".repeat(9_000), "phone")).await;
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
    let mut burst = hello_frame(&server.token("alice"), "phone").to_vec();
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
