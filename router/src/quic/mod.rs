//! Plumbing for a task that drives many `quinn-proto` connections on one UDP
//! socket, shared by the router's lean shell and the lean load generator:
//! the connections by handle ([`ConnTable`]), one deadline set for all of
//! them ([`TimerSet`]) and the socket with its bounded send queue
//! ([`DatagramSocket`]), bound by [`bind_udp`]. None of it knows about
//! Switchboard's protocol.

mod socket;
mod table;
mod timers;
mod udp;

pub use socket::DatagramSocket;
pub use table::ConnTable;
pub use timers::TimerSet;
pub use udp::{bind_udp, PortSharing};
