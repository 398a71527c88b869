//! Rooms: management replies across shards, the membership rule, fan-out to
//! every member's devices in one order per room, the sender's copy, and
//! offline members.

use switchboard_proto::v1::{CreateRoom, JoinRoom, LeaveRoom, ListMembers, RoomMembers};

use super::*;

/// A RoomResult: the members after the request, or why it failed.
type Members = Result<u32, ErrorCode>;

impl Cluster {
    pub(super) fn create_room(&mut self, session: SessionId, room: &str, open: bool) -> Members {
        let room = room.into();
        self.room_call(session, Body::CreateRoom(CreateRoom { room, open }))
    }

    pub(super) fn join_room(&mut self, session: SessionId, room: &str, user: &str) -> Members {
        let (room, user) = (room.into(), user.into());
        self.room_call(session, Body::JoinRoom(JoinRoom { room, user }))
    }

    pub(super) fn leave_room(&mut self, session: SessionId, room: &str, user: &str) -> Members {
        let (room, user) = (room.into(), user.into());
        self.room_call(session, Body::LeaveRoom(LeaveRoom { room, user }))
    }

    fn room_call(&mut self, session: SessionId, body: Body) -> Members {
        self.take(session);
        self.frame(session, 77, Some(body));
        match self.take(session).as_slice() {
            [server_frame::Body::RoomResult(r)] if r.r#ref == 77 => match code(r.error) {
                ErrorCode::None => Ok(r.members),
                error => Err(error),
            },
            other => panic!("expected one RoomResult, got {other:?}"),
        }
    }

    fn list_members(&mut self, session: SessionId, room: &str) -> RoomMembers {
        self.take(session);
        let body = Body::ListMembers(ListMembers { room: room.into() });
        self.frame(session, 78, Some(body));
        match self.take(session).as_slice() {
            [server_frame::Body::RoomMembers(members)] if members.r#ref == 78 => members.clone(),
            other => panic!("expected RoomMembers, got {other:?}"),
        }
    }

    /// Sends to a room and returns the SendResult, leaving the session's
    /// other frames (deliveries) to be taken later.
    pub(super) fn send_to_room(
        &mut self,
        session: SessionId,
        room: &str,
        payload: &[u8],
    ) -> SendResult {
        self.frame(session, 5, Some(Body::Send(message("", room, payload))));
        let frames = self.received.entry(session).or_default();
        let at = frames
            .iter()
            .position(|f| matches!(f.body, Some(server_frame::Body::SendResult(_))))
            .expect("a SendResult");
        match frames.remove(at).and_then(|f| f.body) {
            Some(server_frame::Body::SendResult(result)) => result,
            other => panic!("expected a SendResult, got {other:?}"),
        }
    }
}

pub(super) fn code(error: i32) -> ErrorCode {
    ErrorCode::try_from(error).unwrap()
}

#[test]
fn room_requests_are_answered_across_shards_under_the_rule() {
    let mut c = Cluster::new(3);
    let owner = c.open("owner", "d");
    let bob = c.open("bob", "d");
    assert_eq!(c.create_room(owner, "club", false), Ok(1));
    assert_eq!(c.create_room(bob, "club", true), Err(ErrorCode::RoomExists));
    assert_eq!(c.join_room(bob, "club", ""), Err(ErrorCode::NotAllowed));
    assert_eq!(c.join_room(owner, "club", "bob"), Ok(2));
    let bad_id = c.join_room(owner, "no such room!", "");
    assert_eq!(bad_id, Err(ErrorCode::InvalidRoomId));
    assert_eq!(c.join_room(owner, "ghost", ""), Err(ErrorCode::UnknownRoom));
    let listed = c.list_members(bob, "club");
    assert_eq!(
        (listed.owner.as_str(), listed.open, listed.members.clone()),
        ("owner", false, vec!["bob".to_owned(), "owner".to_owned()])
    );
    assert_eq!(
        c.leave_room(bob, "club", "owner"),
        Err(ErrorCode::NotAllowed)
    );
    assert_eq!(c.leave_room(bob, "club", ""), Ok(1));
    let outsider = c.list_members(bob, "club");
    assert_eq!(code(outsider.error), ErrorCode::NotAllowed);
}

#[test]
fn room_messages_reach_every_member_device_in_one_order() {
    for shards in [1, 2, 5] {
        let mut c = Cluster::new(shards);
        let owner = c.open("owner", "d");
        c.create_room(owner, "club", true).unwrap();
        let mut devices = vec![owner];
        for i in 0..6 {
            let user = format!("member{i}");
            let phone = c.open(&user, "phone");
            let laptop = c.open(&user, "laptop");
            c.join_room(phone, "club", "").unwrap();
            devices.extend([phone, laptop]);
        }
        // Three senders interleave; every device must see one order.
        let senders = [devices[1], devices[3], devices[0]];
        for round in 0..10u8 {
            for sender in senders {
                let result = c.send_to_room(sender, "club", &[round, sender.0 as u8]);
                assert_eq!(result.error, 0);
                assert_eq!(result.devices, 6, "members other than the sender");
            }
        }
        // A device misses only its own sends; merged, the orders agree.
        let reference: Vec<Vec<u8>> = (0..10u8)
            .flat_map(|round| senders.map(|s| vec![round, s.0 as u8]))
            .collect();
        for device in &devices {
            let got = c.delivered(*device);
            assert!(got.iter().all(|m| m.room == "club" && m.to_user.is_empty()));
            let mut expected = reference.clone();
            expected.retain(|p| p[1] != device.0 as u8);
            let order: Vec<Vec<u8>> = got.into_iter().map(|m| m.payload.to_vec()).collect();
            assert_eq!(order, expected, "{shards} shards, device {device:?}");
        }
    }
}

#[test]
fn only_members_post_and_offline_members_get_room_messages_later() {
    let mut c = Cluster::new(2);
    let owner = c.open("owner", "d");
    let laptop = c.open("owner", "laptop");
    let outsider = c.open("outsider", "d");
    c.create_room(owner, "club", false).unwrap();
    c.join_room(owner, "club", "away").unwrap();
    assert_eq!(
        code(c.send_to_room(outsider, "club", b"x").error),
        ErrorCode::NotAMember
    );
    assert_eq!(
        code(c.send_to_room(outsider, "ghost", b"x").error),
        ErrorCode::UnknownRoom
    );
    let result = c.send_to_room(owner, "club", b"hello");
    assert_eq!((result.error, result.devices), (0, 1));
    assert!(result.seq > 0, "the sender's copy has a seq");
    let copy = c.delivered(laptop);
    assert_eq!(copy.len(), 1, "the sender's other device gets the copy");
    assert!(c.delivered(owner).is_empty(), "not the sending device");
    let away = c.open("away", "d");
    let got = c.delivered(away);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].from_user.as_str(), got[0].payload.as_ref()),
        ("owner", &b"hello"[..])
    );
    c.frame(owner, 3, Some(Body::Send(message("bob", "club", b""))));
    let [r] = c.results(owner).try_into().unwrap();
    assert_eq!(code(r.error), ErrorCode::InvalidRoomId);
}
