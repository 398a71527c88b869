//! Server API requests through the core: sends in a user's name (with the
//! copy to all of that user's devices and idempotency), presence and
//! sessions, disconnects, and rooms managed by the backend.

use bytes::Bytes;

use super::*;
use crate::rooms::{RoomReply, RoomRequest};

/// What an API send got back: its result, and whether it was a duplicate.
type Sent = (Result<SendOutcome, SendError>, bool);

impl Cluster {
    pub(super) fn api(&mut self, request: ApiRequest) -> ApiReply {
        let token = ApiToken(self.api_replies.len() as u64 + 1000);
        let shard = request.shard(self.shards.len() as u32).0 as usize;
        self.deliver(shard, ShardInput::Api { token, request });
        self.api_replies.remove(&token).expect("the shard answered")
    }

    /// Sends in `from`'s name.
    fn api_send(&mut self, from: &str, to: Recipient, key: &str) -> Sent {
        let reply = self.api(ApiRequest::Send {
            from: user(from),
            to,
            payload: Bytes::from_static(b"from the backend"),
            client_msg_id: key.into(),
            want_receipts: false,
        });
        match reply {
            ApiReply::Sent { result, duplicate } => (result, duplicate),
            other => panic!("expected Sent, got {other:?}"),
        }
    }
}

#[test]
fn an_api_send_reaches_the_recipient_and_every_device_of_the_sender() {
    let mut c = Cluster::new(3);
    let alice_phone = c.open("alice", "phone");
    let alice_laptop = c.open("alice", "laptop");
    let bob = c.open("bob", "phone");
    let (result, duplicate) = c.api_send("alice", Recipient::User(user("bob")), "");
    assert_eq!((result.unwrap().devices, duplicate), (1, false));
    let got = c.delivered(bob);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].from_user.as_str(), got[0].from_device.as_str()),
        ("alice", API_DEVICE)
    );
    for device in [alice_phone, alice_laptop] {
        assert_eq!(c.delivered(device).len(), 1, "the copy reaches {device:?}");
    }
}

#[test]
fn an_api_send_repeating_a_key_is_a_duplicate_and_errors_come_back() {
    let mut c = Cluster::new(2);
    let _bob = c.open("bob", "phone");
    let (first, duplicate) = c.api_send("alice", Recipient::User(user("bob")), "k");
    assert!(first.is_ok() && !duplicate, "a stored send");
    let again = c.api_send("alice", Recipient::User(user("bob")), "k");
    assert_eq!(again, (first, true));
    let nowhere = Recipient::Room(RoomId::parse("nowhere").unwrap());
    let refused = c.api_send("alice", nowhere, "");
    assert_eq!(refused, (Err(ErrorCode::UnknownRoom.into()), false));
}

#[test]
fn presence_lists_sessions_and_disconnect_closes_them() {
    let mut c = Cluster::new(2);
    let phone = c.open("alice", "phone");
    let laptop = c.open("alice", "laptop");
    let alice = user("alice");
    let ApiReply::Presence { view, sessions } = c.api(ApiRequest::Presence {
        user: alice.clone(),
    }) else {
        panic!("expected presence");
    };
    assert_eq!(view.status, Status::Online);
    let devices: Vec<&str> = sessions.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(devices, ["phone", "laptop"]);

    let reply = c.api(ApiRequest::Disconnect {
        user: alice.clone(),
        device: Some(DeviceId::parse("laptop").unwrap()),
    });
    assert_eq!(reply, ApiReply::Disconnected { sessions: 1 });
    assert_eq!(c.closed.get(&laptop), Some(&CloseCode::Disconnected));
    assert!(!c.closed.contains_key(&phone));
    let reply = c.api(ApiRequest::Disconnect {
        user: alice,
        device: None,
    });
    assert_eq!(reply, ApiReply::Disconnected { sessions: 1 });
    assert_eq!(c.closed.get(&phone), Some(&CloseCode::Disconnected));
}

#[test]
fn the_backend_manages_rooms_without_being_a_member() {
    let mut c = Cluster::new(3);
    let bob = c.open("bob", "phone");
    let room = RoomId::parse("support").unwrap();
    let call = |request| ApiRequest::Room {
        room: room.clone(),
        actor: Actor::Admin,
        request,
    };
    let changed = |members| ApiReply::Room(Ok(RoomReply::Changed { members }));
    let create = RoomRequest::Create { open: false };
    assert_eq!(c.api(call(create)), changed(0));
    let join = RoomRequest::Join {
        member: user("bob"),
    };
    assert_eq!(c.api(call(join)), changed(1));
    let (sent, _) = c.api_send("bob", Recipient::Room(room.clone()), "");
    assert!(sent.is_ok());
    assert_eq!(
        c.delivered(bob).len(),
        1,
        "bob's copy of the message sent in his name"
    );
}
