//! [`Client`]: one authenticated session over one QUIC connection, with a
//! background reader task that resolves request futures and forwards
//! everything else to [`Events`]. [`Events`] also keeps this device's
//! position in its inbox ([`Events::position`], to persist and hand back as
//! [`ConnectOptions::resume`]) and, unless told otherwise, acks each message
//! once the application has taken it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{Endpoint, RecvStream, SendStream, VarInt};
use switchboard_proto::close::CloseCode;
use switchboard_proto::frame::{self, FrameDecoder};
use switchboard_proto::v1::{
    client_frame, server_frame, Ack, ClientFrame, CreateRoom, Deliver, Error as ErrorFrame, Gap,
    GoAway, Hello, InboxOpened, JoinRoom, LeaveRoom, ListMembers, Ping, Presence, Receipt,
    ReceiptKind, Resume, RoomMembers, RoomResult, Send, SendResult, ServerFrame, SetStatus, Signal,
    SignalEvent, SignalKind, Status, Unwatch, Watch, Welcome,
};
use tokio::sync::{mpsc, oneshot};

use crate::tls::{client_config, Trust};

/// Largest frame the client accepts from the server.
const MAX_SERVER_FRAME: usize = 16 * 1024 * 1024;

/// Errors of the client SDK.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad local configuration (certificate file, fingerprint, address).
    #[error("configuration: {0}")]
    Config(String),
    /// The QUIC connection could not be started.
    #[error("cannot start a connection")]
    Connect(#[from] quinn::ConnectError),
    /// The server did not complete the handshake (QUIC and Hello/Welcome)
    /// within [`ConnectOptions::connect_timeout`]: nothing listens there,
    /// or a firewall drops UDP.
    #[error("no answer from {server} within {} s", after.as_secs_f32())]
    NoAnswer {
        /// The address that did not answer.
        server: SocketAddr,
        /// How long the client waited.
        after: Duration,
    },
    /// The connection failed or was closed by the transport.
    #[error("connection lost")]
    Connection(#[from] quinn::ConnectionError),
    /// The server closed the session with an application close code.
    #[error("closed by server: {0}")]
    Closed(CloseInfo),
    /// The server sent something the protocol does not allow.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The session ended before the request was answered.
    #[error("session ended")]
    SessionEnded,
}

/// A close code with its reason phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The raw code on the wire.
    pub code: u64,
    /// The code, if it is one Switchboard defines.
    pub known: Option<CloseCode>,
    /// The reason phrase.
    pub reason: String,
}

impl std::fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.known {
            Some(code) => write!(f, "{code}: {}", self.reason),
            None => write!(f, "code 0x{:x}: {}", self.code, self.reason),
        }
    }
}

fn close_info(error: &quinn::ConnectionError) -> Option<CloseInfo> {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => Some(CloseInfo {
            code: close.error_code.into_inner(),
            known: CloseCode::from_code(close.error_code.into_inner()),
            reason: String::from_utf8_lossy(&close.reason).into_owned(),
        }),
        _ => None,
    }
}

fn connection_error(error: quinn::ConnectionError) -> ClientError {
    close_info(&error).map_or(ClientError::Connection(error), ClientError::Closed)
}

/// Something the server pushed.
#[derive(Debug, Clone)]
pub enum Event {
    /// Where this session's delivery starts; always the first event.
    InboxOpened(InboxOpened),
    /// A direct message (to this user, or a copy of one this user sent from
    /// another device), with its inbox sequence number.
    Message(Deliver),
    /// Inbox messages this device will never get (evicted or expired).
    Gap(Gap),
    /// An ephemeral signal (typing) from another user's device.
    Signal {
        /// The signal.
        signal: SignalEvent,
        /// It came as a QUIC datagram (else on the stream).
        via_datagram: bool,
    },
    /// A watched user's presence.
    Presence(Presence),
    /// A non-fatal error answering a request.
    Error(ErrorFrame),
    /// The server is shutting down.
    GoAway(GoAway),
    /// The session ended; no more events follow.
    Closed(Option<CloseInfo>),
}

/// The stream of [`Event`]s of one session, and this device's inbox
/// position as of the events taken so far.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
    /// Where acks go when `auto_ack` is on.
    acks: Option<Client>,
    epoch: u64,
    last_seq: Option<u64>,
    acked: u64,
}

/// Most messages taken before an ack is sent even while more are queued.
const AUTO_ACK_EVERY: u64 = 32;

impl Events {
    /// The next event; `None` after [`Event::Closed`] was returned. With
    /// auto-ack on, a message counts as processed once taken here: the SDK
    /// acks it as soon as no further event is waiting (or every 32).
    pub async fn next(&mut self) -> Option<Event> {
        let event = self.rx.recv().await;
        match &event {
            Some(Event::InboxOpened(opened)) => {
                self.epoch = opened.epoch;
                self.last_seq = Some(opened.resume_after);
                self.acked = opened.resume_after;
            }
            Some(Event::Message(deliver)) => self.last_seq = Some(deliver.seq),
            Some(Event::Gap(gap)) => self.last_seq = Some(gap.to_seq),
            _ => {}
        }
        if let (Some(client), Some(last)) = (&self.acks, self.last_seq) {
            let due =
                last > self.acked && (self.rx.is_empty() || last - self.acked >= AUTO_ACK_EVERY);
            if due && client.ack(last).await.is_ok() {
                self.acked = last;
            }
        }
        event
    }

    /// This device's position: the inbox epoch and the highest sequence
    /// number taken (as a message or a gap). Persist it and pass it as
    /// [`ConnectOptions::resume`] to continue there, with nothing missed
    /// and nothing repeated. `None` before the first event.
    pub fn position(&self) -> Option<Resume> {
        self.last_seq.map(|last_seq| Resume {
            epoch: self.epoch,
            last_seq,
        })
    }
}

/// How to connect.
#[derive(Clone)]
pub struct ConnectOptions {
    /// The router's QUIC address.
    pub server: SocketAddr,
    /// TLS server name (SNI); the dev certificate is valid for `localhost`.
    pub server_name: String,
    /// How to check the server certificate.
    pub trust: Trust,
    /// The HS256 token.
    pub token: String,
    /// This device's stable id.
    pub device_id: String,
    /// Status to come online with, if not ONLINE.
    pub initial_status: Option<Status>,
    /// QUIC keep-alive interval; keep it below the server's heartbeat interval.
    pub keep_alive: Duration,
    /// Where to continue in the inbox ([`Events::position`] of an earlier
    /// session of this device). `None`: after this device's last ack.
    pub resume: Option<Resume>,
    /// Ack messages once taken from [`Events::next`] (default). Turn it off
    /// to ack with [`Client::ack`] after processing, for at-least-once
    /// delivery across application crashes.
    pub auto_ack: bool,
    /// How long [`Client::connect`] waits for the handshake and Welcome
    /// before it gives up with [`ClientError::NoAnswer`].
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("server", &self.server)
            .field("server_name", &self.server_name)
            .field("trust", &self.trust)
            .field("token", &"<redacted>")
            .field("device_id", &self.device_id)
            .field("initial_status", &self.initial_status)
            .field("keep_alive", &self.keep_alive)
            .field("resume", &self.resume)
            .field("auto_ack", &self.auto_ack)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl ConnectOptions {
    /// Options with the defaults: server name `localhost`, 5 s keep-alive,
    /// no resume point, auto-ack on, 5 s to connect.
    pub fn new(
        server: SocketAddr,
        trust: Trust,
        token: impl Into<String>,
        device_id: impl Into<String>,
    ) -> Self {
        Self {
            server,
            server_name: "localhost".into(),
            trust,
            token: token.into(),
            device_id: device_id.into(),
            initial_status: None,
            keep_alive: Duration::from_secs(5),
            resume: None,
            auto_ack: true,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

type Waiters<T> = HashMap<u64, oneshot::Sender<T>>;

/// The requests waiting for their reply, by ref (pings by nonce).
#[derive(Default)]
struct Waiting {
    send_results: Waiters<SendResult>,
    room_results: Waiters<RoomResult>,
    room_members: Waiters<RoomMembers>,
    pongs: Waiters<()>,
}

impl Waiting {
    /// Hands a reply to the request waiting for it; other frames are ignored.
    fn resolve(&mut self, reply: server_frame::Body) {
        fn give<T>(waiters: &mut Waiters<T>, key: u64, value: T) {
            if let Some(tx) = waiters.remove(&key) {
                let _ = tx.send(value);
            }
        }
        match reply {
            server_frame::Body::SendResult(r) => give(&mut self.send_results, r.r#ref, r),
            server_frame::Body::RoomResult(r) => give(&mut self.room_results, r.r#ref, r),
            server_frame::Body::RoomMembers(m) => give(&mut self.room_members, m.r#ref, m),
            server_frame::Body::Pong(pong) => give(&mut self.pongs, pong.nonce, ()),
            _ => {}
        }
    }
}

/// One open session. Cheap to clone; all clones share the session.
#[derive(Clone)]
pub struct Client {
    endpoint: Endpoint,
    /// Whether `endpoint` is this client's alone (then `close` waits for it).
    owns_endpoint: bool,
    connection: quinn::Connection,
    send: Arc<tokio::sync::Mutex<SendStream>>,
    waiting: Arc<Mutex<Waiting>>,
    next_ref: Arc<AtomicU64>,
    welcome: Arc<Welcome>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("welcome", &self.welcome)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects, authenticates and waits for Welcome, on a UDP socket of its
    /// own.
    pub async fn connect(options: ConnectOptions) -> Result<(Client, Events), ClientError> {
        let bind = match options.server {
            SocketAddr::V4(_) => SocketAddr::from(([0; 4], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0; 16], 0)),
        };
        let endpoint =
            Endpoint::client(bind).map_err(|e| ClientError::Config(format!("binding UDP: {e}")))?;
        let config = quic_config(&options.trust, options.keep_alive)?;
        let mut client = Self::connect_via(&endpoint, config, options).await?;
        client.0.owns_endpoint = true;
        Ok(client)
    }

    /// Connects over an existing endpoint (many sessions can share one UDP
    /// socket, as the load generator does) with a prepared QUIC client
    /// configuration from [`quic_config`].
    pub async fn connect_via(
        endpoint: &Endpoint,
        config: quinn::ClientConfig,
        options: ConnectOptions,
    ) -> Result<(Client, Events), ClientError> {
        let (server, after) = (options.server, options.connect_timeout);
        tokio::time::timeout(after, Self::handshake(endpoint, config, options))
            .await
            .map_err(|_| ClientError::NoAnswer { server, after })?
    }

    /// The QUIC handshake, then Hello and Welcome.
    async fn handshake(
        endpoint: &Endpoint,
        config: quinn::ClientConfig,
        options: ConnectOptions,
    ) -> Result<(Client, Events), ClientError> {
        let connection = endpoint
            .connect_with(config, options.server, &options.server_name)?
            .await
            .map_err(connection_error)?;
        let (mut send, mut recv) = connection.open_bi().await.map_err(connection_error)?;
        let hello = ClientFrame {
            r#ref: 0,
            body: Some(client_frame::Body::Hello(Hello {
                token: options.token,
                device_id: options.device_id,
                client_agent: concat!("switchboard-client/", env!("CARGO_PKG_VERSION")).into(),
                initial_status: options.initial_status.map_or(0, |s| s as i32),
                resume: options.resume,
            })),
        };
        send.write_chunk(frame::encode(&hello))
            .await
            .map_err(|_| ClientError::SessionEnded)?;
        let mut decoder = FrameDecoder::new(MAX_SERVER_FRAME);
        let welcome = match read_frame(&connection, &mut recv, &mut decoder).await? {
            Some(ServerFrame {
                body: Some(server_frame::Body::Welcome(welcome)),
            }) => welcome,
            Some(other) => {
                return Err(ClientError::Protocol(format!(
                    "expected Welcome, got {other:?}"
                )))
            }
            None => return Err(ClientError::SessionEnded),
        };
        let waiting = Arc::<Mutex<Waiting>>::default();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        tokio::spawn(read_datagrams(connection.clone(), events_tx.clone()));
        tokio::spawn(read_loop(
            connection.clone(),
            recv,
            decoder,
            waiting.clone(),
            events_tx,
        ));
        let client = Client {
            endpoint: endpoint.clone(),
            owns_endpoint: false,
            connection,
            send: Arc::new(tokio::sync::Mutex::new(send)),
            waiting,
            next_ref: Arc::new(AtomicU64::new(1)),
            welcome: Arc::new(welcome),
        };
        let events = Events {
            rx: events_rx,
            acks: options.auto_ack.then(|| client.clone()),
            epoch: 0,
            last_seq: None,
            acked: 0,
        };
        Ok((client, events))
    }

    /// The server's Welcome (session id, user id, limits).
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    fn next_ref(&self) -> u64 {
        self.next_ref.fetch_add(1, Ordering::Relaxed)
    }

    async fn write(&self, request_ref: u64, body: client_frame::Body) -> Result<(), ClientError> {
        let bytes = frame::encode(&ClientFrame {
            r#ref: request_ref,
            body: Some(body),
        });
        self.write_raw(bytes).await
    }

    /// Writes already-encoded bytes to the session stream (tests use it to
    /// send malformed input).
    pub async fn write_raw(&self, bytes: Bytes) -> Result<(), ClientError> {
        let mut send = self.send.lock().await;
        send.write_chunk(bytes).await.map_err(|e| match e {
            quinn::WriteError::ConnectionLost(e) => connection_error(e),
            _ => ClientError::SessionEnded,
        })
    }

    /// Sends a direct message and waits for its [`SendResult`].
    pub async fn send(
        &self,
        to: &str,
        payload: impl Into<Bytes>,
    ) -> Result<SendResult, ClientError> {
        self.send_idempotent(to, payload, "").await
    }

    /// Sends a direct message with an idempotency key: repeating the call
    /// with the same `client_msg_id` (after a lost result, even on a new
    /// session) sends nothing new and gets the first result again, marked
    /// `duplicate`. An empty key means none.
    pub async fn send_idempotent(
        &self,
        to: &str,
        payload: impl Into<Bytes>,
        client_msg_id: &str,
    ) -> Result<SendResult, ClientError> {
        let send = Send {
            to: to.to_owned(),
            payload: payload.into(),
            client_msg_id: client_msg_id.to_owned(),
            ..Send::default()
        };
        self.send_message(send).await
    }

    /// Sends a `Send` frame as given (for options the shorthands lack, such
    /// as `want_receipts`) and waits for its [`SendResult`].
    pub async fn send_message(&self, send: Send) -> Result<SendResult, ClientError> {
        self.request(|w| &mut w.send_results, client_frame::Body::Send(send))
            .await
    }

    /// Sends a delivery or read receipt for message `message_id` from
    /// `to_user` (send them only for messages with `want_receipts`). No
    /// reply comes; a refusal arrives as [`Event::Error`].
    pub async fn receipt(
        &self,
        to_user: &str,
        message_id: u64,
        kind: ReceiptKind,
    ) -> Result<(), ClientError> {
        let receipt = Receipt {
            to_user: to_user.to_owned(),
            message_id,
            kind: kind as i32,
        };
        self.write(0, client_frame::Body::Receipt(receipt)).await
    }

    /// Sends an ephemeral signal (typing) to a user (`room` empty) or a
    /// room (`to_user` empty): as a QUIC datagram when the connection allows
    /// them, else on the stream. Nothing is stored or answered.
    pub async fn signal(
        &self,
        to_user: &str,
        room: &str,
        kind: SignalKind,
    ) -> Result<(), ClientError> {
        let frame = ClientFrame {
            r#ref: 0,
            body: Some(client_frame::Body::Signal(Signal {
                to_user: to_user.to_owned(),
                room: room.to_owned(),
                kind: kind as i32,
            })),
        };
        let datagram = Bytes::from(prost::Message::encode_to_vec(&frame));
        if self.connection.send_datagram(datagram).is_ok() {
            return Ok(());
        }
        self.write_raw(frame::encode(&frame)).await
    }

    /// Sends a message to every member of `room` (this user must be one)
    /// and waits for its [`SendResult`]; `devices` then counts the other
    /// members. `client_msg_id` as in [`Client::send_idempotent`].
    pub async fn send_to_room(
        &self,
        room: &str,
        payload: impl Into<Bytes>,
        client_msg_id: &str,
    ) -> Result<SendResult, ClientError> {
        let send = Send {
            room: room.to_owned(),
            payload: payload.into(),
            client_msg_id: client_msg_id.to_owned(),
            ..Send::default()
        };
        self.send_message(send).await
    }

    /// Creates a room owned by this user (`open`: anyone may join).
    pub async fn create_room(&self, room: &str, open: bool) -> Result<RoomResult, ClientError> {
        let body = client_frame::Body::CreateRoom(CreateRoom {
            room: room.to_owned(),
            open,
        });
        self.request(|w| &mut w.room_results, body).await
    }

    /// Adds `user` to `room` (empty: this user).
    pub async fn join_room(&self, room: &str, user: &str) -> Result<RoomResult, ClientError> {
        let body = client_frame::Body::JoinRoom(JoinRoom {
            room: room.to_owned(),
            user: user.to_owned(),
        });
        self.request(|w| &mut w.room_results, body).await
    }

    /// Removes `user` from `room` (empty: this user).
    pub async fn leave_room(&self, room: &str, user: &str) -> Result<RoomResult, ClientError> {
        let body = client_frame::Body::LeaveRoom(LeaveRoom {
            room: room.to_owned(),
            user: user.to_owned(),
        });
        self.request(|w| &mut w.room_results, body).await
    }

    /// Lists `room`'s owner and members.
    pub async fn list_members(&self, room: &str) -> Result<RoomMembers, ClientError> {
        let body = client_frame::Body::ListMembers(ListMembers {
            room: room.to_owned(),
        });
        self.request(|w| &mut w.room_members, body).await
    }

    /// Writes a request under a fresh ref and waits for the reply that the
    /// read loop resolves in `waiters`.
    async fn request<T>(
        &self,
        waiters: fn(&mut Waiting) -> &mut Waiters<T>,
        body: client_frame::Body,
    ) -> Result<T, ClientError> {
        let (request_ref, rx) = self.wait_for(waiters);
        self.write(request_ref, body).await?;
        rx.await.map_err(|_| self.ended())
    }

    /// A fresh ref, and the receiver of the reply to it.
    fn wait_for<T>(
        &self,
        waiters: fn(&mut Waiting) -> &mut Waiters<T>,
    ) -> (u64, oneshot::Receiver<T>) {
        let request_ref = self.next_ref();
        let (tx, rx) = oneshot::channel();
        waiters(&mut self.waiting.lock().expect("not poisoned")).insert(request_ref, tx);
        (request_ref, rx)
    }

    /// Acknowledges every message up to inbox sequence number `seq`
    /// (cumulative). Needed only with auto-ack off; the server sends at most
    /// `Welcome.delivery_window` messages beyond the last ack.
    pub async fn ack(&self, seq: u64) -> Result<(), ClientError> {
        self.write(0, client_frame::Body::Ack(Ack { seq })).await
    }

    /// Sets this user's status (all devices). Errors arrive as [`Event::Error`].
    pub async fn set_status(&self, status: Status, text: &str) -> Result<(), ClientError> {
        let body = client_frame::Body::SetStatus(SetStatus {
            status: status as i32,
            text: text.to_owned(),
        });
        self.write(self.next_ref(), body).await
    }

    /// Watches users; their current presence arrives as events.
    pub async fn watch(&self, users: &[&str]) -> Result<(), ClientError> {
        let users = users.iter().map(|u| (*u).to_owned()).collect();
        self.write(self.next_ref(), client_frame::Body::Watch(Watch { users }))
            .await
    }

    /// Stops watching users.
    pub async fn unwatch(&self, users: &[&str]) -> Result<(), ClientError> {
        let users = users.iter().map(|u| (*u).to_owned()).collect();
        let body = client_frame::Body::Unwatch(Unwatch { users });
        self.write(self.next_ref(), body).await
    }

    /// Application-level round trip through the user's shard.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let (nonce, rx) = self.wait_for(|w| &mut w.pongs);
        let started = Instant::now();
        self.write(0, client_frame::Body::Ping(Ping { nonce }))
            .await?;
        rx.await.map_err(|_| self.ended())?;
        Ok(started.elapsed())
    }

    fn ended(&self) -> ClientError {
        self.close_reason().unwrap_or(ClientError::SessionEnded)
    }

    /// Closes the session normally (code 0) and waits briefly for the close
    /// to reach the server.
    pub async fn close(self) {
        self.connection
            .close(VarInt::from_u32(CloseCode::Normal.to_code()), b"bye");
        if self.owns_endpoint {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        }
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<ClientError> {
        self.connection.close_reason().map(connection_error)
    }
}

/// A client endpoint on its own UDP socket bound to `addr`, with receive and
/// send buffers of `buffer_bytes` asked for (the kernel may cap them). Many
/// sessions can share it through [`Client::connect_via`].
pub fn bind_endpoint(addr: SocketAddr, buffer_bytes: usize) -> Result<Endpoint, ClientError> {
    let bind_error = |e: std::io::Error| ClientError::Config(format!("binding UDP {addr}: {e}"));
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(bind_error)?;
    if buffer_bytes > 0 {
        socket.set_recv_buffer_size(buffer_bytes).ok();
        socket.set_send_buffer_size(buffer_bytes).ok();
    }
    socket.bind(&addr.into()).map_err(bind_error)?;
    Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket.into(),
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind_error)
}

/// The QUIC client configuration for `trust` with a keep-alive interval;
/// build it once and share it between sessions.
pub fn quic_config(
    trust: &Trust,
    keep_alive: Duration,
) -> Result<quinn::ClientConfig, ClientError> {
    let mut config = client_config(trust)?;
    config.transport_config(Arc::new(session_transport_config(keep_alive)?));
    Ok(config)
}

/// The transport settings of [`quic_config`]: keep-alive every
/// `keep_alive`, and the small windows and stream limits of a session.
pub fn session_transport_config(
    keep_alive: Duration,
) -> Result<quinn::TransportConfig, ClientError> {
    // The server opens no streams and sends only small datagrams (signals);
    // windows fit a few of the largest frames. Small per-connection state matters to a load
    // generator holding many sessions. The idle timeout allows three
    // keep-alive intervals, as the server does for its heartbeat, so one
    // late or lost keep-alive does not end the session (quinn's fixed
    // default would leave a keep-alive close to it almost no slack).
    let idle = quinn::IdleTimeout::try_from(keep_alive * 3)
        .map_err(|_| ClientError::Config(format!("keep-alive {keep_alive:?} is too long")))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(keep_alive))
        .max_idle_timeout(Some(idle))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(0))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .stream_receive_window(quinn::VarInt::from_u32(512 * 1024))
        .receive_window(quinn::VarInt::from_u32(512 * 1024))
        .send_window(512 * 1024)
        .datagram_receive_buffer_size(Some(8 * 1024))
        .mtu_discovery_config(None);
    Ok(transport)
}

async fn read_frame(
    connection: &quinn::Connection,
    recv: &mut RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Option<ServerFrame>, ClientError> {
    loop {
        if let Some(frame) = decoder
            .decode::<ServerFrame>()
            .map_err(|e| ClientError::Protocol(e.to_string()))?
        {
            return Ok(Some(frame));
        }
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
            Ok(None) => return Ok(None),
            Err(quinn::ReadError::ConnectionLost(e)) => return Err(connection_error(e)),
            Err(_) => {
                return Err(connection
                    .close_reason()
                    .map_or(ClientError::SessionEnded, connection_error))
            }
        }
    }
}

async fn read_loop(
    connection: quinn::Connection,
    mut recv: RecvStream,
    mut decoder: FrameDecoder,
    waiting: Arc<Mutex<Waiting>>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut ending = loop {
        let frame = match read_frame(&connection, &mut recv, &mut decoder).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break None,
            Err(ClientError::Closed(info)) => break Some(info),
            Err(_) => break connection.close_reason().as_ref().and_then(close_info),
        };
        let event = match frame.body {
            Some(server_frame::Body::InboxOpened(opened)) => Event::InboxOpened(opened),
            Some(server_frame::Body::Deliver(deliver)) => Event::Message(deliver),
            Some(server_frame::Body::Gap(gap)) => Event::Gap(gap),
            Some(server_frame::Body::Signal(signal)) => Event::Signal {
                signal,
                via_datagram: false,
            },
            Some(server_frame::Body::Presence(presence)) => Event::Presence(presence),
            Some(server_frame::Body::Error(error)) => Event::Error(error),
            Some(server_frame::Body::GoAway(go_away)) => Event::GoAway(go_away),
            Some(reply) => {
                waiting.lock().expect("not poisoned").resolve(reply);
                continue;
            }
            None => continue, // ignore unknown frames
        };
        let _ = events.send(event);
    };
    // Wake everyone still waiting for an answer.
    *waiting.lock().expect("not poisoned") = Waiting::default();
    if ending.is_none() {
        // The stream ended first: the close itself follows.
        let closed = tokio::time::timeout(Duration::from_secs(2), connection.closed()).await;
        ending = closed.ok().and_then(|error| close_info(&error));
    }
    let _ = events.send(Event::Closed(ending));
}

/// Forwards the signals the server sends as datagrams until the connection
/// ends; anything else in a datagram is ignored.
async fn read_datagrams(connection: quinn::Connection, events: mpsc::UnboundedSender<Event>) {
    while let Ok(bytes) = connection.read_datagram().await {
        if let Ok(ServerFrame {
            body: Some(server_frame::Body::Signal(signal)),
        }) = prost::Message::decode(bytes)
        {
            let _ = events.send(Event::Signal {
                signal,
                via_datagram: true,
            });
        }
    }
}
