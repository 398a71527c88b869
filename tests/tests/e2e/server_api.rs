//! The server API over HTTP: refused without the admin token; with it, a
//! backend sends to a user and a room, reads presence and sessions, manages
//! room membership and disconnects a device.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard_client::{CloseCode, Event};
use switchboard_tests::{http, next_message, TestServer, API_TOKEN};

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
    let order =
        Some(r#"{"from":"support","to":"bob","text":"your order shipped","client_msg_id":"o-1"}"#);
    let (status, sent) = call(&server, "POST", "/v1/messages", order).await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(
        (sent["devices"].as_u64(), sent["duplicate"].as_bool()),
        (Some(1), Some(false))
    );
    let message = next_message(&mut bob_events).await;
    assert_eq!(
        (message.from_user.as_str(), message.from_device.as_str()),
        ("support", "server-api")
    );
    assert_eq!(message.payload.as_ref(), b"your order shipped");
    let (_, again) = call(&server, "POST", "/v1/messages", order).await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["message_id"], sent["message_id"]);

    // Presence and sessions.
    let (status, presence) = call(&server, "GET", "/v1/users/bob/presence", None).await;
    assert_eq!(status, 200);
    assert_eq!(presence["status"], "ONLINE");
    assert_eq!(presence["sessions"][0]["device"], "phone");

    // A backend-managed room.
    let room = Some(r#"{"room":"announcements","open":false}"#);
    let (status, created) = call(&server, "POST", "/v1/rooms", room).await;
    assert_eq!((status, created["members"].as_u64()), (200, Some(0)));
    let (status, _) = call(&server, "PUT", "/v1/rooms/announcements/members/bob", None).await;
    assert_eq!(status, 200);
    let (status, members) = call(&server, "GET", "/v1/rooms/announcements", None).await;
    assert_eq!(status, 200);
    assert_eq!(members["members"], json!(["bob"]));
    assert_eq!(members["owner"], Value::Null);
    let to_room = Some(r#"{"from":"support","room":"announcements","text":"x"}"#);
    let (status, refused) = call(&server, "POST", "/v1/messages", to_room).await;
    assert_eq!((status, &refused["error"]), (403, &json!("NOT_A_MEMBER")));
    let (status, missing) = call(&server, "GET", "/v1/rooms/nothing-here", None).await;
    assert_eq!((status, &missing["error"]), (404, &json!("UNKNOWN_ROOM")));

    // Disconnect bob's phone.
    let path = "/v1/users/bob/devices/phone/disconnect";
    let (status, closed) = call(&server, "POST", path, None).await;
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
    // Every one is a 400.
    let cases = [
        (r#"{"from":"a b","to":"bob","text":"x"}"#, "INVALID_USER_ID"),
        (
            r#"{"from":"a","to":"bob","room":"r","text":"x"}"#,
            "INVALID_REQUEST",
        ),
        (r#"{"from":"a","to":"bob"}"#, "INVALID_REQUEST"),
        (
            r#"{"from":"a","to":"bob","payload_base64":"***"}"#,
            "INVALID_REQUEST",
        ),
        (r#"not json"#, "INVALID_REQUEST"),
    ];
    for (body, expected_error) in cases {
        let token = Some(API_TOKEN);
        let (status, text) = http(server.admin, "POST", "/v1/messages", token, Some(body)).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(expected_error), "{body}: {text}");
    }
}

#[tokio::test]
async fn a_user_who_shares_presence_with_a_list_looks_never_seen_to_others() {
    let server = TestServer::start_with(|c| c.shards = 2).await;
    let (_alice, _alice_events) = server.connect("alice", "phone").await;
    let (bob, mut bob_events) = server.connect("bob", "phone").await;
    let (eve, mut eve_events) = server.connect("eve", "phone").await;
    let body = r#"{"share":"list","allow":["bob"]}"#;
    let (status, reply) = call(&server, "PUT", "/v1/users/alice/sharing", Some(body)).await;
    assert_eq!((status, reply["watchers"].as_u64()), (200, Some(0)));
    bob.watch(&["alice"]).await.unwrap();
    eve.watch(&["alice", "nobody-by-this-name"]).await.unwrap();
    let to_bob = switchboard_tests::next_presence(&mut bob_events, "alice").await;
    assert_eq!(to_bob.status, switchboard_client::Status::Online as i32);
    let mut seen = std::collections::HashMap::new();
    while seen.len() < 2 {
        if let Event::Presence(p) = switchboard_tests::next_event(&mut eve_events).await {
            seen.insert(p.user_id.clone(), p);
        }
    }
    let (to_eve, ghost) = (&seen["alice"], &seen["nobody-by-this-name"]);
    let view =
        |p: &switchboard_client::Presence| (p.status, p.text.clone(), p.version, p.last_seen_ms);
    assert_eq!(view(to_eve), view(ghost), "no hint that alice exists");

    for bad in [
        r#"{"share":"some"}"#,
        r#"{"share":"nobody","allow":["bob"]}"#,
        r#"{"share":"list","allow":["not valid!"]}"#,
    ] {
        let (status, _) = call(&server, "PUT", "/v1/users/alice/sharing", Some(bad)).await;
        assert_eq!(status, 400, "{bad}");
    }
    // Everyone again: eve now sees her, with a new version.
    let body = r#"{"share":"everyone"}"#;
    let (status, reply) = call(&server, "PUT", "/v1/users/alice/sharing", Some(body)).await;
    assert_eq!((status, reply["watchers"].as_u64()), (200, Some(2)));
    let now_eve = switchboard_tests::next_presence(&mut eve_events, "alice").await;
    assert_eq!(now_eve.status, switchboard_client::Status::Online as i32);
    assert!(now_eve.version > 0);
}
