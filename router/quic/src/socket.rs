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
//! Sends never block the driver: datagrams that find the kernel's send
//! buffer full stay queued until the socket is writable again, and past
//! [`MAX_QUEUED_DATAGRAMS`] new ones are dropped, which QUIC recovers from as
//! from any other loss.

use std::io::{ErrorKind, IoSliceMut};
use std::net::SocketAddr;
use std::ops::Range;

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
    queue: SendQueue,
    /// The last send attempt found the kernel's buffer full; cleared by a
    /// [`flush`](Self::flush) that empties the queue.
    blocked: bool,
}

impl DatagramSocket {
    /// Wraps a bound socket. quinn-udp also sets the don't-fragment bit
    /// (`IP_PMTUDISC_PROBE`: nothing is fragmented, and a datagram over the
    /// interface MTU is refused) and turns on GRO where the kernel has it.
    pub fn new(socket: std::net::UdpSocket) -> std::io::Result<DatagramSocket> {
        socket.set_nonblocking(true)?;
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        Ok(DatagramSocket {
            socket: UdpSocket::from_std(socket)?,
            state,
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

    /// Queues `datagram` for `destination`, sending the queue once it holds
    /// a batch. Returns false when the socket is blocked on a full send
    /// buffer: the caller should stop producing until
    /// [`flush`](Self::flush) empties the queue.
    pub fn send_to(&mut self, datagram: &[u8], destination: SocketAddr) -> bool {
        if self.queue.len() < MAX_QUEUED_DATAGRAMS {
            self.queue.push(datagram, destination);
        }
        if !self.blocked && self.queue.len() >= SEND_BATCH {
            self.flush();
        }
        !self.blocked
    }

    /// Sends queued datagrams until the queue is empty or the kernel's send
    /// buffer is full. Returns true when none are left. (Resuming blocked
    /// connections on partial progress instead was measured: it re-queued
    /// so much that chat at 15k msgs/s went from p99 8 ms to seconds.)
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
    fn send(&mut self, transmit: &quinn_proto::Transmit, contents: &[u8]) -> bool {
        self.send_to(contents, transmit.destination)
    }
}

/// Sends the first datagrams of `batch` (at most [`SEND_BATCH`]) with one
/// system call; returns how many left. Neither path allocates.
#[cfg(target_os = "linux")]
fn send_batch(socket: &UdpSocket, batch: Batch<'_>) -> std::io::Result<usize> {
    use rustix::net::{sendmmsg, sendto, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
    if batch.len() == 1 {
        let (datagram, to) = batch.get(0).expect("one datagram");
        return sendto(socket, datagram, SendFlags::empty(), &to)
            .map(|_| 1)
            .map_err(Into::into);
    }
    let count = batch.len().min(SEND_BATCH);
    let unused = SocketAddr::from(([0, 0, 0, 0], 0));
    let addresses: [SocketAddrAny; SEND_BATCH] =
        std::array::from_fn(|i| batch.get(i).map_or(unused, |(_, to)| to).into());
    let payloads: [[std::io::IoSlice<'_>; 1]; SEND_BATCH] =
        std::array::from_fn(|i| [std::io::IoSlice::new(batch.get(i).map_or(&[], |(d, _)| d))]);
    let mut no_control: [SendAncillaryBuffer<'_, '_, '_>; SEND_BATCH] =
        std::array::from_fn(|_| SendAncillaryBuffer::default());
    let mut controls = no_control.iter_mut();
    let mut headers: [MMsgHdr<'_>; SEND_BATCH] = std::array::from_fn(|i| {
        let control = controls.next().expect("one control per header");
        MMsgHdr::new_with_addr(&addresses[i], &payloads[i], control)
    });
    Ok(sendmmsg(socket, &mut headers[..count], SendFlags::empty())?)
}

/// Sends `run`, datagrams to one destination of one size (the last may be
/// shorter), as one GSO buffer that the kernel cuts back into datagrams.
fn send_segments(
    state: &quinn_udp::UdpSocketState,
    socket: &UdpSocket,
    run: Batch<'_>,
) -> std::io::Result<()> {
    let (first, destination) = run.get(0).expect("a run is not empty");
    let transmit = quinn_udp::Transmit {
        destination,
        ecn: None,
        contents: run.contiguous_bytes(),
        segment_size: Some(first.len()),
        src_ip: None,
    };
    state.try_send(socket.into(), &transmit)
}

/// Sends `batch` one datagram per call, where `sendmmsg` is missing.
#[cfg(not(target_os = "linux"))]
fn send_batch(socket: &UdpSocket, batch: Batch<'_>) -> std::io::Result<usize> {
    use rustix::net::{sendto, SendFlags};
    let mut sent = 0;
    for (bytes, to) in (0..batch.len().min(SEND_BATCH)).filter_map(|i| batch.get(i)) {
        match sendto(socket, bytes, SendFlags::empty(), &to) {
            Ok(_) => sent += 1,
            Err(error) if sent == 0 => return Err(error.into()),
            Err(_) => break,
        }
    }
    Ok(sent)
}

/// Datagrams waiting to be sent, in order, in one byte buffer.
#[derive(Default)]
struct SendQueue {
    bytes: Vec<u8>,
    /// Each datagram's range in `bytes` and its destination; those before
    /// `head` are sent.
    datagrams: Vec<(Range<usize>, SocketAddr)>,
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

    fn push(&mut self, datagram: &[u8], destination: SocketAddr) {
        self.grouped = false;
        let start = self.bytes.len();
        self.bytes.extend_from_slice(datagram);
        self.datagrams.push((start..self.bytes.len(), destination));
    }

    /// Reorders the unsent datagrams so that those to one destination and of
    /// one size are adjacent, larger first (each keeps its place among
    /// equals), and their bytes contiguous: the shape a GSO send takes.
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
    datagrams: &'a [(Range<usize>, SocketAddr)],
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
    /// to the same destination, of the same size but for a shorter last
    /// one, at most `max_segments` and [`MAX_GSO_BYTES`] in all.
    fn leading_run(&self, max_segments: usize) -> usize {
        let Some(((first, to), rest)) = self.datagrams.split_first() else {
            return 0;
        };
        let size = first.len();
        let mut run = 1;
        for (range, destination) in rest {
            if run == max_segments
                || destination != to
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
    /// [`leading_run`](Self::leading_run)) up to the next that does, at
    /// most [`SEND_BATCH`]: those leave together in one `sendmmsg`.
    fn leading_singles(&self, max_segments: usize) -> usize {
        let limit = self.len().min(SEND_BATCH);
        (1..limit)
            .find(|&i| self.skip(i).leading_run(max_segments) > 1)
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

    /// The `i`th datagram and its destination.
    fn get(&self, i: usize) -> Option<(&'a [u8], SocketAddr)> {
        let (range, to) = self.datagrams.get(i)?;
        Some((&self.bytes[range.clone()], *to))
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
                let stride = if meta.stride == 0 {
                    meta.len
                } else {
                    meta.stride
                };
                slot[..meta.len]
                    .chunks(stride.max(1))
                    .map(move |data| Received {
                        remote: meta.addr,
                        local_ip: None,
                        ecn: None,
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
        let addr = "127.0.0.1:0".parse().unwrap();
        let socket = bind_udp(addr, 1 << 20, PortSharing::Exclusive).unwrap();
        let socket = DatagramSocket::new(socket).unwrap();
        let writable = tokio::time::timeout(std::time::Duration::from_secs(10), socket.writable());
        writable.await.expect("writable in time").unwrap();
        socket
    }

    /// Receives until `expected` datagrams arrived or a second passed.
    async fn receive(socket: &DatagramSocket, expected: usize) -> Vec<(SocketAddr, Vec<u8>)> {
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
                        .map(|d| (d.remote, d.data.to_vec())),
                );
            }
        }
        received
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
            assert!(sender.send_to(&datagram(i), to));
        }
        // Full batches left as they filled; the rest waits for the flush.
        assert_eq!(sender.queue.len(), 5);
        assert!(sender.has_pending());
        assert!(sender.flush());
        assert!(!sender.has_pending());

        let received = receive(&receiver, count).await;
        let from = sender.local_addr().unwrap();
        assert!(received.iter().all(|(source, _)| *source == from));
        for size in 0..3u8 {
            let sent: Vec<Vec<u8>> = (0..count).map(datagram).filter(|d| d[0] == size).collect();
            let arrived: Vec<Vec<u8>> = received
                .iter()
                .map(|(_, d)| d.clone())
                .filter(|d| d[0] == size)
                .collect();
            assert_eq!(arrived, sent, "size class {size}");
        }
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
            queue.push(&vec![tag; size], to);
        }
        queue.group_for_segmentation();
        let mut runs = Vec::new();
        while !queue.is_empty() {
            let front = queue.front();
            let run = front.leading_run(64);
            let (first, to) = front.get(0).unwrap();
            let bytes = front.take(run).contiguous_bytes();
            let tags: Vec<u8> = (0..run).map(|i| front.get(i).unwrap().0[0]).collect();
            assert_eq!(
                bytes.len(),
                (0..run)
                    .map(|i| front.get(i).unwrap().0.len())
                    .sum::<usize>()
            );
            runs.push((to, first.len(), tags));
            queue.consume(run);
        }
        // To `a`: three of 50 bytes then the shorter one in one run; to
        // `b`: two of 50 and the shorter one. Equal ones keep their order.
        assert_eq!(runs, [(a, 50, vec![2, 5, 6, 3]), (b, 50, vec![1, 4, 7])]);

        // A run ends at `max_segments`.
        for i in 0..5 {
            queue.push(&[i; 8], a);
        }
        queue.group_for_segmentation();
        assert_eq!(queue.front().leading_run(3), 3);
        queue.consume(3);
        assert_eq!(queue.front().leading_run(3), 2);
        queue.consume(2);

        // Lone datagrams go together up to the next run.
        let c: SocketAddr = "127.0.0.1:3".parse().unwrap();
        queue.push(&[1; 40], a);
        queue.push(&[2; 50], a);
        queue.push(&[3; 70], b);
        queue.push(&[4; 60], c);
        queue.push(&[5; 8], c);
        queue.push(&[6; 8], c);
        queue.group_for_segmentation();
        assert_eq!(
            queue.front().leading_run(64),
            2,
            "50 bytes, then a shorter 40"
        );
        queue.consume(2);
        assert_eq!(queue.front().leading_run(64), 1);
        assert_eq!(
            queue.front().leading_singles(64),
            1,
            "c's 60 bytes start a run"
        );
        queue.consume(1);
        assert_eq!(
            queue.front().leading_run(64),
            2,
            "60 bytes, then a shorter last one"
        );
        queue.consume(2);
        queue.push(&[7; 30], a);
        queue.push(&[8; 20], b);
        queue.group_for_segmentation();
        assert_eq!(
            queue.front().leading_singles(64),
            3,
            "c's 8, a's 30, b's 20"
        );
        queue.consume(3);

        // A run stops short of what one UDP datagram can carry.
        for i in 0..60 {
            queue.push(&[i; 1200], a);
        }
        assert_eq!(queue.front().leading_run(64), MAX_GSO_BYTES / 1200);
    }

    // A current-thread runtime polls its reactor only when the test awaits.
    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_socket_keeps_its_queue_until_it_is_writable() {
        // Until tokio's reactor has seen a new socket, it reports it not
        // writable: the path a full send buffer takes, made deterministic.
        let receiver = loopback_socket().await;
        let to = receiver.local_addr().unwrap();
        let addr = "127.0.0.1:0".parse().unwrap();
        let socket = bind_udp(addr, 1 << 20, PortSharing::Exclusive).unwrap();
        let mut sender = DatagramSocket::new(socket).unwrap();
        for i in 0..SEND_BATCH - 1 {
            assert!(sender.send_to(&[i as u8; 10], to), "queued, not yet sent");
        }
        // The batch is full: its send finds the socket blocked.
        assert!(!sender.send_to(&[SEND_BATCH as u8 - 1; 10], to));
        assert!(
            !sender.send_to(&[SEND_BATCH as u8; 10], to),
            "still blocked"
        );
        assert!(sender.has_pending());
        assert!(!sender.flush());

        sender.writable().await.unwrap();
        assert!(sender.flush());
        assert!(!sender.has_pending());
        assert!(sender.send_to(&[0xff; 10], to), "unblocked");
        let received = receive(&receiver, SEND_BATCH + 1).await;
        for (i, (_, datagram)) in received.iter().enumerate() {
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
        sender.send_to(b"first", to);
        sender.send_to(b"refused", wrong_family);
        sender.send_to(b"last", to);
        assert!(sender.flush());
        let received = receive(&receiver, 2).await;
        let payloads: Vec<&[u8]> = received.iter().map(|(_, d)| d.as_slice()).collect();
        assert_eq!(payloads, [&b"first"[..], &b"last"[..]]);
    }

    #[test]
    fn a_part_sent_queue_keeps_only_what_is_unsent() {
        let mut queue = SendQueue::default();
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for i in 0..SEND_BATCH + 3 {
            queue.push(&[i as u8; 3], to);
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
        // Two datagrams of 1,200 bytes and a last one of 100 in one buffer.
        received_batch.buffers[..2500].fill(7);
        received_batch.meta[0] = quinn_udp::RecvMeta {
            addr: from,
            len: 2500,
            stride: 1200,
            ..Default::default()
        };
        // Then a lone datagram in the next buffer.
        received_batch.buffers[RECV_SLOT..RECV_SLOT + 40].fill(9);
        received_batch.meta[1] = quinn_udp::RecvMeta {
            addr: from,
            len: 40,
            stride: 40,
            ..Default::default()
        };
        received_batch.received = 2;
        let sizes: Vec<usize> = received_batch.datagrams().map(|d| d.data.len()).collect();
        assert_eq!(sizes, [1200, 1200, 100, 40]);
    }
}
