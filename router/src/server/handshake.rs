//! Session set-up: checking a Hello (token, device
//! id), and the Welcome and GoAway frames.

use bytes::Bytes;
use switchboard_proto::close::CloseCode;
use switchboard_proto::frame;
use switchboard_proto::v1::{
    client_frame::Body, server_frame, ClientFrame, GoAway, Hello, Resume, ServerFrame, Status,
    Welcome,
};

use super::shard_task::now;
use super::ServerContext;
use crate::metrics;
use switchboard_core::{DeviceId, SessionId, ShardInput, UserId, API_DEVICE};
use switchboard_proto::frame::DecodeError;

/// Largest first frame (the Hello) accepted before authentication, so an
/// unauthenticated peer cannot make the server buffer a session-sized frame.
pub(crate) const MAX_HELLO_FRAME_BYTES: usize = 8 * 1024;

/// What a valid Hello establishes.
pub(crate) struct Authenticated {
    /// The client agent, cut to 64 bytes (for logs only).
    pub(crate) client_agent: String,
    pub(crate) user: UserId,
    pub(crate) device: DeviceId,
    pub(crate) initial_status: Option<Status>,
    pub(crate) resume: Option<Resume>,
}

/// Checks a Hello: the token, then the device id. Failures are counted and
/// come back as the close code and reason to send.
pub(crate) fn authenticate(
    ctx: &ServerContext,
    hello: Hello,
) -> Result<Authenticated, (CloseCode, &'static str)> {
    let user = ctx.verifier.verify(&hello.token).map_err(|error| {
        metrics::auth_failed(error.as_str());
        tracing::debug!(%error, "authentication failed");
        (error.close_code(), error.reason())
    })?;
    let device = DeviceId::parse(&hello.device_id).ok_or_else(|| {
        metrics::frame_rejected("invalid_device_id");
        (
            CloseCode::ProtocolViolation,
            "device_id must be 1-64 chars of [A-Za-z0-9._@-]",
        )
    })?;
    if device.as_str() == API_DEVICE {
        metrics::frame_rejected("reserved_device_id");
        return Err((
            CloseCode::ProtocolViolation,
            "device_id server-api is reserved for the server API",
        ));
    }
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
        resume: hello.resume,
    })
}

/// The encoded Welcome for a new session.
pub(crate) fn welcome(ctx: &ServerContext, session: SessionId, user: &UserId) -> Bytes {
    let limits = &ctx.config.limits;
    frame::encode(&ServerFrame {
        body: Some(server_frame::Body::Welcome(Welcome {
            session_id: session.0,
            user_id: user.as_str().to_owned(),
            heartbeat_interval_ms: ctx.config.heartbeat_interval.as_millis() as u32,
            max_frame_bytes: limits.max_frame_bytes as u32,
            max_payload_bytes: limits.max_payload_bytes as u32,
            max_watched_users: limits.max_watched_users as u32,
            max_status_text_bytes: limits.max_status_text_bytes as u32,
            server_time_ms: now().unix_ms,
            delivery_window: ctx.config.delivery.delivery_window as u32,
            dedupe_window_ms: ctx.config.delivery.dedupe_window.as_millis() as u64,
            ack_timeout_ms: ctx.config.delivery.ack_timeout.as_millis() as u64,
        })),
    })
}

/// The encoded GoAway sent to every session when draining starts.
pub(crate) fn go_away() -> Bytes {
    frame::encode(&ServerFrame {
        body: Some(server_frame::Body::GoAway(GoAway {
            reason: "server shutting down".into(),
            reconnect_after_ms: 1_000,
        })),
    })
}

/// Logs the new session and makes the input that opens it on its shard.
pub(crate) fn open_session(session: SessionId, auth: Authenticated) -> ShardInput {
    tracing::debug!(
        session = session.0,
        user = %auth.user,
        device = %auth.device,
        agent = ?auth.client_agent,
        "session opened"
    );
    ShardInput::Open {
        session,
        user: auth.user,
        device: auth.device,
        initial_status: auth.initial_status,
        resume: auth.resume,
    }
}

/// The signal a client datagram carries, or why it is dropped (a metric
/// reason): a datagram holds one `ClientFrame` with a `signal` body.
pub(crate) fn datagram_signal(bytes: &[u8]) -> Result<ClientFrame, &'static str> {
    use prost::Message as _;
    match ClientFrame::decode(bytes) {
        Ok(frame) if matches!(frame.body, Some(Body::Signal(_))) => Ok(frame),
        Ok(_) => Err("datagram_not_signal"),
        Err(_) => Err("datagram_malformed"),
    }
}

/// The close code and reason for a frame that could not be decoded
/// (counted as rejected).
pub(crate) fn rejection(error: &DecodeError) -> (CloseCode, &'static str) {
    match error {
        DecodeError::TooLarge { .. } => {
            metrics::frame_rejected("frame_too_large");
            (
                CloseCode::FrameTooLarge,
                "frame larger than max_frame_bytes",
            )
        }
        DecodeError::Malformed(_) => {
            metrics::frame_rejected("malformed");
            (
                CloseCode::MalformedFrame,
                "frame is not a valid ClientFrame",
            )
        }
    }
}
