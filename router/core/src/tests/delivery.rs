//! Inbox behaviour: offline delivery, acks and the delivery window, resume
//! with gaps, eviction by count and age, idempotent sends, and a property
//! test over random interleavings checking the delivery contract.

use std::collections::{BTreeSet, HashMap};

use switchboard_proto::v1::{Ack, CreateRoom, Gap, JoinRoom, LeaveRoom, Receipt, ReceiptKind};

use super::*;
use crate::{DedupeLimits, MailboxLimits};

const EPOCH: u64 = 7;

fn limits(max_messages: usize, window: usize) -> CoreLimits {
    CoreLimits {
        mailbox: MailboxLimits {
            max_messages,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(3600),
            // These tests fill inboxes from one sender to see eviction.
            sender_share_percent: 100,
        },
        dedupe: DedupeLimits {
            window: Duration::from_secs(60),
            max_keys: 16,
        },
        delivery_window: window,
        inbox_epoch: EPOCH,
        ..Cluster::test_limits()
    }
}

/// What a session received, in the terms of the delivery contract.
#[derive(Debug, PartialEq)]
enum Got {
    /// InboxOpened: `resume_after`, `last_seq`, `epoch_changed`.
    Opened(u64, u64, bool),
    Deliver(u64, Vec<u8>),
    Gap(u64, u64),
    Result(SendResult),
    Error(ErrorCode),
}

impl Cluster {
    /// Alice and Bob on their phones, Bob's InboxOpened taken.
    fn alice_and_bob(shards: u32, limits: CoreLimits) -> (Cluster, SessionId, SessionId) {
        let mut c = Cluster::with_limits(shards, limits);
        let alice = c.open("alice", "phone");
        let bob = c.open("bob", "phone");
        c.take_all(bob);
        (c, alice, bob)
    }

    /// How long after the start the only shard's next timer is due.
    fn next_timer(&self) -> Option<Duration> {
        self.shards[0].poll_timeout().map(|at| at - self.start)
    }

    pub(super) fn ack(&mut self, session: SessionId, seq: u64) {
        self.frame(session, 0, Some(Body::Ack(Ack { seq })));
    }

    pub(super) fn send_keyed(&mut self, session: SessionId, request_ref: u64, to: &str, key: &str) {
        let mut send = message(to, "", key.as_bytes());
        send.client_msg_id = key.into();
        self.frame(session, request_ref, Some(Body::Send(send)));
    }

    /// Sends a Read receipt for `message_id` to `to_user`; returns it.
    fn read_receipt(&mut self, session: SessionId, to_user: &str, message_id: u64) -> Receipt {
        let receipt = Receipt {
            to_user: to_user.into(),
            message_id,
            kind: ReceiptKind::Read as i32,
        };
        self.frame(session, 2, Some(Body::Receipt(receipt.clone())));
        receipt
    }

    pub(super) fn resume(
        &mut self,
        user: &str,
        device: &str,
        epoch: u64,
        last_seq: u64,
    ) -> SessionId {
        self.open_full(user, device, None, Some(Resume { epoch, last_seq }))
    }

    fn got(&mut self, session: SessionId) -> Vec<Got> {
        use server_frame::Body as B;
        self.take_all(session)
            .into_iter()
            .filter_map(|body| match body {
                B::InboxOpened(o) => Some(Got::Opened(o.resume_after, o.last_seq, o.epoch_changed)),
                B::Deliver(d) => Some(Got::Deliver(d.seq, d.message.unwrap().payload.to_vec())),
                B::Gap(Gap { from_seq, to_seq }) => Some(Got::Gap(from_seq, to_seq)),
                B::SendResult(r) => Some(Got::Result(r)),
                B::Error(e) => Some(Got::Error(ErrorCode::try_from(e.code).unwrap())),
                _ => None,
            })
            .collect()
    }
}

fn deliver(seq: u64, payload: &str) -> Got {
    Got::Deliver(seq, payload.as_bytes().to_vec())
}

#[test]
fn an_offline_user_gets_stored_messages_in_order_on_first_connect() {
    let mut c = Cluster::with_limits(3, limits(100, 100));
    let alice = c.open("alice", "phone");
    let laptop = c.open("alice", "laptop");
    c.send(alice, 5, "bob", b"one");
    let [r] = c.results(alice).try_into().unwrap();
    let accepted = (ErrorCode::None as i32, 5, 0, 1);
    assert_eq!((r.error, r.r#ref, r.devices, r.seq), accepted);
    c.send_texts(alice, "bob", &["two", "three"]);
    assert_eq!(c.delivered(laptop).len(), 3, "the sender's copies");
    let bob = c.open("bob", "phone");
    assert_eq!(
        c.got(bob),
        [
            Got::Opened(0, 3, false),
            deliver(1, "one"),
            deliver(2, "two"),
            deliver(3, "three"),
        ]
    );
}

#[test]
fn resume_sends_only_what_was_missed_then_live_messages() {
    let (mut c, alice, bob) = Cluster::alice_and_bob(2, limits(100, 100));
    c.send_texts(alice, "bob", &["a", "b"]);
    c.ack(bob, 1); // processed "a" only, then the connection dies
    c.close(bob);
    c.send(alice, 0, "bob", b"c");
    let bob = c.resume("bob", "phone", EPOCH, 1);
    c.send(alice, 0, "bob", b"d");
    assert_eq!(
        c.got(bob),
        [
            Got::Opened(1, 3, false),
            deliver(2, "b"),
            deliver(3, "c"),
            deliver(4, "d"),
        ]
    );
}

#[test]
fn without_a_resume_point_a_known_device_continues_after_its_last_ack() {
    let (mut c, alice, bob) = Cluster::alice_and_bob(1, limits(100, 100));
    c.send_texts(alice, "bob", &["a", "b"]);
    c.ack(bob, 1);
    c.close(bob);
    let bob = c.open("bob", "phone");
    let got = c.got(bob);
    assert_eq!(got[1..], [deliver(2, "b")]);
}

#[test]
fn a_new_device_on_an_emptied_inbox_starts_at_its_end() {
    let (mut c, alice, bob) = Cluster::alice_and_bob(1, limits(100, 100));
    c.send_texts(alice, "bob", &["a", "b", "c"]);
    c.ack(bob, 3);
    // Bob's only device acked everything: the inbox holds nothing.
    let tablet = c.open("bob", "tablet");
    assert_eq!(c.got(tablet), [Got::Opened(3, 3, false)]);
    c.ack(tablet, 3);
    assert_eq!(c.got(tablet), [], "an ack of where it starts is valid");

    let carol = c.open("carol", "phone");
    let fresh = Got::Opened(0, 0, false);
    assert_eq!(c.got(carol), [fresh], "an inbox that never held anything");
}

#[test]
fn evicted_messages_are_reported_as_a_gap_before_the_rest() {
    let (mut c, alice, bob) = Cluster::alice_and_bob(2, limits(2, 100));
    c.close(bob);
    c.send_texts(alice, "bob", &["1", "2", "3", "4"]);
    let bob = c.resume("bob", "phone", EPOCH, 0);
    let got = c.got(bob);
    assert_eq!(got[1..], [Got::Gap(1, 2), deliver(3, "3"), deliver(4, "4")]);
}

#[test]
fn old_messages_age_out_and_are_reported_as_a_gap() {
    let mut c = Cluster::with_limits(1, limits(100, 100));
    let alice = c.open("alice", "phone");
    c.send(alice, 0, "bob", b"old");
    c.advance(Duration::from_secs(1800));
    c.send(alice, 0, "bob", b"new");
    c.advance(Duration::from_secs(1800));
    // Bob's inbox keeps "new"; alice's copies needed no ack (her only
    // device sent them).
    assert_eq!(c.shards[0].stored_messages(), 1);
    // A device that never processed anything resumes from 0 and learns that
    // 1 is gone (a new device without a resume point would just start at
    // the oldest message held).
    let bob = c.resume("bob", "phone", EPOCH, 0);
    let got = c.got(bob);
    assert_eq!(got[1..], [Got::Gap(1, 1), deliver(2, "new")]);
}

#[test]
fn an_emptied_inbox_keeps_its_expiry_check_and_later_messages_still_age_out() {
    let hour = Duration::from_secs(3600);
    let (mut c, alice, bob) = Cluster::alice_and_bob(1, limits(100, 100));
    c.send(alice, 0, "bob", b"a");
    c.ack(bob, 1);
    // Past bob's ack check (60 s), which finds nothing unacked and goes.
    c.advance(Duration::from_secs(61));
    // Bob's inbox is empty again, but its expiry check stays filed where
    // "a" put it instead of being removed (and refiled by the next message).
    assert_eq!(c.shards[0].stored_messages(), 0);
    assert_eq!(c.next_timer(), Some(hour));
    c.advance(Duration::from_secs(1800 - 61));
    c.send(alice, 0, "bob", b"b");
    c.close(bob);
    // The check fires early, finds nothing due and is filed again at the
    // expiry of "b".
    c.advance(Duration::from_secs(1800));
    assert_eq!(c.shards[0].stored_messages(), 1);
    assert_eq!(c.next_timer(), Some(Duration::from_secs(1800) + hour));
    c.advance(Duration::from_secs(1799));
    assert_eq!(c.shards[0].stored_messages(), 1, "not an hour old yet");
    c.advance(Duration::from_secs(2));
    assert_eq!(c.shards[0].stored_messages(), 0, "aged out on time");
}

#[test]
fn a_new_epoch_is_announced_and_the_stale_resume_point_ignored() {
    let mut c = Cluster::with_limits(1, limits(100, 100));
    let alice = c.open("alice", "phone");
    c.send(alice, 0, "bob", b"x");
    let bob = c.resume("bob", "phone", EPOCH + 1, 50);
    assert_eq!(c.got(bob), [Got::Opened(0, 1, true), deliver(1, "x")]);
}

#[test]
fn acks_and_resume_points_beyond_what_was_sent_are_refused() {
    let (mut c, alice, bob) = Cluster::alice_and_bob(1, limits(100, 100));
    c.send(alice, 0, "bob", b"x");
    c.got(bob);
    c.ack(bob, 2);
    assert_eq!(c.got(bob), [Got::Error(ErrorCode::InvalidAck)]);
    c.ack(bob, 1);
    assert_eq!(c.got(bob), []);
    c.close(bob);
    let bob = c.resume("bob", "phone", EPOCH, 9);
    assert_eq!(
        c.got(bob),
        [Got::Opened(1, 1, false), Got::Error(ErrorCode::InvalidAck)]
    );
}

#[test]
fn the_delivery_window_pauses_until_the_device_acks() {
    let (mut c, alice, bob) = Cluster::alice_and_bob(2, limits(100, 2));
    c.send_texts(alice, "bob", &["1", "2", "3", "4", "5"]);
    assert_eq!(c.got(bob), [deliver(1, "1"), deliver(2, "2")]);
    c.ack(bob, 1);
    assert_eq!(c.got(bob), [deliver(3, "3")]);
    c.ack(bob, 3);
    assert_eq!(c.got(bob), [deliver(4, "4"), deliver(5, "5")]);
}

#[test]
fn the_sending_device_skips_its_own_copy_which_other_devices_get_later() {
    let mut c = Cluster::with_limits(2, limits(100, 100));
    let phone = c.open("alice", "phone");
    let laptop = c.open("alice", "laptop");
    c.close(laptop);
    c.send(phone, 1, "bob", b"hi");
    let [result] = c.results(phone).try_into().unwrap();
    assert_eq!(result.seq, 1);
    // The phone reconnects from scratch: its own copy is not sent back.
    c.close(phone);
    let phone = c.resume("alice", "phone", EPOCH, 0);
    assert_eq!(c.got(phone)[1..], []);
    let laptop = c.resume("alice", "laptop", EPOCH, 0);
    assert_eq!(c.got(laptop)[1..], [deliver(1, "hi")]);
}

#[test]
fn a_repeated_client_msg_id_gets_the_first_result_and_sends_nothing() {
    let (mut c, alice, bob) = Cluster::alice_and_bob(2, limits(100, 100));
    c.send_keyed(alice, 1, "bob", "k1");
    c.send_keyed(alice, 2, "bob", "k1");
    let results = c.results(alice);
    assert_eq!(results.len(), 2);
    assert_eq!((results[0].r#ref, results[0].duplicate), (1, false));
    assert_eq!((results[1].r#ref, results[1].duplicate), (2, true));
    assert_eq!(results[0].message_id, results[1].message_id);
    assert_eq!(results[0].seq, results[1].seq);
    assert_eq!(c.got(bob), [deliver(1, "k1")], "delivered once");
}

#[test]
fn a_repeat_while_the_first_is_in_flight_waits_for_its_result() {
    let mut c = Cluster::with_limits(2, limits(100, 100));
    let alice = c.open("alice", "phone");
    c.got(alice);
    let remote = c.user_near("alice", false);
    c.hold_forwards = true;
    c.send_keyed(alice, 1, &remote, "k");
    c.send_keyed(alice, 2, &remote, "k");
    assert_eq!(c.got(alice), [], "both wait for the remote shard");
    c.release();
    let refs: Vec<(u64, bool)> = c
        .results(alice)
        .iter()
        .map(|r| (r.r#ref, r.duplicate))
        .collect();
    assert_eq!(refs, [(1, false), (2, true)]);
    let receiver = c.open(&remote, "d");
    assert_eq!(c.got(receiver).len(), 2, "InboxOpened and one Deliver");
}

/// One step of a random delivery scenario over users 0..3, devices 0..2,
/// and one open room.
#[derive(Debug, Clone)]
enum Move {
    Send { from: (usize, usize), to: usize },
    RoomSend((usize, usize)),
    Join(usize),
    Leave(usize),
    Ack((usize, usize)),
    Disconnect((usize, usize)),
    Connect { who: (usize, usize), resume: bool },
    Advance(u64),
}

fn a_move() -> impl Strategy<Value = Move> {
    let who = (0..3usize, 0..2usize);
    prop_oneof![
        4 => (who.clone(), 0..3usize).prop_map(|(from, to)| Move::Send { from, to }),
        2 => who.clone().prop_map(Move::RoomSend),
        1 => (0..3usize).prop_map(Move::Join),
        1 => (0..3usize).prop_map(Move::Leave),
        2 => who.clone().prop_map(Move::Ack),
        1 => who.clone().prop_map(Move::Disconnect),
        2 => (who, any::<bool>()).prop_map(|(who, resume)| Move::Connect { who, resume }),
        1 => (0..900u64).prop_map(Move::Advance),
    ]
}

/// What one device knows, as a client following PROTOCOL.md would keep it.
#[derive(Debug, Default)]
struct Device {
    session: Option<SessionId>,
    /// Highest inbox seq processed (Deliver, Gap or own send); None before
    /// the first session.
    last: Option<u64>,
    /// The resume point the current session asked for, until InboxOpened.
    resumed_from: Option<u64>,
    /// Inbox seqs of this device's own sends (from SendResult.seq).
    own: BTreeSet<u64>,
    /// Highest payload counter seen per sending device, to check that each
    /// sender's messages arrive in send order.
    per_sender: HashMap<Vec<u8>, u32>,
}

const USERS: [&str; 3] = ["ann", "ben", "cid"];

fn device_name(d: usize) -> String {
    format!("dev{d}")
}

/// Feeds a device the frames its session received, checking the contract.
fn absorb(
    c: &mut Cluster,
    dev: &mut Device,
    by_seq: &mut HashMap<u64, Vec<u8>>,
) -> Result<(), TestCaseError> {
    let Some(session) = dev.session else {
        return Ok(());
    };
    for got in c.got(session) {
        match got {
            Got::Opened(after, _, changed) => {
                prop_assert!(!changed);
                match dev.resumed_from.take() {
                    Some(from) => prop_assert_eq!(after, from, "resume point not honoured"),
                    // Without a resume point, delivery restarts at the last
                    // ack: what comes again may repeat what was seen.
                    None => dev.per_sender.clear(),
                }
                dev.last = Some(after);
            }
            Got::Deliver(seq, payload) => {
                let last = dev.last.expect("InboxOpened comes first");
                prop_assert!(seq > last, "seq {seq} again or out of order (last {last})");
                for skipped in last + 1..seq {
                    prop_assert!(
                        dev.own.contains(&skipped),
                        "seq {skipped} skipped silently (not an own send, no Gap)"
                    );
                }
                // The same seq is the same message on every device.
                if let Some(previous) = by_seq.insert(seq, payload.clone()) {
                    prop_assert_eq!(&previous, &payload, "seq {} differs", seq);
                }
                let (sender, counter) = payload.split_at(payload.len() - 4);
                let counter = u32::from_be_bytes(counter.try_into().unwrap());
                if let Some(before) = dev.per_sender.insert(sender.to_vec(), counter) {
                    prop_assert!(counter > before, "sender order broken");
                }
                dev.last = Some(seq);
            }
            Got::Gap(from, to) => {
                let last = dev.last.expect("InboxOpened comes first");
                prop_assert!(from > last && to >= from, "gap {from}-{to} after {last}");
                for skipped in last + 1..from {
                    prop_assert!(dev.own.contains(&skipped), "seq {skipped} skipped");
                }
                dev.last = Some(to);
            }
            Got::Result(result) => {
                prop_assert_eq!(result.error, ErrorCode::None as i32);
                dev.own.insert(result.seq);
            }
            Got::Error(code) => prop_assert!(false, "unexpected error {code:?}"),
        }
    }
    Ok(())
}

proptest! {
    /// Random direct and room sends, room joins and leaves, acks,
    /// disconnects, reconnects (resuming or not) and evictions by count and
    /// age: every device gets each inbox seq at most once and in order, never
    /// skips one silently, sees each sender's messages (and the room's) in
    /// send order and the same message under the same seq as the user's other
    /// devices; once every device is connected and drained, each is caught up
    /// with its inbox.
    #[test]
    fn every_device_gets_its_inbox_in_order_with_no_silent_gap(
        moves in proptest::collection::vec(a_move(), 1..80),
        shards in 1..4u32,
    ) {
        check_delivery_contract(Cluster::with_limits(shards, limits(4, 3)), moves)?;
    }

    /// The same contract with inboxes kept by an engine (the fake, which
    /// follows the rules the Redis engine's scripts are proven to follow).
    #[test]
    fn every_device_gets_its_engine_kept_inbox_in_order_with_no_silent_gap(
        moves in proptest::collection::vec(a_move(), 1..80),
        shards in 1..4u32,
    ) {
        check_delivery_contract(Cluster::with_engine(shards, limits(4, 3)), moves)?;
    }
}

/// Plays `moves` on `c` and checks the delivery contract (see the
/// property tests above).
fn check_delivery_contract(mut c: Cluster, moves: Vec<Move>) -> Result<(), TestCaseError> {
    {
        let mut devices: HashMap<(usize, usize), Device> = HashMap::new();
        let mut by_seq: Vec<HashMap<u64, Vec<u8>>> = vec![HashMap::new(); USERS.len()];
        let mut counter = 0u32;
        let host = c.open("host", "d");
        let room = CreateRoom {
            room: "r".into(),
            open: true,
        };
        c.frame(host, 0, Some(Body::CreateRoom(room)));
        let mut members: BTreeSet<usize> = BTreeSet::new();
        // How many messages each user's inbox must have received.
        let mut stored = [0u64; 3];
        let session_of = |devices: &HashMap<(usize, usize), Device>, user: usize| {
            devices
                .iter()
                .find(|((u, _), d)| *u == user && d.session.is_some())
                .and_then(|(_, d)| d.session)
        };
        for step in moves {
            match step {
                Move::RoomSend(from) => {
                    let Some(session) = devices.get(&from).and_then(|d| d.session) else {
                        continue;
                    };
                    if !members.contains(&from.0) {
                        continue;
                    }
                    counter += 1;
                    for member in &members {
                        stored[*member] += 1;
                    }
                    let mut payload = b"R".to_vec();
                    payload.extend_from_slice(&counter.to_be_bytes());
                    c.frame(session, 0, Some(Body::Send(message("", "r", &payload))));
                }
                Move::Join(user) => {
                    if let Some(session) = session_of(&devices, user) {
                        let join = JoinRoom {
                            room: "r".into(),
                            user: String::new(),
                        };
                        c.frame(session, 0, Some(Body::JoinRoom(join)));
                        members.insert(user);
                    }
                }
                Move::Leave(user) => {
                    if let Some(session) = session_of(&devices, user) {
                        let leave = LeaveRoom {
                            room: "r".into(),
                            user: String::new(),
                        };
                        c.frame(session, 0, Some(Body::LeaveRoom(leave)));
                        members.remove(&user);
                    }
                }
                Move::Send { from, to } => {
                    let Some(session) = devices.get(&from).and_then(|d| d.session) else {
                        continue;
                    };
                    counter += 1;
                    stored[from.0] += 1;
                    if to != from.0 {
                        stored[to] += 1;
                    }
                    let mut payload = format!("{}/{}", from.0, from.1).into_bytes();
                    payload.extend_from_slice(&counter.to_be_bytes());
                    c.send(session, 0, USERS[to], &payload);
                }
                Move::Ack(who) => {
                    if let Some(Device {
                        session: Some(s),
                        last: Some(last),
                        ..
                    }) = devices.get(&who)
                    {
                        c.ack(*s, *last);
                    }
                }
                Move::Disconnect(who) => {
                    if let Some(s) = devices.get_mut(&who).and_then(|d| d.session.take()) {
                        c.close(s);
                    }
                }
                Move::Connect { who, resume } => {
                    let dev = devices.entry(who).or_default();
                    if let Some(s) = dev.session.take() {
                        c.close(s);
                    }
                    dev.resumed_from = resume.then_some(dev.last).flatten();
                    let resume = dev.resumed_from.map(|last_seq| Resume {
                        epoch: EPOCH,
                        last_seq,
                    });
                    dev.session =
                        Some(c.open_full(USERS[who.0], &device_name(who.1), None, resume));
                }
                Move::Advance(secs) => c.advance(Duration::from_secs(secs)),
            }
            for (who, dev) in devices.iter_mut() {
                absorb(&mut c, dev, &mut by_seq[who.0])?;
            }
        }
        // Connect every device that ever existed, resuming, and drain with
        // acks until nothing moves.
        for (who, dev) in devices.iter_mut() {
            if dev.session.is_none() {
                dev.resumed_from = dev.last;
                let resume = dev.last.map(|last_seq| Resume {
                    epoch: EPOCH,
                    last_seq,
                });
                dev.session = Some(c.open_full(USERS[who.0], &device_name(who.1), None, resume));
            }
        }
        for _ in 0..10 {
            let keys: Vec<_> = devices.keys().copied().collect();
            for who in keys {
                let dev = devices.get_mut(&who).unwrap();
                absorb(&mut c, dev, &mut by_seq[who.0])?;
                if let (Some(s), Some(last)) = (dev.session, dev.last) {
                    c.ack(s, last);
                }
            }
        }
        // A user whose record was forgotten (everything expired, no device
        // left) numbers on above every number its shard forgot, so its
        // inbox may have counted further than what it was sent.
        let last_seqs: Vec<u64> = USERS
            .iter()
            .map(|name| match &c.engine {
                Some(engine) => engine.inbox(name).map_or(0, |inbox| inbox.last_seq()),
                None => {
                    let id = user(name);
                    c.shards[c.shard_of(&id)].inbox_last_seq(&id)
                }
            })
            .collect();
        for (i, name) in USERS.iter().enumerate() {
            let id = user(name);
            if c.shards[c.shard_of(&id)].presence(&id).is_some() {
                prop_assert!(
                    last_seqs[i] >= stored[i],
                    "{}'s inbox misses messages",
                    name
                );
            }
        }
        for (who, dev) in &devices {
            let last_seq = last_seqs[who.0];
            let mut caught_up = dev.last.unwrap();
            while dev.own.contains(&(caught_up + 1)) {
                caught_up += 1;
            }
            prop_assert_eq!(caught_up, last_seq, "device {:?} is behind", who);
        }
    }
    Ok(())
}

#[test]
fn copies_waiting_behind_a_slow_send_are_stored_when_the_session_closes() {
    let mut c = Cluster::with_limits(2, limits(100, 100));
    let phone = c.open("alice", "phone");
    let laptop = c.open("alice", "laptop");
    let (remote, local) = (c.user_near("alice", false), c.user_near("alice", true));
    c.got(laptop);
    c.hold_forwards = true; // the remote recipient's shard answers late
    c.send(phone, 1, &remote, b"first");
    c.send(phone, 2, &local, b"second"); // its result waits behind "first"
    c.close(phone);
    c.release();
    let copies = c.payloads(laptop);
    assert_eq!(copies.len(), 2, "both copies stored: {copies:?}");
    assert!(copies.contains(&b"first".to_vec()) && copies.contains(&b"second".to_vec()));
}

#[test]
fn only_messages_for_users_with_no_open_session_are_reported_for_the_webhook() {
    let mut c = Cluster::with_limits(2, limits(100, 100));
    let alice = c.open("alice", "phone");
    let _carol = c.open("carol", "phone");
    c.send(alice, 0, "carol", b"online");
    c.send(alice, 0, "bob", b"offline");
    let pushed = [(user("bob"), 1)];
    assert_eq!(c.offline, pushed, "not carol, not alice's own copies");
    // A receipt for an offline sender is no reason for a push.
    let carol_device = c.open("carol", "laptop");
    c.read_receipt(carol_device, "dave", 7);
    assert_eq!(c.offline, pushed);
    let _bob = c.open("bob", "phone");
    c.send(alice, 0, "bob", b"now online");
    assert_eq!(c.offline, pushed);
}

#[test]
fn receipts_travel_back_to_the_sender_and_to_the_readers_other_devices() {
    let mut c = Cluster::with_limits(3, limits(100, 100));
    let alice = c.open("alice", "phone");
    let bob_phone = c.open("bob", "phone");
    let bob_laptop = c.open("bob", "laptop");
    let mut asking = message("bob", "", b"hi");
    asking.want_receipts = true;
    c.frame(alice, 1, Some(Body::Send(asking)));
    let asked = c.delivered(bob_phone);
    assert!(asked[0].want_receipts);
    c.delivered(bob_laptop);
    c.take(alice);
    let read = c.read_receipt(bob_phone, "alice", asked[0].message_id);
    let got = c.delivered(alice);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].receipt.as_ref(), Some(&read));
    assert_eq!(got[0].from_user, "bob");
    assert!(got[0].payload.is_empty());
    assert_eq!(
        c.delivered(bob_laptop)[0].receipt.as_ref(),
        Some(&read),
        "bob's other device learns it was read"
    );
    assert!(c.take(bob_phone).is_empty(), "no reply to a receipt");
    c.read_receipt(bob_phone, "alice", 0);
    assert_eq!(c.got(bob_phone), [Got::Error(ErrorCode::InvalidReceipt)]);
}

#[test]
fn acks_move_the_ack_deadline_and_its_check_is_filed_again_only_when_it_fires() {
    let timeout = Duration::from_secs(30);
    let step = Duration::from_secs(5);
    let mut limits = limits(100, 100);
    limits.ack_timeout = timeout;
    let (mut c, alice, bob) = Cluster::alice_and_bob(1, limits);
    c.send(alice, 0, "bob", b"1");
    let first_check = Some(timeout);
    assert_eq!(c.next_timer(), first_check);
    for seq in 1..=4 {
        c.advance(step);
        c.ack(bob, seq);
        c.send(alice, 0, "bob", b"n");
        // Each ack moved the deadline; the filed check stayed.
        assert_eq!(c.next_timer(), first_check);
    }
    // 20 s in, message 5 is unacked: the deadline is 50 s. The check at
    // 30 s finds it later and is filed again there.
    c.advance(Duration::from_secs(11));
    assert!(!c.closed.contains_key(&bob));
    assert_eq!(c.next_timer(), Some(step * 4 + timeout));
    c.advance(Duration::from_secs(18));
    assert!(!c.closed.contains_key(&bob), "49 s: not yet");
    c.advance(Duration::from_secs(1));
    assert_eq!(c.closed.get(&bob), Some(&CloseCode::SlowConsumer));
}

#[test]
fn a_closed_session_leaves_no_ack_check_behind() {
    let (mut c, alice, bob) = Cluster::alice_and_bob(1, limits(100, 100));
    c.send(alice, 0, "bob", b"1");
    c.ack(bob, 1);
    c.close(bob);
    c.advance(GRACE + Duration::from_secs(1));
    // Bob's ack check (60 s) went with the session: what is left is the
    // inboxes' expiry check (an hour), filed when "1" was stored.
    assert_eq!(c.next_timer(), Some(Duration::from_secs(3600)));
}

#[test]
fn a_session_that_stops_acking_is_closed_and_resumes_from_its_ack_point() {
    let mut limits = limits(100, 100);
    limits.ack_timeout = Duration::from_secs(30);
    let (mut c, alice, bob) = Cluster::alice_and_bob(2, limits);
    c.send(alice, 0, "bob", b"1");
    c.advance(Duration::from_secs(20));
    c.ack(bob, 1); // progress: the deadline starts over
    c.send(alice, 0, "bob", b"2");
    c.advance(Duration::from_secs(20));
    assert!(!c.closed.contains_key(&bob), "acked within the timeout");
    c.advance(Duration::from_secs(15));
    assert_eq!(c.closed.get(&bob), Some(&CloseCode::SlowConsumer));
    c.close(bob);
    let bob = c.open("bob", "phone");
    assert_eq!(c.got(bob)[1..], [deliver(2, "2")], "resumes after its ack");
    // A session with nothing unacked is never timed out.
    c.ack(bob, 2);
    c.advance(Duration::from_secs(600));
    assert!(!c.closed.contains_key(&bob));
}
