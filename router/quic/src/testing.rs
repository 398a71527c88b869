//! Helpers for tests of code that drives connections (feature `testing`):
//! a self-signed certificate's server and client TLS configurations, and a
//! [`Client`]: a quinn-proto client connection that talks to an
//! [`Endpoint`] in memory on a clock the test moves, with no socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Dir, EndpointConfig, Event,
    StreamId, Transmit, TransportConfig,
};

use crate::connection::{exchange_endpoint_events, DatagramSink};
use crate::endpoint::{Application, Endpoint, Received};
use crate::tls::{server_tls, ServerTls};

/// The ALPN protocol the test configurations agree on.
pub const TEST_ALPN: &[u8] = b"test/1";

/// The address test servers claim.
pub const SERVER_ADDR: &str = "127.0.0.1:4433";

/// A server configuration for a fresh self-signed `localhost` certificate,
/// and a TLS 1.3 client configuration that trusts it.
pub fn tls_pair() -> (Arc<ServerTls>, rustls::ClientConfig) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generating a certificate");
    let cert = generated.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.key_pair.serialize_der().into());
    let server = server_tls(vec![cert.clone()], key, TEST_ALPN).expect("server TLS");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("a valid certificate");
    let mut client =
        rustls::ClientConfig::builder_with_provider(Arc::new(crate::tls::crypto_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
    client.alpn_protocols = vec![TEST_ALPN.to_vec()];
    (server, client)
}

/// An endpoint configuration whose random choices (packet numbers skipped
/// against optimistic-ACK attacks, connection ids) are the same every run,
/// so a test never lands on one by chance.
pub fn seeded_endpoint_config(seed: u8) -> EndpointConfig {
    let mut config = EndpointConfig::default();
    config.rng_seed(Some([seed; 32]));
    config
}

/// A test's queue of the datagrams a driver sent, which never blocks.
impl DatagramSink for Vec<Vec<u8>> {
    fn send(&mut self, _: &Transmit, contents: &[u8]) -> bool {
        self.push(contents.to_vec());
        true
    }
}

/// Every datagram `quic` has to send at `now`.
pub(crate) fn drain_transmits(quic: &mut Connection, now: Instant) -> Vec<Vec<u8>> {
    let mut datagrams = Vec::new();
    loop {
        let mut buf = Vec::new();
        match quic.poll_transmit(now, 1, &mut buf) {
            Some(transmit) => datagrams.push(buf[..transmit.size].to_vec()),
            None => return datagrams,
        }
    }
}

/// A client connection to an in-memory [`Endpoint`], and the clock both
/// run on.
pub struct Client {
    endpoint: quinn_proto::Endpoint,
    /// The client's connection.
    pub quic: Connection,
    handle: ConnectionHandle,
    /// The client's address, as the server sees it.
    pub addr: SocketAddr,
    /// The address the client sends to.
    pub server: SocketAddr,
    /// The time now, which the test moves with [`Client::advance`].
    pub now: Instant,
    /// The client's session stream, once opened.
    pub stream: Option<StreamId>,
    /// Whether the connection reported `Connected`.
    pub connected: bool,
    /// What the client read from the session stream so far.
    pub received: BytesMut,
    /// Datagrams (unreliable) the client received.
    pub datagrams: Vec<Bytes>,
    /// Whether the server finished or reset its side of the stream.
    pub stream_finished: bool,
    /// Why the connection ended, once it did.
    pub lost: Option<quinn_proto::ConnectionError>,
    /// Whether the client reads its session stream (on by default): a
    /// client that stops reading lets the server's writes pile up.
    pub reads_stream: bool,
}

impl Client {
    /// A client at `addr` connecting to [`SERVER_ADDR`] with `config`, at
    /// time `now`.
    pub fn new(config: ClientConfig, addr: SocketAddr, now: Instant) -> Client {
        let mut endpoint =
            quinn_proto::Endpoint::new(Arc::new(seeded_endpoint_config(2)), None, false, None);
        let server = SERVER_ADDR.parse().expect("a valid address");
        let (handle, quic) = endpoint
            .connect(now, config, server, "localhost")
            .expect("connect");
        Client {
            endpoint,
            quic,
            handle,
            addr,
            server,
            now,
            stream: None,
            connected: false,
            received: BytesMut::new(),
            datagrams: Vec::new(),
            stream_finished: false,
            lost: None,
            reads_stream: true,
        }
    }

    /// A client configuration from `tls` with default transport settings.
    pub fn config(tls: rustls::ClientConfig) -> ClientConfig {
        let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls)
            .expect("a QUIC-capable TLS configuration");
        ClientConfig::new(Arc::new(crypto))
    }

    /// A client configuration from `tls` with `transport` settings.
    pub fn config_with(tls: rustls::ClientConfig, transport: TransportConfig) -> ClientConfig {
        let mut config = Client::config(tls);
        config.transport_config(Arc::new(transport));
        config
    }

    /// Moves packets both ways until neither side sends anything more now:
    /// the server's endpoint is driven as its driver would drive it.
    pub fn exchange<A: Application>(&mut self, server: &mut Endpoint<A>) {
        for _ in 0..1000 {
            let (to_server, to_client) = self.step(server);
            if to_server == 0 && to_client == 0 {
                return;
            }
        }
        panic!("the client and the server kept sending");
    }

    /// One driver turn: what the client has to send reaches the server,
    /// which is driven once, and its answers reach the client. Returns how
    /// many datagrams went each way.
    pub fn step<A: Application>(&mut self, server: &mut Endpoint<A>) -> (usize, usize) {
        let mut out = Vec::new();
        let to_server = self.send_to(server, &mut out);
        server.drive(self.now, &mut out);
        server.end_turn();
        let to_client = out.len();
        for datagram in out {
            self.receive(&datagram);
        }
        self.poll_events();
        (to_server, to_client)
    }

    /// Hands what the client has to send now to `server`, which is not
    /// driven; returns how many datagrams went.
    pub(crate) fn send_to<A: Application>(
        &mut self,
        server: &mut Endpoint<A>,
        out: &mut impl DatagramSink,
    ) -> usize {
        let datagrams = drain_transmits(&mut self.quic, self.now);
        for data in &datagrams {
            let received = Received {
                remote: self.addr,
                local_ip: None,
                ecn: None,
                data,
            };
            server.handle_datagram(self.now, received, out);
        }
        datagrams.len()
    }

    /// Moves the clock by `by` and fires whatever came due on both sides,
    /// then exchanges packets.
    pub fn advance<A: Application>(&mut self, server: &mut Endpoint<A>, by: Duration) {
        self.now += by;
        self.quic.handle_timeout(self.now);
        server.handle_timeouts(self.now);
        let mut out = Vec::new();
        server.drive(self.now, &mut out);
        for datagram in out {
            self.receive(&datagram);
        }
        self.poll_events();
        self.exchange(server);
    }

    /// Connects: exchanges packets until the handshake is done.
    pub fn connect<A: Application>(&mut self, server: &mut Endpoint<A>) {
        for _ in 0..20 {
            self.exchange(server);
            if self.connected {
                return;
            }
            self.advance(server, Duration::from_millis(10));
        }
        panic!("the handshake did not finish");
    }

    /// Writes `bytes` on the session stream (opened on first use).
    pub fn write(&mut self, bytes: &[u8]) {
        let id = *self
            .stream
            .get_or_insert_with(|| self.quic.streams().open(Dir::Bi).expect("a stream"));
        let written = self.quic.send_stream(id).write(bytes).expect("writable");
        assert_eq!(written, bytes.len(), "the stream took all of it");
    }

    /// Finishes the client's side of the session stream.
    pub fn finish(&mut self) {
        let id = self.stream.expect("an open stream");
        self.quic.send_stream(id).finish().expect("finishable");
    }

    /// Asks the server to stop sending on the session stream
    /// (`STOP_SENDING`): the client stops reading it.
    pub fn stop_reading(&mut self) {
        let id = self.stream.expect("an open stream");
        self.quic
            .recv_stream(id)
            .stop(quinn_proto::VarInt::from_u32(0))
            .expect("stoppable");
    }

    /// Sends an unreliable datagram.
    pub fn send_datagram(&mut self, bytes: Bytes) {
        self.quic
            .datagrams()
            .send(bytes, true)
            .expect("datagrams allowed");
    }

    /// Hands a datagram from the server to the client connection.
    fn receive(&mut self, datagram: &[u8]) {
        let mut buf = Vec::new();
        let event = self.endpoint.handle(
            self.now,
            self.server,
            None,
            None,
            BytesMut::from(datagram),
            &mut buf,
        );
        if let Some(DatagramEvent::ConnectionEvent(handle, event)) = event {
            self.quic.handle_event(event);
            exchange_endpoint_events(&mut self.endpoint, handle.0, &mut self.quic);
        }
    }

    /// Takes the client connection's events: reads the stream and the
    /// datagrams.
    fn poll_events(&mut self) {
        exchange_endpoint_events(&mut self.endpoint, self.handle.0, &mut self.quic);
        while let Some(event) = self.quic.poll() {
            match event {
                Event::Connected => self.connected = true,
                Event::ConnectionLost { reason } => self.lost = Some(reason),
                _ => {}
            }
        }
        while let Some(datagram) = self.quic.datagrams().recv() {
            self.datagrams.push(datagram);
        }
        let Some(id) = self.stream.filter(|_| self.reads_stream) else {
            return;
        };
        let mut stream = self.quic.recv_stream(id);
        let Ok(mut chunks) = stream.read(true) else {
            return;
        };
        loop {
            match chunks.next(usize::MAX) {
                Ok(Some(chunk)) => self.received.extend_from_slice(&chunk.bytes),
                Ok(None) | Err(quinn_proto::ReadError::Reset(_)) => {
                    self.stream_finished = true;
                    break;
                }
                Err(quinn_proto::ReadError::Blocked) => break,
            }
        }
        let _ = chunks.finalize();
    }
}
