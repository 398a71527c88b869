//! Engine-kept inboxes ([`InboxAuthority::External`]) against a
//! [`FakeEngine`] that keeps every inbox in a core `Mailbox` (the rules the
//! Redis engine's scripts are proven to follow, in the e2e parity test):
//! messages reach devices and copies through the engine, results wait for
//! both copies and keep send order when the engine answers late, an engine
//! that fails gives a retryable refusal, and inboxes outlive the shards
//! (a node restart) with nothing acknowledged lost.

use std::collections::{BTreeMap, HashMap, VecDeque};

use switchboard_proto::v1::Ack;

use super::*;
use crate::engine::{AppendedEntry, EngineReply, EngineRequest, EngineTicket, InboxAuthority};
use crate::mailbox::Mailbox;
use crate::remote_inbox::{device_key, sender_key, EntryHeader, InboxWindow};
use crate::stats::MailboxStats;
use crate::MailboxLimits;

/// Every inbox in a `Mailbox`, answering like the Redis engine.
#[derive(Default)]
pub(super) struct FakeEngine {
    inboxes: HashMap<UserId, Mailbox>,
    /// Sessions open per (user, device), for `Appended.devices`.
    online: HashMap<(UserId, DeviceId), usize>,
    pub(super) limits: MailboxLimits,
    /// While set, requests wait in `held` (answered by `Cluster::answer`).
    pub(super) hold: bool,
    pub(super) held: VecDeque<(usize, EngineTicket, EngineRequest)>,
    /// While set, every request fails.
    pub(super) down: bool,
    /// While set, appended entries are not announced to the shards (a
    /// node's subscription was down).
    pub(super) deaf: bool,
}

impl FakeEngine {
    /// Applies `request` at `now`: its reply, and the appended entries to
    /// announce.
    fn apply(
        &mut self,
        now: Now,
        start: Instant,
        request: EngineRequest,
    ) -> (EngineReply, Vec<AppendedEntry>) {
        if self.down {
            return (EngineReply::Unavailable, Vec::new());
        }
        let stats = &mut MailboxStats::default();
        let at = now.instant;
        match request {
            EngineRequest::Deliver { to, message } => {
                let from = message.from.clone();
                let append = |engine: &mut Self, user, own, check_share| {
                    let request = EngineRequest::Append {
                        user,
                        message: message.clone(),
                        own,
                        check_share,
                    };
                    engine.apply(now, start, request)
                };
                let (got, mut entries) = append(self, to, false, true);
                let EngineReply::Appended {
                    seq,
                    first_seq,
                    devices,
                } = got
                else {
                    return (got, entries);
                };
                let (copy, more) = append(self, from, true, false);
                let EngineReply::Appended {
                    seq: own_seq,
                    first_seq: own_first_seq,
                    devices: own_devices,
                } = copy
                else {
                    unreachable!("an own copy is never refused")
                };
                entries.extend(more);
                let reply = EngineReply::Delivered {
                    seq,
                    first_seq,
                    devices,
                    own_seq,
                    own_first_seq,
                    own_devices,
                };
                (reply, entries)
            }
            EngineRequest::Append {
                user,
                message,
                own,
                check_share,
            } => {
                let limits = self.limits.clone();
                let inbox = self.inboxes.entry(user.clone()).or_default();
                inbox.expire(at, &limits, stats);
                if check_share
                    && inbox.is_full_for(message.encoded.len(), &limits)
                    && inbox.holds_its_share_from(&message.from, &limits)
                {
                    return (EngineReply::ShareRefused, Vec::new());
                }
                let header = EntryHeader {
                    stored_ms: message.sent_at_ms,
                    own,
                    sender: sender_key(&message.from),
                    device: device_key(&message.from_device),
                };
                let encoded = message.encoded.clone();
                let seq = inbox.append(message, own, at, &limits, stats);
                let first_seq = inbox.first_seq();
                let devices = self
                    .online
                    .iter()
                    .filter(|((u, _), n)| *u == user && **n > 0)
                    .count() as u32;
                let entry = AppendedEntry {
                    user,
                    seq,
                    first_seq,
                    header,
                    message: encoded,
                };
                (
                    EngineReply::Appended {
                        seq,
                        first_seq,
                        devices,
                    },
                    vec![entry],
                )
            }
            EngineRequest::Attach {
                user,
                device,
                resume,
                count,
            } => {
                *self
                    .online
                    .entry((user.clone(), device.clone()))
                    .or_default() += 1;
                let inbox = self.inboxes.entry(user).or_default();
                inbox.expire(at, &self.limits, stats);
                let after = inbox.attach(&device, resume, stats);
                let window = window(inbox, &device, after, count, start);
                (EngineReply::Attached { after, window }, Vec::new())
            }
            EngineRequest::Fetch {
                user,
                device,
                after,
                count,
            } => {
                let inbox = self.inboxes.entry(user).or_default();
                inbox.expire(at, &self.limits, stats);
                let window = window(inbox, &device, after, count, start);
                (EngineReply::Fetched(window), Vec::new())
            }
            EngineRequest::Ack { user, device, seq } => {
                let inbox = self.inboxes.entry(user).or_default();
                inbox.ack(&device, seq, stats);
                (EngineReply::Done, Vec::new())
            }
            EngineRequest::Detach { user, device } => {
                if let Some(n) = self.online.get_mut(&(user.clone(), device.clone())) {
                    *n = n.saturating_sub(1);
                }
                let inbox = self.inboxes.entry(user).or_default();
                inbox.detach(&device, at);
                (EngineReply::Done, Vec::new())
            }
        }
    }

    /// The inbox of `user`.
    pub(super) fn inbox(&self, user: &str) -> Option<&Mailbox> {
        self.inboxes.get(&UserId::parse(user).unwrap())
    }
}

/// The window the engine answers for `device` reading after `after`.
fn window(
    inbox: &Mailbox,
    device: &DeviceId,
    after: u64,
    count: usize,
    start: Instant,
) -> InboxWindow {
    let acked = inbox.device_acked(device).unwrap_or(0);
    let from = (after.max(acked) + 1).max(inbox.first_seq());
    let entries = (from..from + count as u64)
        .map_while(|seq| inbox.entry(seq))
        .map(|(message, own, stored_at)| {
            let header = EntryHeader {
                stored_ms: 1_000_000 + (stored_at - start).as_millis() as u64,
                own,
                sender: sender_key(&message.from),
                device: device_key(&message.from_device),
            };
            (header, message.encoded.clone())
        })
        .collect();
    InboxWindow {
        first_seq: inbox.first_seq(),
        last_seq: inbox.last_seq(),
        acked,
        start: from,
        entries,
    }
}

impl Cluster {
    /// A cluster whose inboxes the fake engine keeps.
    pub(super) fn with_engine(shard_count: u32, limits: CoreLimits) -> Self {
        let engine = FakeEngine {
            limits: limits.mailbox.clone(),
            ..FakeEngine::default()
        };
        let limits = CoreLimits {
            inbox_authority: InboxAuthority::External,
            ..limits
        };
        let mut cluster = Cluster::with_limits(shard_count, limits);
        cluster.engine = Some(engine);
        cluster
    }

    /// Hands an engine request from `shard` to the fake engine: answered at
    /// once (and its entry announced to the user's shard), or held.
    pub(super) fn engine_request(
        &mut self,
        shard: usize,
        ticket: EngineTicket,
        request: EngineRequest,
        queue: &mut VecDeque<(usize, ShardInput)>,
    ) {
        let (now, start) = (self.now(), self.start);
        let engine = self
            .engine
            .as_mut()
            .expect("an engine request needs an engine");
        if engine.hold {
            engine.held.push_back((shard, ticket, request));
            return;
        }
        let (reply, appended) = engine.apply(now, start, request);
        let deaf = engine.deaf;
        for entry in appended.into_iter().filter(|_| !deaf) {
            queue.push_back((self.shard_of(&entry.user), ShardInput::Appended(entry)));
        }
        queue.push_back((shard, ShardInput::EngineReply { ticket, reply }));
    }

    /// Applies the held engine requests in the order they were emitted (as
    /// an engine must), then hands their answers back in the order given
    /// by `order` (indices into the held queue): late and reordered
    /// answers.
    pub(super) fn answer_held(&mut self, order: &[usize]) {
        let engine = self.engine.as_mut().unwrap();
        engine.hold = false;
        let held: Vec<_> = engine.held.drain(..).collect();
        let mut answers: Vec<Option<VecDeque<(usize, ShardInput)>>> = Vec::new();
        for (shard, ticket, request) in held {
            let mut queue = VecDeque::new();
            self.engine_request(shard, ticket, request, &mut queue);
            answers.push(Some(queue));
        }
        for &i in order {
            let mut queue = answers[i].take().expect("each once");
            while let Some((shard, input)) = queue.pop_front() {
                self.deliver(shard, input);
            }
        }
        assert!(
            answers.iter().all(Option::is_none),
            "every held request answered"
        );
    }

    /// The node restarts: every shard is new, the engine keeps its inboxes.
    fn restart_node(&mut self) {
        let limits = self.limits.clone();
        let count = self.shards.len() as u32;
        let now = self.now().instant;
        self.shards = (0..count)
            .map(|i| Shard::new(ShardId(i), count, limits.clone(), now))
            .collect();
        // The sessions went with the node; the engine forgets them too
        // (the Redis engine's janitor does, for a node that died).
        self.engine.as_mut().unwrap().online.clear();
    }
}

fn engine_limits() -> CoreLimits {
    CoreLimits {
        mailbox: MailboxLimits {
            max_messages: 100,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(3600),
            sender_share_percent: 50,
        },
        delivery_window: 4,
        inbox_epoch: 9,
        ..Cluster::test_limits()
    }
}

#[test]
fn a_direct_message_reaches_devices_and_copies_through_the_engine() {
    let mut c = Cluster::with_engine(2, engine_limits());
    let alice = c.open("alice", "phone");
    let laptop = c.open("alice", "laptop");
    let bob = c.open("bob", "phone");
    for s in [alice, laptop, bob] {
        c.take_all(s);
    }
    c.send(alice, 1, "bob", b"hi");
    assert_eq!(c.payloads(bob), [b"hi".to_vec()]);
    assert_eq!(c.payloads(laptop), [b"hi".to_vec()], "the sender's copy");
    let results = c.results(alice);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].error, ErrorCode::None as i32);
    assert_eq!(results[0].seq, 1, "the copy's seq in alice's inbox");
    assert_eq!(results[0].devices, 1, "bob's one device");
    assert!(
        c.payloads(alice).is_empty(),
        "no copy to the sending device"
    );
    let engine = c.engine.as_ref().unwrap();
    assert_eq!(engine.inbox("bob").unwrap().last_seq(), 1);
    assert_eq!(engine.inbox("alice").unwrap().last_seq(), 1);
}

#[test]
fn results_wait_for_both_copies_and_keep_send_order_when_the_engine_answers_late() {
    let mut c = Cluster::with_engine(2, engine_limits());
    let alice = c.open("alice", "phone");
    // A second device, offline, so alice's inbox keeps her copies.
    let laptop = c.open("alice", "laptop");
    c.close(laptop);
    c.open("bob", "phone");
    c.open("carol", "phone");
    c.take_all(alice);
    c.engine.as_mut().unwrap().hold = true;
    c.send(alice, 1, "bob", b"1");
    c.send(alice, 2, "carol", b"2");
    assert!(
        c.results(alice).is_empty(),
        "nothing acknowledged before the engine"
    );
    // The engine's answer for the second message comes first.
    c.answer_held(&[1, 0]);
    let refs: Vec<u64> = c.results(alice).iter().map(|r| r.r#ref).collect();
    assert_eq!(refs, [1, 2], "results in send order");
    let alice_inbox = c.engine.as_ref().unwrap().inbox("alice").unwrap();
    let copies: Vec<u64> = (1..=2)
        .map(|seq| alice_inbox.entry(seq).unwrap().0.message_id)
        .collect();
    assert!(copies[0] < copies[1], "copies in send order: {copies:?}");
}

#[test]
fn an_engine_that_fails_gives_a_retryable_refusal_and_keeps_nothing() {
    let mut c = Cluster::with_engine(1, engine_limits());
    let alice = c.open("alice", "phone");
    c.open("bob", "phone");
    c.take_all(alice);
    c.engine.as_mut().unwrap().down = true;
    c.send(alice, 1, "bob", b"lost?");
    let results = c.results(alice);
    assert_eq!(results[0].error, ErrorCode::ServerBusy as i32);
    assert!(results[0].retry_after_ms > 0);
    c.engine.as_mut().unwrap().down = false;
    assert_eq!(
        c.engine.as_ref().unwrap().inbox("bob").unwrap().last_seq(),
        0
    );
    assert_eq!(c.shards[0].take_stats().engine_failures, 1);
}

#[test]
fn inboxes_outlive_a_node_restart_with_nothing_acknowledged_lost() {
    let mut c = Cluster::with_engine(2, engine_limits());
    let alice = c.open("alice", "phone");
    let bob = c.open("bob", "phone");
    c.take_all(bob);
    c.send_texts(alice, "bob", &["1", "2", "3"]);
    assert_eq!(c.payloads(bob).len(), 3);
    c.frame(bob, 0, Some(Body::Ack(Ack { seq: 1 })));
    c.close(bob);
    c.send_texts(alice, "bob", &["4", "5", "6", "7"]);
    let acknowledged = c.results(alice).len();
    assert_eq!(acknowledged, 7);
    c.restart_node();
    let resume = Resume {
        epoch: 9,
        last_seq: 1,
    };
    let bob = c.open_full("bob", "phone", None, Some(resume));
    let got = c.take_all(bob);
    let opened = got.iter().find_map(|b| match b {
        server_frame::Body::InboxOpened(o) => Some(*o),
        _ => None,
    });
    let opened = opened.expect("InboxOpened");
    assert_eq!((opened.resume_after, opened.last_seq), (1, 7));
    let delivered: Vec<u64> = got
        .iter()
        .filter_map(|b| match b {
            server_frame::Body::Deliver(d) => Some(d.seq),
            _ => None,
        })
        .collect();
    assert_eq!(
        delivered,
        [2, 3, 4, 5],
        "after the ack point, up to the window"
    );
    c.frame(bob, 0, Some(Body::Ack(Ack { seq: 5 })));
    let more: Vec<u64> = c
        .take_all(bob)
        .iter()
        .filter_map(|b| match b {
            server_frame::Body::Deliver(d) => Some(d.seq),
            _ => None,
        })
        .collect();
    assert_eq!(more, [6, 7], "the rest, fetched from the engine");
}

#[test]
fn a_full_inbox_refuses_a_sender_over_its_share_through_the_engine() {
    let mut limits = engine_limits();
    limits.mailbox.max_messages = 4;
    let mut c = Cluster::with_engine(1, limits);
    let alice = c.open("alice", "phone");
    c.take_all(alice);
    c.send_texts(alice, "bob", &["1", "2", "3", "4", "5"]);
    let codes: Vec<i32> = c.results(alice).iter().map(|r| r.error).collect();
    let full = ErrorCode::InboxFull as i32;
    assert_eq!(codes, [0, 0, 0, 0, full]);
}

/// The seq and payload of each message delivered to `session`.
fn deliveries(c: &mut Cluster, session: SessionId) -> BTreeMap<u64, Vec<u8>> {
    c.pick(session, |b| match b {
        server_frame::Body::Deliver(d) => Some((d.seq, d.message?.payload.to_vec())),
        _ => None,
    })
    .into_iter()
    .collect()
}

#[test]
fn a_second_session_fetches_what_the_mirror_let_go() {
    let mut c = Cluster::with_engine(1, engine_limits());
    let alice = c.open("alice", "phone");
    let bob = c.open("bob", "phone");
    c.take_all(bob);
    c.send_texts(alice, "bob", &["1", "2", "3"]);
    let first = deliveries(&mut c, bob);
    assert_eq!(first.len(), 3);
    // Bob's phone was sent everything: the mirror let go of it. His laptop,
    // new, starts where a new device starts (nothing released yet: 0).
    let laptop = c.open("bob", "laptop");
    let second = deliveries(&mut c, laptop);
    assert_eq!(second, first, "the laptop gets the same seqs, fetched");
}

#[test]
fn a_room_message_reaches_every_member_through_the_engine_in_one_order() {
    let mut c = Cluster::with_engine(3, engine_limits());
    let alice = c.open("alice", "phone");
    let laptop = c.open("alice", "laptop");
    let bob = c.open("bob", "phone");
    let carol = c.open("carol", "phone");
    assert_eq!(c.create_room(alice, "r", true), Ok(1));
    assert_eq!(c.join_room(bob, "r", ""), Ok(2));
    assert_eq!(c.join_room(carol, "r", ""), Ok(3));
    for s in [alice, laptop, bob, carol] {
        c.take_all(s);
    }
    c.frame(alice, 1, Some(Body::Send(message("", "r", b"from alice"))));
    c.frame(bob, 2, Some(Body::Send(message("", "r", b"from bob"))));
    let results = c.pick(alice, |b| match b {
        server_frame::Body::SendResult(r) => Some(r),
        _ => None,
    });
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].error, ErrorCode::None as i32);
    assert_eq!(
        (results[0].devices, results[0].seq),
        (2, 1),
        "alice's copy is seq 1"
    );
    let order = [b"from alice".to_vec(), b"from bob".to_vec()];
    assert_eq!(c.payloads(carol), order);
    assert_eq!(
        c.payloads(laptop),
        order,
        "alice's other device: her copy too"
    );
    let bob_got = c.payloads(bob);
    assert_eq!(bob_got, [b"from alice".to_vec()], "not his own");
    let engine = c.engine.as_ref().unwrap();
    for user in ["alice", "bob", "carol"] {
        assert_eq!(engine.inbox(user).unwrap().last_seq(), 2, "{user}");
    }
}

#[test]
fn messages_stored_for_offline_users_are_reported_for_the_webhook() {
    let mut c = Cluster::with_engine(2, engine_limits());
    let alice = c.open("alice", "phone");
    let dave = c.open("dave", "phone");
    assert_eq!(c.create_room(alice, "r", true), Ok(1));
    assert_eq!(c.join_room(dave, "r", ""), Ok(2));
    c.close(dave);
    c.take_all(alice);
    c.send(alice, 1, "bob", b"direct");
    c.frame(alice, 2, Some(Body::Send(message("", "r", b"room"))));
    let mut offline = c.offline.clone();
    offline.sort();
    assert_eq!(offline, [(user("bob"), 1), (user("dave"), 1)]);
}

#[test]
fn a_session_still_attaching_is_sent_nothing_before_its_inbox_opened() {
    let mut c = Cluster::with_engine(1, engine_limits());
    let alice = c.open("alice", "phone");
    let bob = c.open("bob", "phone");
    c.take_all(bob);
    c.engine.as_mut().unwrap().hold = true;
    let laptop = c.open("bob", "laptop");
    c.engine.as_mut().unwrap().hold = false;
    // Alice's message is delivered while the laptop's attach is held.
    c.send(alice, 1, "bob", b"hi");
    assert_eq!(c.payloads(bob), [b"hi".to_vec()]);
    assert!(c.take_all(laptop).is_empty(), "nothing before InboxOpened");
    c.frame(laptop, 0, Some(Body::Ack(Ack { seq: 1 })));
    assert_eq!(c.errors(laptop), [ErrorCode::InvalidAck], "nor an ack");
    c.answer_held(&[0]);
    let got = c.take_all(laptop);
    assert!(
        matches!(got.first(), Some(server_frame::Body::InboxOpened(_))),
        "{got:?}"
    );
}

#[test]
fn entries_a_node_did_not_hear_of_reach_its_sessions_after_a_resync() {
    let mut c = Cluster::with_engine(2, engine_limits());
    let alice = c.open("alice", "phone");
    let bob = c.open("bob", "phone");
    c.take_all(bob);
    c.engine.as_mut().unwrap().deaf = true;
    c.send_texts(alice, "bob", &["missed", "too"]);
    assert!(c.payloads(bob).is_empty(), "the announcements were lost");
    c.engine.as_mut().unwrap().deaf = false;
    for shard in 0..2 {
        c.deliver(shard, ShardInput::Resync);
    }
    assert_eq!(c.payloads(bob), [b"missed".to_vec(), b"too".to_vec()]);
}
