//! What one user or session can take: rate limits with their retry hints,
//! new recipients per minute, room deliveries per second, the node's inbox
//! budget, and user records that are forgotten once they hold nothing.

use std::sync::Arc;

use switchboard_proto::v1::Gap;

use super::rooms::code;
use super::*;
use crate::mailbox::{InboxBudget, ENTRY_COST};
use crate::rate::{Rate, RateLimits, SendRates};
use crate::stats::Throttle;
use crate::MailboxLimits;

const FREE: Rate = Rate::new(0, 0);

fn rates(session: Rate, user: Rate) -> CoreLimits {
    CoreLimits {
        rates: RateLimits {
            session: SendRates {
                messages: session,
                bytes: FREE,
            },
            user: SendRates {
                messages: user,
                bytes: FREE,
            },
            ..RateLimits::unlimited()
        },
        ..Cluster::test_limits()
    }
}

/// The test limits with these rate limits.
fn with_rates(rates: RateLimits) -> CoreLimits {
    CoreLimits {
        rates,
        ..Cluster::test_limits()
    }
}

/// The (error, retry_after_ms) of each SendResult `session` received.
fn outcomes(c: &mut Cluster, session: SessionId) -> Vec<(ErrorCode, u32)> {
    c.pick(session, |b| match b {
        server_frame::Body::SendResult(r) => Some((code(r.error), r.retry_after_ms)),
        _ => None,
    })
}

fn throttled(c: &mut Cluster, by: Throttle) -> u64 {
    c.shards
        .iter_mut()
        .map(|s| s.take_stats().throttled.get(by))
        .sum()
}

#[test]
fn a_session_over_its_message_rate_is_told_when_to_retry() {
    let mut c = Cluster::with_limits(2, rates(Rate::new(10, 10), FREE));
    let alice = c.open("alice", "phone");
    c.open("bob", "phone");
    for i in 0..11 {
        c.send(alice, i, "bob", b"hi");
    }
    let got = outcomes(&mut c, alice);
    assert!(
        got[..10].iter().all(|(e, _)| *e == ErrorCode::None),
        "{got:?}"
    );
    // One token comes back every 100 ms.
    assert_eq!(got[10], (ErrorCode::RateLimited, 100));
    assert_eq!(throttled(&mut c, Throttle::Session), 1);
    c.advance(Duration::from_millis(100));
    c.send(alice, 12, "bob", b"again");
    assert_eq!(outcomes(&mut c, alice), [(ErrorCode::None, 0)]);
    // Another session of hers has a bucket of its own.
    let laptop = c.open("alice", "laptop");
    c.take(laptop);
    c.send(laptop, 1, "bob", b"from the laptop");
    assert_eq!(outcomes(&mut c, laptop), [(ErrorCode::None, 0)]);
}

#[test]
fn a_user_is_limited_over_all_their_sessions_and_in_bytes() {
    let mut c = Cluster::with_limits(2, rates(FREE, Rate::new(4, 4)));
    let phone = c.open("alice", "phone");
    let laptop = c.open("alice", "laptop");
    c.open("bob", "phone");
    c.take(phone);
    c.take(laptop);
    c.send_texts(phone, "bob", &["1", "2"]);
    c.send_texts(laptop, "bob", &["3", "4", "5"]);
    assert_eq!(
        outcomes(&mut c, laptop).last(),
        Some(&(ErrorCode::RateLimited, 250))
    );
    assert_eq!(throttled(&mut c, Throttle::User), 1);

    // Bytes: 100 a second, so a second 60-byte payload must wait 200 ms.
    let mut limits = rates(FREE, FREE);
    limits.rates.session.bytes = Rate::new(100, 100);
    let mut c = Cluster::with_limits(1, limits);
    let alice = c.open("alice", "phone");
    c.send(alice, 1, "bob", &[b'x'; 60]);
    c.send(alice, 2, "bob", &[b'x'; 60]);
    assert_eq!(
        outcomes(&mut c, alice),
        [(ErrorCode::None, 0), (ErrorCode::RateLimited, 200)]
    );
}

#[test]
fn receipts_and_signals_count_and_get_an_error_with_the_hint() {
    let mut c = Cluster::with_limits(1, rates(Rate::new(1, 1), FREE));
    let alice = c.open("alice", "phone");
    c.open("bob", "phone");
    c.send(alice, 1, "bob", b"hi");
    c.take(alice);
    c.frame(
        alice,
        3,
        Some(Body::Receipt(switchboard_proto::v1::Receipt {
            to_user: "bob".into(),
            message_id: 1,
            kind: switchboard_proto::v1::ReceiptKind::Read as i32,
        })),
    );
    match c.take(alice).as_slice() {
        [server_frame::Body::Error(e)] => {
            assert_eq!((e.r#ref, e.code), (3, ErrorCode::RateLimited as i32));
            assert_eq!(e.retry_after_ms, 1000);
        }
        other => panic!("expected one Error, got {other:?}"),
    }
}

#[test]
fn a_user_may_reach_few_new_people_a_minute_but_their_contacts_always() {
    let limits = with_rates(RateLimits {
        new_recipients_per_minute: 3,
        ..RateLimits::unlimited()
    });
    let mut c = Cluster::with_limits(2, limits);
    let alice = c.open("alice", "phone");
    for (i, to) in ["u0", "u1", "u2", "u3"].iter().enumerate() {
        c.send(alice, i as u64, to, b"spam?");
    }
    let got = outcomes(&mut c, alice);
    assert_eq!(got[3], (ErrorCode::RateLimited, 60_000), "{got:?}");
    c.advance(Duration::from_secs(20));
    c.send_texts(alice, "u0", &["a contact of this minute"]);
    c.send_texts(alice, "alice", &["a note to herself is no new recipient"]);
    c.send_texts(alice, "u4", &["still new"]);
    assert_eq!(
        outcomes(&mut c, alice),
        [
            (ErrorCode::None, 0),
            (ErrorCode::None, 0),
            (ErrorCode::RateLimited, 40_000)
        ]
    );
    assert_eq!(throttled(&mut c, Throttle::NewRecipients), 2);
    c.advance(Duration::from_secs(40));
    c.send_texts(alice, "u4", &["a new minute"]);
    assert_eq!(outcomes(&mut c, alice), [(ErrorCode::None, 0)]);
}

#[test]
fn a_room_over_its_deliveries_per_second_refuses_the_message() {
    let limits = with_rates(RateLimits {
        room_deliveries: Rate::new(4, 4),
        ..RateLimits::unlimited()
    });
    let mut c = Cluster::with_limits(3, limits);
    let alice = c.open("alice", "phone");
    let bob = c.open("bob", "phone");
    c.create_room(alice, "r", true).unwrap();
    c.join_room(bob, "r", "bob").unwrap();
    c.join_room(alice, "r", "carol").unwrap();
    // Each message reaches 3 members: the second must wait for 2 more
    // tokens, at 4 a second.
    let first = c.send_to_room(alice, "r", b"1");
    let second = c.send_to_room(alice, "r", b"2");
    assert_eq!(code(first.error), ErrorCode::None);
    assert_eq!(code(second.error), ErrorCode::RateLimited);
    assert_eq!(second.retry_after_ms, 500);
    assert_eq!(
        c.payloads(bob),
        [b"1".to_vec()],
        "the refused one went nowhere"
    );
    c.advance(Duration::from_millis(500));
    assert_eq!(
        code(c.send_to_room(alice, "r", b"3").error),
        ErrorCode::None
    );
}

#[test]
fn a_spent_inbox_budget_refuses_new_messages_until_inboxes_drain() {
    let budget = Arc::new(InboxBudget::new(600));
    let limits = CoreLimits {
        inbox_budget: budget.clone(),
        ..Cluster::test_limits()
    };
    let mut c = Cluster::with_limits(2, limits);
    let alice = c.open("alice", "phone");
    let mut refused_at = None;
    for i in 0..10 {
        c.send(alice, i, "bob", b"for later");
        let got = outcomes(&mut c, alice);
        if got[0].0 != ErrorCode::None {
            assert_eq!(got[0], (ErrorCode::ServerBusy, 5_000));
            refused_at = Some(i);
            break;
        }
    }
    let refused_at = refused_at.expect("the budget was spent");
    assert!(budget.used() >= 600);
    // Bob reads and acks everything: his inbox, and alice's copies once her
    // phone's position passes them, give the budget back.
    let bob = c.open("bob", "phone");
    let seqs = c.pick(bob, |b| match b {
        server_frame::Body::Deliver(d) => Some(d.seq),
        _ => None,
    });
    assert_eq!(seqs.len() as u64, refused_at);
    c.ack(bob, *seqs.last().unwrap());
    assert!(budget.used() < 600, "used {}", budget.used());
    c.send(alice, 99, "bob", b"now");
    assert_eq!(outcomes(&mut c, alice), [(ErrorCode::None, 0)]);
}

#[test]
fn records_of_users_that_hold_nothing_are_forgotten() {
    let limits = CoreLimits {
        mailbox: MailboxLimits {
            max_age: Duration::from_secs(60),
            ..MailboxLimits::default()
        },
        ..Cluster::test_limits()
    };
    let mut c = Cluster::with_limits(2, limits);
    let alice = c.open("alice", "phone");
    let ghosts: Vec<String> = (0..50).map(|i| format!("ghost{i}")).collect();
    for ghost in &ghosts {
        c.send(alice, 1, ghost, b"anyone there?");
    }
    let records = |c: &Cluster| c.shards.iter().map(Shard::user_count).sum::<usize>();
    assert_eq!(records(&c), 51);
    c.advance(Duration::from_secs(61));
    // Every message expired; nobody holds the ghosts' records.
    assert_eq!(records(&c), 1, "only alice is left");
    let forgotten: u64 = c
        .shards
        .iter_mut()
        .map(|s| s.take_stats().users_forgotten)
        .sum();
    assert_eq!(forgotten, 50);
}

#[test]
fn a_forgotten_user_comes_back_above_every_number_and_version_they_had() {
    let remember = Duration::from_secs(600);
    let limits = CoreLimits {
        mailbox: MailboxLimits {
            max_age: Duration::from_secs(60),
            ..MailboxLimits::default()
        },
        remember_last_seen: remember,
        inbox_epoch: 7,
        ..Cluster::test_limits()
    };
    let mut c = Cluster::with_limits(1, limits);
    let carol = c.open("carol", "phone");
    let bob = c.open("bob", "phone");
    c.send_texts(carol, "bob", &["1", "2", "3"]);
    c.delivered(bob);
    c.ack(bob, 1); // bob's phone processed only the first
    c.watch(carol, &["bob"]);
    c.close(bob);
    c.advance(GRACE + Duration::from_secs(1));
    let seen = c.presence(carol).last().unwrap().version;
    assert!(seen >= 2, "online then offline");
    c.unwatch(carol, "bob");
    // Kept for his last-seen time while it is young ...
    c.advance(Duration::from_secs(120));
    assert!(c.shards[0].presence(&user("bob")).is_some());
    // ... then forgotten.
    c.advance(remember);
    assert!(c.shards[0].presence(&user("bob")).is_none());

    c.watch(carol, &["bob"]);
    let again = c.presence(carol);
    // A view that shows nothing goes as version 0, which replaces what a
    // watcher held; his next change numbers above every version he had.
    assert_eq!((again[0].version, again[0].last_seen_ms), (0, 0));
    // His phone resumes from its position: what it never processed is
    // reported gone, not silently skipped, and numbers go on above it.
    let phone = c.resume("bob", "phone", 7, 1);
    let online = c.presence(carol);
    assert!(
        online[0].version > seen,
        "{} after {seen}",
        online[0].version
    );
    let frames = c.take_all(phone);
    assert!(
        frames.iter().any(|f| matches!(
            f,
            server_frame::Body::Gap(Gap {
                from_seq: 2,
                to_seq
            }) if *to_seq >= 3
        )),
        "{frames:?}"
    );
    c.send_texts(carol, "bob", &["4"]);
    let seq = c.pick(phone, |b| match b {
        server_frame::Body::Deliver(d) => Some(d.seq),
        _ => None,
    });
    assert!(seq[0] > 3, "{seq:?}");
}

#[test]
fn idle_buckets_are_dropped() {
    let mut c = Cluster::with_limits(1, rates(Rate::new(10, 10), Rate::new(10, 10)));
    let alice = c.open("alice", "phone");
    let carol = c.open("carol", "phone");
    c.send(alice, 1, "bob", b"hi");
    c.send(carol, 1, "bob", b"hi");
    assert_eq!(c.shards[0].limiters.keys(), 4, "a session and a user each");
    c.advance(Duration::from_secs(11));
    let bob = c.open("bob", "phone");
    c.send(bob, 1, "carol", b"the next input sweeps");
    assert_eq!(c.shards[0].limiters.keys(), 2, "only bob's are left");
}

#[test]
fn a_user_is_in_few_enough_rooms_and_empty_or_idle_rooms_go() {
    let limits = CoreLimits {
        max_rooms_per_user: 2,
        room_idle_ttl: Duration::from_secs(600),
        ..Cluster::test_limits()
    };
    let mut c = Cluster::with_limits(3, limits);
    let alice = c.open("alice", "phone");
    let bob = c.open("bob", "phone");
    assert_eq!(c.create_room(alice, "r1", true), Ok(1));
    assert_eq!(c.create_room(bob, "r2", true), Ok(1));
    assert_eq!(c.join_room(alice, "r2", "alice"), Ok(2));
    assert_eq!(c.create_room(alice, "r3", true), Err(ErrorCode::RoomLimit));
    assert_eq!(c.join_room(alice, "r2", "alice"), Err(ErrorCode::RoomLimit));
    // Her last leave deletes r1, and its id is free again.
    assert_eq!(c.leave_room(alice, "r1", "alice"), Ok(0));
    assert_eq!(c.create_room(bob, "r1", true), Ok(1));
    assert_eq!(c.create_room(alice, "r3", true), Ok(1));
    // Idle past the limit, every room goes and her count with it.
    c.advance(Duration::from_secs(661));
    let reclaimed: u64 = c
        .shards
        .iter_mut()
        .map(|s| s.take_stats().rooms_reclaimed)
        .sum();
    assert_eq!(reclaimed, 3);
    assert_eq!(c.create_room(alice, "r2", true), Ok(1), "r2 was reclaimed");
    assert_eq!(c.create_room(alice, "r4", true), Ok(1));
}

#[test]
fn room_requests_count_toward_the_message_rate() {
    let mut c = Cluster::with_limits(1, rates(Rate::new(2, 2), FREE));
    let alice = c.open("alice", "phone");
    assert_eq!(c.create_room(alice, "r1", true), Ok(1));
    assert_eq!(c.create_room(alice, "r2", true), Ok(1));
    c.frame(
        alice,
        77,
        Some(Body::CreateRoom(switchboard_proto::v1::CreateRoom {
            room: "r3".into(),
            open: true,
        })),
    );
    match c.take(alice).as_slice() {
        [server_frame::Body::RoomResult(r)] => {
            assert_eq!(code(r.error), ErrorCode::RateLimited);
            assert_eq!(r.retry_after_ms, 500);
        }
        other => panic!("expected a RoomResult, got {other:?}"),
    }
}

#[test]
fn a_device_that_reconnects_in_a_loop_is_refused_with_a_back_off() {
    let limits = with_rates(RateLimits {
        device_connects_per_minute: 3,
        ..RateLimits::unlimited()
    });
    let mut c = Cluster::with_limits(1, limits);
    let watcher = c.open("carol", "phone");
    c.watch(watcher, &["alice"]);
    let mut last = None;
    for _ in 0..3 {
        let session = c.open("alice", "phone");
        assert_ne!(
            c.closed.get(&session),
            Some(&CloseCode::ReconnectingTooFast)
        );
        last = Some(session);
    }
    c.presence(watcher);
    let fourth = c.open("alice", "phone");
    assert_eq!(c.closed.get(&fourth), Some(&CloseCode::ReconnectingTooFast));
    // One connect comes back every 20 s (60 s / 3).
    assert_eq!(c.close_reasons[&fourth], "retry_after_ms=20000");
    assert_eq!(c.closed.get(&last.unwrap()), None, "the open session stays");
    assert!(
        c.presence(watcher).is_empty(),
        "the refused one changed nothing"
    );
    assert_eq!(throttled(&mut c, Throttle::Reconnects), 1);
    // Another device of hers is not held back; the phone is, after the wait.
    let laptop = c.open("alice", "laptop");
    assert_eq!(c.closed.get(&laptop), None);
    c.advance(Duration::from_secs(20));
    let again = c.open("alice", "phone");
    assert_eq!(c.closed.get(&again), None);
}

#[test]
fn a_room_message_is_charged_once_for_its_bytes_and_once_per_entry() {
    let budget = Arc::new(InboxBudget::new(1 << 30));
    let limits = CoreLimits {
        inbox_budget: budget.clone(),
        ..Cluster::test_limits()
    };
    let mut c = Cluster::with_limits(2, limits);
    let alice = c.open("alice", "phone");
    c.create_room(alice, "r", true).unwrap();
    c.join_room(alice, "r", "bob").unwrap();
    c.join_room(alice, "r", "carol").unwrap();
    let before = budget.used();
    assert_eq!(
        code(c.send_to_room(alice, "r", &[b'x'; 100]).error),
        ErrorCode::None
    );
    // Bob's and carol's entries stay (offline); alice's copy is released at
    // once (her only device sent it). The 100-byte payload's message counts
    // once, not once per inbox.
    let grown = budget.used() - before;
    assert!(
        grown > 100 + 2 * ENTRY_COST && grown < 2 * 100 + 2 * ENTRY_COST,
        "{grown}"
    );
    // A room message whose entries would not fit is refused whole.
    let small = Arc::new(InboxBudget::new(2 * ENTRY_COST));
    let limits = CoreLimits {
        inbox_budget: small,
        ..Cluster::test_limits()
    };
    let mut c = Cluster::with_limits(1, limits);
    let alice = c.open("alice", "phone");
    c.create_room(alice, "r", true).unwrap();
    c.join_room(alice, "r", "bob").unwrap();
    c.join_room(alice, "r", "carol").unwrap();
    let refused = c.send_to_room(alice, "r", b"x");
    assert_eq!(code(refused.error), ErrorCode::ServerBusy);
}

#[test]
fn an_owner_adding_others_reaches_new_recipients_and_room_signals_count_deliveries() {
    let limits = with_rates(RateLimits {
        new_recipients_per_minute: 2,
        room_deliveries: Rate::new(3, 3),
        ..RateLimits::unlimited()
    });
    let mut c = Cluster::with_limits(2, limits);
    let alice = c.open("alice", "phone");
    c.create_room(alice, "r", true).unwrap();
    assert_eq!(c.join_room(alice, "r", "u1"), Ok(2));
    assert_eq!(c.join_room(alice, "r", "u2"), Ok(3));
    assert_eq!(c.join_room(alice, "r", "u3"), Err(ErrorCode::RateLimited));
    // Each typing signal reaches 3 members; the second is over the room's
    // 3 deliveries a second and is dropped.
    let typing = |c: &mut Cluster| {
        let signal = switchboard_proto::v1::Signal {
            room: "r".into(),
            kind: switchboard_proto::v1::SignalKind::Typing as i32,
            ..Default::default()
        };
        c.frame(alice, 0, Some(Body::Signal(signal)));
    };
    typing(&mut c);
    typing(&mut c);
    assert_eq!(throttled(&mut c, Throttle::Room), 1);
}

#[test]
fn one_sender_cannot_push_everyone_elses_messages_out_of_an_inbox() {
    // R-4: a full inbox keeps what others sent; the sender holding half of
    // it is refused instead, and told to retry later.
    let limits = CoreLimits {
        mailbox: MailboxLimits {
            max_messages: 4,
            ..MailboxLimits::default()
        },
        ..Cluster::test_limits()
    };
    let mut c = Cluster::with_limits(2, limits);
    let friend = c.open("friend", "phone");
    let spammer = c.open("spammer", "phone");
    c.send_texts(friend, "bob", &["hello bob"]);
    for i in 0..5 {
        c.send(spammer, i, "bob", b"spam");
    }
    let got = outcomes(&mut c, spammer);
    let stored = got.iter().filter(|(e, _)| *e == ErrorCode::None).count();
    assert_eq!(stored, 3, "{got:?}");
    assert_eq!(got[3], (ErrorCode::InboxFull, 10_000));
    // Bob's friend's message is still there, first.
    let bob = c.open("bob", "phone");
    let payloads = c.payloads(bob);
    assert_eq!(payloads[0], b"hello bob");
    assert_eq!(payloads.len(), 4);
}
