//! Rooms over real QUIC: a room of 1,000 member sessions receives every
//! message in the same order, and the membership rule is enforced.

use std::sync::Arc;
use std::time::Duration;

use switchboard_client::{bind_endpoint, quic_config, Client, ErrorCode, Event, Events, Trust};
use switchboard_tests::{next_event, next_message, opened, TestServer};

const MEMBERS: usize = 1_000;
const SENDERS: usize = 3;
const PER_SENDER: u32 = 20;

/// The room payloads `events` receives, as (sender index, counter), until
/// `count` have arrived.
async fn room_messages(events: &mut Events, count: usize) -> Vec<(u8, u32)> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        if let Event::Message(deliver) = next_event(events).await {
            let message = deliver.message.expect("a message");
            assert_eq!(message.room, "town");
            let payload = message.payload;
            let counter = u32::from_be_bytes(payload[1..5].try_into().unwrap());
            got.push((payload[0], counter));
        }
    }
    got
}

#[tokio::test]
async fn a_room_of_a_thousand_sessions_receives_in_one_order() {
    let server = Arc::new(TestServer::start_with(|c| c.shards = 3).await);
    let (owner, _owner_events) = server.connect("owner", "d").await;
    assert_eq!(owner.create_room("town", true).await.unwrap().error, 0);

    // Members share a few client sockets, as a real fleet would.
    let trust = Trust::Fingerprint(server.fingerprint);
    let config = quic_config(&trust, Duration::from_secs(5)).unwrap();
    let endpoints: Vec<_> = (0..4)
        .map(|_| bind_endpoint("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap())
        .collect();
    let handshakes = Arc::new(tokio::sync::Semaphore::new(50));
    let mut joins = tokio::task::JoinSet::new();
    for i in 0..MEMBERS {
        let endpoint = endpoints[i % endpoints.len()].clone();
        let config = config.clone();
        let options = server.options(&format!("member{i}"), "d");
        let handshakes = handshakes.clone();
        joins.spawn(async move {
            let permit = handshakes.acquire_owned().await.unwrap();
            let (client, events, _) =
                opened(Client::connect_via(&endpoint, config, options).await).await;
            let joined = client.join_room("town", "").await.unwrap();
            assert_eq!(joined.error, 0);
            drop(permit);
            (i, client, events)
        });
    }
    let mut joined = joins.join_all().await;
    joined.sort_by_key(|(i, ..)| *i);
    let mut members: Vec<(Client, Events)> = joined.into_iter().map(|(_, c, e)| (c, e)).collect();
    assert_eq!(members.len(), MEMBERS, "every member connected and joined");
    assert_eq!(
        owner.list_members("town").await.unwrap().members.len(),
        MEMBERS + 1
    );

    // Three members send at once, interleaving at the room's shard.
    let mut sends = tokio::task::JoinSet::new();
    for (s, (client, _)) in members.iter().take(SENDERS).enumerate() {
        let client = client.clone();
        sends.spawn(async move {
            for counter in 0..PER_SENDER {
                let mut payload = vec![s as u8];
                payload.extend_from_slice(&counter.to_be_bytes());
                let result = client.send_to_room("town", payload, "").await.unwrap();
                assert_eq!(result.error, ErrorCode::None as i32);
                assert_eq!(result.devices as usize, MEMBERS, "every other member");
            }
        });
    }
    while let Some(done) = sends.join_next().await {
        done.unwrap();
    }

    // Everyone sees the same order; a sender's own messages are not sent
    // back to the device that sent them.
    let total = SENDERS * PER_SENDER as usize;
    let (_, reference_events) = &mut members[SENDERS];
    let reference = room_messages(reference_events, total).await;
    for s in 0..SENDERS as u32 {
        let mine: Vec<u32> = reference
            .iter()
            .filter(|(from, _)| u32::from(*from) == s)
            .map(|(_, c)| *c)
            .collect();
        assert_eq!(
            mine,
            (0..PER_SENDER).collect::<Vec<_>>(),
            "per-sender order"
        );
    }
    for (i, (_, events)) in members.iter_mut().enumerate().skip(SENDERS + 1) {
        let got = room_messages(events, total).await;
        assert_eq!(got, reference, "member {i} saw another order");
    }
    for (s, (_, events)) in members.iter_mut().enumerate().take(SENDERS) {
        let expected: Vec<(u8, u32)> = reference
            .iter()
            .filter(|(from, _)| usize::from(*from) != s)
            .copied()
            .collect();
        let got = room_messages(events, expected.len()).await;
        assert_eq!(got, expected, "sender {s} saw another order");
    }
}

#[tokio::test]
async fn closed_rooms_follow_the_owner_rule() {
    let server = TestServer::start_with(|c| c.shards = 2).await;
    let (owner, _owner_events) = server.connect("owner", "d").await;
    let (bob, mut bob_events) = server.connect("bob", "d").await;
    assert_eq!(owner.create_room("club", false).await.unwrap().members, 1);
    let refused = bob.join_room("club", "").await.unwrap();
    assert_eq!(refused.error, ErrorCode::NotAllowed as i32);
    let outsider = bob.send_to_room("club", &b"hi"[..], "").await.unwrap();
    assert_eq!(outsider.error, ErrorCode::NotAMember as i32);
    assert_eq!(owner.join_room("club", "bob").await.unwrap().members, 2);
    let sent = owner
        .send_to_room("club", &b"welcome"[..], "")
        .await
        .unwrap();
    assert_eq!((sent.error, sent.devices), (0, 1));
    let message = next_message(&mut bob_events).await;
    assert_eq!(
        (message.room.as_str(), message.payload.as_ref()),
        ("club", &b"welcome"[..])
    );
    let listed = bob.list_members("club").await.unwrap();
    assert_eq!(listed.members, vec!["bob".to_owned(), "owner".to_owned()]);
}
