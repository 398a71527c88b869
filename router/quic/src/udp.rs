//! UDP sockets for QUIC endpoints, with receive and send buffers raised so
//! handshake bursts are not dropped. A server binds several sockets on one
//! port with `SO_REUSEPORT` (the kernel spreads clients over them by address
//! hash, so no single endpoint task carries the whole node).

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Whether other sockets may bind the same port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSharing {
    /// `SO_REUSEPORT`: one of several server sockets on the listen port.
    Shared,
    /// The port is this socket's alone (a client socket).
    Exclusive,
}

/// Binds one UDP socket on `addr` with buffers of `buffer_bytes` (best
/// effort: the kernel caps them at `net.core.rmem_max` and `wmem_max`).
pub fn bind_udp(
    addr: SocketAddr,
    buffer_bytes: usize,
    sharing: PortSharing,
) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    #[cfg(unix)]
    if sharing == PortSharing::Shared {
        socket.set_reuse_port(true)?;
    }
    if buffer_bytes > 0 {
        socket.set_recv_buffer_size(buffer_bytes).ok();
        socket.set_send_buffer_size(buffer_bytes).ok();
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_sockets_share_one_port() {
        let first = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20, PortSharing::Shared);
        let addr = first.unwrap().local_addr().unwrap();
        let second = bind_udp(addr, 1 << 20, PortSharing::Shared).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
        let exclusive = bind_udp("127.0.0.1:0".parse().unwrap(), 0, PortSharing::Exclusive);
        let exclusive = exclusive.unwrap();
        let taken = exclusive.local_addr().unwrap();
        assert!(bind_udp(taken, 0, PortSharing::Exclusive).is_err());
    }
}
