//! Shared harness for the end-to-end tests: [`TestServer`] runs a real router
//! on loopback (port 0, dev certificate in a temp dir, a known token secret)
//! and hands out clients, raw QUIC connections and tokens. [`fuzz`] holds the
//! logic of the fuzz targets in `fuzz/`, which the tests replay the corpus
//! through. [`redis`] runs a throwaway `redis-server` for the Redis engine's
//! tests.

pub mod fuzz;
pub mod redis;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use switchboard_client::{
    Client, ClientError, CloseCode, ConnectOptions, Event, Events, InboxOpened, Message, Presence,
    Status, Trust,
};
use switchboard_router::config::Config;
use switchboard_router::server::Server;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The token secret every test server uses.
pub const SECRET: &[u8] = b"end-to-end-test-secret-of-32-bytes-or-more";

/// The server API bearer token every test server uses.
pub const API_TOKEN: &str = "end-to-end-test-api-token-of-32-bytes-or-more";

/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(10);

/// A router running in this process on loopback.
pub struct TestServer {
    /// QUIC address.
    pub addr: SocketAddr,
    /// Admin HTTP address.
    pub admin: SocketAddr,
    /// Certificate fingerprint to pin.
    pub fingerprint: [u8; 32],
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server with the default config, adjusted by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_full(tweak, None).await
    }

    /// Starts a server with the default config.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server, serving `metrics` on `/metrics` if given.
    pub async fn start_full(
        tweak: impl FnOnce(&mut Config),
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, SECRET).expect("write secret");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            dev_dir: dir.path().join("dev"),
            shards: 2,
            ..Config::default()
        };
        config.auth.secret_file = Some(secret_file);
        let api_token_file = dir.path().join("api-token");
        std::fs::write(&api_token_file, API_TOKEN).expect("write API token");
        config.api.token_file = Some(api_token_file);
        config.shutdown_timeout = Duration::from_secs(2);
        tweak(&mut config);
        let server = Server::bind(config, metrics).await.expect("bind");
        let addr = server.local_addr();
        let admin = server.admin_addr();
        let fingerprint: [u8; 32] = hex::decode(server.cert_fingerprint())
            .unwrap()
            .try_into()
            .unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            admin,
            fingerprint,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    /// A valid token for `user`.
    pub fn token(&self, user: &str) -> String {
        switchboard_proto::token::mint(SECRET, user, Duration::from_secs(3600))
    }

    /// Connection options for `user` on `device`, pinning our certificate.
    pub fn options(&self, user: &str, device: &str) -> ConnectOptions {
        ConnectOptions::new(
            self.addr,
            Trust::Fingerprint(self.fingerprint),
            self.token(user),
            device,
        )
    }

    /// Connects `user` on `device` and takes the `InboxOpened` every
    /// session starts with, so tests see what follows it.
    pub async fn connect(&self, user: &str, device: &str) -> (Client, Events) {
        let (client, events, _) = self.connect_with(self.options(user, device)).await;
        (client, events)
    }

    /// Connects with `options`; returns the session's `InboxOpened` too.
    pub async fn connect_with(&self, options: ConnectOptions) -> (Client, Events, InboxOpened) {
        opened(Client::connect(options).await).await
    }

    /// A raw QUIC connection with its session stream opened, for sending
    /// arbitrary bytes.
    pub async fn raw(&self) -> RawSession {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(
            switchboard_client::tls::client_config(&Trust::Fingerprint(self.fingerprint)).unwrap(),
        );
        let connection = endpoint
            .connect(self.addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        let (send, recv) = connection.open_bi().await.unwrap();
        RawSession {
            _endpoint: endpoint,
            connection,
            send,
            recv,
            decoder: switchboard_proto::frame::FrameDecoder::new(1 << 20),
        }
    }

    /// Asks the server to shut down and waits for `run` to return.
    pub async fn shutdown(mut self) -> Result<(), tokio::task::JoinError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("running").await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A QUIC connection speaking raw bytes on the session stream.
pub struct RawSession {
    _endpoint: quinn::Endpoint,
    /// The connection.
    pub connection: quinn::Connection,
    /// The session stream's send half.
    pub send: quinn::SendStream,
    /// The session stream's receive half.
    pub recv: quinn::RecvStream,
    decoder: switchboard_proto::frame::FrameDecoder,
}

impl RawSession {
    /// Writes raw bytes.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.expect("write");
    }

    /// Sends a Hello for `device` with `token`.
    pub async fn hello(&mut self, token: &str, device: &str) {
        self.write(&hello_frame(token, device)).await;
    }

    /// The next frame the server sent on the stream.
    pub async fn read_frame(&mut self) -> switchboard_proto::v1::ServerFrame {
        loop {
            if let Some(frame) = self.decoder.decode().expect("a valid frame") {
                return frame;
            }
            let chunk = tokio::time::timeout(WAIT, self.recv.read_chunk(65_536, true))
                .await
                .expect("a frame in time")
                .expect("the stream is open")
                .expect("the stream did not end");
            self.decoder.extend(&chunk.bytes);
        }
    }

    /// Waits for the server to close the connection; returns the close code
    /// and reason.
    pub async fn closed(&self) -> (Option<CloseCode>, String) {
        let error = tokio::time::timeout(WAIT, self.connection.closed())
            .await
            .expect("server closes in time");
        match error {
            quinn::ConnectionError::ApplicationClosed(close) => (
                CloseCode::from_code(close.error_code.into_inner()),
                String::from_utf8_lossy(&close.reason).into_owned(),
            ),
            other => panic!("expected an application close, got {other}"),
        }
    }
}

/// An encoded Hello for `device` with `token`.
pub fn hello_frame(token: &str, device: &str) -> Bytes {
    use switchboard_proto::v1::{client_frame::Body, ClientFrame, Hello};
    switchboard_proto::frame::encode(&ClientFrame {
        r#ref: 0,
        body: Some(Body::Hello(Hello {
            token: token.into(),
            device_id: device.into(),
            ..Hello::default()
        })),
    })
}

/// A length-prefixed frame holding `bytes`.
pub fn raw_frame(bytes: &[u8]) -> Bytes {
    let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out.into()
}

/// A session that connected, past the `InboxOpened` it starts with (which
/// comes back too).
pub async fn opened(
    connected: Result<(Client, Events), ClientError>,
) -> (Client, Events, InboxOpened) {
    let (client, mut events) = connected.expect("connect");
    match next_event(&mut events).await {
        Event::InboxOpened(opened) => (client, events, opened),
        other => panic!("expected InboxOpened first, got {other:?}"),
    }
}

/// The next event, failing the test after [`WAIT`].
pub async fn next_event(events: &mut Events) -> Event {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("an event in time")
        .expect("the event stream is open")
}

/// The next event, which must be a message whose payload is a big-endian
/// `u32` counter: its inbox seq and the counter.
pub async fn next_counter(events: &mut Events) -> (u64, u32) {
    match next_event(events).await {
        Event::Message(deliver) => {
            let payload = deliver.message.expect("a message").payload;
            let counter = u32::from_be_bytes(payload.as_ref().try_into().expect("4 bytes"));
            (deliver.seq, counter)
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The next event, which must be a message.
pub async fn next_message(events: &mut Events) -> Message {
    match next_event(events).await {
        Event::Message(deliver) => deliver.message.expect("a Deliver carries its message"),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The next event, which must be an error frame.
pub async fn next_error(events: &mut Events) -> switchboard_proto::v1::Error {
    match next_event(events).await {
        Event::Error(error) => error,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The next event, which must be the server's close; returns its code.
pub async fn next_close(events: &mut Events) -> Option<CloseCode> {
    match next_event(events).await {
        Event::Closed(Some(info)) => info.known,
        other => panic!("expected the server's close, got {other:?}"),
    }
}

/// The next presence event for `user`, skipping other events.
pub async fn next_presence(events: &mut Events, user: &str) -> Presence {
    loop {
        if let Event::Presence(p) = next_event(events).await {
            if p.user_id == user {
                return p;
            }
        }
    }
}

/// `GET path` on the admin listener; returns the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path, None, None).await
}

/// An HTTP request on the admin listener, with a bearer token and a JSON
/// body if given; returns the status code and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> (u16, String) {
    // reqwest has no crypto provider of its own (plain HTTP needs none, but
    // its client asks); ring, as everywhere else. A second install fails harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut request = reqwest::Client::new().request(method, format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(json) = json {
        request = request
            .header("Content-Type", "application/json")
            .body(json.to_owned());
    }
    let response = request.send().await.expect("admin listener reachable");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// Opens bob as a raw session that never reads (nor acks) and has alice
/// flood him with presence changes and messages. Presence to him coalesces
/// (no close for that); the messages fill his delivery window, and once
/// `delivery.ack_timeout` passes without an ack the server closes him with
/// SLOW_CONSUMER. Reconnecting, he gets every message: none was lost. The
/// server's `delivery_window`, `ack_timeout` and `session_queue_frames`
/// should be small.
pub async fn assert_non_reader_is_closed_as_slow_consumer(server: &TestServer) {
    use switchboard_proto::v1::{client_frame::Body, ClientFrame, Watch};
    let mut bob = server.raw().await;
    let mut opening = hello_frame(&server.token("bob"), "phone").to_vec();
    opening.extend_from_slice(&switchboard_proto::frame::encode(&ClientFrame {
        r#ref: 1,
        body: Some(Body::Watch(Watch {
            users: vec!["alice".into()],
        })),
    }));
    bob.write(&opening).await;
    let (alice, mut alice_events) = server.connect("alice", "phone").await;
    // Wait until bob's session is registered: alice sees him online.
    alice.watch(&["bob"]).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while next_presence(&mut alice_events, "bob").await.status != Status::Online as i32 {
        assert!(
            std::time::Instant::now() < deadline,
            "bob never came online"
        );
    }
    // Presence changes coalesce in his queue instead of filling it.
    for &status in [Status::Away, Status::Busy].iter().cycle().take(2_000) {
        alice.set_status(status, "").await.unwrap();
    }
    const MESSAGES: u32 = 20;
    for i in 0..MESSAGES {
        let result = alice.send("bob", i.to_be_bytes().to_vec()).await.unwrap();
        assert_eq!(result.error, 0);
    }
    assert_eq!(bob.closed().await.0, Some(CloseCode::SlowConsumer));
    // Nothing was lost: he resumes from his (empty) ack point.
    let (_bob, mut events) = server.connect("bob", "phone").await;
    for i in 0..MESSAGES {
        let payload = next_message(&mut events).await.payload;
        assert_eq!(payload.as_ref(), i.to_be_bytes(), "message {i} in order");
    }
}
