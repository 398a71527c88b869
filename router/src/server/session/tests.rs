//! The router's sessions as its endpoint driver runs them, over an
//! in-memory QUIC connection on a clock the test moves: no socket, no
//! sleeping. The test plays the shard (it reads the shard's inbox and gives
//! credit back) and the driver's command channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{ConnectionError, TransportConfig};
use switchboard_core::{FrameClass, SessionId, ShardInput};
use switchboard_proto::close::CloseCode;
use switchboard_proto::frame::{self, FrameDecoder};
use switchboard_proto::v1::{
    client_frame, server_frame, ClientFrame, Deliver, Hello, Ping, ServerFrame, Signal,
    SignalEvent, SignalKind,
};
use switchboard_quic::testing::{self, Client};
use switchboard_quic::{Application, Endpoint};
use tokio::sync::{mpsc, watch, Notify};

use super::super::directory::{DriverCommand, SessionDirectory};
use super::super::shard_task::{Credit, SessionInput};
use super::super::{quic_server_config, ServerContext};
use super::Sessions;
use crate::auth::TokenVerifier;
use crate::config::Config;

const SECRET: &[u8] = b"driver-test-secret-of-thirty-two-bytes";

/// A router endpoint with one shard, played by the test.
struct Router {
    endpoint: Endpoint<Sessions>,
    ctx: Arc<ServerContext>,
    shard: mpsc::UnboundedReceiver<SessionInput>,
    commands: mpsc::UnboundedReceiver<DriverCommand>,
    draining: watch::Sender<bool>,
    client_tls: rustls::ClientConfig,
    now: Instant,
    next_client: u16,
}

impl Router {
    fn new(tweak: impl FnOnce(&mut Config)) -> Router {
        let mut config = Config {
            shards: 1,
            ..Config::default()
        };
        tweak(&mut config);
        let (server_tls, client_tls) = testing::tls_pair();
        let server_config = quic_server_config(&config, server_tls).unwrap();
        let (shard_handle, shard) = mpsc::unbounded_channel();
        let (draining, draining_rx) = watch::channel(false);
        let verifier =
            TokenVerifier::new(SECRET, config.auth.leeway, config.auth.max_token_lifetime);
        let ctx = Arc::new(ServerContext {
            config,
            verifier,
            shards: Arc::from(vec![shard_handle]),
            directory: Arc::new(SessionDirectory::default()),
            draining: draining_rx,
            next_session: Default::default(),
            handshakes: Default::default(),
        });
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let sessions = Sessions::new(ctx.clone(), commands_tx, Arc::new(Notify::new()));
        let now = Instant::now();
        let endpoint = Endpoint::new(
            sessions,
            Arc::new(testing::seeded_endpoint_config(1)),
            Some(Arc::new(server_config)),
            now,
        );
        Router {
            endpoint,
            ctx,
            shard,
            commands,
            draining,
            client_tls,
            now,
            next_client: 40_000,
        }
    }

    /// A client with `transport` settings, connected.
    fn client(&mut self, transport: TransportConfig) -> Client {
        let config = Client::config_with(self.client_tls.clone(), transport);
        self.next_client += 1;
        let addr = format!("127.0.0.1:{}", self.next_client).parse().unwrap();
        let mut client = Client::new(config, addr, self.now);
        client.connect(&mut self.endpoint);
        self.now = client.now;
        client
    }

    /// A connected client whose session is open: it sent a valid Hello, and
    /// the shard got the session's Open. Returns the session id too.
    fn session(&mut self, transport: TransportConfig) -> (Client, SessionId) {
        let mut client = self.client(transport);
        let token = switchboard_proto::token::mint(SECRET, "alice", Duration::from_secs(60));
        client.write(&hello(&token));
        client.exchange(&mut self.endpoint);
        let session = match self.shard_inputs().as_slice() {
            [SessionInput {
                input: ShardInput::Open { session, .. },
                ..
            }] => *session,
            other => panic!("expected the session's Open, got {other:?}"),
        };
        assert!(matches!(
            frames(&mut client).as_slice(),
            [server_frame::Body::Welcome(_)]
        ));
        (client, session)
    }

    /// What the shard received since the last call.
    fn shard_inputs(&mut self) -> Vec<SessionInput> {
        std::iter::from_fn(|| self.shard.try_recv().ok()).collect()
    }

    /// Whether the shard's only input since the last call is a Closed.
    fn shard_saw_close(&mut self) -> bool {
        matches!(
            self.shard_inputs().as_slice(),
            [SessionInput {
                input: ShardInput::Closed { .. },
                ..
            }]
        )
    }

    /// Hands the endpoint a command, as the driver does.
    fn command(&mut self, command: DriverCommand) {
        self.endpoint.handle_command(command, self.now);
    }

    /// A shard writes `frame` of `class` to `session`, through the
    /// directory and the driver's command channel.
    fn transmit(&mut self, client: &Client, session: SessionId, frame: Bytes, class: FrameClass) {
        self.now = client.now;
        self.ctx.directory.transmit(session, frame.into(), class);
        while let Ok(command) = self.commands.try_recv() {
            self.command(command);
        }
    }
}

fn hello(token: &str) -> Bytes {
    frame::encode(&ClientFrame {
        r#ref: 0,
        body: Some(client_frame::Body::Hello(Hello {
            token: token.into(),
            device_id: "phone".into(),
            ..Hello::default()
        })),
    })
}

fn ping(nonce: u64) -> Bytes {
    frame::encode(&ClientFrame {
        r#ref: nonce,
        body: Some(client_frame::Body::Ping(Ping { nonce })),
    })
}

/// Every whole frame the client has read from its stream since the last call.
fn frames(client: &mut Client) -> Vec<server_frame::Body> {
    let mut decoder = FrameDecoder::new(1 << 20);
    decoder.extend(&std::mem::take(&mut client.received));
    std::iter::from_fn(|| decoder.decode::<ServerFrame>().unwrap())
        .map(|frame| frame.body.unwrap())
        .collect()
}

/// The application close code the client's connection ended with.
fn close_code(client: &Client) -> Option<CloseCode> {
    match &client.lost {
        Some(ConnectionError::ApplicationClosed(close)) => {
            CloseCode::from_code(close.error_code.into_inner())
        }
        _ => None,
    }
}

fn signal_frame() -> Bytes {
    frame::encode(&ServerFrame {
        body: Some(server_frame::Body::Signal(SignalEvent {
            from_user: "bob".into(),
            kind: SignalKind::Typing as i32,
            ..SignalEvent::default()
        })),
    })
}

#[test]
fn no_hello_within_the_auth_timeout_closes_with_auth_timeout() {
    let mut router = Router::new(|c| c.auth.timeout = Duration::from_secs(5));
    let mut client = router.client(TransportConfig::default());
    // The deadline runs from the end of the handshake.
    client.advance(&mut router.endpoint, Duration::from_millis(4_900));
    assert_eq!(client.lost, None, "still inside the auth timeout");
    client.advance(&mut router.endpoint, Duration::from_millis(200));
    assert_eq!(close_code(&client), Some(CloseCode::AuthTimeout));
    assert!(router.shard_inputs().is_empty(), "no session was opened");
}

#[test]
fn a_bad_token_is_refused_and_the_shard_never_hears_of_it() {
    let mut router = Router::new(|_| {});
    let mut client = router.client(TransportConfig::default());
    client.write(&hello("not a token"));
    client.exchange(&mut router.endpoint);
    assert_eq!(close_code(&client), Some(CloseCode::TokenInvalid));
    assert!(router.shard_inputs().is_empty());
}

#[test]
fn a_hello_is_capped_at_8192_bytes_or_max_frame_bytes_if_smaller() {
    let mut router = Router::new(|c| c.limits.max_frame_bytes = 4096);
    let mut client = router.client(TransportConfig::default());
    // Only a length prefix: the cap is checked before the body arrives.
    client.write(&4097u32.to_be_bytes());
    client.exchange(&mut router.endpoint);
    assert_eq!(close_code(&client), Some(CloseCode::FrameTooLarge));

    let mut client = router.client(TransportConfig::default());
    let padded = "x".repeat(4096 - 64);
    client.write(&hello(&padded));
    client.exchange(&mut router.endpoint);
    assert_eq!(
        close_code(&client),
        Some(CloseCode::TokenInvalid),
        "a Hello within the cap is read, and its token checked"
    );
}

#[test]
fn a_session_out_of_credit_is_not_read_until_the_shard_gives_credit_back() {
    // 8 queued frames at most: 4 requests in flight.
    let mut router = Router::new(|c| c.limits.session_queue_frames = 8);
    let (mut client, session) = router.session(TransportConfig::default());
    let pings: Vec<u8> = (1..=10).flat_map(|n| ping(n).to_vec()).collect();
    client.write(&pings);
    client.exchange(&mut router.endpoint);
    let taken = router.shard_inputs();
    assert_eq!(taken.len(), 4, "one frame per credit");
    assert!(router.endpoint.app().waits_for_wakeup());

    let credits: Vec<Credit> = taken.into_iter().map(|i| i.credit.unwrap()).collect();
    credits[..2].iter().for_each(Credit::give_back);
    // The driver is woken, and drives the stalled session.
    client.exchange(&mut router.endpoint);
    let nonces: Vec<u64> = router
        .shard_inputs()
        .into_iter()
        .map(|input| match input.input {
            ShardInput::Frame {
                session: s, frame, ..
            } if s == session => frame.r#ref,
            other => panic!("expected a frame of the session, got {other:?}"),
        })
        .collect();
    assert_eq!(nonces, [5, 6], "two credits, the next two frames in order");
    credits[2..].iter().for_each(Credit::give_back);
    client.exchange(&mut router.endpoint);
    assert_eq!(router.shard_inputs().len(), 2);
    assert_eq!(client.lost, None);
}

#[test]
fn a_session_whose_queue_overflows_is_closed_as_a_slow_consumer() {
    let mut router = Router::new(|c| c.limits.session_queue_frames = 4);
    // A small stream window, which the client never reopens: it reads
    // nothing.
    let mut transport = TransportConfig::default();
    transport.stream_receive_window(quinn_proto::VarInt::from_u32(16 * 1024));
    let (mut client, session) = router.session(transport);
    client.reads_stream = false;
    let message = frame::encode(&ServerFrame {
        body: Some(server_frame::Body::Deliver(Deliver {
            seq: 1,
            ..Deliver::default()
        })),
    });
    let big = Bytes::from([message.as_ref(), &[0; 4096]].concat());
    let class = FrameClass::Message {
        accepted_at: router.now,
    };
    // The stream takes about four before its window is full...
    for _ in 0..4 {
        router.transmit(&client, session, big.clone(), class);
        client.exchange(&mut router.endpoint);
    }
    assert_eq!(client.lost, None);
    // ...then the queue fills, and one more frame overflows it.
    for _ in 0..5 {
        router.transmit(&client, session, big.clone(), class);
    }
    client.exchange(&mut router.endpoint);
    assert_eq!(close_code(&client), Some(CloseCode::SlowConsumer));
    assert!(router.shard_saw_close());
}

#[test]
fn a_signal_goes_as_a_datagram_when_the_client_takes_them_else_on_the_stream() {
    let mut router = Router::new(|_| {});
    let typing = FrameClass::Ephemeral { key: 1 };
    let (mut client, session) = router.session(TransportConfig::default());
    router.transmit(&client, session, signal_frame(), typing);
    client.exchange(&mut router.endpoint);
    assert_eq!(client.datagrams.len(), 1, "one datagram");
    // A datagram is a `ServerFrame` without the length prefix.
    let datagram: ServerFrame = prost::Message::decode(&client.datagrams[0][..]).unwrap();
    assert!(matches!(datagram.body, Some(server_frame::Body::Signal(_))));
    assert!(frames(&mut client).is_empty(), "nothing on the stream");

    let mut no_datagrams = TransportConfig::default();
    no_datagrams.datagram_receive_buffer_size(None);
    let (mut client, session) = router.session(no_datagrams);
    router.transmit(&client, session, signal_frame(), typing);
    client.exchange(&mut router.endpoint);
    assert!(client.datagrams.is_empty());
    assert!(matches!(
        frames(&mut client).as_slice(),
        [server_frame::Body::Signal(_)]
    ));
}

#[test]
fn a_client_signal_datagram_reaches_the_shard_and_anything_else_is_dropped() {
    let mut router = Router::new(|_| {});
    let (mut client, session) = router.session(TransportConfig::default());
    let signal = ClientFrame {
        r#ref: 7,
        body: Some(client_frame::Body::Signal(Signal {
            to_user: "bob".into(),
            kind: SignalKind::Typing as i32,
            ..Signal::default()
        })),
    };
    client.send_datagram(Bytes::from(prost::Message::encode_to_vec(&signal)));
    client.send_datagram(Bytes::from_static(b"\xff\xff junk"));
    client.send_datagram(ping(8).slice(frame::LENGTH_PREFIX_BYTES..));
    client.exchange(&mut router.endpoint);
    let inputs = router.shard_inputs();
    assert_eq!(inputs.len(), 1, "only the signal: {inputs:?}");
    match &inputs[0].input {
        ShardInput::Frame {
            session: s, frame, ..
        } => {
            assert_eq!((*s, frame.r#ref), (session, 7));
        }
        other => panic!("expected the signal, got {other:?}"),
    }
    assert_eq!(client.lost, None, "unreliable input never closes a session");
}

#[test]
fn a_keep_alive_is_acknowledged_in_its_turn_and_a_request_by_its_answer() {
    let mut router = Router::new(|_| {});
    let (mut client, session) = router.session(TransportConfig::default());
    client.advance(&mut router.endpoint, Duration::from_millis(100));

    // A lone PING gets its ACK in the same turn, not 25 ms later.
    client.quic.ping();
    let (sent, answered) = client.step(&mut router.endpoint);
    assert_eq!((sent, answered), (1, 1));

    // A request's packet is acknowledged by the answer, which comes from
    // the shard: nothing leaves before it.
    client.write(&ping(1));
    let (sent, answered) = client.step(&mut router.endpoint);
    assert_eq!((sent, answered), (1, 0));
    let pong = frame::encode(&ServerFrame {
        body: Some(server_frame::Body::Pong(switchboard_proto::v1::Pong {
            nonce: 1,
        })),
    });
    router.transmit(&client, session, pong, FrameClass::Reply);
    let (_, answered) = client.step(&mut router.endpoint);
    assert_eq!(answered, 1, "the answer carries the ACK");
}

#[test]
fn a_client_that_finishes_its_stream_is_closed_with_code_0_and_no_fin() {
    let mut router = Router::new(|_| {});
    let (mut client, _) = router.session(TransportConfig::default());
    client.finish();
    client.exchange(&mut router.endpoint);
    assert_eq!(close_code(&client), Some(CloseCode::Normal));
    assert!(
        !client.stream_finished,
        "the server does not finish its side"
    );
    assert!(router.shard_saw_close());
}

#[test]
fn a_client_that_stops_reading_is_closed_when_the_server_next_writes() {
    let mut router = Router::new(|_| {});
    let (mut client, session) = router.session(TransportConfig::default());
    client.stop_reading();
    client.exchange(&mut router.endpoint);
    assert_eq!(client.lost, None, "nothing written yet");
    router.transmit(&client, session, signal_frame(), FrameClass::Reply);
    client.exchange(&mut router.endpoint);
    assert_eq!(close_code(&client), Some(CloseCode::Normal));
    let Some(ConnectionError::ApplicationClosed(close)) = &client.lost else {
        panic!("{:?}", client.lost);
    };
    assert_eq!(close.reason.as_ref(), b"stream stopped");
}

#[test]
fn draining_sends_go_away_refuses_new_connections_then_closes_what_is_left() {
    let mut router = Router::new(|_| {});
    let (mut client, _) = router.session(TransportConfig::default());
    router.draining.send_replace(true);
    router.command(DriverCommand::Drain);
    client.exchange(&mut router.endpoint);
    assert!(matches!(
        frames(&mut client).as_slice(),
        [server_frame::Body::GoAway(_)]
    ));

    let config = Client::config(router.client_tls.clone());
    let mut late = Client::new(config, "127.0.0.1:50000".parse().unwrap(), router.now);
    late.exchange(&mut router.endpoint);
    assert!(!late.connected, "refused while draining");
    assert!(late.lost.is_some());

    router.command(DriverCommand::CloseAll);
    client.exchange(&mut router.endpoint);
    assert_eq!(close_code(&client), Some(CloseCode::GoingAway));
    assert!(
        router.commands.try_recv().is_err(),
        "nothing was asked of it"
    );
}

/// A client that has not connected yet, at a fresh address.
fn unconnected(router: &mut Router) -> Client {
    let config = Client::config_with(router.client_tls.clone(), TransportConfig::default());
    router.next_client += 1;
    let addr = format!("127.0.0.1:{}", router.next_client).parse().unwrap();
    Client::new(config, addr, router.now)
}

fn handshakes(router: &Router) -> usize {
    router
        .ctx
        .handshakes
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// A-1 of the hardening issue: 5,000 Initials that were never answered
/// were each accepted and held ~26 KB for ~45 s. Above
/// `retry_above_handshakes` an unvalidated client gets a Retry and costs no
/// state until it comes back with the token, which a spoofed one never does.
#[test]
fn above_the_threshold_an_unvalidated_client_is_asked_to_retry_first() {
    for (threshold, after_first_initial) in [(1024, 1), (0, 0)] {
        let mut router = Router::new(|c| c.limits.retry_above_handshakes = threshold);
        let mut client = unconnected(&mut router);
        client.step(&mut router.endpoint);
        assert_eq!(
            handshakes(&router),
            after_first_initial,
            "threshold {threshold}"
        );
        // A real client comes back (with the Retry's token) and connects.
        client.connect(&mut router.endpoint);
        assert!(client.lost.is_none(), "threshold {threshold}");
        assert_eq!(
            handshakes(&router),
            0,
            "a finished handshake is no longer counted"
        );
    }
}

#[test]
fn past_max_handshakes_a_new_connection_is_refused_until_one_finishes() {
    let mut router = Router::new(|c| c.limits.max_handshakes = 1);
    let mut slow = unconnected(&mut router);
    slow.step(&mut router.endpoint); // its handshake is under way
    assert_eq!(handshakes(&router), 1);
    let mut refused = unconnected(&mut router);
    refused.exchange(&mut router.endpoint);
    match &refused.lost {
        Some(ConnectionError::ConnectionClosed(close)) => {
            assert_eq!(
                close.error_code,
                quinn_proto::TransportErrorCode::CONNECTION_REFUSED
            )
        }
        other => panic!("expected CONNECTION_REFUSED, got {other:?}"),
    }
    slow.connect(&mut router.endpoint);
    assert_eq!(handshakes(&router), 0);
    let later = router.client(TransportConfig::default());
    assert!(later.lost.is_none());
}

/// Past `limits.max_sessions`, a valid Hello is closed with SERVER_FULL
/// before any Welcome, and the shard never hears of it.
#[test]
fn a_full_node_closes_a_new_session_with_server_full() {
    let mut router = Router::new(|c| c.limits.max_sessions = 1);
    let (_first, _) = router.session(TransportConfig::default());
    let mut second = router.client(TransportConfig::default());
    let token = switchboard_proto::token::mint(SECRET, "bob", Duration::from_secs(60));
    second.write(&hello(&token));
    second.exchange(&mut router.endpoint);
    assert_eq!(close_code(&second), Some(CloseCode::ServerFull));
    assert!(frames(&mut second).is_empty(), "no Welcome");
    assert!(router.shard_inputs().is_empty());
}
