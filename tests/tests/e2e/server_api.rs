//! The server API over HTTP: refused without the admin token; with it, a
//! backend sends to a user and a room, reads presence and sessions, manages
//! room membership and disconnects a device.

use std::time::Duration;

use serde_json::Value;
use switchboard_client::{CloseCode, Event};
use switchboard_tests::{http, next_event, TestServer, API_TOKEN};

async fn call(server: &TestServer, method: &str, path: &str, json: Option<&str>) -> (u16, Value) {
    let (status, body) = http(server.admin, method, path, Some(API_TOKEN), json).await;
    let value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON body, got {body:?}"));
    (status, value)
}

#[tokio::test]
async fn the_api_refuses_calls_without_the_admin_token() {
    let server = TestServer::start().await;
    let body = Some(r#"{"from":"backend","to":"bob","text":"hi"}"#);
    for token in [None, Some("not-the-token")] {
        let (status, text) = http(server.admin, "POST", "/v1/messages", token, body).await;
        assert_eq!(status, 401, "token {token:?}: {text}");
        assert!(text.contains("UNAUTHORIZED"), "{text}");
    }
    let (status, _) = http(server.admin, "GET", "/v1/users/bob/presence", None, None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_backend_sends_reads_presence_manages_rooms_and_disconnects() {
    let server = TestServer::start_with(|c| c.shards = 3).await;
    let (_bob, mut bob_events) = server.connect("bob", "phone").await;

    // A message in the name of "support" to bob.
    let (status, sent) = call(
        &server,
        "POST",
        "/v1/messages",
        Some(r#"{"from":"support","to":"bob","text":"your order shipped","client_msg_id":"o-1"}"#),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(
        (sent["devices"].as_u64(), sent["duplicate"].as_bool()),
        (Some(1), Some(false))
    );
    match next_event(&mut bob_events).await {
        Event::Message(deliver) => {
            let message = deliver.message.unwrap();
            assert_eq!(
                (message.from_user.as_str(), message.from_device.as_str()),
                ("support", "server-api")
            );
            assert_eq!(message.payload.as_ref(), b"your order shipped");
        }
        other => panic!("expected the message, got {other:?}"),
    }
    let (_, again) = call(
        &server,
        "POST",
        "/v1/messages",
        Some(r#"{"from":"support","to":"bob","text":"your order shipped","client_msg_id":"o-1"}"#),
    )
    .await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["message_id"], sent["message_id"]);

    // Presence and sessions.
    let (status, presence) = call(&server, "GET", "/v1/users/bob/presence", None).await;
    assert_eq!(status, 200);
    assert_eq!(presence["status"], "ONLINE");
    assert_eq!(presence["sessions"][0]["device"], "phone");

    // A backend-managed room.
    let (status, created) = call(
        &server,
        "POST",
        "/v1/rooms",
        Some(r#"{"room":"announcements","open":false}"#),
    )
    .await;
    assert_eq!((status, created["members"].as_u64()), (200, Some(0)));
    let (status, _) = call(&server, "PUT", "/v1/rooms/announcements/members/bob", None).await;
    assert_eq!(status, 200);
    let (status, members) = call(&server, "GET", "/v1/rooms/announcements", None).await;
    assert_eq!(status, 200);
    assert_eq!(members["members"], serde_json::json!(["bob"]));
    assert_eq!(members["owner"], Value::Null);
    let (status, refused) = call(
        &server,
        "POST",
        "/v1/messages",
        Some(r#"{"from":"support","room":"announcements","text":"x"}"#),
    )
    .await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (403, Some("NOT_A_MEMBER"))
    );
    let (status, missing) = call(&server, "GET", "/v1/rooms/nothing-here", None).await;
    assert_eq!(
        (status, missing["error"].as_str()),
        (404, Some("UNKNOWN_ROOM"))
    );

    // Disconnect bob's phone.
    let (status, closed) = call(
        &server,
        "POST",
        "/v1/users/bob/devices/phone/disconnect",
        None,
    )
    .await;
    assert_eq!((status, closed["sessions"].as_u64()), (200, Some(1)));
    loop {
        match tokio::time::timeout(Duration::from_secs(10), bob_events.next()).await {
            Ok(Some(Event::Closed(Some(info)))) => {
                assert_eq!(info.known, Some(CloseCode::Disconnected));
                break;
            }
            Ok(Some(_)) => continue,
            other => panic!("expected the close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn bad_api_requests_get_clear_errors() {
    let server = TestServer::start().await;
    let cases = [
        (
            r#"{"from":"a b","to":"bob","text":"x"}"#,
            400,
            "INVALID_USER_ID",
        ),
        (
            r#"{"from":"a","to":"bob","room":"r","text":"x"}"#,
            400,
            "INVALID_REQUEST",
        ),
        (r#"{"from":"a","to":"bob"}"#, 400, "INVALID_REQUEST"),
        (
            r#"{"from":"a","to":"bob","payload_base64":"***"}"#,
            400,
            "INVALID_REQUEST",
        ),
        (r#"not json"#, 400, "INVALID_REQUEST"),
    ];
    for (body, expected_status, expected_error) in cases {
        let (status, text) = http(
            server.admin,
            "POST",
            "/v1/messages",
            Some(API_TOKEN),
            Some(body),
        )
        .await;
        assert_eq!(status, expected_status, "{body}: {text}");
        assert!(text.contains(expected_error), "{body}: {text}");
    }
}
