//! [`Endpoint`]: one quinn-proto endpoint and every connection on it, each
//! with the [`Application`]'s state for its session, driven without sockets
//! or a clock.
//!
//! It owns what every driver of many connections needs and nothing of
//! Switchboard's protocol: the connections by handle ([`Connections`]), one
//! deadline set for all of them ([`TimerWheel`]), the connections stopped on
//! a full send buffer, and the one session stream each connection carries
//! (the client opens it when the handshake completes, the server accepts
//! it). What differs between the router and the load generator sits behind
//! [`Application`]: what a session is, what commands it takes, and what it
//! does when a connection has news.
//!
//! Inputs are `handle_*(now, ...)` calls: a received datagram, a command, the
//! timers that came due. Each marks the connections it touched; [`Endpoint::drive`]
//! then gives each of them to the application once and sends what it has to
//! send through a [`DatagramSink`]. The async [`crate::Driver`] calls these
//! with the real clock and a UDP socket; tests call them with a clock they
//! move and a `Vec` of datagrams.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ClientConfig, ConnectError, ConnectionError, DatagramEvent, Dir, EcnCodepoint, EndpointConfig,
    Event, ReadError, ServerConfig, Side, StreamEvent, StreamId, VarInt, WriteError, Written,
};

use crate::connection::{ack_now, exchange_endpoint_events, transmit, DatagramSink};
use crate::table::{ConnTable, HandleSet};
use crate::timers::TimerWheel;

/// What [`Application::accept`] decides for a new connection.
#[derive(Debug)]
pub enum Admission<S> {
    /// Accept it, with this session state.
    Accept(S),
    /// Answer with a QUIC Retry: a client at a real address comes back with
    /// a token, and only then costs connection state; a spoofed one never
    /// does.
    Retry,
    /// Refuse it (`CONNECTION_REFUSED`).
    Refuse,
}

/// Room for the largest UDP datagram quinn-proto writes.
const MAX_DATAGRAM: usize = 64 * 1024;

/// What a connection's session does; see the module docs. Every method gets
/// the time of the input being handled.
pub trait Application {
    /// The state of one connection's session.
    type Session;
    /// What other tasks ask of this endpoint.
    type Command;

    /// A client opened a connection: accept it with the new session's
    /// state, ask it to prove its address first (a QUIC Retry; only while
    /// `address_validated` is false), or refuse it. A client endpoint is
    /// never asked.
    fn accept(&mut self, now: Instant, address_validated: bool) -> Admission<Self::Session>;

    /// quinn-proto refused a connection [`accept`](Self::accept) took.
    fn accept_failed(&mut self) {}

    /// Handles a command. Connections it changes must be
    /// [touched](Connections::touch) to be driven this turn.
    fn command(
        &mut self,
        conns: &mut Connections<Self::Session>,
        command: Self::Command,
        now: Instant,
    );

    /// Before the turn's connections are driven: a chance to touch more.
    fn before_drive(&mut self, _conns: &mut Connections<Self::Session>) {}

    /// Whether the application waits for a wake-up of its own (see
    /// [`crate::Driver::new`]) to have connections driven again.
    fn waits_for_wakeup(&self) -> bool {
        false
    }

    /// The connection had news (`events`) or was touched: read its stream,
    /// write what is queued.
    fn drive(&mut self, conn: &mut Conn<Self::Session>, events: Events, now: Instant) -> Driven;

    /// The application's own deadline for this connection, if it has one;
    /// [`timeout`](Self::timeout) is called once it passes.
    fn deadline(&self, _conn: &Conn<Self::Session>) -> Option<Instant> {
        None
    }

    /// The connection's timer fired (quinn-proto's, or the application's
    /// deadline); quinn-proto handles its own timeout right after.
    fn timeout(&mut self, _conn: &mut Conn<Self::Session>, _now: Instant) {}

    /// The connection is drained and gone from the endpoint.
    fn drained(&mut self, conn: Conn<Self::Session>);
}

/// What happened to a connection since it was last driven.
#[derive(Debug, Default)]
pub struct Events {
    /// The handshake completed.
    pub connected: bool,
    /// Datagrams wait in `conn.quic.datagrams()`.
    pub datagrams: bool,
    /// The connection ended (closed by either side, timed out).
    pub lost: Option<ConnectionError>,
}

/// What the application asks for after driving a connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Driven {
    /// Acknowledge at once ([`crate::connection::ack_now`]) what the
    /// connection received this turn: no answer of the application's will
    /// carry the ACK.
    pub ack_now: bool,
}

/// One connection: its quinn-proto state, its session stream and the
/// application's session.
pub struct Conn<S> {
    /// The connection's handle in its endpoint.
    pub handle: usize,
    /// quinn-proto's connection.
    pub quic: quinn_proto::Connection,
    /// The session stream, once opened or accepted.
    stream: Option<StreamId>,
    /// The stream may hold unread bytes: set by quinn-proto's Opened and
    /// Readable events, cleared when a read finds it empty, so ACKs and
    /// keep-alives cost no stream lookup.
    readable: bool,
    /// The application's state.
    pub session: S,
}

/// What reading the session stream found.
#[derive(Debug)]
pub enum StreamRead {
    /// The next bytes.
    Data(Bytes),
    /// Nothing now: no stream yet, or nothing unread.
    Empty,
    /// The peer finished or reset its side: nothing more will come.
    Finished,
}

impl<S> Conn<S> {
    /// Whether the session stream is open.
    pub fn has_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// Reads at most `max` bytes of the session stream.
    pub fn read(&mut self, max: usize) -> StreamRead {
        let Some(id) = self.stream.filter(|_| self.readable) else {
            return StreamRead::Empty;
        };
        let mut stream = self.quic.recv_stream(id);
        let Ok(mut chunks) = stream.read(true) else {
            return StreamRead::Empty;
        };
        let read = match chunks.next(max) {
            Ok(Some(chunk)) => StreamRead::Data(chunk.bytes),
            Ok(None) | Err(ReadError::Reset(_)) => StreamRead::Finished,
            Err(ReadError::Blocked) => {
                self.readable = false;
                StreamRead::Empty
            }
        };
        // Whether to send flow-control credit now: the driver transmits
        // after every drive anyway.
        let _ = chunks.finalize();
        read
    }

    /// Writes `chunks` to the session stream, as much as flow control
    /// allows; what was not written stays in `chunks` (see quinn-proto's
    /// `SendStream::write_chunks`). With no stream yet, writes nothing.
    pub fn write(&mut self, chunks: &mut [Bytes]) -> Result<Written, WriteError> {
        match self.stream {
            Some(id) => self.quic.send_stream(id).write_chunks(chunks),
            None => Err(WriteError::Blocked),
        }
    }

    /// Closes the connection with an application `code` and `reason`.
    pub fn close(&mut self, now: Instant, code: u32, reason: impl Into<Cow<'static, str>>) {
        let reason = match reason.into() {
            Cow::Borrowed(text) => Bytes::from_static(text.as_bytes()),
            Cow::Owned(text) => Bytes::from(text),
        };
        self.quic.close(now, VarInt::from_u32(code), reason);
    }
}

/// The connections of an endpoint, as the application sees them.
pub struct Connections<S> {
    endpoint: quinn_proto::Endpoint,
    table: ConnTable<Conn<S>>,
    /// Connections to drive this turn.
    dirty: HandleSet,
}

impl<S> Connections<S> {
    /// The connection `handle`, if it is still there.
    pub fn get_mut(&mut self, handle: usize) -> Option<&mut Conn<S>> {
        self.table.get_mut(handle)
    }

    /// Has connection `handle` driven this turn.
    pub fn touch(&mut self, handle: usize) {
        self.dirty.insert(handle);
    }

    /// Every connection.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Conn<S>> {
        self.table.iter_mut().map(|(_, conn)| conn)
    }

    /// Every connection's handle.
    pub fn handles(&self) -> Vec<usize> {
        self.table.handles()
    }

    /// Number of connections.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Opens a client connection to `server`, carrying `session`; it is
    /// driven this turn. Returns its handle.
    pub fn connect(
        &mut self,
        now: Instant,
        config: ClientConfig,
        server: SocketAddr,
        server_name: &str,
        session: S,
    ) -> Result<usize, ConnectError> {
        let (handle, quic) = self.endpoint.connect(now, config, server, server_name)?;
        self.insert(handle.0, quic, session);
        Ok(handle.0)
    }

    fn insert(&mut self, handle: usize, quic: quinn_proto::Connection, session: S) {
        let conn = Conn {
            handle,
            quic,
            stream: None,
            readable: false,
            session,
        };
        self.table.insert(handle, conn);
        self.dirty.insert(handle);
    }
}

/// A datagram as received: who sent it, to which of our addresses, with
/// which ECN mark.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// The sender.
    pub remote: SocketAddr,
    /// The local address it was sent to, where the socket reports it.
    pub local_ip: Option<IpAddr>,
    /// Its ECN codepoint, where the socket reports it.
    pub ecn: Option<EcnCodepoint>,
    /// The datagram.
    pub data: &'a [u8],
}

/// One endpoint and its connections; see the module docs.
pub struct Endpoint<A: Application> {
    app: A,
    conns: Connections<A::Session>,
    timers: TimerWheel,
    /// Connections that stopped transmitting on a full send buffer, driven
    /// again once it drains ([`Endpoint::resume_sending`]).
    blocked_on_send: HandleSet,
    buf: Vec<u8>,
    /// While the datagrams received this turn are driven: the time they were
    /// handed to quinn-proto with, which [`ack_now`] finds the ACK timers by.
    received_at: Option<Instant>,
}

impl<A: Application> Endpoint<A> {
    /// An endpoint starting at `now`; with a `server` configuration it
    /// accepts connections, without one it only opens them.
    pub fn new(
        app: A,
        config: Arc<EndpointConfig>,
        server: Option<Arc<ServerConfig>>,
        now: Instant,
    ) -> Self {
        Endpoint {
            app,
            conns: Connections {
                endpoint: quinn_proto::Endpoint::new(config, server, false, None),
                table: ConnTable::default(),
                dirty: HandleSet::default(),
            },
            timers: TimerWheel::new(now),
            blocked_on_send: HandleSet::default(),
            buf: Vec::with_capacity(MAX_DATAGRAM),
            received_at: None,
        }
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.app
    }

    /// The connections.
    pub fn connections(&mut self) -> &mut Connections<A::Session> {
        &mut self.conns
    }

    /// The earliest deadline of any connection.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Whether connections wait for the send buffer to drain.
    pub fn is_blocked_on_send(&self) -> bool {
        !self.blocked_on_send.is_empty()
    }

    /// The send buffer drained: the connections that stopped on it are
    /// driven next. Returns whether there were any.
    pub fn resume_sending(&mut self) -> bool {
        if self.blocked_on_send.is_empty() {
            return false;
        }
        self.conns.dirty.extend(self.blocked_on_send.drain());
        true
    }

    /// Hands a received datagram to quinn-proto. Datagrams of one turn share
    /// one `now`, the time they were received.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        datagram: Received<'_>,
        out: &mut impl DatagramSink,
    ) {
        self.received_at = Some(now);
        self.buf.clear();
        let event = self.conns.endpoint.handle(
            now,
            datagram.remote,
            datagram.local_ip,
            datagram.ecn,
            BytesMut::from(datagram.data),
            &mut self.buf,
        );
        match event {
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.buf.clear();
                let validated = incoming.remote_address_validated();
                let session = match self.app.accept(now, validated) {
                    Admission::Accept(session) => session,
                    Admission::Retry => {
                        match self.conns.endpoint.retry(incoming, &mut self.buf) {
                            Ok(retry) => {
                                out.send(&retry, &self.buf);
                            }
                            Err(error) => {
                                self.buf.clear();
                                let refusal = self
                                    .conns
                                    .endpoint
                                    .refuse(error.into_incoming(), &mut self.buf);
                                out.send(&refusal, &self.buf);
                            }
                        }
                        return;
                    }
                    Admission::Refuse => {
                        let refusal = self.conns.endpoint.refuse(incoming, &mut self.buf);
                        out.send(&refusal, &self.buf);
                        return;
                    }
                };
                match self
                    .conns
                    .endpoint
                    .accept(incoming, now, &mut self.buf, None)
                {
                    Ok((handle, quic)) => self.conns.insert(handle.0, quic, session),
                    Err(error) => {
                        self.app.accept_failed();
                        if let Some(response) = error.response {
                            out.send(&response, &self.buf);
                        }
                    }
                }
            }
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(conn) = self.conns.table.get_mut(handle.0) {
                    conn.quic.handle_event(event);
                    self.conns.dirty.insert(handle.0);
                }
            }
            Some(DatagramEvent::Response(response)) => {
                out.send(&response, &self.buf);
            }
            None => {}
        }
    }

    /// Hands a command to the application.
    pub fn handle_command(&mut self, command: A::Command, now: Instant) {
        self.app.command(&mut self.conns, command, now);
    }

    /// Fires the deadlines at or before `now`.
    pub fn handle_timeouts(&mut self, now: Instant) {
        while let Some(handle) = self.timers.pop_due(now) {
            let Some(conn) = self.conns.table.get_mut(handle) else {
                continue;
            };
            self.app.timeout(conn, now);
            conn.quic.handle_timeout(now);
            self.conns.dirty.insert(handle);
        }
    }

    /// Drives every connection touched since the last call, sending what
    /// each has to send through `out`.
    pub fn drive(&mut self, now: Instant, out: &mut impl DatagramSink) {
        self.app.before_drive(&mut self.conns);
        for handle in std::mem::take(&mut self.conns.dirty) {
            self.drive_one(handle, now, out);
        }
    }

    /// The turn is over: datagrams received later are of the next one.
    pub fn end_turn(&mut self) {
        self.received_at = None;
    }

    /// Everything a connection needs after its inputs changed.
    fn drive_one(&mut self, handle: usize, now: Instant, out: &mut impl DatagramSink) {
        let Some(conn) = self.conns.table.get_mut(handle) else {
            return;
        };
        exchange_endpoint_events(&mut self.conns.endpoint, handle, &mut conn.quic);
        let mut events = Events::default();
        while let Some(event) = conn.quic.poll() {
            match event {
                Event::Connected => {
                    events.connected = true;
                    if conn.quic.side() == Side::Client {
                        conn.stream = conn.quic.streams().open(Dir::Bi);
                    }
                }
                Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) if conn.stream.is_none() => {
                    conn.stream = conn.quic.streams().accept(Dir::Bi);
                    conn.readable = true;
                }
                Event::Stream(StreamEvent::Readable { id }) if conn.stream == Some(id) => {
                    conn.readable = true;
                }
                Event::DatagramReceived => events.datagrams = true,
                Event::ConnectionLost { reason } => events.lost = Some(reason),
                _ => {}
            }
        }
        let driven = self.app.drive(conn, events, now);
        if let Some(received_at) = self.received_at.filter(|_| driven.ack_now) {
            ack_now(&mut conn.quic, received_at);
        }
        // Transmit until quinn-proto has nothing more, or the send buffer is
        // full: then the rest waits until it drains.
        if !transmit(&mut conn.quic, out, &mut self.buf, now) {
            self.blocked_on_send.insert(handle);
        }
        exchange_endpoint_events(&mut self.conns.endpoint, handle, &mut conn.quic);
        if conn.quic.is_drained() {
            self.timers.set(handle, None);
            self.blocked_on_send.remove(&handle);
            let conn = self.conns.table.remove(handle).expect("driven above");
            self.app.drained(conn);
            return;
        }
        let deadline = match self.app.deadline(conn) {
            Some(app) => Some(conn.quic.poll_timeout().map_or(app, |quic| quic.min(app))),
            None => conn.quic.poll_timeout(),
        };
        self.timers.set(handle, deadline);
    }
}
