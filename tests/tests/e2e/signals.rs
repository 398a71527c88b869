//! Typing indicators over real QUIC: they arrive as datagrams when the
//! client takes datagrams, on the stream when it does not.

use std::sync::Arc;
use std::time::Duration;

use switchboard_client::{
    tls::client_config, Client, Event, Events, SignalEvent, SignalKind, Trust,
};
use switchboard_tests::{next_event, opened, TestServer};

async fn next_signal(events: &mut Events) -> (SignalEvent, bool) {
    loop {
        if let Event::Signal {
            signal,
            via_datagram,
        } = next_event(events).await
        {
            return (signal, via_datagram);
        }
    }
}

#[tokio::test]
async fn typing_arrives_by_datagram() {
    let server = TestServer::start().await;
    let (alice, _alice_events) = server.connect("alice", "phone").await;
    let (_bob, mut bob_events) = server.connect("bob", "phone").await;
    alice.signal("bob", "", SignalKind::Typing).await.unwrap();
    let (signal, via_datagram) = next_signal(&mut bob_events).await;
    assert_eq!(
        (signal.from_user.as_str(), signal.kind),
        ("alice", SignalKind::Typing as i32)
    );
    assert!(via_datagram, "typing travels as a datagram");
}

#[tokio::test]
async fn typing_falls_back_to_the_stream_without_datagrams() {
    let server = TestServer::start().await;
    let (alice, _alice_events) = server.connect("alice", "phone").await;
    // Bob's client does not take datagrams.
    let mut config = client_config(&Trust::Fingerprint(server.fingerprint)).unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport.datagram_receive_buffer_size(None);
    config.transport_config(Arc::new(transport));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let options = server.options("bob", "phone");
    let (_bob, mut bob_events, _) =
        opened(Client::connect_via(&endpoint, config, options).await).await;
    alice.signal("bob", "", SignalKind::Typing).await.unwrap();
    let (signal, via_datagram) =
        tokio::time::timeout(Duration::from_secs(10), next_signal(&mut bob_events))
            .await
            .unwrap();
    assert_eq!(signal.kind, SignalKind::Typing as i32);
    assert!(!via_datagram, "no datagrams: the stream carries it");
}

#[tokio::test]
async fn an_error_for_a_datagram_signal_comes_on_the_stream_with_its_ref() {
    use switchboard_client::ErrorCode;
    use switchboard_proto::v1::{client_frame::Body, server_frame, ClientFrame, Signal};
    let server = TestServer::start().await;
    let mut raw = server.raw().await;
    raw.hello(&server.token("alice"), "phone").await;
    // Datagrams count only once the session is open.
    let welcome = raw.read_frame().await.body;
    assert!(matches!(welcome, Some(server_frame::Body::Welcome(_))));
    let signal = ClientFrame {
        r#ref: 77,
        body: Some(Body::Signal(Signal {
            to_user: "bob".into(),
            kind: 0, // not a kind: refused
            ..Signal::default()
        })),
    };
    let datagram = prost::Message::encode_to_vec(&signal);
    raw.connection.send_datagram(datagram.into()).unwrap();
    loop {
        if let Some(server_frame::Body::Error(error)) = raw.read_frame().await.body {
            assert_eq!(error.r#ref, 77);
            assert_eq!(error.code, ErrorCode::InvalidSignal as i32);
            return;
        }
    }
}
