//! One task per QUIC connection: it authenticates the Hello, registers the
//! session with its shard, then loops over the session stream (client frames
//! to the shard), the session's queues (frames to the client) and the drain
//! signal, until either side closes.

use std::sync::Arc;
use std::time::Instant;

use quinn::{Connection, RecvStream, SendStream, VarInt};
use switchboard_proto::close::CloseCode;
use switchboard_proto::frame::{DecodeError, FrameDecoder, LENGTH_PREFIX_BYTES};
use switchboard_proto::v1::{client_frame::Body, ClientFrame, Hello};

use super::directory::{session_queues, QueuedFrame, SessionQueues};
use super::handshake::{self, MAX_HELLO_FRAME_BYTES};
use super::ServerContext;
use crate::metrics;
use switchboard_core::{placement::shard_of, FrameClass, SessionId, ShardInput};

/// Largest read from the stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// Why a connection ended, for the disconnect metric.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// We closed it with this code.
    Closed(CloseCode),
    /// The peer closed the connection or finished its stream.
    PeerClosed,
    /// QUIC idle timeout: the client stopped sending heartbeats.
    IdleTimeout,
    /// Any other transport failure (reset, TLS error, ...).
    TransportError,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Ending::Closed(code) => code.as_str(),
            Ending::PeerClosed => "peer_closed",
            Ending::IdleTimeout => "idle_timeout",
            Ending::TransportError => "transport_error",
        }
    }

    fn from_connection_error(error: &quinn::ConnectionError) -> Ending {
        match error {
            quinn::ConnectionError::ApplicationClosed(_)
            | quinn::ConnectionError::ConnectionClosed(_) => Ending::PeerClosed,
            quinn::ConnectionError::TimedOut => Ending::IdleTimeout,
            quinn::ConnectionError::LocallyClosed => Ending::Closed(CloseCode::GoingAway),
            _ => Ending::TransportError,
        }
    }
}

fn close(connection: &Connection, code: CloseCode, reason: &str) -> Ending {
    connection.close(VarInt::from_u32(code.to_code()), reason.as_bytes());
    Ending::Closed(code)
}

/// Drives one accepted connection to its end.
pub(crate) async fn serve(incoming: quinn::Incoming, ctx: Arc<ServerContext>) {
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::debug!(%error, "handshake failed");
            metrics::disconnected("handshake_failed");
            return;
        }
    };
    metrics::connection_accepted();
    let ending = serve_connection(&connection, &ctx).await;
    metrics::disconnected(ending.as_str());
    tracing::debug!(remote = %connection.remote_address(), reason = ending.as_str(), "connection ended");
}

async fn serve_connection(connection: &Connection, ctx: &ServerContext) -> Ending {
    let deadline = Instant::now() + ctx.config.auth.timeout;
    let mut decoder =
        FrameDecoder::new(MAX_HELLO_FRAME_BYTES.min(ctx.config.limits.max_frame_bytes));
    let opened = tokio::time::timeout_at(deadline.into(), async {
        let (send, mut recv) = connection
            .accept_bi()
            .await
            .map_err(|e| Ending::from_connection_error(&e))?;
        let hello = read_hello(connection, &mut recv, &mut decoder).await?;
        Ok::<_, Ending>((send, recv, hello))
    })
    .await;
    let (mut send, recv, hello) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(ending)) => return ending,
        Err(_elapsed) => {
            metrics::auth_failed("timeout");
            return close(
                connection,
                CloseCode::AuthTimeout,
                "no valid Hello within the auth timeout",
            );
        }
    };
    let auth = match handshake::authenticate(ctx, hello) {
        Ok(auth) => auth,
        Err((code, reason)) => return close(connection, code, reason),
    };
    decoder.set_max_frame_bytes(ctx.config.limits.max_frame_bytes);
    if *ctx.draining.borrow() {
        return close(connection, CloseCode::GoingAway, "server shutting down");
    }

    let session = SessionId(ctx.next_session_id());
    let shard = &ctx.shards[shard_of(&auth.user, ctx.shards.len() as u32).0 as usize];
    let (sink, queues) = session_queues();
    let welcome = handshake::welcome(ctx, session, &auth.user);
    if send.write_chunk(welcome).await.is_err() {
        return Ending::PeerClosed;
    }
    ctx.directory.insert(session, sink);
    let open = handshake::open_session(session, auth);
    let ending = if shard.sessions.send(open.into()).await.is_ok() {
        run_session(connection, ctx, session, shard, send, recv, decoder, queues).await
    } else {
        close(connection, CloseCode::GoingAway, "server shutting down")
    };
    ctx.directory.remove(session);
    let _ = shard
        .sessions
        .send(ShardInput::Closed { session }.into())
        .await;
    ending
}

/// Reads frames until the first one; it must be a Hello.
async fn read_hello(
    connection: &Connection,
    recv: &mut RecvStream,
    decoder: &mut FrameDecoder,
) -> Result<Hello, Ending> {
    loop {
        match decoder.decode::<ClientFrame>() {
            Ok(Some(ClientFrame {
                body: Some(Body::Hello(hello)),
                ..
            })) => return Ok(hello),
            Ok(Some(_)) => {
                metrics::frame_rejected("before_hello");
                return Err(close(
                    connection,
                    CloseCode::ProtocolViolation,
                    "the first frame must be Hello",
                ));
            }
            Ok(None) => {}
            Err(error) => return Err(reject_decode(connection, error)),
        }
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
            Ok(None) => return Err(Ending::PeerClosed),
            Err(quinn::ReadError::ConnectionLost(e)) => {
                return Err(Ending::from_connection_error(&e))
            }
            Err(_) => return Err(Ending::PeerClosed),
        }
    }
}

fn reject_decode(connection: &Connection, error: DecodeError) -> Ending {
    let (code, reason) = handshake::rejection(&error);
    close(connection, code, reason)
}

#[allow(clippy::too_many_arguments)]
async fn run_session(
    connection: &Connection,
    ctx: &ServerContext,
    session: SessionId,
    shard: &super::shard_task::ShardHandle,
    mut send: SendStream,
    mut recv: RecvStream,
    mut decoder: FrameDecoder,
    mut queues: SessionQueues,
) -> Ending {
    let mut draining = ctx.draining.clone();
    let mut sent_go_away = false;
    // Requests in flight (handed to the shard, not yet handled) are capped at
    // half the session queue, so the replies to a pipelining client always
    // fit: such a client waits for credit, it is not a slow consumer.
    let budget = (ctx.config.limits.session_queue_frames / 2).max(1);
    let credit = Arc::new(tokio::sync::Semaphore::new(budget));
    // Frames may have arrived together with the Hello.
    let mut backlog = true;
    loop {
        tokio::select! {
            biased;
            changed = queues.close.changed() => {
                if changed.is_ok() {
                    if let Some((code, reason)) = *queues.close.borrow_and_update() {
                        return close(connection, code, reason);
                    }
                }
            }
            () = queues.ready.notified() => {
                // Write everything queued, in lane order. A write blocked by
                // a client that does not read must still notice a close
                // request (e.g. SLOW_CONSUMER).
                while let Some(queued) = queues.next_frame() {
                    tokio::select! {
                        biased;
                        Ok(()) = queues.close.changed() => {
                            if let Some((code, reason)) = *queues.close.borrow_and_update() {
                                return close(connection, code, reason);
                            }
                        }
                        written = write_frame(connection, &mut send, queued) => {
                            if let Err(ending) = written {
                                return ending;
                            }
                        }
                    }
                }
            }
            () = std::future::ready(()), if backlog => {
                backlog = match forward_frames(connection, session, shard, &mut decoder, &mut queues.close, &credit, budget).await {
                    Ok(more) => more,
                    Err(ending) => return ending,
                };
            }
            read = recv.read_chunk(READ_CHUNK, true), if !backlog => match read {
                Ok(Some(chunk)) => {
                    decoder.extend(&chunk.bytes);
                    backlog = true;
                }
                Ok(None) => {
                    // Client finished its side: a clean goodbye.
                    let _ = send.finish();
                    return Ending::PeerClosed;
                }
                Err(quinn::ReadError::ConnectionLost(e)) => return Ending::from_connection_error(&e),
                Err(_) => return Ending::PeerClosed,
            },
            datagram = connection.read_datagram() => match datagram {
                Ok(bytes) => match handshake::datagram_signal(&bytes) {
                    // Unreliable by design: dropped when the shard is busy.
                    Ok(frame) => {
                        let input = ShardInput::Frame { session, frame };
                        if shard.sessions.try_send(input.into()).is_err() {
                            metrics::frame_rejected("datagram_shard_busy");
                        }
                    }
                    Err(reason) => metrics::frame_rejected(reason),
                },
                Err(e) => return Ending::from_connection_error(&e),
            },
            Ok(()) = draining.changed(), if !sent_go_away => {
                if *draining.borrow_and_update() {
                    sent_go_away = true;
                    if send.write_chunk(handshake::go_away()).await.is_err() {
                        return Ending::PeerClosed;
                    }
                }
            }
        }
    }
}

async fn write_frame(
    connection: &Connection,
    send: &mut SendStream,
    queued: QueuedFrame,
) -> Result<(), Ending> {
    if let FrameClass::Ephemeral { .. } = queued.class {
        // A signal goes as a datagram (without the length prefix) when the
        // client takes them.
        let body_len = queued.frame.len() - LENGTH_PREFIX_BYTES;
        let fits = connection
            .max_datagram_size()
            .is_some_and(|max| body_len <= max);
        if fits && queued.frame.shared.is_empty() {
            let datagram = queued.frame.head.slice(LENGTH_PREFIX_BYTES..);
            if connection.send_datagram(datagram).is_ok() {
                metrics::signal_sent("datagram");
                return Ok(());
            }
        }
        metrics::signal_sent("stream");
    }
    let mut chunks = [queued.frame.head, queued.frame.shared];
    send.write_all_chunks(&mut chunks)
        .await
        .map_err(|error| match error {
            quinn::WriteError::ConnectionLost(e) => Ending::from_connection_error(&e),
            _ => Ending::PeerClosed,
        })?;
    if let FrameClass::Message { accepted_at } = queued.class {
        metrics::message_delivered(accepted_at.elapsed());
    }
    Ok(())
}

/// Hands up to `budget` decoded frames to the shard; `Ok(true)` when the
/// budget ran out with frames possibly left in the decoder. Waiting for room
/// in the shard's inbox still honours a close request.
async fn forward_frames(
    connection: &Connection,
    session: SessionId,
    shard: &super::shard_task::ShardHandle,
    decoder: &mut FrameDecoder,
    close_requests: &mut tokio::sync::watch::Receiver<super::directory::CloseRequest>,
    credit: &Arc<tokio::sync::Semaphore>,
    budget: usize,
) -> Result<bool, Ending> {
    for _ in 0..budget {
        if !decoder.has_frame() {
            return Ok(false);
        }
        let (permit, frame_credit) = tokio::select! {
            biased;
            Ok(()) = close_requests.changed() => {
                if let Some((code, reason)) = *close_requests.borrow_and_update() {
                    return Err(close(connection, code, reason));
                }
                continue;
            }
            ready = async { (shard.sessions.reserve().await, credit.acquire().await) } => match ready {
                (Ok(permit), Ok(frame_credit)) => (permit, frame_credit),
                _ => return Err(close(connection, CloseCode::GoingAway, "server shutting down")),
            }
        };
        match decoder.decode::<ClientFrame>() {
            Ok(Some(frame)) => {
                frame_credit.forget(); // the shard task gives it back
                permit.send(super::shard_task::SessionInput {
                    input: ShardInput::Frame { session, frame },
                    credit: Some(super::shard_task::Credit {
                        permits: credit.clone(),
                        wake: None,
                    }),
                });
            }
            Ok(None) => return Ok(false),
            Err(error) => return Err(reject_decode(connection, error)),
        }
    }
    Ok(true)
}
