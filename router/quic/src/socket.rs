//! [`DatagramSocket`]: the driver's UDP socket, which moves datagrams in
//! batches, one system call for many.
//!
//! - **Receiving**, one `recvmmsg` call fills up to [`RECV_BATCH`] buffers of
//!   a [`RecvBatch`] (through quinn-udp, which also turns on GRO: a peer's GSO
//!   burst arrives as one buffer, split back here by its stride).
//! - **Sending**, datagrams are queued as a driver turn produces them and
//!   leave together when the queue holds [`SEND_BATCH`] or the turn ends
//!   with [`DatagramSocket::flush`]. The flush first groups them by
//!   destination and size: a run to one destination of one size (the last
//!   may be shorter) leaves as one GSO buffer, which the kernel cuts back
//!   into datagrams (and a peer with GRO, on loopback, takes whole); the
//!   rest leave up to [`SEND_BATCH`] per `sendmmsg` call. A router's
//!   datagrams go to as many peers as it has clients, so runs are rare in
//!   production; a load generator's all go to the router, and most of them
//!   run. Larger datagrams go first, and those of one destination and size
//!   keep their order: a connection that sends several at once sends
//!   full-size packets, then a shorter last one, which this order keeps
//!   as they were.
//!
//! Each datagram carries its ECN mark and, on a socket bound to an
//! unspecified address (`0.0.0.0`, `[::]`) that accepts connections, the
//! local address its connection's packets arrive at, so replies leave from
//! the address the client used. Both travel as control messages, which a
//! `sendmmsg` call shares between its datagrams: a batch stops where they
//! change.
//!
//! Sends never block the driver: datagrams that find the kernel's send
//! buffer full stay queued until the socket is writable again, and past
//! [`MAX_QUEUED_DATAGRAMS`] new ones are dropped, which QUIC recovers from as
//! from any other loss.

use std::io::{ErrorKind, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use quinn_proto::EcnCodepoint;

use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::connection::DatagramSink;
use crate::endpoint::Received;

/// Datagrams received per system call.
pub const RECV_BATCH: usize = 32;
/// Datagrams (or GSO runs) sent per `sendmmsg` call, and queued before a
/// flush starts mid-turn.
const SEND_BATCH: usize = 32;
/// Most datagrams in one GSO send, below what quinn-udp reports the socket
/// takes (64 where the kernel has GSO).
const MAX_GSO_SEGMENTS: usize = 64;
/// Most bytes in one GSO send: what one UDP datagram can carry.
const MAX_GSO_BYTES: usize = 65_000;
/// Datagrams kept for a full send buffer before new ones are dropped.
const MAX_QUEUED_DATAGRAMS: usize = 4096;
/// Room for one receive buffer: the largest UDP payload, which also holds
/// the largest GRO batch the kernel hands over.
const RECV_SLOT: usize = 64 * 1024;

/// A non-blocking UDP socket that receives into a [`RecvBatch`] and sends from
/// a queue in batches.
pub struct DatagramSocket {
    socket: UdpSocket,
    state: quinn_udp::UdpSocketState,
    /// Send from the address each connection's packets arrive at: set for a
    /// server socket bound to an unspecified address, which the kernel
    /// would otherwise answer from an address of its choosing.
    keep_source: bool,
    queue: SendQueue,
    /// The last send attempt found the kernel's buffer full; cleared by a
    /// [`flush`](Self::flush) that empties the queue.
    blocked: bool,
}

impl DatagramSocket {
    /// Wraps a bound socket; a `server` socket bound to an unspecified
    /// address answers from the address each client used. quinn-udp also
    /// sets the don't-fragment bit (`IP_PMTUDISC_PROBE`: nothing is
    /// fragmented, and a datagram over the interface MTU is refused), turns
    /// on GRO where the kernel has it, and asks for each datagram's ECN mark
    /// and destination address.
    pub fn new(socket: std::net::UdpSocket, server: bool) -> std::io::Result<DatagramSocket> {
        socket.set_nonblocking(true)?;
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        let keep_source = server && socket.local_addr()?.ip().is_unspecified();
        Ok(DatagramSocket {
            socket: UdpSocket::from_std(socket)?,
            state,
            keep_source,
            queue: SendQueue::default(),
            blocked: false,
        })
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Waits until datagrams may be waiting to be received.
    pub async fn readable(&self) -> std::io::Result<()> {
        self.socket.readable().await
    }

    /// Waits until the kernel's send buffer has room again.
    pub async fn writable(&self) -> std::io::Result<()> {
        self.socket.writable().await
    }

    /// Receives what is waiting, up to [`RECV_BATCH`] buffers, into `batch`
    /// (replacing what it held). `WouldBlock` when nothing was.
    pub fn try_recv(&self, batch: &mut RecvBatch) -> std::io::Result<()> {
        batch.received = 0;
        let mut slots = batch.buffers.chunks_mut(RECV_SLOT);
        let mut buffers: [IoSliceMut<'_>; RECV_BATCH] =
            std::array::from_fn(|_| IoSliceMut::new(slots.next().expect("one slot per buffer")));
        let received = self.socket.try_io(Interest::READABLE, || {
            self.state
                .recv((&self.socket).into(), &mut buffers, &mut batch.meta)
        })?;
        batch.received = received;
        Ok(())
    }

    /// Whether datagrams wait to be sent. Between driver turns that means
    /// the socket is blocked: the driver should wait until it is
    /// [writable](Self::writable) and [`flush`](Self::flush).
    pub fn has_pending(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Sends queued datagrams until the queue is empty or the kernel's send
    /// buffer is full. Returns true when none are left. (Blocked connections
    /// resume only then: resuming them on partial progress re-queues so much
    /// under load that latency collapses.)
    pub fn flush(&mut self) -> bool {
        while !self.queue.is_empty() {
            // Read on every pass: quinn-udp lowers it to 1 for good when
            // the kernel refuses a GSO send.
            let max_segments = self.state.max_gso_segments().min(MAX_GSO_SEGMENTS);
            if max_segments > 1 {
                self.queue.group_for_segmentation();
            }
            let front = self.queue.front();
            let run = front.leading_run(max_segments);
            let sent = self.socket.try_io(Interest::WRITABLE, || {
                if run > 1 {
                    send_segments(&self.state, &self.socket, front.take(run)).map(|()| run)
                } else {
                    send_batch(
                        &self.state,
                        &self.socket,
                        front.take(front.leading_singles(max_segments)),
                    )
                }
            });
            match sent {
                Ok(count) => self.queue.consume(count.max(1)),
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    self.blocked = true;
                    return false;
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                // Segmentation refused (and now off): the run goes again,
                // one datagram each, on the next pass.
                Err(_) if run > 1 && self.state.max_gso_segments() < max_segments => {}
                // Datagrams the kernel refuses (an unreachable or wrong
                // address family, say) are dropped: QUIC treats them as
                // lost. A run shares one destination, so all of it goes.
                Err(_) => self.queue.consume(run),
            }
        }
        self.blocked = false;
        true
    }
}

impl DatagramSink for DatagramSocket {
    /// Queues the datagram, and sends the queue once it holds a batch.
    fn send(&mut self, transmit: &quinn_proto::Transmit, contents: &[u8]) -> bool {
        if self.queue.len() < MAX_QUEUED_DATAGRAMS {
            let path = Path {
                destination: transmit.destination,
                source: transmit.src_ip.filter(|_| self.keep_source),
                ecn: transmit.ecn.map_or(0, |ecn| ecn as u8),
            };
            self.queue.push(contents, path);
        }
        if !self.blocked && self.queue.len() >= SEND_BATCH {
            self.flush();
        }
        !self.blocked
    }
}

/// Where a datagram goes and how it leaves: datagrams of one path may leave
/// in one GSO buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Path {
    /// The peer.
    destination: SocketAddr,
    /// The local address to send from; `None` lets the kernel choose.
    source: Option<IpAddr>,
    /// The ECN codepoint's bits (0: not ECN-capable).
    ecn: u8,
}

impl Path {
    /// A path to `destination` with no source address and no ECN mark.
    #[cfg(test)]
    fn to(destination: SocketAddr) -> Path {
        Path {
            destination,
            source: None,
            ecn: 0,
        }
    }

    /// Whether the destination is IPv4 (or IPv4-mapped): its ECN mark goes
    /// in `IP_TOS`, else in `IPV6_TCLASS`.
    fn is_ipv4(&self) -> bool {
        match self.destination.ip() {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
        }
    }

    /// What must be equal for datagrams to share one `sendmmsg` call's
    /// control messages.
    fn control(&self) -> (bool, Option<IpAddr>, u8) {
        (self.is_ipv4(), self.source, self.ecn)
    }
}

/// Sends the first datagrams of `batch` (at most [`SEND_BATCH`], all with
/// the first one's control messages: see [`Batch::leading_singles`]) with
/// one system call; returns how many left.
#[cfg(target_os = "linux")]
fn send_batch(
    state: &quinn_udp::UdpSocketState,
    socket: &UdpSocket,
    batch: Batch<'_>,
) -> std::io::Result<usize> {
    use nix::libc;
    use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};
    use std::os::fd::AsRawFd;

    // A lone datagram goes through quinn-udp's one `sendmsg`, allocating
    // nothing; the headers below are built per call.
    let count = batch.len().min(SEND_BATCH);
    if count == 1 {
        return send_segments(state, socket, batch.take(1)).map(|()| 1);
    }
    let (_, path) = batch.get(0).expect("a batch is not empty");
    let tclass = i32::from(path.ecn);
    let (v4_info, v6_info);
    // As quinn-udp does: the mark is always set (0 clears what a socket
    // option might have set), in the option of the destination's family.
    let mut controls = Vec::with_capacity(2);
    let mut space = 0;
    if path.is_ipv4() {
        controls.push(ControlMessage::Ipv4Tos(&path.ecn));
        space += nix::cmsg_space!(u8).capacity();
    } else {
        controls.push(ControlMessage::Ipv6TClass(&tclass));
        space += nix::cmsg_space!(i32).capacity();
    }
    match path.source {
        Some(IpAddr::V4(v4)) => {
            v4_info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            controls.push(ControlMessage::Ipv4PacketInfo(&v4_info));
            space += nix::cmsg_space!(libc::in_pktinfo).capacity();
        }
        Some(IpAddr::V6(v6)) => {
            v6_info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                ipi6_ifindex: 0,
            };
            controls.push(ControlMessage::Ipv6PacketInfo(&v6_info));
            space += nix::cmsg_space!(libc::in6_pktinfo).capacity();
        }
        None => {}
    }
    let addresses: Vec<Option<SockaddrStorage>> = (0..count)
        .map(|i| batch.get(i).map(|(_, path)| path.destination.into()))
        .collect();
    let payloads: Vec<[std::io::IoSlice<'_>; 1]> = (0..count)
        .map(|i| [std::io::IoSlice::new(batch.get(i).map_or(&[], |(d, _)| d))])
        .collect();
    // Each message's control buffer is exactly the messages' size: the
    // kernel reads the whole buffer as control messages.
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(count, Some(vec![0; space]));
    let sent = sendmmsg(
        socket.as_raw_fd(),
        &mut headers,
        &payloads,
        &addresses,
        &controls,
        MsgFlags::empty(),
    )?;
    Ok(sent.count())
}

/// Sends `run`, datagrams of one path and one size (the last may be
/// shorter), as one GSO buffer that the kernel cuts back into datagrams.
fn send_segments(
    state: &quinn_udp::UdpSocketState,
    socket: &UdpSocket,
    run: Batch<'_>,
) -> std::io::Result<()> {
    let (first, path) = run.get(0).expect("a run is not empty");
    let transmit = quinn_udp::Transmit {
        destination: path.destination,
        ecn: quinn_udp::EcnCodepoint::from_bits(path.ecn),
        contents: run.contiguous_bytes(),
        segment_size: Some(first.len()),
        src_ip: path.source,
    };
    state.try_send(socket.into(), &transmit)
}

/// Sends the first datagram of `batch` alone, where `sendmmsg` is missing.
#[cfg(not(target_os = "linux"))]
fn send_batch(
    state: &quinn_udp::UdpSocketState,
    socket: &UdpSocket,
    batch: Batch<'_>,
) -> std::io::Result<usize> {
    send_segments(state, socket, batch.take(1)).map(|()| 1)
}

/// Datagrams waiting to be sent, in order, in one byte buffer.
#[derive(Default)]
struct SendQueue {
    bytes: Vec<u8>,
    /// Each datagram's range in `bytes` and its destination; those before
    /// `head` are sent.
    datagrams: Vec<(Range<usize>, Path)>,
    head: usize,
    /// Whether the unsent datagrams are already grouped for segmentation.
    grouped: bool,
    /// Where grouping copies the bytes to, kept to be reused.
    scratch: Vec<u8>,
}

impl SendQueue {
    fn len(&self) -> usize {
        self.datagrams.len() - self.head
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, datagram: &[u8], path: Path) {
        self.grouped = false;
        let start = self.bytes.len();
        self.bytes.extend_from_slice(datagram);
        self.datagrams.push((start..self.bytes.len(), path));
    }

    /// Reorders the unsent datagrams so that those of one path and of one
    /// size are adjacent, larger first (each keeps its place among equals),
    /// and their bytes contiguous: the shape a GSO send takes.
    fn group_for_segmentation(&mut self) {
        if self.len() < 2 || self.grouped {
            return;
        }
        let unsent = &mut self.datagrams[self.head..];
        // Start offsets are unique, so the unstable sort (which does not
        // allocate, unlike the stable one) keeps equals in order.
        unsent.sort_unstable_by(|(a, a_to), (b, b_to)| {
            (a_to, b.len(), a.start).cmp(&(b_to, a.len(), b.start))
        });
        self.scratch.clear();
        for (range, _) in unsent.iter_mut() {
            let start = self.scratch.len();
            self.scratch.extend_from_slice(&self.bytes[range.clone()]);
            *range = start..self.scratch.len();
        }
        std::mem::swap(&mut self.bytes, &mut self.scratch);
        self.datagrams.drain(..self.head);
        self.head = 0;
        self.grouped = true;
    }

    /// The datagrams still to send, first first.
    fn front(&self) -> Batch<'_> {
        Batch {
            bytes: &self.bytes,
            datagrams: &self.datagrams[self.head..],
        }
    }

    /// Marks the next `count` datagrams sent. The buffers are reused once
    /// everything is; a queue left part-sent (a full send buffer) is
    /// compacted once at least half of it is sent, so it holds at most
    /// twice its unsent datagrams and each byte moves about once.
    fn consume(&mut self, count: usize) {
        self.head = (self.head + count).min(self.datagrams.len());
        if self.head == self.datagrams.len() {
            self.bytes.clear();
            self.datagrams.clear();
            self.head = 0;
        } else if self.head >= SEND_BATCH && self.head * 2 >= self.datagrams.len() {
            let sent_bytes = self.datagrams[self.head].0.start;
            self.bytes.drain(..sent_bytes);
            self.datagrams.drain(..self.head);
            for (range, _) in &mut self.datagrams {
                *range = range.start - sent_bytes..range.end - sent_bytes;
            }
            self.head = 0;
        }
    }
}

/// A view of the unsent datagrams of a [`SendQueue`].
#[derive(Clone, Copy)]
struct Batch<'a> {
    bytes: &'a [u8],
    datagrams: &'a [(Range<usize>, Path)],
}

impl<'a> Batch<'a> {
    fn len(&self) -> usize {
        self.datagrams.len()
    }

    /// The datagrams after the first `count`.
    fn skip(self, count: usize) -> Batch<'a> {
        Batch {
            bytes: self.bytes,
            datagrams: &self.datagrams[count.min(self.len())..],
        }
    }

    /// The first `count` datagrams.
    fn take(self, count: usize) -> Batch<'a> {
        Batch {
            bytes: self.bytes,
            datagrams: &self.datagrams[..count.min(self.len())],
        }
    }

    /// How many datagrams from the first one can leave as one GSO buffer:
    /// of the same path, of the same size but for a shorter last one, at
    /// most `max_segments` and [`MAX_GSO_BYTES`] in all.
    fn leading_run(&self, max_segments: usize) -> usize {
        let Some(((first, first_path), rest)) = self.datagrams.split_first() else {
            return 0;
        };
        let size = first.len();
        let mut run = 1;
        for (range, path) in rest {
            if run == max_segments
                || path != first_path
                || range.len() > size
                || (run + 1) * size > MAX_GSO_BYTES
            {
                break;
            }
            run += 1;
            if range.len() < size {
                break;
            }
        }
        run
    }

    /// How many datagrams, from the first (which starts no run, see
    /// [`leading_run`](Self::leading_run)) up to the next that does or
    /// needs other control messages, at most [`SEND_BATCH`]: those leave
    /// together in one `sendmmsg`.
    fn leading_singles(&self, max_segments: usize) -> usize {
        let limit = self.len().min(SEND_BATCH);
        let Some((_, first)) = self.datagrams.first() else {
            return 0;
        };
        (1..limit)
            .find(|&i| {
                self.datagrams[i].1.control() != first.control()
                    || self.skip(i).leading_run(max_segments) > 1
            })
            .unwrap_or(limit)
    }

    /// The bytes of all datagrams, which lie back to back in the queue.
    fn contiguous_bytes(&self) -> &'a [u8] {
        debug_assert!(self
            .datagrams
            .windows(2)
            .all(|pair| pair[0].0.end == pair[1].0.start));
        match (self.datagrams.first(), self.datagrams.last()) {
            (Some((first, _)), Some((last, _))) => &self.bytes[first.start..last.end],
            _ => &[],
        }
    }

    /// The `i`th datagram and its path.
    fn get(&self, i: usize) -> Option<(&'a [u8], Path)> {
        let (range, path) = self.datagrams.get(i)?;
        Some((&self.bytes[range.clone()], *path))
    }
}

/// Buffers that one receive call fills, reused from call to call.
pub struct RecvBatch {
    buffers: Box<[u8]>,
    meta: [quinn_udp::RecvMeta; RECV_BATCH],
    received: usize,
}

impl Default for RecvBatch {
    fn default() -> RecvBatch {
        RecvBatch {
            buffers: vec![0; RECV_SLOT * RECV_BATCH].into_boxed_slice(),
            meta: [quinn_udp::RecvMeta::default(); RECV_BATCH],
            received: 0,
        }
    }
}

impl RecvBatch {
    /// Each datagram of the last receive, in arrival order; a GRO buffer is
    /// split back into its datagrams.
    pub fn datagrams(&self) -> impl Iterator<Item = Received<'_>> + '_ {
        self.meta[..self.received]
            .iter()
            .zip(self.buffers.chunks(RECV_SLOT))
            .flat_map(|(meta, slot)| {
                let stride = Some(meta.stride).filter(|&s| s > 0).unwrap_or(meta.len);
                slot[..meta.len]
                    .chunks(stride.max(1))
                    .map(move |data| Received {
                        remote: meta.addr,
                        local_ip: meta.dst_ip,
                        ecn: meta.ecn.and_then(|ecn| EcnCodepoint::from_bits(ecn as u8)),
                        data,
                    })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp::{bind_udp, PortSharing};

    /// A socket on loopback whose first write readiness tokio has seen
    /// (until then it reports every send as blocked).
    async fn loopback_socket() -> DatagramSocket {
        socket_on("127.0.0.1:0", false).await
    }

    /// A socket bound to `addr`, writable.
    async fn socket_on(addr: &str, server: bool) -> DatagramSocket {
        let socket = bind_udp(addr.parse().unwrap(), 1 << 20, PortSharing::Exclusive).unwrap();
        let socket = DatagramSocket::new(socket, server).unwrap();
        let writable = tokio::time::timeout(std::time::Duration::from_secs(10), socket.writable());
        writable.await.expect("writable in time").unwrap();
        socket
    }

    /// A datagram as received: sender, local address, ECN mark, bytes.
    type Arrival = (SocketAddr, Option<IpAddr>, Option<EcnCodepoint>, Vec<u8>);

    /// Receives until `expected` datagrams arrived, with what came with them.
    async fn receive(socket: &DatagramSocket, expected: usize) -> Vec<Arrival> {
        let mut received_batch = RecvBatch::default();
        let mut received = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while received.len() < expected {
            let readable = tokio::time::timeout_at(deadline, socket.readable()).await;
            assert!(readable.is_ok(), "only {} datagrams came", received.len());
            if socket.try_recv(&mut received_batch).is_ok() {
                received.extend(
                    received_batch
                        .datagrams()
                        .map(|d| (d.remote, d.local_ip, d.ecn, d.data.to_vec())),
                );
            }
        }
        received
    }

    fn transmit(
        to: SocketAddr,
        src_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
    ) -> quinn_proto::Transmit {
        quinn_proto::Transmit {
            destination: to,
            ecn,
            size: 0,
            segment_size: None,
            src_ip,
        }
    }

    #[tokio::test]
    async fn datagrams_keep_their_ecn_mark_alone_in_a_batch_and_in_a_gso_run() {
        let mut sender = loopback_socket().await;
        let receiver = loopback_socket().await;
        let other = loopback_socket().await;
        let to = receiver.local_addr().unwrap();
        let ect0 = Some(EcnCodepoint::Ect0);
        // Lone datagrams to two destinations (one sendmmsg), a run of three
        // of one size (one GSO buffer), and one unmarked.
        assert!(sender.send(&transmit(to, None, ect0), &[1; 40]));
        assert!(sender.send(&transmit(other.local_addr().unwrap(), None, ect0), &[2; 40]));
        for _ in 0..3 {
            assert!(sender.send(&transmit(to, None, ect0), &[3; 100]));
        }
        assert!(sender.send(&transmit(to, None, None), &[4; 70]));
        assert!(sender.flush());
        let mut arrived = receive(&receiver, 5).await;
        arrived.extend(receive(&other, 1).await);
        for (_, _, ecn, d) in arrived {
            let expected = if d[0] == 4 { None } else { ect0 };
            assert_eq!(ecn, expected, "datagram {}", d[0]);
        }
    }

    #[tokio::test]
    async fn a_server_on_an_unspecified_address_answers_from_the_address_used() {
        let mut server = socket_on("0.0.0.0:0", true).await;
        let port = server.local_addr().unwrap().port();
        let mut client = loopback_socket().await;
        for local in ["127.0.0.1", "127.0.0.2"] {
            let used: SocketAddr = format!("{local}:{port}").parse().unwrap();
            assert!(client.send(&transmit(used, None, None), b"hello"));
            assert!(client.flush());
            let arrived = receive(&server, 1).await;
            let (from, local_ip, _, _) = arrived[0].clone();
            assert_eq!(local_ip, Some(used.ip()), "the server sees where it came");
            // A lone answer and a GSO run, as quinn-proto's transmits ask.
            assert!(server.send(&transmit(from, local_ip, None), b"lone"));
            assert!(server.flush());
            for _ in 0..2 {
                assert!(server.send(&transmit(from, local_ip, None), b"run!"));
            }
            assert!(server.flush());
            for (source, _, _, _) in receive(&client, 3).await {
                assert_eq!(source, used, "answered from {local}");
            }
        }
    }

    #[tokio::test]
    async fn queued_datagrams_all_arrive_in_order_within_a_size() {
        let mut sender = loopback_socket().await;
        let receiver = loopback_socket().await;
        let to = receiver.local_addr().unwrap();
        let count = 3 * SEND_BATCH + 5;
        // Three sizes, as QUIC packets vary; each datagram numbered.
        let datagram = |i: usize| {
            let mut bytes = vec![i as u8; [100, 60, 20][i % 3]];
            bytes[0] = (i % 3) as u8;
            bytes
        };
        for i in 0..count {
            assert!(sender.send(&transmit(to, None, None), &datagram(i)));
        }
        // Full batches left as they filled; the rest waits for the flush.
        assert_eq!(sender.queue.len(), 5);
        assert!(sender.has_pending());
        assert!(sender.flush());
        assert!(!sender.has_pending());

        let received = receive(&receiver, count).await;
        let from = sender.local_addr().unwrap();
        assert!(received.iter().all(|(source, ..)| *source == from));
        for size in 0..3u8 {
            let sent: Vec<Vec<u8>> = (0..count).map(datagram).filter(|d| d[0] == size).collect();
            let arrived: Vec<Vec<u8>> = received
                .iter()
                .map(|(.., d)| d.clone())
                .filter(|d| d[0] == size)
                .collect();
            assert_eq!(arrived, sent, "size class {size}");
        }
    }

    /// The next `n` sends off `queue`, each as `flush` takes it: a GSO run
    /// (`true`, checked to be its datagrams back to back) or lone
    /// datagrams, by their first bytes.
    fn take_sends(queue: &mut SendQueue, max: usize, n: usize) -> Vec<(bool, Vec<u8>)> {
        let mut taken = Vec::new();
        for _ in 0..n {
            let front = queue.front();
            let (run, singles) = (front.leading_run(max), front.leading_singles(max));
            let count = if run > 1 { run } else { singles };
            let datagrams: Vec<&[u8]> = (0..count).map(|i| front.get(i).unwrap().0).collect();
            if run > 1 {
                assert_eq!(front.take(run).contiguous_bytes(), datagrams.concat());
            }
            taken.push((run > 1, datagrams.iter().map(|d| d[0]).collect()));
            queue.consume(count);
        }
        taken
    }

    #[test]
    fn grouping_makes_runs_of_one_destination_and_size() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut queue = SendQueue::default();
        // (destination, size, tag): interleaved as connections produce them.
        let sent = [
            (b, 50, 1),
            (a, 50, 2),
            (a, 30, 3),
            (b, 50, 4),
            (a, 50, 5),
            (a, 50, 6),
            (b, 10, 7),
        ];
        for (to, size, tag) in sent {
            queue.push(&vec![tag; size], Path::to(to));
        }
        queue.group_for_segmentation();
        // To `a`: three of 50 bytes then the shorter one in one run; to
        // `b`: two of 50 and the shorter one. Equal ones keep their order.
        let runs = take_sends(&mut queue, 64, 2);
        assert_eq!(runs, [(true, vec![2, 5, 6, 3]), (true, vec![1, 4, 7])]);
        assert!(queue.is_empty());

        // A run ends at `max_segments`.
        for i in 0..5 {
            queue.push(&[i; 8], Path::to(a));
        }
        queue.group_for_segmentation();
        let runs = take_sends(&mut queue, 3, 2);
        assert_eq!(runs, [(true, vec![0, 1, 2]), (true, vec![3, 4])]);

        // Lone datagrams go together up to the next run: a's 50 bytes, then
        // a shorter 40; b's 70 alone, as c's 60 start a run, then a shorter
        // 8; then a's 30, b's 20 and c's other 8 together.
        let c: SocketAddr = "127.0.0.1:3".parse().unwrap();
        queue.push(&[1; 40], Path::to(a));
        queue.push(&[2; 50], Path::to(a));
        queue.push(&[3; 70], Path::to(b));
        queue.push(&[4; 60], Path::to(c));
        queue.push(&[5; 8], Path::to(c));
        queue.push(&[6; 8], Path::to(c));
        queue.group_for_segmentation();
        let sends = take_sends(&mut queue, 64, 3);
        assert_eq!(
            sends,
            [(true, vec![2, 1]), (false, vec![3]), (true, vec![4, 5])]
        );
        queue.push(&[7; 30], Path::to(a));
        queue.push(&[8; 20], Path::to(b));
        queue.group_for_segmentation();
        assert_eq!(take_sends(&mut queue, 64, 1), [(false, vec![7, 8, 6])]);

        // A run stops short of what one UDP datagram can carry.
        for i in 0..60 {
            queue.push(&[i; 1200], Path::to(a));
        }
        assert_eq!(queue.front().leading_run(64), MAX_GSO_BYTES / 1200);
    }

    // A current-thread runtime polls its reactor only when the test awaits.
    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_socket_keeps_its_queue_until_it_is_writable() {
        // Until tokio's reactor has seen a new socket, it reports it not
        // writable: the path a full send buffer takes, made deterministic.
        let receiver = loopback_socket().await;
        let to = transmit(receiver.local_addr().unwrap(), None, None);
        let addr = "127.0.0.1:0".parse().unwrap();
        let socket = bind_udp(addr, 1 << 20, PortSharing::Exclusive).unwrap();
        let mut sender = DatagramSocket::new(socket, false).unwrap();
        for i in 0..SEND_BATCH - 1 {
            assert!(sender.send(&to, &[i as u8; 10]), "queued, not yet sent");
        }
        // The batch is full: its send finds the socket blocked.
        assert!(!sender.send(&to, &[SEND_BATCH as u8 - 1; 10]));
        assert!(!sender.send(&to, &[SEND_BATCH as u8; 10]), "still blocked");
        assert!(sender.has_pending());
        assert!(!sender.flush());

        sender.writable().await.unwrap();
        assert!(sender.flush());
        assert!(!sender.has_pending());
        assert!(sender.send(&to, &[0xff; 10]), "unblocked");
        let received = receive(&receiver, SEND_BATCH + 1).await;
        for (i, (.., datagram)) in received.iter().enumerate() {
            assert_eq!(*datagram, vec![i as u8; 10], "datagram {i} in order");
        }
    }

    #[tokio::test]
    async fn an_unreachable_destination_drops_only_its_datagram() {
        let mut sender = loopback_socket().await;
        let receiver = loopback_socket().await;
        let to = receiver.local_addr().unwrap();
        // An IPv6 destination from an IPv4 socket: the kernel refuses it.
        let wrong_family: SocketAddr = "[::1]:9".parse().unwrap();
        sender.send(&transmit(to, None, None), b"first");
        sender.send(&transmit(wrong_family, None, None), b"refused");
        sender.send(&transmit(to, None, None), b"last");
        assert!(sender.flush());
        let received = receive(&receiver, 2).await;
        let payloads: Vec<&[u8]> = received.iter().map(|(.., d)| d.as_slice()).collect();
        assert_eq!(payloads, [&b"first"[..], &b"last"[..]]);
    }

    #[test]
    fn a_part_sent_queue_keeps_only_what_is_unsent() {
        let mut queue = SendQueue::default();
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for i in 0..SEND_BATCH + 3 {
            queue.push(&[i as u8; 3], Path::to(to));
        }
        queue.consume(SEND_BATCH + 1);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.bytes.len(), 6, "sent bytes are dropped");
        let batch = queue.front();
        let front: Vec<&[u8]> = (0..batch.len()).map(|i| batch.get(i).unwrap().0).collect();
        let (a, b) = (SEND_BATCH as u8 + 1, SEND_BATCH as u8 + 2);
        assert_eq!(front, [&[a; 3][..], &[b; 3][..]]);
        queue.consume(2);
        assert!(queue.is_empty());
        assert!(queue.bytes.is_empty() && queue.datagrams.is_empty());
    }

    #[test]
    fn a_gro_buffer_splits_into_its_datagrams() {
        let mut received_batch = RecvBatch::default();
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        // Two datagrams of 1,200 bytes and a last one of 100 in one buffer,
        // then a lone datagram in the next buffer.
        for (i, (len, stride)) in [(2500, 1200), (40, 40)].into_iter().enumerate() {
            received_batch.buffers[i * RECV_SLOT..][..len].fill(7);
            let meta = &mut received_batch.meta[i];
            (meta.addr, meta.len, meta.stride) = (from, len, stride);
        }
        received_batch.received = 2;
        let sizes: Vec<usize> = received_batch.datagrams().map(|d| d.data.len()).collect();
        assert_eq!(sizes, [1200, 1200, 100, 40]);
    }
}
