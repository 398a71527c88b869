//! The many-connections-per-socket QUIC driver shared by the Switchboard
//! router and its load generator, on `quinn-proto`.
//!
//! One task per UDP socket drives every connection on it ([`Driver`]): no
//! task, channel or timer per connection. Its sans-IO heart is the
//! [`Endpoint`], which holds the connections ([`Connections`], by handle in a
//! [`ConnTable`]), their deadlines in one [`TimerWheel`], and the one session
//! stream each carries, and hands each connection's news to an
//! [`Application`]: the router's sessions, or the load generator's. Tests
//! drive an `Endpoint` in memory with a clock they move (`testing`, feature
//! `testing`).
//!
//! Around it: the socket that receives and sends in batches
//! ([`DatagramSocket`], bound by [`bind_udp`]), TLS sessions that let go of
//! rustls after the handshake ([`tls`]), the server's transport settings
//! ([`session_transport`]), and what a process holding many connections runs
//! on ([`runtime`], [`huge_pages`]). None of it knows Switchboard's protocol.
#![forbid(unsafe_code)]

pub mod connection;
mod driver;
pub mod endpoint;
pub mod huge_pages;
pub mod runtime;
mod socket;
mod table;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod timers;
pub mod tls;
mod transport;
mod udp;

pub use connection::DatagramSink;
pub use driver::Driver;
pub use endpoint::{
    Admission, Application, Conn, Connections, Driven, Endpoint, Events, Received, StreamRead,
};
pub use socket::{DatagramSocket, RecvBatch, RECV_BATCH};
pub use table::{ConnTable, HandleSet};
pub use timers::{TimerWheel, WakeTimer};
pub use transport::session_transport;
pub use udp::{bind_udp, PortSharing};
