//! UDP sockets for the QUIC endpoints: several sockets share one port with
//! `SO_REUSEPORT` (the kernel spreads clients over them by address hash, so
//! no single endpoint task carries the whole node), with receive and send
//! buffers raised so handshake bursts are not dropped.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds one UDP socket on `addr` with `SO_REUSEPORT` and buffers of
/// `buffer_bytes` (best effort: the kernel caps them at `net.core.rmem_max`
/// and `wmem_max`).
pub(crate) fn bind_reuseport(
    addr: SocketAddr,
    buffer_bytes: usize,
) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
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
        let first = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind_reuseport(addr, 1 << 20).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
    }
}
