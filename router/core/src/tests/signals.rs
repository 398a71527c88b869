//! Ephemeral signals (typing): relayed to the target's (or room members')
//! open sessions except the sender's, with growing versions, never stored.

use switchboard_proto::v1::{Signal, SignalEvent, SignalKind};

use super::*;

impl Cluster {
    fn signal(&mut self, session: SessionId, to_user: &str, room: &str, kind: SignalKind) {
        let signal = Signal {
            to_user: to_user.into(),
            room: room.into(),
            kind: kind as i32,
        };
        self.frame(session, 4, Some(Body::Signal(signal)));
    }

    fn signals(&mut self, session: SessionId) -> Vec<SignalEvent> {
        self.pick(session, |b| match b {
            server_frame::Body::Signal(s) => Some(s),
            _ => None,
        })
    }
}

#[test]
fn typing_reaches_the_other_users_sessions_now_and_is_not_stored() {
    let mut c = Cluster::new(3);
    let alice = c.open("alice", "phone");
    let alice_laptop = c.open("alice", "laptop");
    let bob = c.open("bob", "phone");
    c.signal(alice, "bob", "", SignalKind::Typing);
    c.signal(alice, "bob", "", SignalKind::StoppedTyping);
    let got = c.signals(bob);
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].from_user.as_str(), got[0].to_user.as_str()),
        ("alice", "bob")
    );
    assert_eq!(got[1].kind, SignalKind::StoppedTyping as i32);
    assert!(got[1].version > got[0].version, "latest wins by version");
    assert!(got[0].expires_in_ms > 0);
    assert!(c.signals(alice_laptop).is_empty() && c.signals(alice).is_empty());
    // Nobody online: nothing kept for later.
    c.signal(alice, "carol", "", SignalKind::Typing);
    let carol = c.open("carol", "phone");
    assert!(c.signals(carol).is_empty());
    assert!(c.shards.iter().all(|s| s.stored_messages() == 0));
}

#[test]
fn room_typing_reaches_members_and_bad_signals_get_errors() {
    let mut c = Cluster::new(2);
    let alice = c.open("alice", "phone");
    let bob = c.open("bob", "phone");
    let outsider = c.open("eve", "phone");
    c.create_room(alice, "club", true).unwrap();
    c.join_room(bob, "club", "").unwrap();
    c.signal(alice, "", "club", SignalKind::Typing);
    let got = c.signals(bob);
    assert_eq!((got.len(), got[0].room.as_str()), (1, "club"));
    assert!(c.signals(alice).is_empty(), "not to the sending session");
    for (to_user, room, kind) in [
        ("", "", SignalKind::Typing),
        ("bob", "club", SignalKind::Typing),
        ("bob", "", SignalKind::Unspecified),
        ("", "club", SignalKind::Typing), // eve is not a member
    ] {
        c.signal(outsider, to_user, room, kind);
        let errors = c.errors(outsider);
        assert_eq!(
            errors,
            [ErrorCode::InvalidSignal],
            "{to_user:?} {room:?} {kind:?}"
        );
    }
    assert!(c.signals(bob).is_empty());
}
