//! One task per QUIC connection: it authenticates the Hello, registers the
//! session with its shard, then loops over the session stream (client frames
//! to the shard), the session's queues (frames to the client) and the drain
//! signal, until either side closes.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use switchboard_proto::close::CloseCode;
use switchboard_proto::frame::{self, DecodeError, FrameDecoder};
use switchboard_proto::v1::{
    client_frame::Body, server_frame, ClientFrame, GoAway, Hello, ServerFrame, Status, Welcome,
};

use super::directory::{session_queues, QueuedFrame, SessionQueues};
use super::shard_task::now;
use super::ServerContext;
use crate::core::{placement::shard_of, DeviceId, FrameClass, SessionId, ShardInput, UserId};
use crate::metrics;

/// Largest read from the stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// Largest first frame (the Hello) accepted before authentication, so an
/// unauthenticated peer cannot make the server buffer a session-sized frame.
pub(crate) const MAX_HELLO_FRAME_BYTES: usize = 8 * 1024;

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

struct Authenticated {
    client_agent: String,
    user: UserId,
    device: DeviceId,
    initial_status: Option<Status>,
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
    let auth = match authenticate(ctx, hello) {
        Ok(auth) => auth,
        Err((code, reason)) => return close(connection, code, reason),
    };
    decoder.set_max_frame_bytes(ctx.config.limits.max_frame_bytes);
    if *ctx.draining.borrow() {
        return close(connection, CloseCode::GoingAway, "server shutting down");
    }

    let session = SessionId(ctx.next_session_id());
    let shard = &ctx.shards[shard_of(&auth.user, ctx.shards.len() as u32).0 as usize];
    let (sink, queues) = session_queues(ctx.config.limits.session_queue_frames);
    let welcome = ServerFrame {
        body: Some(server_frame::Body::Welcome(Welcome {
            session_id: session.0,
            user_id: auth.user.as_str().to_owned(),
            heartbeat_interval_ms: ctx.config.heartbeat_interval.as_millis() as u32,
            max_frame_bytes: ctx.config.limits.max_frame_bytes as u32,
            max_payload_bytes: ctx.config.limits.max_payload_bytes as u32,
            max_watched_users: ctx.config.limits.max_watched_users as u32,
            max_status_text_bytes: ctx.config.limits.max_status_text_bytes as u32,
            server_time_ms: now().unix_ms,
        })),
    };
    if send.write_chunk(frame::encode(&welcome)).await.is_err() {
        return Ending::PeerClosed;
    }
    ctx.directory.insert(session, sink);
    tracing::debug!(
        session = session.0,
        user = %auth.user,
        device = %auth.device,
        agent = ?auth.client_agent,
        "session opened"
    );
    let open = ShardInput::Open {
        session,
        user: auth.user,
        device: auth.device,
        initial_status: auth.initial_status,
    };
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

fn authenticate(
    ctx: &ServerContext,
    hello: Hello,
) -> Result<Authenticated, (CloseCode, &'static str)> {
    let user = ctx.verifier.verify(&hello.token).map_err(|error| {
        metrics::auth_failed(error.as_str());
        tracing::debug!(%error, "authentication failed");
        (
            error.close_code(),
            match error {
                crate::auth::AuthError::Missing => "token missing",
                crate::auth::AuthError::Malformed => "token malformed",
                crate::auth::AuthError::BadSignature => "token signature invalid",
                crate::auth::AuthError::Expired => "token expired",
                crate::auth::AuthError::InvalidSubject => "token subject is not a valid user id",
            },
        )
    })?;
    let device = DeviceId::parse(&hello.device_id).ok_or_else(|| {
        metrics::frame_rejected("invalid_device_id");
        (
            CloseCode::ProtocolViolation,
            "device_id must be 1-64 chars of [A-Za-z0-9._@-]",
        )
    })?;
    let initial_status = Status::try_from(hello.initial_status)
        .ok()
        .filter(|s| *s != Status::Unspecified);
    let mut client_agent = hello.client_agent;
    let mut cut = client_agent.len().min(64);
    while !client_agent.is_char_boundary(cut) {
        cut -= 1;
    }
    client_agent.truncate(cut);
    Ok(Authenticated {
        client_agent,
        user,
        device,
        initial_status,
    })
}

fn reject_decode(connection: &Connection, error: DecodeError) -> Ending {
    match error {
        DecodeError::TooLarge { .. } => {
            metrics::frame_rejected("frame_too_large");
            close(
                connection,
                CloseCode::FrameTooLarge,
                "frame larger than max_frame_bytes",
            )
        }
        DecodeError::Malformed(_) => {
            metrics::frame_rejected("malformed");
            close(
                connection,
                CloseCode::MalformedFrame,
                "frame is not a valid ClientFrame",
            )
        }
    }
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
            Some(queued) = queues.frames.recv() => {
                // A write blocked by a client that does not read must still
                // notice a close request (e.g. SLOW_CONSUMER).
                tokio::select! {
                    biased;
                    Ok(()) = queues.close.changed() => {
                        if let Some((code, reason)) = *queues.close.borrow_and_update() {
                            return close(connection, code, reason);
                        }
                    }
                    written = write_frame(&mut send, queued) => {
                        if let Err(ending) = written {
                            return ending;
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
            Ok(()) = draining.changed(), if !sent_go_away => {
                if *draining.borrow_and_update() {
                    sent_go_away = true;
                    let go_away = ServerFrame {
                        body: Some(server_frame::Body::GoAway(GoAway {
                            reason: "server shutting down".into(),
                            reconnect_after_ms: 1_000,
                        })),
                    };
                    if send.write_chunk(frame::encode(&go_away)).await.is_err() {
                        return Ending::PeerClosed;
                    }
                }
            }
        }
    }
}

async fn write_frame(send: &mut SendStream, queued: QueuedFrame) -> Result<(), Ending> {
    let frame: Bytes = queued.frame;
    send.write_chunk(frame).await.map_err(|error| match error {
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
                    credit: Some(credit.clone()),
                });
            }
            Ok(None) => return Ok(false),
            Err(error) => return Err(reject_decode(connection, error)),
        }
    }
    Ok(true)
}
