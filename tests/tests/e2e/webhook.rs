//! The offline-delivery webhook: a message stored for a user with no open
//! session is POSTed (batched, signed) to the app backend's URL; a message
//! to an online user is not.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use switchboard_router::server::webhook::SIGNATURE_HEADER;
use switchboard_tests::TestServer;
use tokio::sync::mpsc;

const WEBHOOK_SECRET: &str = "webhook-secret-for-the-tests-32-bytes-long";

/// A backend endpoint that hands every POST (signature, body) to the test.
async fn backend() -> (String, mpsc::UnboundedReceiver<(Option<String>, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(tx): State<mpsc::UnboundedSender<(Option<String>, Bytes)>>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    let signature = headers
                        .get(SIGNATURE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let _ = tx.send((signature, body));
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

#[tokio::test]
async fn messages_for_offline_users_are_posted_signed_and_online_ones_are_not() {
    let (url, mut posts) = backend().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&secret_file, WEBHOOK_SECRET).unwrap();
    let server = TestServer::start_with(|c| {
        c.webhook.url = url;
        c.webhook.secret_file = Some(secret_file);
        c.webhook.flush_interval = Duration::from_millis(50);
    })
    .await;
    let (alice, _alice_events) = server.connect("alice", "phone").await;
    let (_carol, _carol_events) = server.connect("carol", "phone").await;

    alice.send("carol", &b"online"[..]).await.unwrap();
    alice.send("bob", &b"one"[..]).await.unwrap();
    alice.send("bob", &b"two"[..]).await.unwrap();

    let mut events = Vec::new();
    while events.len() < 2 {
        let (signature, body) = tokio::time::timeout(Duration::from_secs(10), posts.recv())
            .await
            .expect("a webhook POST in time")
            .unwrap();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, WEBHOOK_SECRET.as_bytes());
        let expected = format!(
            "sha256={}",
            hex::encode(ring::hmac::sign(&key, &body).as_ref())
        );
        assert_eq!(signature.as_deref(), Some(expected.as_str()));
        let batch: Value = serde_json::from_slice(&body).unwrap();
        events.extend(batch["events"].as_array().unwrap().iter().cloned());
    }
    let summary: Vec<_> = events
        .iter()
        .map(|e| (e["user"].as_str(), e["seq"].as_u64(), e["from"].as_str()))
        .collect();
    let bob = |seq| (Some("bob"), Some(seq), Some("alice"));
    assert_eq!(
        summary,
        [bob(1), bob(2)],
        "only bob, who is offline; carol is online"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), posts.recv())
            .await
            .is_err(),
        "nothing more"
    );
}
