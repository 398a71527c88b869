//! The steps every driver runs for a connection after its inputs changed:
//! trade events with the endpoint, acknowledge at once what no reply will,
//! and send what it has to send into a [`DatagramSink`].

use std::time::{Duration, Instant};

use quinn_proto::{Connection, ConnectionHandle, Endpoint, Transmit};

/// Where a driver's datagrams go: the UDP socket ([`crate::DatagramSocket`]),
/// or a test's queue.
pub trait DatagramSink {
    /// Queues `contents`, one datagram described by `transmit` (its
    /// destination, source address and ECN mark). Returns false when the
    /// sink is blocked on a full send buffer: the caller should stop
    /// producing until it drains.
    fn send(&mut self, transmit: &Transmit, contents: &[u8]) -> bool;
}

/// Hands `quic`'s endpoint events (new connection ids, retirements, drain)
/// to `endpoint`, and the endpoint's answers back to `quic`.
pub fn exchange_endpoint_events(endpoint: &mut Endpoint, handle: usize, quic: &mut Connection) {
    while let Some(event) = quic.poll_endpoint_events() {
        if let Some(answer) = endpoint.handle_event(ConnectionHandle(handle), event) {
            quic.handle_event(answer);
        }
    }
}

/// Queues every datagram `quic` has ready on `out`, using `buf` as scratch.
/// Returns false when `out` is blocked on a full send buffer (now or since
/// an earlier send): the connection should be driven again once it drains.
pub fn transmit(
    quic: &mut Connection,
    out: &mut impl DatagramSink,
    buf: &mut Vec<u8>,
    now: Instant,
) -> bool {
    loop {
        buf.clear();
        let Some(transmit) = quic.poll_transmit(now, 1, buf) else {
            return true;
        };
        if !out.send(&transmit, &buf[..transmit.size]) {
            return false;
        }
    }
}

/// The longest a QUIC endpoint may hold back an acknowledgement: RFC 9000's
/// default `max_ack_delay`, which quinn-proto uses and advertises.
const MAX_ACK_DELAY: Duration = Duration::from_millis(25);

/// Acknowledges now, rather than on the delayed-ACK timer, what a
/// connection received at `received_at`, so the acknowledgement costs no
/// second wake-up: 25 ms later the driver would walk the connection's state
/// again once it has left the cache. Returns whether it did.
///
/// Callers use it where nothing else will carry the ACK within the delay:
/// the router for a packet whose frames get no answer (a keep-alive PING,
/// a client's `Ack`; a request's answer carries the ACK), the load
/// generator for every packet once its session has written what it had
/// (its sessions send seconds apart, far outside the delay).
///
/// `received_at` is the time the packet was handed to quinn-proto with.
/// quinn-proto arms its delayed-ACK timer at exactly `received_at` +
/// [`MAX_ACK_DELAY`]; only when that is the connection's next deadline is it
/// fired early, so no other timer (a loss-detection deadline above all,
/// which fired early would declare packets lost that are not) ever is.
///
/// This hands quinn-proto a time ahead of its clock, and the driver then
/// transmits at the real, earlier time. It relies on what quinn-proto
/// 0.11.19 (pinned in the workspace) does then: it fires only the ACK
/// timer, arms nothing from that time, and sends the ACK with its true
/// delay. The tests below fail if a release changes any of it. No public
/// mechanism does the same: the ACK-frequency extension lets the peer ask
/// for immediate ACKs of every packet, where the router wants them only for
/// the packets no answer will carry.
pub fn ack_now(quic: &mut Connection, received_at: Instant) -> bool {
    let ack_timer = received_at + MAX_ACK_DELAY;
    if quic.poll_timeout() != Some(ack_timer) {
        return false;
    }
    quic.handle_timeout(ack_timer);
    true
}

#[cfg(test)]
mod tests {
    //! A client and a server `quinn-proto` connection joined in memory, on
    //! a clock the test moves: no sockets, no sleeping.

    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::BytesMut;
    use quinn_proto::{
        ClientConfig, Connection, ConnectionHandle, DatagramEvent, Endpoint, ServerConfig,
    };

    use super::{ack_now, exchange_endpoint_events, MAX_ACK_DELAY};

    const CLIENT_ADDR: &str = "127.0.0.1:40000";
    const SERVER_ADDR: &str = "127.0.0.1:4433";

    struct Pair {
        /// Where the client keeps the TLS session tickets it is sent.
        client_sessions: Arc<rustls::client::ClientSessionMemoryCache>,
        client_endpoint: Endpoint,
        client: Connection,
        server_endpoint: Endpoint,
        server: Option<(ConnectionHandle, Connection)>,
        now: Instant,
    }

    fn configs() -> (
        ServerConfig,
        ClientConfig,
        Arc<rustls::client::ClientSessionMemoryCache>,
    ) {
        let (server_tls, mut tls) = crate::testing::tls_pair();
        let server = ServerConfig::with_crypto(server_tls);
        let sessions = Arc::new(rustls::client::ClientSessionMemoryCache::new(8));
        tls.resumption = rustls::client::Resumption::store(sessions.clone());
        (server, crate::testing::Client::config(tls), sessions)
    }

    impl Pair {
        /// Connects and runs the handshake until neither side has anything
        /// left to send or to time out soon.
        fn connected() -> Pair {
            let (server_config, client_config, client_sessions) = configs();
            let now = Instant::now();
            // quinn-proto skips a packet number now and then, at random,
            // against optimistic-ACK attacks, and the receiver of a packet
            // after such a gap acknowledges at once. Seeded endpoints skip
            // the same numbers every run, so the keep-alive under test never
            // lands on a gap by chance (unseeded, a few runs in a hundred
            // would, and the test would flake).
            let server_endpoint = Endpoint::new(
                Arc::new(crate::testing::seeded_endpoint_config(1)),
                Some(Arc::new(server_config)),
                false,
                None,
            );
            let mut client_endpoint = Endpoint::new(
                Arc::new(crate::testing::seeded_endpoint_config(2)),
                None,
                false,
                None,
            );
            let (_, client) = client_endpoint
                .connect(
                    now,
                    client_config,
                    SERVER_ADDR.parse().unwrap(),
                    "localhost",
                )
                .unwrap();
            let mut pair = Pair {
                client_sessions,
                client_endpoint,
                client,
                server_endpoint,
                server: None,
                now,
            };
            for _ in 0..20 {
                pair.pump();
                pair.advance(Duration::from_millis(30));
            }
            assert!(!pair.client.is_handshaking(), "handshake did not finish");
            pair
        }

        fn server(&mut self) -> &mut Connection {
            &mut self.server.as_mut().expect("server accepted").1
        }

        /// Moves both ways until neither side sends anything more now.
        fn pump(&mut self) {
            loop {
                let to_server = drain_transmits(&mut self.client, self.now);
                for datagram in &to_server {
                    self.deliver_to_server(datagram);
                }
                let to_client = match &mut self.server {
                    Some((_, server)) => drain_transmits(server, self.now),
                    None => Vec::new(),
                };
                for datagram in &to_client {
                    self.deliver_to_client(datagram);
                }
                if to_server.is_empty() && to_client.is_empty() {
                    return;
                }
            }
        }

        /// Moves the clock and fires whatever came due.
        fn advance(&mut self, by: Duration) {
            self.now += by;
            self.client.handle_timeout(self.now);
            let now = self.now;
            if let Some((_, server)) = &mut self.server {
                server.handle_timeout(now);
            }
            self.pump();
        }

        fn deliver_to_server(&mut self, datagram: &[u8]) {
            let mut buf = Vec::new();
            let event = self.server_endpoint.handle(
                self.now,
                CLIENT_ADDR.parse::<SocketAddr>().unwrap(),
                None,
                None,
                BytesMut::from(datagram),
                &mut buf,
            );
            match event {
                Some(DatagramEvent::NewConnection(incoming)) => {
                    let accepted = self
                        .server_endpoint
                        .accept(incoming, self.now, &mut buf, None);
                    self.server = Some(accepted.expect("server accepts"));
                }
                Some(DatagramEvent::ConnectionEvent(_, event)) => {
                    let (handle, server) = self.server.as_mut().unwrap();
                    server.handle_event(event);
                    exchange_endpoint_events(&mut self.server_endpoint, handle.0, server);
                }
                Some(DatagramEvent::Response(_)) | None => {}
            }
        }

        fn deliver_to_client(&mut self, datagram: &[u8]) {
            let mut buf = Vec::new();
            let event = self.client_endpoint.handle(
                self.now,
                SERVER_ADDR.parse().unwrap(),
                None,
                None,
                BytesMut::from(datagram),
                &mut buf,
            );
            if let Some(DatagramEvent::ConnectionEvent(handle, event)) = event {
                self.client.handle_event(event);
                exchange_endpoint_events(&mut self.client_endpoint, handle.0, &mut self.client);
            }
        }

        /// The client sends a keep-alive PING; the server receives it and
        /// returns its deadline from before the packet.
        fn keep_alive_reaches_server(&mut self) -> Option<Instant> {
            let before = self.server().poll_timeout();
            self.client.ping();
            let pings = drain_transmits(&mut self.client, self.now);
            assert_eq!(pings.len(), 1, "a keep-alive is one datagram");
            self.deliver_to_server(&pings[0]);
            before
        }
    }

    fn drain_transmits(quic: &mut Connection, now: Instant) -> Vec<Vec<u8>> {
        let mut datagrams = Vec::new();
        loop {
            let mut buf = Vec::new();
            match quic.poll_transmit(now, 1, &mut buf) {
                Some(transmit) => datagrams.push(buf[..transmit.size].to_vec()),
                None => return datagrams,
            }
        }
    }

    #[test]
    fn the_server_sends_no_session_tickets() {
        use rustls::client::ClientSessionStore;
        let pair = Pair::connected();
        let server = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        // rustls would have sent two after the handshake, which the client
        // would hold here.
        assert!(pair.client_sessions.take_tls13_ticket(&server).is_none());
        assert!(pair.client.stats().frame_rx.crypto > 0, "the handshake ran");
    }

    #[test]
    fn a_lone_keep_alive_is_acknowledged_in_the_same_turn() {
        let mut pair = Pair::connected();
        let now = pair.now;

        // quinn-proto on its own holds the ACK back for the delay timer.
        pair.keep_alive_reaches_server();
        assert!(drain_transmits(pair.server(), now).is_empty());
        assert_eq!(pair.server().poll_timeout(), Some(now + MAX_ACK_DELAY));
        pair.advance(MAX_ACK_DELAY);
        pair.advance(Duration::from_millis(100));

        // Fired early, it goes out at once, and the connection's next
        // deadline is far off again.
        let now = pair.now;
        pair.keep_alive_reaches_server();
        assert!(ack_now(pair.server(), now));
        assert_eq!(drain_transmits(pair.server(), now).len(), 1);
        assert!(pair.server().poll_timeout().unwrap() > now + MAX_ACK_DELAY);
    }

    #[test]
    fn a_deadline_not_set_by_this_packet_is_left_alone() {
        let mut pair = Pair::connected();
        let now = pair.now;
        pair.keep_alive_reaches_server();
        // The next deadline is not the ACK timer of a packet received at
        // this time (it stands for a loss-detection deadline): nothing fires.
        let other = now - Duration::from_millis(3);
        assert!(!ack_now(pair.server(), other));
        assert!(drain_transmits(pair.server(), now).is_empty());
    }

    /// What `ack_now` relies on beyond the timer's exact deadline: firing
    /// the delayed-ACK timer with a time ahead of the connection's clock,
    /// then sending at the real time, sends the ACK and moves no other
    /// deadline. Compared with a twin connection whose timer fires on its
    /// own: if a quinn-proto release arms timers from the time handed to
    /// `handle_timeout`, the two part ways here.
    #[test]
    fn an_early_ack_leaves_every_other_deadline_where_real_time_put_it() {
        let mut early = Pair::connected();
        let mut late = Pair::connected();
        early.advance(Duration::from_millis(100));
        late.advance(Duration::from_millis(100));

        early.keep_alive_reaches_server();
        let now = early.now;
        assert!(ack_now(early.server(), now));
        assert_eq!(drain_transmits(early.server(), now).len(), 1, "the ACK");
        let early_next = early.server().poll_timeout().unwrap() - now;

        late.keep_alive_reaches_server();
        let fired = late.now + MAX_ACK_DELAY;
        late.server().handle_timeout(fired);
        assert_eq!(drain_transmits(late.server(), fired).len(), 1, "the ACK");
        let late_next = late.server().poll_timeout().unwrap() - late.now;

        assert_eq!(early_next, late_next);
        assert!(
            early_next > MAX_ACK_DELAY,
            "the next deadline is not the ACK's"
        );
    }
}
