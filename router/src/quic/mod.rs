//! Plumbing for a task that drives many `quinn-proto` connections on one UDP
//! socket, shared by the router's lean shell and the lean load generator:
//! the connections by handle ([`ConnTable`]), one deadline set for all of
//! them ([`TimerWheel`]) and the socket that receives and sends in batches
//! ([`DatagramSocket`], [`RecvBatch`]), bound by [`bind_udp`], and the
//! per-connection steps every driver runs ([`exchange_endpoint_events`],
//! [`ack_now`], [`transmit`], [`resume_when_sent`]). None of it knows about Switchboard's
//! protocol.

mod connection;
mod socket;
mod table;
mod timers;
mod udp;

pub use connection::{ack_now, exchange_endpoint_events, resume_when_sent, transmit};
pub use socket::{DatagramSocket, RecvBatch, RECV_BATCH};
pub use table::{ConnTable, HandleSet};
pub use timers::{TimerWheel, WakeTimer};
pub use udp::{bind_udp, PortSharing};
