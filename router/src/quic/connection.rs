//! The two steps every driver runs for a connection after its inputs
//! changed: trade events with the endpoint, and send what it has to send.

use std::time::Instant;

use quinn_proto::{Connection, ConnectionHandle, Endpoint};

use super::DatagramSocket;

/// Hands `quic`'s endpoint events (new connection ids, retirements, drain)
/// to `endpoint`, and the endpoint's answers back to `quic`.
pub fn exchange_endpoint_events(endpoint: &mut Endpoint, handle: usize, quic: &mut Connection) {
    while let Some(event) = quic.poll_endpoint_events() {
        if let Some(answer) = endpoint.handle_event(ConnectionHandle(handle), event) {
            quic.handle_event(answer);
        }
    }
}

/// Sends every datagram `quic` has ready, using `buf` as scratch. Returns
/// false when the socket's send buffer filled: the connection should be
/// driven again once [`DatagramSocket::flush`] has emptied the queue.
pub fn transmit(
    quic: &mut Connection,
    socket: &mut DatagramSocket,
    buf: &mut Vec<u8>,
    now: Instant,
) -> bool {
    loop {
        buf.clear();
        let Some(transmit) = quic.poll_transmit(now, 1, buf) else {
            return true;
        };
        if !socket.send(&buf[..transmit.size], transmit.destination) {
            return false;
        }
    }
}
