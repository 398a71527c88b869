//! The server API for app backends, under `/v1` on the admin listener: send
//! a message to a user or room, read a user's presence and sessions,
//! disconnect a user or one device, and manage rooms. Every route needs
//! `Authorization: Bearer <api token>`; answers are JSON, errors
//! `{"error": "<CODE>", "message": "..."}` with the protocol's error names.
//! README "Server API" documents each call with examples.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use bytes::Bytes;
use ring::digest::{digest, SHA256};
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_proto::v1::{ErrorCode, Status};

use super::AdminState;
use crate::metrics;
use crate::server::api_calls::ApiCallError;
use switchboard_core::rooms::{RoomReply, RoomRequest};
use switchboard_core::{
    Actor, ApiReply, ApiRequest, DeviceId, Recipient, RoomId, SendError, Sharing, UserId,
};

/// The `/v1` routes, behind the bearer-token check.
pub(super) fn routes(state: AdminState) -> Router<AdminState> {
    Router::new()
        .route("/v1/messages", post(send_message))
        .route("/v1/users/{user}/presence", get(presence))
        .route("/v1/users/{user}/sharing", put(set_sharing))
        .route("/v1/users/{user}/disconnect", post(disconnect_user))
        .route(
            "/v1/users/{user}/devices/{device}/disconnect",
            post(disconnect_device),
        )
        .route("/v1/rooms", post(create_room))
        .route("/v1/rooms/{room}", get(room_members))
        .route(
            "/v1/rooms/{room}/members/{user}",
            put(add_member).delete(remove_member),
        )
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

/// A failed API call: an HTTP status and a stable error name.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// For a refusal that passes: when to retry (`Retry-After`).
    retry_after_ms: u32,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_ms: 0,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    /// A protocol error code, with the HTTP status that fits it.
    fn from_code(code: ErrorCode) -> Self {
        let status = match code {
            ErrorCode::UnknownRoom => StatusCode::NOT_FOUND,
            ErrorCode::RoomExists | ErrorCode::RoomFull => StatusCode::CONFLICT,
            ErrorCode::NotAllowed | ErrorCode::NotAMember => StatusCode::FORBIDDEN,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited | ErrorCode::InboxFull => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ServerBusy => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        let name = code.as_str_name();
        let name = name.strip_prefix("ERROR_CODE_").unwrap_or(name);
        Self::new(status, name, format!("refused: {name}"))
    }

    /// A send's refusal, with its retry hint.
    fn from_send(error: SendError) -> Self {
        Self {
            retry_after_ms: error.retry_after_ms,
            ..Self::from_code(error.code)
        }
    }
}

impl From<ApiCallError> for ApiError {
    fn from(error: ApiCallError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            error.to_string(),
        )
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::new(rejection.status(), "INVALID_REQUEST", rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::api_request(self.code);
        if self.retry_after_ms == 0 {
            let body = json!({"error": self.code, "message": self.message});
            return (self.status, Json(body)).into_response();
        }
        let body = json!({
            "error": self.code,
            "message": self.message,
            "retry_after_ms": self.retry_after_ms,
        });
        let seconds = self.retry_after_ms.div_ceil(1000).to_string();
        (self.status, [(header::RETRY_AFTER, seconds)], Json(body)).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

fn ok(value: Value) -> ApiResult {
    metrics::api_request("OK");
    Ok(Json(value))
}

/// Refuses requests without the right bearer token. Both sides are hashed
/// first, so the comparison takes the same time wherever they differ.
async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let valid = presented.is_some_and(|token| {
        digest(&SHA256, token.as_bytes()).as_ref() == digest(&SHA256, &state.api_token).as_ref()
    });
    if !valid {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "send Authorization: Bearer <api token>",
        )
        .into_response();
    }
    next.run(request).await
}

fn user_id(user: &str) -> Result<UserId, ApiError> {
    UserId::parse(user).ok_or_else(|| ApiError::from_code(ErrorCode::InvalidUserId))
}

fn room_id(room: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(room).ok_or_else(|| ApiError::from_code(ErrorCode::InvalidRoomId))
}

/// `POST /v1/messages` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    from: String,
    to: Option<String>,
    room: Option<String>,
    text: Option<String>,
    payload_base64: Option<String>,
    #[serde(default)]
    client_msg_id: String,
    #[serde(default)]
    want_receipts: bool,
}

async fn send_message(
    State(state): State<AdminState>,
    body: Result<Json<SendBody>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body?;
    let from = user_id(&body.from)?;
    let to = match (&body.to, &body.room) {
        (Some(to), None) => Recipient::User(user_id(to)?),
        (None, Some(room)) => Recipient::Room(room_id(room)?),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of \"to\" and \"room\"",
            ))
        }
    };
    let payload = match (body.text, body.payload_base64) {
        (Some(text), None) => Bytes::from(text),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map(Bytes::from)
            .map_err(|e| ApiError::bad_request(format!("payload_base64: {e}")))?,
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of \"text\" and \"payload_base64\"",
            ))
        }
    };
    let request = ApiRequest::Send {
        from,
        to,
        payload,
        client_msg_id: body.client_msg_id,
        want_receipts: body.want_receipts,
    };
    match state.api.call(request).await? {
        ApiReply::Sent {
            result: Ok(outcome),
            duplicate,
        } => ok(json!({
            "message_id": outcome.message_id,
            "seq": outcome.seq,
            "devices": outcome.devices,
            "duplicate": duplicate,
        })),
        ApiReply::Sent {
            result: Err(error), ..
        } => Err(ApiError::from_send(error)),
        other => Err(unexpected(other)),
    }
}

async fn presence(State(state): State<AdminState>, Path(user): Path<String>) -> ApiResult {
    let user = user_id(&user)?;
    let request = ApiRequest::Presence { user: user.clone() };
    match state.api.call(request).await? {
        ApiReply::Presence { view, sessions } => {
            let sessions: Vec<Value> = sessions
                .iter()
                .map(|(id, device)| json!({"session_id": id.0, "device": device.as_str()}))
                .collect();
            ok(json!({
                "user": user.as_str(),
                "status": status_name(view.status),
                "text": view.text,
                "last_seen_ms": view.last_seen_ms,
                "version": view.version,
                "sessions": sessions,
            }))
        }
        other => Err(unexpected(other)),
    }
}

async fn disconnect_user(State(state): State<AdminState>, Path(user): Path<String>) -> ApiResult {
    disconnect(&state, &user, None).await
}

async fn disconnect_device(
    State(state): State<AdminState>,
    Path((user, device)): Path<(String, String)>,
) -> ApiResult {
    let device = DeviceId::parse(&device)
        .ok_or_else(|| ApiError::bad_request("device must be 1-64 chars of [A-Za-z0-9._@-]"))?;
    disconnect(&state, &user, Some(device)).await
}

async fn disconnect(state: &AdminState, user: &str, device: Option<DeviceId>) -> ApiResult {
    let user = user_id(user)?;
    match state
        .api
        .call(ApiRequest::Disconnect { user, device })
        .await?
    {
        ApiReply::Disconnected { sessions } => ok(json!({ "sessions": sessions })),
        other => Err(unexpected(other)),
    }
}

/// Most users a sharing list may name.
const MAX_SHARING_LIST: usize = 10_000;

/// `PUT /v1/users/{user}/sharing` body: who may see the user's presence.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SharingBody {
    /// `everyone`, `nobody` or `list`.
    share: String,
    /// With `list`: the users who may.
    #[serde(default)]
    allow: Vec<String>,
}

async fn set_sharing(
    State(state): State<AdminState>,
    Path(user): Path<String>,
    body: Result<Json<SharingBody>, JsonRejection>,
) -> ApiResult {
    let user = user_id(&user)?;
    let Json(body) = body?;
    let sharing = match (body.share.as_str(), body.allow.is_empty()) {
        ("everyone", true) => Sharing::Everyone,
        ("nobody", true) => Sharing::Nobody,
        ("list", _) if body.allow.len() <= MAX_SHARING_LIST => Sharing::Only(
            body.allow
                .iter()
                .map(|u| user_id(u))
                .collect::<Result<_, _>>()?,
        ),
        ("list", _) => {
            let why = format!("allow names at most {MAX_SHARING_LIST} users");
            return Err(ApiError::bad_request(why));
        }
        _ => {
            let why = "share is everyone, nobody (both without allow) or list";
            return Err(ApiError::bad_request(why));
        }
    };
    match state
        .api
        .call(ApiRequest::Sharing { user, sharing })
        .await?
    {
        ApiReply::SharingSet { watchers } => ok(json!({ "watchers": watchers })),
        other => Err(unexpected(other)),
    }
}

/// `POST /v1/rooms` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoomBody {
    room: String,
    #[serde(default)]
    open: bool,
    /// Create it as this user (owner and first member); absent: a room with
    /// no owner, managed by the backend.
    owner: Option<String>,
}

async fn create_room(
    State(state): State<AdminState>,
    body: Result<Json<CreateRoomBody>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body?;
    let actor = match body.owner {
        Some(owner) => Actor::User(user_id(&owner)?),
        None => Actor::Admin,
    };
    let room = room_id(&body.room)?;
    room_call(&state, room, actor, RoomRequest::Create { open: body.open }).await
}

async fn room_members(State(state): State<AdminState>, Path(room): Path<String>) -> ApiResult {
    let room = room_id(&room)?;
    room_call(&state, room, Actor::Admin, RoomRequest::List).await
}

async fn add_member(
    State(state): State<AdminState>,
    Path((room, user)): Path<(String, String)>,
) -> ApiResult {
    let (room, member) = (room_id(&room)?, user_id(&user)?);
    room_call(&state, room, Actor::Admin, RoomRequest::Join { member }).await
}

async fn remove_member(
    State(state): State<AdminState>,
    Path((room, user)): Path<(String, String)>,
) -> ApiResult {
    let (room, member) = (room_id(&room)?, user_id(&user)?);
    room_call(&state, room, Actor::Admin, RoomRequest::Leave { member }).await
}

async fn room_call(
    state: &AdminState,
    room: RoomId,
    actor: Actor,
    request: RoomRequest,
) -> ApiResult {
    let name = room.as_str().to_owned();
    let call = ApiRequest::Room {
        room,
        actor,
        request,
    };
    match state.api.call(call).await? {
        ApiReply::Room(Ok(RoomReply::Changed { members })) => {
            ok(json!({ "room": name, "members": members }))
        }
        ApiReply::Room(Ok(RoomReply::Members {
            owner,
            open,
            members,
        })) => ok(json!({
            "room": name,
            "owner": owner.map(|o| o.as_str().to_owned()),
            "open": open,
            "members": members.iter().map(UserId::as_str).collect::<Vec<_>>(),
        })),
        ApiReply::Room(Err(code)) => Err(ApiError::from_code(code)),
        other => Err(unexpected(other)),
    }
}

/// A shard answered with the wrong kind of reply: a bug, reported as one.
fn unexpected(reply: ApiReply) -> ApiError {
    tracing::error!(?reply, "server API call got an unexpected reply");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "unexpected reply from the router core",
    )
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Online => "ONLINE",
        Status::Away => "AWAY",
        Status::Busy => "BUSY",
        Status::Invisible => "INVISIBLE",
        _ => "OFFLINE",
    }
}
