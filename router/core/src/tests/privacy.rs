//! Presence sharing: a user who shares with no one, or with a list, looks
//! to everyone else exactly like a user never seen, and changes of the
//! choice reach every watcher, on any shard.

use super::*;
use crate::presence::Sharing;

impl Cluster {
    fn share(&mut self, user: &str, sharing: Sharing) -> u32 {
        let request = ApiRequest::Sharing {
            user: self::user(user),
            sharing,
        };
        match self.api(request) {
            ApiReply::SharingSet { watchers } => watchers,
            other => panic!("expected SharingSet, got {other:?}"),
        }
    }
}

/// What a watcher is told of a user it may not see, and of a user who
/// never existed: the same, but for the id.
fn as_never_seen(p: &Presence) -> (i32, &str, u64, u64) {
    (p.status, p.text.as_str(), p.last_seen_ms, p.version)
}

#[test]
fn watchers_not_shared_with_see_a_user_never_seen_and_nothing_after() {
    let mut c = Cluster::new(3);
    let alice = c.open("alice", "phone");
    let bob = c.open("bob", "phone");
    let eve = c.open("eve", "phone");
    c.watch(bob, &["alice"]);
    c.watch(eve, &["alice", "ghost"]);
    let ghost = c
        .presence(eve)
        .into_iter()
        .find(|p| p.user_id == "ghost")
        .unwrap();
    let before = c.presence(bob)[0].version;
    assert!(before >= 1);

    let only_bob = Sharing::Only([user("bob")].into_iter().collect());
    assert_eq!(
        c.share("alice", only_bob),
        2,
        "both watchers are looked at again"
    );
    let seen_by_bob = c.presence(bob);
    assert_eq!(status_of(&seen_by_bob[0]), Status::Online);
    assert!(seen_by_bob[0].version > before);
    let seen_by_eve = c.presence(eve);
    assert_eq!(seen_by_eve.len(), 1);
    assert_eq!(as_never_seen(&seen_by_eve[0]), as_never_seen(&ghost));

    // Changes reach bob only.
    c.set_status(alice, Status::Away, "lunch");
    assert_eq!(status_of(&c.presence(bob)[0]), Status::Away);
    assert!(c.presence(eve).is_empty());
    // A new watcher gets the same never-seen view, on another session too.
    let eve_laptop = c.open("eve", "laptop");
    c.watch(eve_laptop, &["alice"]);
    assert_eq!(
        as_never_seen(&c.presence(eve_laptop)[0]),
        as_never_seen(&ghost)
    );
    c.close(alice);
    c.advance(GRACE + Duration::from_secs(1));
    assert_eq!(status_of(&c.presence(bob)[0]), Status::Offline);
    assert!(c.presence(eve).is_empty() && c.presence(eve_laptop).is_empty());

    // Nobody: bob loses the view too. Everyone: eve gets the real one back.
    c.share("alice", Sharing::Nobody);
    assert_eq!(as_never_seen(&c.presence(bob)[0]), as_never_seen(&ghost));
    assert_eq!(as_never_seen(&c.presence(eve)[0]), as_never_seen(&ghost));
    c.share("alice", Sharing::Everyone);
    let back = c.presence(eve);
    assert_eq!(status_of(&back[0]), Status::Offline);
    assert!(back[0].last_seen_ms > 0 && back[0].version > 0, "{back:?}");
    // A user always sees themselves.
    c.share("alice", Sharing::Nobody);
    let alice = c.open("alice", "phone");
    c.watch(alice, &["alice"]);
    assert_eq!(status_of(&c.presence(alice)[0]), Status::Online);
}
