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
/// `MAX_ACK_DELAY`; only when that is the connection's next deadline is it
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
    //! A client and a server connection joined in memory
    //! ([`crate::testing`]), on a clock the test moves. The server's
    //! application leaves every ACK to the test.

    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use quinn_proto::{Connection, ServerConfig};

    use super::{ack_now, MAX_ACK_DELAY};
    use crate::endpoint::{Application, Conn, Connections, Driven, Endpoint, Events};
    use crate::testing::{drain_transmits, seeded_endpoint_config, tls_pair, Client};

    /// Sessions that do nothing: no ACK is sent early but by the test.
    struct Idle;

    impl Application for Idle {
        type Session = ();
        type Command = ();
        fn accept(&mut self, _: Instant, _: bool) -> crate::Admission<()> {
            crate::Admission::Accept(())
        }
        fn command(&mut self, _: &mut Connections<()>, _: (), _: Instant) {}
        fn drive(&mut self, _: &mut Conn<()>, _: Events, _: Instant) -> Driven {
            Driven::default()
        }
        fn drained(&mut self, _: Conn<()>) {}
    }

    struct Pair {
        server: Endpoint<Idle>,
        client: Client,
        /// Where the client keeps the TLS session tickets it is sent.
        client_sessions: Arc<rustls::client::ClientSessionMemoryCache>,
    }

    impl Pair {
        /// Connects, and lets the handshake settle. Seeded endpoints skip
        /// the same packet numbers every run (quinn-proto skips one now and
        /// then against optimistic-ACK attacks, and a packet after a gap is
        /// acknowledged at once), so the keep-alive under test never lands
        /// on a gap by chance.
        fn connected() -> Pair {
            let (server_tls, mut tls) = tls_pair();
            let client_sessions = Arc::new(rustls::client::ClientSessionMemoryCache::new(8));
            tls.resumption = rustls::client::Resumption::store(client_sessions.clone());
            let now = Instant::now();
            let config = Arc::new(ServerConfig::with_crypto(server_tls));
            let mut server =
                Endpoint::new(Idle, Arc::new(seeded_endpoint_config(1)), Some(config), now);
            let addr = "127.0.0.1:40000".parse().unwrap();
            let mut client = Client::new(Client::config(tls), addr, now);
            client.connect(&mut server);
            for _ in 0..10 {
                client.advance(&mut server, Duration::from_millis(30));
            }
            Pair {
                server,
                client,
                client_sessions,
            }
        }

        fn server(&mut self) -> &mut Connection {
            &mut self.server.connections().get_mut(0).expect("accepted").quic
        }

        fn advance(&mut self, by: Duration) {
            self.client.advance(&mut self.server, by);
        }

        /// The client sends a keep-alive PING, which reaches the server.
        fn keep_alive_reaches_server(&mut self) {
            self.client.quic.ping();
            let pings = self.client.send_to(&mut self.server, &mut Vec::new());
            assert_eq!(pings, 1, "a keep-alive is one datagram");
            self.server.end_turn();
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
        assert!(
            pair.client.quic.stats().frame_rx.crypto > 0,
            "the handshake ran"
        );
    }

    #[test]
    fn a_lone_keep_alive_is_acknowledged_in_the_same_turn() {
        let mut pair = Pair::connected();
        let now = pair.client.now;

        // quinn-proto on its own holds the ACK back for the delay timer.
        pair.keep_alive_reaches_server();
        assert!(drain_transmits(pair.server(), now).is_empty());
        assert_eq!(pair.server().poll_timeout(), Some(now + MAX_ACK_DELAY));
        pair.advance(MAX_ACK_DELAY);
        pair.advance(Duration::from_millis(100));

        // Fired early, it goes out at once, and the connection's next
        // deadline is far off again.
        let now = pair.client.now;
        pair.keep_alive_reaches_server();
        assert!(ack_now(pair.server(), now));
        assert_eq!(drain_transmits(pair.server(), now).len(), 1);
        assert!(pair.server().poll_timeout().unwrap() > now + MAX_ACK_DELAY);
    }

    #[test]
    fn a_deadline_not_set_by_this_packet_is_left_alone() {
        let mut pair = Pair::connected();
        let now = pair.client.now;
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
        let now = early.client.now;
        assert!(ack_now(early.server(), now));
        assert_eq!(drain_transmits(early.server(), now).len(), 1, "the ACK");
        let early_next = early.server().poll_timeout().unwrap() - now;

        late.keep_alive_reaches_server();
        let fired = late.client.now + MAX_ACK_DELAY;
        late.server().handle_timeout(fired);
        assert_eq!(drain_transmits(late.server(), fired).len(), 1, "the ACK");
        let late_next = late.server().poll_timeout().unwrap() - late.client.now;

        assert_eq!(early_next, late_next);
        assert!(
            early_next > MAX_ACK_DELAY,
            "the next deadline is not the ACK's"
        );
    }
}
