//! Behaviour tests of the sans-IO core: a [`Cluster`] of shards driven with a
//! virtual clock, forwarding outputs between shards exactly like the shell.
//! Routing and presence tests are here; inbox, ack, resume and idempotency
//! tests are in [`delivery`], room tests in [`rooms`], server API tests in
//! [`api`].

mod api;
mod delivery;
mod engine;
mod limits;
mod privacy;
mod rooms;
mod signals;
mod stats;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use switchboard_proto::close::CloseCode;
use switchboard_proto::frame::FrameDecoder;
use switchboard_proto::v1::{
    client_frame::Body, server_frame, ClientFrame, ErrorCode, Message, Ping, Presence, Resume,
    Send, SendResult, ServerFrame, SetStatus, Status, Unwatch, Watch,
};

use super::*;

const GRACE: Duration = Duration::from_secs(5);

/// Several shards plus the plumbing between them, with a virtual clock.
struct Cluster {
    shards: Vec<Shard>,
    start: Instant,
    elapsed: Duration,
    next_session: u64,
    /// Frames written to each session, decoded.
    received: HashMap<SessionId, VecDeque<ServerFrame>>,
    /// Close codes sent to sessions.
    closed: HashMap<SessionId, CloseCode>,
    /// Their reason phrases.
    close_reasons: HashMap<SessionId, String>,
    users: HashMap<SessionId, UserId>,
    /// Messages reported stored for users with no open session.
    offline: Vec<(UserId, u64)>,
    /// Server API replies by token.
    api_replies: HashMap<ApiToken, ApiReply>,
    /// When set, forwards between shards wait in `held` until `release`.
    hold_forwards: bool,
    held: VecDeque<(usize, ShardInput)>,
    /// What every shard was started with.
    limits: CoreLimits,
    /// The engine that keeps the inboxes, when not the shards
    /// ([`engine::FakeEngine`]).
    engine: Option<engine::FakeEngine>,
}

impl Cluster {
    fn new(shard_count: u32) -> Self {
        Self::with_limits(shard_count, Self::test_limits())
    }

    /// Small limits, so tests reach them.
    fn test_limits() -> CoreLimits {
        CoreLimits {
            offline_grace: GRACE,
            max_payload_bytes: 100,
            max_watched_users: 3,
            max_status_text_bytes: 10,
            rates: RateLimits::unlimited(),
            ..CoreLimits::default()
        }
    }

    fn with_limits(shard_count: u32, limits: CoreLimits) -> Self {
        let start = Instant::now();
        Self {
            shards: (0..shard_count)
                .map(|i| Shard::new(ShardId(i), shard_count, limits.clone(), start))
                .collect(),
            limits,
            engine: None,
            start,
            elapsed: Duration::ZERO,
            next_session: 0,
            received: HashMap::new(),
            closed: HashMap::new(),
            close_reasons: HashMap::new(),
            users: HashMap::new(),
            offline: Vec::new(),
            api_replies: HashMap::new(),
            hold_forwards: false,
            held: VecDeque::new(),
        }
    }

    /// Delivers every held forward (and what follows from them).
    fn release(&mut self) {
        self.hold_forwards = false;
        while let Some((shard, input)) = self.held.pop_front() {
            self.deliver(shard, input);
        }
    }

    fn now(&self) -> Now {
        Now {
            instant: self.start + self.elapsed,
            unix_ms: 1_000_000 + self.elapsed.as_millis() as u64,
        }
    }

    fn shard_of(&self, user: &UserId) -> usize {
        placement::shard_of(user, self.shards.len() as u32).0 as usize
    }

    /// Hands `input` to `shard` and pumps every output to completion.
    fn deliver(&mut self, shard: usize, input: ShardInput) {
        let mut queue = VecDeque::from([(shard, input)]);
        while let Some((shard, input)) = queue.pop_front() {
            let now = self.now();
            self.shards[shard].handle(now, input);
            self.drain(shard, &mut queue);
        }
    }

    fn drain(&mut self, shard: usize, queue: &mut VecDeque<(usize, ShardInput)>) {
        while let Some(output) = self.shards[shard].poll_output() {
            match output {
                Output::Transmit { session, frame, .. } => {
                    let mut decoder = FrameDecoder::new(1 << 20);
                    decoder.extend(&frame.head);
                    decoder.extend(&frame.shared);
                    let frame = decoder.decode::<ServerFrame>().unwrap().unwrap();
                    self.received.entry(session).or_default().push_back(frame);
                }
                Output::Close {
                    session,
                    code,
                    reason,
                } => {
                    self.closed.insert(session, code);
                    self.close_reasons.insert(session, reason.into_owned());
                }
                Output::StoredForOffline { user, seq, .. } => self.offline.push((user, seq)),
                Output::ApiReply { token, reply } => {
                    self.api_replies.insert(token, reply);
                }
                Output::Forward { shard, input } if self.hold_forwards => {
                    self.held.push_back((shard.0 as usize, input))
                }
                Output::Forward { shard, input } => queue.push_back((shard.0 as usize, input)),
                Output::Engine { ticket, request } => {
                    self.engine_request(shard, ticket, request, queue)
                }
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.elapsed += by;
        let now = self.now();
        let mut queue = VecDeque::new();
        for shard in 0..self.shards.len() {
            if self.shards[shard]
                .poll_timeout()
                .is_some_and(|t| t <= now.instant)
            {
                self.shards[shard].handle_timeout(now);
                self.drain(shard, &mut queue);
            }
        }
        while let Some((shard, input)) = queue.pop_front() {
            self.deliver(shard, input);
        }
    }

    fn open(&mut self, user: &str, device: &str) -> SessionId {
        self.open_full(user, device, None, None)
    }

    fn open_full(
        &mut self,
        user: &str,
        device: &str,
        initial_status: Option<Status>,
        resume: Option<Resume>,
    ) -> SessionId {
        self.next_session += 1;
        let session = SessionId(self.next_session);
        let user = self::user(user);
        self.users.insert(session, user.clone());
        let shard = self.shard_of(&user);
        self.deliver(
            shard,
            ShardInput::Open {
                session,
                user,
                device: DeviceId::parse(device).unwrap(),
                initial_status,
                resume,
            },
        );
        session
    }

    fn close(&mut self, session: SessionId) {
        let shard = self.shard_of(&self.users[&session].clone());
        self.deliver(shard, ShardInput::Closed { session });
    }

    fn frame(&mut self, session: SessionId, r#ref: u64, body: Option<Body>) {
        let shard = self.shard_of(&self.users[&session].clone());
        let frame = ClientFrame { r#ref, body };
        let received_at = self.now().instant;
        let input = ShardInput::Frame {
            session,
            frame,
            received_at,
        };
        self.deliver(shard, input);
    }

    fn send(&mut self, session: SessionId, r#ref: u64, to: &str, payload: &[u8]) {
        self.frame(session, r#ref, Some(Body::Send(message(to, "", payload))));
    }

    /// Sends each of `texts` from `session` to `to`, in order.
    fn send_texts(&mut self, session: SessionId, to: &str, texts: &[&str]) {
        for text in texts {
            self.send(session, 0, to, text.as_bytes());
        }
    }

    fn set_status(&mut self, session: SessionId, status: Status, text: &str) {
        let (status, text) = (status as i32, text.into());
        self.frame(
            session,
            0,
            Some(Body::SetStatus(SetStatus { status, text })),
        );
    }

    fn watch(&mut self, session: SessionId, users: &[&str]) {
        let users = users.iter().map(|u| u.to_string()).collect();
        self.frame(session, 9, Some(Body::Watch(Watch { users })));
    }

    fn unwatch(&mut self, session: SessionId, user: &str) {
        let users = vec![user.to_owned()];
        self.frame(session, 0, Some(Body::Unwatch(Unwatch { users })));
    }

    /// A user named `user{i}` whose shard is (`same`) or is not `near`'s.
    fn user_near(&self, near: &str, same: bool) -> String {
        let shard = self.shard_of(&user(near));
        (0..100)
            .map(|i| format!("user{i}"))
            .find(|u| (self.shard_of(&user(u)) == shard) == same)
            .unwrap()
    }

    /// Every frame `session` received since the last take.
    fn take_all(&mut self, session: SessionId) -> Vec<server_frame::Body> {
        self.received
            .remove(&session)
            .unwrap_or_default()
            .into_iter()
            .map(|f| f.body.unwrap())
            .collect()
    }

    /// Like [`Cluster::take_all`] without the `InboxOpened` every session
    /// starts with, which routing and presence tests do not look at.
    fn take(&mut self, session: SessionId) -> Vec<server_frame::Body> {
        self.take_all(session)
            .into_iter()
            .filter(|b| !matches!(b, server_frame::Body::InboxOpened(_)))
            .collect()
    }

    /// What `pick` finds in the frames `session` received since the last
    /// take.
    fn pick<T>(
        &mut self,
        session: SessionId,
        pick: impl FnMut(server_frame::Body) -> Option<T>,
    ) -> Vec<T> {
        self.take(session).into_iter().filter_map(pick).collect()
    }

    /// The messages delivered to `session` since the last take.
    fn delivered(&mut self, session: SessionId) -> Vec<Message> {
        self.pick(session, |b| match b {
            server_frame::Body::Deliver(d) => d.message,
            _ => None,
        })
    }

    /// The SendResults `session` received since the last take, which must
    /// be all it received.
    fn results(&mut self, session: SessionId) -> Vec<SendResult> {
        self.pick(session, |b| match b {
            server_frame::Body::SendResult(r) => Some(r),
            other => panic!("expected a SendResult, got {other:?}"),
        })
    }

    /// The error codes `session` received since the last take, which must be
    /// all it received.
    fn errors(&mut self, session: SessionId) -> Vec<ErrorCode> {
        self.pick(session, |b| match b {
            server_frame::Body::Error(e) => Some(ErrorCode::try_from(e.code).unwrap()),
            other => panic!("expected an Error, got {other:?}"),
        })
    }

    /// The payloads delivered to `session` since the last take.
    fn payloads(&mut self, session: SessionId) -> Vec<Vec<u8>> {
        let messages = self.delivered(session);
        messages.iter().map(|m| m.payload.to_vec()).collect()
    }

    fn presence(&mut self, session: SessionId) -> Vec<Presence> {
        self.pick(session, |b| match b {
            server_frame::Body::Presence(p) => Some(p),
            _ => None,
        })
    }
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// A `Send` of `payload` to user `to` or to `room`.
fn message(to: &str, room: &str, payload: &[u8]) -> Send {
    Send {
        to: to.into(),
        room: room.into(),
        payload: payload.to_vec().into(),
        ..Send::default()
    }
}

fn status_of(p: &Presence) -> Status {
    Status::try_from(p.status).unwrap()
}

#[test]
fn direct_message_reaches_every_recipient_device_and_senders_other_devices() {
    let mut c = Cluster::new(4);
    let alice_phone = c.open("alice", "phone");
    let alice_laptop = c.open("alice", "laptop");
    let bob_phone = c.open("bob", "phone");
    let bob_laptop = c.open("bob", "laptop");

    c.send(alice_phone, 1, "bob", b"hi");

    let [result] = c.results(alice_phone).try_into().unwrap();
    assert_eq!(
        (result.r#ref, result.error, result.devices),
        (1, ErrorCode::None as i32, 2)
    );
    for session in [alice_laptop, bob_phone, bob_laptop] {
        let got = c.delivered(session);
        assert_eq!(got.len(), 1, "session {session:?}");
        assert_eq!(got[0].payload.as_ref(), b"hi");
        assert_eq!(got[0].from_user, "alice");
        assert_eq!(got[0].from_device, "phone");
        assert_eq!(got[0].to_user, "bob");
        assert_eq!(got[0].message_id, result.message_id);
    }
}

#[test]
fn messages_keep_send_order_per_sender_across_shards() {
    for shards in [1, 2, 7] {
        let mut c = Cluster::new(shards);
        let alice = c.open("alice", "d");
        let alice2 = c.open("alice", "d2");
        let bob = c.open("bob", "d");
        let sent: Vec<Vec<u8>> = (0..50u32).map(|i| i.to_be_bytes().to_vec()).collect();
        for (i, payload) in sent.iter().enumerate() {
            c.send(alice, i as u64, "bob", payload);
        }
        for session in [bob, alice2] {
            assert_eq!(c.payloads(session), sent, "{shards} shards");
        }
    }
}

#[test]
fn copies_and_results_keep_send_order_when_shards_answer_late() {
    let mut c = Cluster::new(2);
    let alice = c.open("alice", "phone");
    let laptop = c.open("alice", "laptop");
    let (remote, local) = (c.user_near("alice", false), c.user_near("alice", true));
    c.open(&remote, "d");
    c.open(&local, "d");

    c.hold_forwards = true; // the remote shard answers late
    c.send(alice, 1, &remote, b"m1");
    c.send(alice, 2, &local, b"m2");
    c.send(alice, 3, "alice", b"m3");
    assert!(c.delivered(laptop).is_empty(), "m2 and m3 wait for m1");
    c.release();

    let order = c.payloads(laptop);
    assert_eq!(order, vec![b"m1".to_vec(), b"m2".to_vec(), b"m3".to_vec()]);
    let refs: Vec<u64> = c.results(alice).iter().map(|r| r.r#ref).collect();
    assert_eq!(refs, vec![1, 2, 3], "results in send order too");
}

#[test]
fn watching_unknown_users_leaves_no_records_behind() {
    let mut c = Cluster::new(1);
    let alice = c.open("alice", "phone");
    for i in 0..3 {
        let user = format!("ghost{i}");
        c.watch(alice, &[&user]);
        c.unwatch(alice, &user);
        assert!(c.shards[0].presence(&self::user(&user)).is_none());
    }
}

#[test]
fn invalid_recipient_oversize_payload_and_client_msg_id_are_rejected() {
    let mut c = Cluster::new(1);
    let alice = c.open("alice", "phone");
    let _bob = c.open("bob", "phone");
    c.send(alice, 1, "not a user!", b"x");
    c.send(alice, 2, "bob", &[0; 101]);
    c.send_keyed(alice, 3, "bob", &"k".repeat(65));
    let results: Vec<(u64, i32)> = c
        .results(alice)
        .iter()
        .map(|r| (r.r#ref, r.error))
        .collect();
    assert_eq!(
        results,
        vec![
            (1, ErrorCode::InvalidUserId as i32),
            (2, ErrorCode::PayloadTooLarge as i32),
            (3, ErrorCode::InvalidClientMsgId as i32)
        ]
    );
}

#[test]
fn note_to_self_reaches_other_devices() {
    let mut c = Cluster::new(3);
    let phone = c.open("alice", "phone");
    let laptop = c.open("alice", "laptop");
    c.send(phone, 1, "alice", b"note");
    assert_eq!(c.delivered(laptop).len(), 1);
    let [r] = c.results(phone).try_into().unwrap();
    assert_eq!((r.error, r.devices), (0, 1));
}

#[test]
fn unknown_frame_gets_error_and_second_hello_closes() {
    let mut c = Cluster::new(1);
    let alice = c.open("alice", "phone");
    c.frame(alice, 3, None);
    assert!(matches!(
        c.take(alice).as_slice(),
        [server_frame::Body::Error(e)] if e.code == ErrorCode::UnknownFrame as i32 && e.r#ref == 3
    ));
    c.frame(alice, 4, Some(Body::Hello(Default::default())));
    assert_eq!(c.closed.get(&alice), Some(&CloseCode::ProtocolViolation));
}

#[test]
fn same_device_replaces_the_old_session() {
    let mut c = Cluster::new(2);
    let watcher = c.open("carol", "d");
    c.watch(watcher, &["alice"]);
    let old = c.open("alice", "phone");
    c.presence(watcher);
    let new = c.open("alice", "phone");
    assert_eq!(c.closed.get(&old), Some(&CloseCode::SessionReplaced));
    assert!(
        c.presence(watcher).is_empty(),
        "a replacement is not a presence change"
    );
    let bob = c.open("bob", "d");
    c.send(bob, 1, "alice", b"x");
    assert!(c.delivered(old).is_empty());
    assert_eq!(c.delivered(new).len(), 1);
}

#[test]
fn watcher_gets_current_state_then_changes_with_growing_versions() {
    let mut c = Cluster::new(4);
    let alice = c.open("alice", "phone");
    let watcher = c.open("carol", "d");
    c.watch(watcher, &["alice", "dave"]);
    let snapshot = c.presence(watcher);
    assert_eq!(snapshot.len(), 2);
    let alice_now = snapshot.iter().find(|p| p.user_id == "alice").unwrap();
    assert_eq!(status_of(alice_now), Status::Online);
    let dave_now = snapshot.iter().find(|p| p.user_id == "dave").unwrap();
    assert_eq!(
        (status_of(dave_now), dave_now.last_seen_ms),
        (Status::Offline, 0)
    );

    c.set_status(alice, Status::Away, "lunch");
    let away = c.presence(watcher);
    assert_eq!(away.len(), 1);
    assert_eq!(
        (status_of(&away[0]), away[0].text.as_str()),
        (Status::Away, "lunch")
    );
    assert_eq!(away[0].version, alice_now.version + 1);

    c.set_status(alice, Status::Away, "lunch");
    assert!(c.presence(watcher).is_empty(), "no event without a change");
}

#[test]
fn each_user_counts_its_own_visible_changes_from_one() {
    // One shard, so a shard-wide counter would show: carol's connect would
    // take a version alice's then follows.
    let mut c = Cluster::new(1);
    let carol = c.open("carol", "d");
    let alice = c.open("alice", "phone");
    c.watch(carol, &["alice", "carol", "ghost"]);
    let versions: HashMap<String, u64> = c
        .presence(carol)
        .into_iter()
        .map(|p| (p.user_id, p.version))
        .collect();
    assert_eq!(versions["alice"], 1, "online is alice's first change");
    assert_eq!(versions["carol"], 1);
    assert_eq!(versions["ghost"], 0, "never seen");
    c.set_status(alice, Status::Away, "");
    assert_eq!(c.presence(carol).pop().unwrap().version, 2);
    c.close(alice);
    c.advance(GRACE);
    assert_eq!(c.presence(carol).pop().unwrap().version, 3);

    // A user only ever watched is forgotten; seen later, it starts at 1.
    c.unwatch(carol, "ghost");
    let _ghost = c.open("ghost", "d");
    c.watch(carol, &["ghost"]);
    assert_eq!(c.presence(carol).pop().unwrap().version, 1);
}

#[test]
fn offline_waits_for_the_grace_period_and_quick_reconnect_does_not_flap() {
    let mut c = Cluster::new(2);
    let watcher = c.open("carol", "d");
    let alice = c.open("alice", "phone");
    c.watch(watcher, &["alice"]);
    let online = c.presence(watcher).pop().unwrap();

    c.close(alice);
    c.advance(GRACE - Duration::from_millis(1));
    assert!(c.presence(watcher).is_empty(), "still within grace");
    let _again = c.open("alice", "phone");
    c.advance(GRACE * 2);
    assert!(
        c.presence(watcher).is_empty(),
        "reconnect inside grace: no flapping"
    );

    let closed_at = c.now().unix_ms;
    c.close(_again);
    c.advance(GRACE);
    let offline = c.presence(watcher);
    assert_eq!(offline.len(), 1);
    assert_eq!(status_of(&offline[0]), Status::Offline);
    assert_eq!(offline[0].last_seen_ms, closed_at);
    assert_eq!(offline[0].version, online.version + 1);
}

#[test]
fn invisible_users_look_offline_and_back() {
    let mut c = Cluster::new(3);
    let watcher = c.open("carol", "d");
    let alice = c.open("alice", "phone");
    c.watch(watcher, &["alice"]);
    c.presence(watcher);
    c.set_status(alice, Status::Invisible, "secret");
    let hidden = c.presence(watcher);
    assert_eq!(hidden.len(), 1);
    assert_eq!(status_of(&hidden[0]), Status::Offline);
    assert_eq!(hidden[0].text, "", "invisible text never leaks");
    assert!(hidden[0].last_seen_ms > 0);

    c.set_status(alice, Status::Invisible, "other");
    assert!(
        c.presence(watcher).is_empty(),
        "invisible changes leak nothing"
    );
    c.close(alice);
    c.advance(GRACE);
    assert!(
        c.presence(watcher).is_empty(),
        "going offline while invisible changes nothing visible"
    );

    let _alice = c.open_full("alice", "phone", Some(Status::Busy), None);
    let back = c.presence(watcher);
    assert_eq!(status_of(&back[0]), Status::Busy);
    assert_eq!(back[0].version, hidden[0].version + 1);
}

#[test]
fn invalid_status_and_watch_limits_get_errors() {
    let mut c = Cluster::new(1);
    let alice = c.open("alice", "phone");
    c.set_status(alice, Status::Offline, "");
    c.set_status(alice, Status::Away, "this text is too long");
    c.watch(alice, &["bad id"]);
    c.watch(alice, &["a", "b", "c", "d"]);
    assert_eq!(
        c.errors(alice),
        [
            ErrorCode::InvalidStatus,
            ErrorCode::InvalidStatus,
            ErrorCode::InvalidUserId,
            ErrorCode::WatchLimit
        ]
    );
}

#[test]
fn closed_watcher_stops_receiving_and_unwatch_works() {
    let mut c = Cluster::new(4);
    let alice = c.open("alice", "phone");
    let w1 = c.open("carol", "d");
    let w2 = c.open("dave", "d");
    c.watch(w1, &["alice"]);
    c.watch(w2, &["alice"]);
    c.unwatch(w2, "alice");
    c.close(w1);
    c.take(w1);
    c.take(w2);
    c.take_all(alice);
    c.set_status(alice, Status::Busy, "");
    assert!(c.received.is_empty(), "no watcher left: {:?}", c.received);
}

#[test]
fn ping_is_answered() {
    let mut c = Cluster::new(1);
    let alice = c.open("alice", "phone");
    c.frame(alice, 0, Some(Body::Ping(Ping { nonce: 42 })));
    assert!(matches!(c.take(alice).as_slice(), [server_frame::Body::Pong(p)] if p.nonce == 42));
}

/// One step of a random presence scenario.
#[derive(Debug, Clone)]
enum Step {
    Open(usize, usize),
    Close(usize, usize),
    Status(usize, Status),
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    use Status::{Away, Busy, Invisible, Online};
    let status = prop::sample::select(vec![Online, Away, Busy, Invisible]);
    prop_oneof![
        (0..3usize, 0..2usize).prop_map(|(u, d)| Step::Open(u, d)),
        (0..3usize, 0..2usize).prop_map(|(u, d)| Step::Close(u, d)),
        (0..3usize, status).prop_map(|(u, s)| Step::Status(u, s)),
        (0..8000u64).prop_map(Step::Advance),
    ]
}

proptest! {
    /// Whatever happens, the presence a watcher holds (latest version wins)
    /// converges to the truth once grace periods have passed, and versions
    /// only grow.
    #[test]
    fn watcher_view_converges_to_the_truth(steps in proptest::collection::vec(step(), 1..60)) {
        let users = ["alice", "bob", "erin"];
        let mut c = Cluster::new(3);
        let watcher = c.open("watcher", "d");
        c.watch(watcher, &users);
        let mut open: HashMap<(usize, usize), SessionId> = HashMap::new();
        let mut chosen: HashMap<usize, Status> = HashMap::new();
        let mut offline_at: HashMap<usize, Duration> = HashMap::new();
        let mut seen: HashMap<String, Presence> = HashMap::new();
        let absorb = |c: &mut Cluster, seen: &mut HashMap<String, Presence>| -> Result<(), TestCaseError> {
            for p in c.presence(watcher) {
                if let Some(old) = seen.get(&p.user_id) {
                    prop_assert_eq!(p.version, old.version + 1, "one more per visible change");
                }
                seen.insert(p.user_id.clone(), p);
            }
            Ok(())
        };
        for step in steps {
            match step {
                Step::Open(u, d) => {
                    if let Some(old) = open.remove(&(u, d)) {
                        c.close(old);
                        offline_at.insert(u, c.elapsed + GRACE);
                    }
                    let has_session = open.keys().any(|(ou, _)| *ou == u);
                    let in_grace = offline_at.get(&u).is_some_and(|at| c.elapsed < *at);
                    if !has_session && !in_grace {
                        chosen.insert(u, Status::Online);
                    }
                    open.insert((u, d), c.open(users[u], &format!("d{d}")));
                }
                Step::Close(u, d) => if let Some(s) = open.remove(&(u, d)) {
                    c.close(s);
                    if !open.keys().any(|(ou, _)| *ou == u) {
                        offline_at.insert(u, c.elapsed + GRACE);
                    }
                },
                Step::Status(u, s) => {
                    if let Some(session) = open.iter().find(|((ou, _), _)| *ou == u).map(|(_, s)| *s) {
                        c.set_status(session, s, "");
                        chosen.insert(u, s);
                    }
                }
                Step::Advance(ms) => c.advance(Duration::from_millis(ms)),
            }
            absorb(&mut c, &mut seen)?;
        }
        c.advance(GRACE * 2);
        absorb(&mut c, &mut seen)?;
        for (u, name) in users.iter().enumerate() {
            let online = open.keys().any(|(ou, _)| *ou == u);
            let expected = match (online, chosen.get(&u).copied().unwrap_or(Status::Online)) {
                (false, _) | (true, Status::Invisible) => Status::Offline,
                (true, s) => s,
            };
            prop_assert_eq!(status_of(&seen[*name]), expected, "user {}", name);
        }
    }
}

#[test]
fn a_refused_status_says_which_rule_it_broke() {
    let mut c = Cluster::new(1);
    let alice = c.open("alice", "phone");
    c.set_status(alice, Status::Offline, "");
    c.set_status(alice, Status::Away, "this text is too long");
    let why = c.pick(alice, |b| match b {
        server_frame::Body::Error(e) => Some(e.message),
        other => panic!("expected an Error, got {other:?}"),
    });
    assert_eq!(
        why,
        [
            "status must be ONLINE, AWAY, BUSY or INVISIBLE",
            "status text is 21 bytes; at most 10 (Welcome.max_status_text_bytes)"
        ]
    );
}

/// R-5 of the hardening issue: one user opened 500 sessions. One past
/// `max_sessions_per_user` is closed with TOO_MANY_SESSIONS and leaves no
/// trace; a device reconnecting at the limit replaces its session instead.
#[test]
fn a_user_past_the_session_limit_is_refused_but_a_device_may_reconnect() {
    let limits = CoreLimits {
        max_sessions_per_user: 2,
        ..Cluster::test_limits()
    };
    let mut c = Cluster::with_limits(2, limits);
    let watcher = c.open("carol", "d");
    c.watch(watcher, &["alice"]);
    let phone = c.open("alice", "phone");
    let laptop = c.open("alice", "laptop");
    c.presence(watcher);
    let third = c.open("alice", "tablet");
    assert_eq!(c.closed.get(&third), Some(&CloseCode::TooManySessions));
    assert!(
        c.presence(watcher).is_empty(),
        "the refused one changed nothing"
    );
    // The phone reconnects: it replaces its session, within the limit.
    let phone_again = c.open("alice", "phone");
    assert_eq!(c.closed.get(&phone), Some(&CloseCode::SessionReplaced));
    assert_eq!(c.closed.get(&phone_again), None);
    // Messages reach both open devices and not the refused one.
    let bob = c.open("bob", "d");
    c.send(bob, 1, "alice", b"x");
    assert_eq!(c.payloads(phone_again), [b"x".to_vec()]);
    assert_eq!(c.payloads(laptop), [b"x".to_vec()]);
    assert!(c.delivered(third).is_empty());
}
