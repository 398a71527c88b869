//! The router's one typed [`Config`]: built from defaults < TOML file <
//! `SWITCHBOARD_*` environment < command-line flags and checked by
//! [`Config::validate`]; [`Config::load`] (in [`load`]) reports every
//! problem of every source at once.
//!
//! Environment variables name a field by its path with `__` between levels:
//! `SWITCHBOARD_LISTEN`, `SWITCHBOARD_AUTH__SECRET_FILE`,
//! `SWITCHBOARD_PRESENCE__OFFLINE_GRACE`; any other `SWITCHBOARD_*`
//! variable that is not the CLI's is reported as an unknown key.
//! `switchboard.example.toml` at the repository root documents every field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use switchboard_core::{
    CoreLimits, DedupeLimits, InboxBudget, MailboxLimits, Rate, RateLimits, SendRates,
};

pub mod engine;
pub mod load;

pub use engine::{EngineKind, RedisConfig};
use load::Sources;
pub use load::{ConfigError, Origin, Problem};

/// Everything the router can be configured with. Every field has a default,
/// so an empty file is a valid configuration (the embedded dev default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// QUIC listen address. Default `127.0.0.1:4433`: loopback only until you
    /// choose otherwise.
    pub listen: SocketAddr,
    /// Admin HTTP listener (`/metrics`, `/livez`, `/readyz`). Default
    /// `127.0.0.1:9464` (loopback: metrics are not for the public).
    pub admin_listen: SocketAddr,
    /// Number of shards users are partitioned over. Default 0: one per CPU
    /// core, so each core owns a partition.
    pub shards: usize,
    /// QUIC endpoints (UDP sockets sharing `listen` with `SO_REUSEPORT`, each
    /// driven by its own task). Default 0: one per CPU core, so packet I/O is
    /// not funnelled through one task.
    pub endpoints: usize,
    /// Threads of the async runtime that runs shards and endpoints. Default
    /// 0: one per CPU core. Fewer leaves cores to other processes on a
    /// shared box (a load generator beside the router), and fewer threads
    /// need fewer cross-thread wake-ups per message. Exactly one thread runs
    /// tokio's current-thread scheduler, cheaper still per message.
    pub worker_threads: usize,
    /// Receive and send buffer asked for each UDP socket, bytes. Default
    /// 4 MiB, so bursts of handshakes are not dropped (the kernel caps it at
    /// `net.core.rmem_max` / `wmem_max`).
    pub udp_buffer_bytes: usize,
    /// Back the heap with transparent huge pages (Linux with glibc): the
    /// router restarts itself once at start with `GLIBC_TUNABLES` set
    /// (`switchboard_quic::huge_pages`). Default true: a message visits
    /// state spread over a large heap, and huge pages spare it TLB misses at
    /// the same RSS. Set false where the kernel's huge-page compaction
    /// stalls matter more.
    pub heap_huge_pages: bool,
    /// Where the dev certificate and dev token secret live when no
    /// production files are configured. Default
    /// `$XDG_STATE_HOME/switchboard/dev` (or `~/.local/state/switchboard/dev`),
    /// one place per machine so `switchboard token` finds the server's secret.
    pub dev_dir: PathBuf,
    /// TLS certificate settings.
    pub tls: TlsConfig,
    /// Token authentication settings.
    pub auth: AuthConfig,
    /// Protocol limits, announced to clients in Welcome.
    pub limits: LimitsConfig,
    /// Presence settings.
    pub presence: PresenceConfig,
    /// Inboxes, acks and idempotent sends.
    pub delivery: DeliveryConfig,
    /// Limits of the admin listener.
    pub admin: AdminConfig,
    /// The server API for app backends (on the admin listener).
    pub api: ApiConfig,
    /// The webhook told about messages stored for offline users.
    pub webhook: WebhookConfig,
    /// How often clients must show life; announced in Welcome. Connections
    /// idle for three intervals are closed by QUIC. Default `15s`: well under
    /// typical NAT binding timeouts (30 s+).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Longest a graceful shutdown takes after SIGINT/SIGTERM: clients get a
    /// GoAway at once and are closed with GOING_AWAY at the latest after this.
    /// Default `10s`, inside Kubernetes' default 30 s termination grace.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Log output format: `text` (default, for terminals) or `json`.
    pub log_format: LogFormat,
    /// Where inboxes, rooms and presence are kept: `memory` (default; one
    /// node, lost on restart) or `redis` (kept across restarts, shared by
    /// the nodes of a cluster; see `[redis]`).
    pub engine: EngineKind,
    /// How the Redis engine reaches Redis.
    pub redis: RedisConfig,
}

/// Certificate and key for QUIC/TLS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain. Default: none, which means a self-signed dev
    /// certificate in `dev_dir` (created on first start).
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`. Required when `cert` is set.
    pub key: Option<PathBuf>,
}

/// Token authentication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// File holding the HS256 token secret (at least 32 bytes, surrounding
    /// whitespace ignored). Default: none, which means a random dev secret in
    /// `dev_dir` and a loud warning.
    pub secret_file: Option<PathBuf>,
    /// Time a new connection has to send a valid Hello. Default `5s`: enough
    /// for a slow mobile round trip, short enough to shed idle sockets.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Clock skew tolerated on a token's `exp` and `nbf`. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Longest a token may still be valid when it is presented: one whose
    /// `exp` is further away is refused, so a leaked token cannot be one
    /// that never expires. Default `30days`.
    #[serde(with = "humantime_serde")]
    pub max_token_lifetime: Duration,
}

/// Protocol limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest client frame, bytes. Default 65,536 + 1,024 (a full payload
    /// plus headroom for the envelope).
    pub max_frame_bytes: usize,
    /// Largest message payload, bytes. Default 65,536.
    pub max_payload_bytes: usize,
    /// Most users one session may watch. Default 1,000 (a large contact list).
    pub max_watched_users: usize,
    /// Longest status text, bytes. Default 128.
    pub max_status_text_bytes: usize,
    /// Frames queued per session before it counts as a slow consumer and is
    /// closed with SLOW_CONSUMER. Default 1,024.
    pub session_queue_frames: usize,
    /// Bytes one session's outbound queue may hold; one more control frame
    /// or message closes it with SLOW_CONSUMER, as `session_queue_frames`
    /// does. It bounds what a client that does not read, or acks what it
    /// never read, can pin. Default 32 MiB: a full delivery window of the
    /// largest messages (256 × 66.5 KB) and the members of a large room.
    pub session_queue_bytes: usize,
    /// Sessions this node holds at once; a valid Hello beyond them is closed
    /// with `SERVER_FULL` (0x02). About 15 KiB each when idle: set it to
    /// what the machine's memory holds. Default 2,000,000.
    pub max_sessions: usize,
    /// Most members one room may have. Default 100,000.
    pub max_room_members: usize,
    /// Sessions one user may have open at once; one more is closed with
    /// `TOO_MANY_SESSIONS` (0x33) right after its Welcome. A device that
    /// reconnects replaces its old session and does not count twice.
    /// Default 32.
    pub max_sessions_per_user: usize,
    /// QUIC handshakes in progress (not yet complete) the node keeps at
    /// once; a new connection beyond them is refused. Each costs ~26 KB for
    /// up to the handshake timeout. Default 4096.
    pub max_handshakes: usize,
    /// Above this many handshakes in progress, a client whose address is
    /// not yet validated gets a QUIC Retry first (one round trip more):
    /// Initials from spoofed addresses then cost no state. 0: always.
    /// Default 1024: above what a load generator's 256 handshakes in
    /// flight reach, far below what a flood does.
    pub retry_above_handshakes: usize,
    /// `Send`, `Receipt` and `Signal` frames one session may send per
    /// second; beyond it (and its burst) a request is answered
    /// `RATE_LIMITED` with `retry_after_ms`. 0: no limit. Default 50.
    pub session_messages_per_second: usize,
    /// Such frames a session may send at once after a quiet spell.
    /// Default 200.
    pub session_message_burst: usize,
    /// Payload bytes one session may send per second. Default 1 MiB.
    pub session_bytes_per_second: usize,
    /// Payload bytes a session may send at once. Default 4 MiB.
    pub session_byte_burst: usize,
    /// As `session_messages_per_second`, over all of one user's sessions.
    /// Default 100.
    pub user_messages_per_second: usize,
    /// As `session_message_burst`, per user. Default 400.
    pub user_message_burst: usize,
    /// As `session_bytes_per_second`, per user. Default 2 MiB.
    pub user_bytes_per_second: usize,
    /// As `session_byte_burst`, per user. Default 8 MiB.
    pub user_byte_burst: usize,
    /// Members one room's messages may reach per second (a message to a
    /// room of 1,000 takes 1,000); one that does not fit is answered
    /// `RATE_LIMITED`. The burst is this or `max_room_members`, whichever
    /// is more. 0: no limit. Default 200,000.
    pub room_deliveries_per_second: usize,
    /// Users a user may send direct messages (or receipts) to in a minute
    /// beyond those already reached in that minute: stops one account from
    /// spraying never-seen ids. 0: no limit. Default 600.
    pub new_recipients_per_minute: usize,
    /// Memory for inboxes on this node, MiB: each stored message counts
    /// its encoded size once (a room message is one copy shared by its
    /// inboxes) plus 64 bytes per inbox holding it. While spent,
    /// new messages are refused with `SERVER_BUSY` (retryable), never
    /// stored and dropped. Default 4,096 (4 GiB).
    pub inbox_memory_mib: usize,
    /// Sessions one device (user and device id) may open per minute; one
    /// more is closed with `RECONNECTING_TOO_FAST` (0x34), its reason
    /// phrase saying how long to wait. 0: no limit. Default 30.
    pub device_connects_per_minute: usize,
    /// Rooms a user may create or join; one more is answered `ROOM_LIMIT`.
    /// Default 1,000.
    pub max_rooms_per_user: usize,
    /// A room with no message, signal or membership change for this long
    /// is deleted and its id freed. Default `90d`.
    #[serde(with = "humantime_serde")]
    pub room_idle_ttl: Duration,
}

/// Presence behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// How long a user stays online after their last session closes, so a
    /// quick reconnect does not flap offline-online. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub offline_grace: Duration,
    /// How long the record of a user who went offline is kept, holding
    /// nothing else, for their last-seen time; then it is freed and the
    /// user shows as never seen. Default `30d`.
    #[serde(with = "humantime_serde")]
    pub remember_last_seen: Duration,
}

/// How much of the admin listener one peer can hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Time a connection has to send a request's headers, and most a
    /// kept-alive connection may wait between requests. Default `5s`: a
    /// peer that sends half a request line is closed, not kept forever.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Connections served at once. Default 256. Beyond it a few more are
    /// answered for `/livez` and `/readyz` only, so an orchestrator still
    /// sees the node alive; the rest are closed at once.
    pub max_connections: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(5),
            max_connections: 256,
        }
    }
}

/// The server API for app backends: `/v1/...` on the admin listener,
/// guarded by a bearer token (see README "Server API").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// File holding the API bearer token (at least 32 bytes, surrounding
    /// whitespace ignored). Default: none, which means a random dev token in
    /// `dev_dir/api-token`.
    pub token_file: Option<PathBuf>,
}

/// The webhook: batches of "stored for an offline user" events POSTed to
/// the app backend, so it can send push notifications (README "Webhook").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL to POST to. Default: empty, no webhook.
    pub url: String,
    /// File with a secret (at least 32 bytes) to sign each body with:
    /// header `X-Switchboard-Signature: sha256=<hex HMAC-SHA256>`. Default:
    /// none, unsigned.
    pub secret_file: Option<PathBuf>,
    /// Most events in one POST. Default 100.
    pub batch_max: usize,
    /// Longest an event waits for more to batch with. Default `200ms`.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Timeout of one POST. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// POSTs per batch before it is dropped (with a growing pause between
    /// them). Default 3.
    pub attempts: u32,
    /// Events waiting to be sent; beyond that new ones are dropped (and
    /// counted). Default 100,000.
    pub queue_events: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret_file: None,
            batch_max: 100,
            flush_interval: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
            attempts: 3,
            queue_events: 100_000,
        }
    }
}

/// Inboxes, acks and idempotent sends (PROTOCOL.md, "Delivery").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Most messages a user's inbox keeps for devices that have not acked
    /// them; the oldest are evicted first (and reported as a Gap). Default
    /// 1,000.
    pub max_stored_messages: usize,
    /// Most encoded message bytes a user's inbox keeps. Default 1 MiB.
    pub max_stored_bytes: usize,
    /// Longest a message is kept unacked; also how long a device that stays
    /// offline is remembered. Default `24h`.
    #[serde(with = "humantime_serde")]
    pub max_stored_age: Duration,
    /// The share of a full inbox, in percent of its messages or bytes,
    /// that one sender's direct messages may take; beyond it that sender
    /// gets `INBOX_FULL` instead of evicting others' messages. 100: off.
    /// Default 50.
    pub max_sender_share_percent: usize,
    /// Most Deliver frames sent to a session beyond its last Ack (announced
    /// in Welcome). Default 256.
    pub delivery_window: usize,
    /// Longest a session may hold sent messages without acking any; then it
    /// is closed with SLOW_CONSUMER and resumes from its ack point when it
    /// reconnects. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// How long a `Send.client_msg_id` is remembered (announced in Welcome).
    /// Default `5m`.
    #[serde(with = "humantime_serde")]
    pub dedupe_window: Duration,
    /// Most `client_msg_id`s remembered per user; the oldest are forgotten
    /// first. Default 256.
    pub dedupe_max_keys: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_stored_messages: 1_000,
            max_stored_bytes: 1024 * 1024,
            max_stored_age: Duration::from_secs(24 * 3600),
            max_sender_share_percent: 50,
            delivery_window: 256,
            ack_timeout: Duration::from_secs(60),
            dedupe_window: Duration::from_secs(300),
            dedupe_max_keys: 256,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4433".parse().expect("valid address"),
            admin_listen: "127.0.0.1:9464".parse().expect("valid address"),
            shards: 0,
            endpoints: 0,
            worker_threads: 0,
            udp_buffer_bytes: 4 * 1024 * 1024,
            heap_huge_pages: true,
            dev_dir: switchboard_proto::dev::default_dir(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            presence: PresenceConfig::default(),
            delivery: DeliveryConfig::default(),
            admin: AdminConfig::default(),
            api: ApiConfig::default(),
            webhook: WebhookConfig::default(),
            heartbeat_interval: Duration::from_secs(15),
            shutdown_timeout: Duration::from_secs(10),
            log_format: LogFormat::Text,
            engine: EngineKind::Memory,
            redis: RedisConfig::default(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            secret_file: None,
            timeout: Duration::from_secs(5),
            leeway: Duration::from_secs(5),
            max_token_lifetime: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 65_536 + 1_024,
            max_payload_bytes: 65_536,
            max_watched_users: 1_000,
            max_status_text_bytes: 128,
            session_queue_frames: 1_024,
            session_queue_bytes: 32 * 1024 * 1024,
            max_sessions: 2_000_000,
            max_room_members: 100_000,
            max_sessions_per_user: 32,
            max_handshakes: 4096,
            retry_above_handshakes: 1024,
            session_messages_per_second: 50,
            session_message_burst: 200,
            session_bytes_per_second: 1 << 20,
            session_byte_burst: 4 << 20,
            user_messages_per_second: 100,
            user_message_burst: 400,
            user_bytes_per_second: 2 << 20,
            user_byte_burst: 8 << 20,
            room_deliveries_per_second: 200_000,
            new_recipients_per_minute: 600,
            inbox_memory_mib: 4096,
            device_connects_per_minute: 30,
            max_rooms_per_user: 1_000,
            room_idle_ttl: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            offline_grace: Duration::from_secs(5),
            remember_last_seen: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Values given as command-line flags; they override every other source.
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--admin-listen`.
    pub admin_listen: Option<SocketAddr>,
}

impl Config {
    /// Loads defaults < `file` (if any) < the process environment < `flags`,
    /// and validates the result: every problem at once.
    pub fn load(file: Option<&Path>, flags: &FlagOverrides) -> Result<Config, ConfigError> {
        let mut sources = Sources::default();
        if let Some(file) = file {
            sources.file(file);
        }
        sources.env(&std::env::vars().collect::<Vec<_>>());
        sources.flags(flags);
        sources.resolve()
    }

    /// Loads and validates in-memory TOML text and environment (for tests).
    pub fn load_str(
        toml: &str,
        env: &[(String, String)],
        flags: &FlagOverrides,
    ) -> Result<Config, ConfigError> {
        let mut sources = Sources::default();
        sources.toml(toml, Origin::File("config.toml".into()));
        sources.env(env);
        sources.flags(flags);
        sources.resolve()
    }

    /// Every problem with this configuration, empty when it is usable.
    /// Checks values and that the files it names exist and parse.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut invalid =
            |field: &'static str, problem: String| problems.push(Problem::invalid(field, problem));
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => invalid(
                "tls.key",
                "tls.cert is set, so tls.key (the PEM private key) must be set too".into(),
            ),
            (None, Some(_)) => invalid(
                "tls.cert",
                "tls.key is set, so tls.cert (the PEM certificate chain) must be set too".into(),
            ),
            (Some(cert), Some(key)) => {
                if let Err(e) = crate::tls::load_pem_pair(cert, key) {
                    invalid("tls", with_causes(&e));
                }
            }
            (None, None) => {}
        }
        if let Some(path) = &self.auth.secret_file {
            if let Err(e) = crate::auth::read_secret_file(path) {
                invalid("auth.secret_file", with_causes(&e));
            }
        }
        let webhook = &self.webhook;
        if !webhook.url.is_empty() {
            match reqwest::Url::parse(&webhook.url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                Ok(url) => invalid(
                    "webhook.url",
                    format!("scheme {} is not http or https", url.scheme()),
                ),
                Err(e) => invalid("webhook.url", e.to_string()),
            }
        }
        if let Some(path) = &webhook.secret_file {
            if let Err(e) = crate::auth::read_secret_file(path) {
                invalid("webhook.secret_file", with_causes(&e));
            }
        }
        if let Some(path) = &self.api.token_file {
            if let Err(e) = crate::auth::read_secret_file(path) {
                invalid("api.token_file", with_causes(&e));
            }
        }
        self.check_bounds(&mut invalid);
        for (field, problem) in self.redis.problems() {
            invalid(field, problem);
        }
        let limits = &self.limits;
        if limits.max_payload_bytes + 256 > limits.max_frame_bytes {
            invalid(
                "limits.max_payload_bytes",
                format!(
                    "{} does not fit in a frame of limits.max_frame_bytes = {} with 256 bytes of envelope; raise max_frame_bytes or lower max_payload_bytes",
                    limits.max_payload_bytes, limits.max_frame_bytes
                ),
            );
        }
        let delivery = &self.delivery;
        if delivery.delivery_window == 0 || delivery.delivery_window >= limits.session_queue_frames
        {
            invalid(
                "delivery.delivery_window",
                format!(
                    "{} must be at least 1 and below limits.session_queue_frames = {}, so a full window of messages leaves room for replies and presence",
                    delivery.delivery_window, limits.session_queue_frames
                ),
            );
        }
        if delivery.max_stored_bytes < limits.max_frame_bytes {
            invalid(
                "delivery.max_stored_bytes",
                format!(
                    "{} is less than limits.max_frame_bytes = {}: the largest message would not fit",
                    delivery.max_stored_bytes, limits.max_frame_bytes
                ),
            );
        }
        problems
    }

    /// Every duration and count within its bounds: a value outside them
    /// would not start, would panic in a task or would let one client take
    /// the node (a heartbeat of 50 days overflows the Welcome's `u32` of
    /// milliseconds; a watch limit of 5e9 overflows its `u32`).
    fn check_bounds(&self, invalid: &mut impl FnMut(&'static str, String)) {
        const MS: Duration = Duration::from_millis(1);
        const SECOND: Duration = Duration::from_secs(1);
        const MINUTE: Duration = Duration::from_secs(60);
        const HOUR: Duration = Duration::from_secs(3600);
        const DAY: Duration = Duration::from_secs(24 * 3600);
        let (auth, delivery, webhook) = (&self.auth, &self.delivery, &self.webhook);
        let durations = [
            (
                "heartbeat_interval",
                self.heartbeat_interval,
                100 * MS,
                HOUR,
            ),
            (
                "shutdown_timeout",
                self.shutdown_timeout,
                Duration::ZERO,
                HOUR,
            ),
            ("auth.timeout", auth.timeout, 100 * MS, 10 * MINUTE),
            ("auth.leeway", auth.leeway, Duration::ZERO, 10 * MINUTE),
            (
                "auth.max_token_lifetime",
                auth.max_token_lifetime,
                MINUTE,
                366 * DAY,
            ),
            (
                "presence.offline_grace",
                self.presence.offline_grace,
                Duration::ZERO,
                HOUR,
            ),
            (
                "limits.room_idle_ttl",
                self.limits.room_idle_ttl,
                MINUTE,
                3660 * DAY,
            ),
            (
                "presence.remember_last_seen",
                self.presence.remember_last_seen,
                SECOND,
                3660 * DAY,
            ),
            (
                "delivery.max_stored_age",
                delivery.max_stored_age,
                SECOND,
                366 * DAY,
            ),
            ("delivery.ack_timeout", delivery.ack_timeout, 100 * MS, HOUR),
            (
                "delivery.dedupe_window",
                delivery.dedupe_window,
                SECOND,
                7 * DAY,
            ),
            ("webhook.flush_interval", webhook.flush_interval, MS, MINUTE),
            ("webhook.timeout", webhook.timeout, 100 * MS, 10 * MINUTE),
            (
                "admin.header_timeout",
                self.admin.header_timeout,
                100 * MS,
                5 * MINUTE,
            ),
        ];
        for (field, value, min, max) in durations {
            if value < min || value > max {
                let bounds = format!(
                    "{} to {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                );
                invalid(
                    field,
                    format!("{} is outside {bounds}", humantime::format_duration(value)),
                );
            }
        }
        const MIB: usize = 1024 * 1024;
        // The core's buckets count in u32.
        const RATE_MAX: usize = 1 << 31;
        let limits = &self.limits;
        let counts = [
            ("shards", self.shards, 0, 1024),
            ("endpoints", self.endpoints, 0, 256),
            ("worker_threads", self.worker_threads, 0, 1024),
            ("udp_buffer_bytes", self.udp_buffer_bytes, 0, 1024 * MIB),
            (
                "limits.max_frame_bytes",
                limits.max_frame_bytes,
                256,
                16 * MIB,
            ),
            (
                "limits.max_watched_users",
                limits.max_watched_users,
                1,
                1_000_000,
            ),
            (
                "limits.max_sessions_per_user",
                limits.max_sessions_per_user,
                1,
                100_000,
            ),
            ("limits.max_handshakes", limits.max_handshakes, 1, 1_000_000),
            ("limits.max_sessions", limits.max_sessions, 1, 100_000_000),
            (
                "limits.retry_above_handshakes",
                limits.retry_above_handshakes,
                0,
                1_000_000,
            ),
            (
                "limits.max_status_text_bytes",
                limits.max_status_text_bytes,
                0,
                4096,
            ),
            (
                "limits.session_queue_frames",
                limits.session_queue_frames,
                1,
                1_000_000,
            ),
            (
                "limits.session_queue_bytes",
                limits.session_queue_bytes,
                limits.max_frame_bytes,
                1024 * MIB,
            ),
            (
                "limits.max_room_members",
                limits.max_room_members,
                1,
                10_000_000,
            ),
            (
                "delivery.max_stored_messages",
                delivery.max_stored_messages,
                1,
                10_000_000,
            ),
            (
                "delivery.max_stored_bytes",
                delivery.max_stored_bytes,
                0,
                1024 * MIB,
            ),
            (
                "delivery.max_sender_share_percent",
                delivery.max_sender_share_percent,
                1,
                100,
            ),
            (
                "delivery.dedupe_max_keys",
                delivery.dedupe_max_keys,
                1,
                10_000_000,
            ),
            (
                "limits.session_messages_per_second",
                limits.session_messages_per_second,
                0,
                RATE_MAX,
            ),
            (
                "limits.session_message_burst",
                limits.session_message_burst,
                1,
                RATE_MAX,
            ),
            (
                "limits.session_bytes_per_second",
                limits.session_bytes_per_second,
                0,
                RATE_MAX,
            ),
            (
                "limits.session_byte_burst",
                limits.session_byte_burst,
                limits.max_payload_bytes,
                RATE_MAX,
            ),
            (
                "limits.user_messages_per_second",
                limits.user_messages_per_second,
                0,
                RATE_MAX,
            ),
            (
                "limits.user_message_burst",
                limits.user_message_burst,
                1,
                RATE_MAX,
            ),
            (
                "limits.user_bytes_per_second",
                limits.user_bytes_per_second,
                0,
                RATE_MAX,
            ),
            (
                "limits.user_byte_burst",
                limits.user_byte_burst,
                limits.max_payload_bytes,
                RATE_MAX,
            ),
            (
                "limits.room_deliveries_per_second",
                limits.room_deliveries_per_second,
                0,
                RATE_MAX,
            ),
            (
                "limits.new_recipients_per_minute",
                limits.new_recipients_per_minute,
                0,
                1_000_000,
            ),
            (
                "limits.device_connects_per_minute",
                limits.device_connects_per_minute,
                0,
                1_000_000,
            ),
            (
                "limits.max_rooms_per_user",
                limits.max_rooms_per_user,
                1,
                1_000_000,
            ),
            (
                "limits.inbox_memory_mib",
                limits.inbox_memory_mib,
                1,
                1 << 20,
            ),
            ("webhook.batch_max", webhook.batch_max, 1, 10_000),
            ("webhook.attempts", webhook.attempts as usize, 1, 100),
            ("webhook.queue_events", webhook.queue_events, 1, 10_000_000),
            (
                "admin.max_connections",
                self.admin.max_connections,
                1,
                100_000,
            ),
        ];
        for (field, value, min, max) in counts {
            if value < min || value > max {
                let zero = if min == 0 && ["shards", "endpoints", "worker_threads"].contains(&field)
                {
                    "; 0 means one per core"
                } else {
                    ""
                };
                invalid(field, format!("{value} is outside {min} to {max}{zero}"));
            }
        }
    }

    /// The number of runtime threads: `worker_threads`, or one per core
    /// when 0.
    pub fn worker_thread_count(&self) -> usize {
        one_per_core_when_zero(self.worker_threads)
    }

    /// The number of shards to run: `shards`, or one per core when 0.
    pub fn shard_count(&self) -> u32 {
        one_per_core_when_zero(self.shards) as u32
    }

    /// The number of QUIC endpoints to run: `endpoints`, or one per core.
    pub fn endpoint_count(&self) -> usize {
        one_per_core_when_zero(self.endpoints)
    }

    /// The slice of this configuration the sans-IO core enforces, for a
    /// server run whose inboxes carry `inbox_epoch` and share
    /// `inbox_budget` (one per node, from [`Config::inbox_budget`]).
    pub fn core_limits(&self, inbox_epoch: u64, inbox_budget: Arc<InboxBudget>) -> CoreLimits {
        let delivery = &self.delivery;
        let limits = &self.limits;
        let rate = |per_second: usize, burst: usize| {
            let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
            Rate::new(clamp(per_second), clamp(burst))
        };
        CoreLimits {
            max_payload_bytes: self.limits.max_payload_bytes,
            max_watched_users: self.limits.max_watched_users,
            max_status_text_bytes: self.limits.max_status_text_bytes,
            offline_grace: self.presence.offline_grace,
            mailbox: MailboxLimits {
                max_messages: delivery.max_stored_messages,
                max_bytes: delivery.max_stored_bytes,
                max_age: delivery.max_stored_age,
                sender_share_percent: delivery.max_sender_share_percent,
            },
            dedupe: DedupeLimits {
                window: delivery.dedupe_window,
                max_keys: delivery.dedupe_max_keys,
            },
            delivery_window: delivery.delivery_window,
            ack_timeout: delivery.ack_timeout,
            max_room_members: self.limits.max_room_members,
            max_sessions_per_user: self.limits.max_sessions_per_user,
            max_rooms_per_user: limits.max_rooms_per_user,
            room_idle_ttl: limits.room_idle_ttl,
            remember_last_seen: self.presence.remember_last_seen,
            rates: RateLimits {
                session: SendRates {
                    messages: rate(
                        limits.session_messages_per_second,
                        limits.session_message_burst,
                    ),
                    bytes: rate(limits.session_bytes_per_second, limits.session_byte_burst),
                },
                user: SendRates {
                    messages: rate(limits.user_messages_per_second, limits.user_message_burst),
                    bytes: rate(limits.user_bytes_per_second, limits.user_byte_burst),
                },
                room_deliveries: rate(
                    limits.room_deliveries_per_second,
                    limits
                        .room_deliveries_per_second
                        .max(limits.max_room_members),
                ),
                new_recipients_per_minute: u32::try_from(limits.new_recipients_per_minute)
                    .unwrap_or(u32::MAX),
                device_connects_per_minute: u32::try_from(limits.device_connects_per_minute)
                    .unwrap_or(u32::MAX),
            },
            inbox_budget,
            inbox_epoch,
            // Server::bind sets both for the Redis engine.
            inbox_authority: switchboard_core::engine::InboxAuthority::Local,
            message_id_run: 0,
        }
    }

    /// The node's inbox budget, shared by its shards.
    pub fn inbox_budget(&self) -> Arc<InboxBudget> {
        Arc::new(InboxBudget::new(
            self.limits.inbox_memory_mib as u64 * 1024 * 1024,
        ))
    }
}

/// `count`, or the machine's core count when it is 0 (the default of every
/// per-core setting).
/// An error and its causes on one line, each said once: `a: b: c`.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        line.push_str(&format!(": {next}"));
        cause = next.source();
    }
    line
}

fn one_per_core_when_zero(count: usize) -> usize {
    if count == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Loads `toml` and `env` with no flags.
    fn load(toml: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
        Config::load_str(toml, env, &FlagOverrides::default())
    }

    /// Every problem `validate` finds, one per line.
    fn problems(config: &Config) -> String {
        let problems: Vec<String> = config.validate().iter().map(|p| p.to_string()).collect();
        problems.join("\n")
    }

    #[test]
    fn webhook_settings_are_checked() {
        let mut config = Config::default();
        config.webhook.url = "ftp://example.invalid/hook".into();
        config.webhook.batch_max = 0;
        let problems = problems(&config);
        assert!(problems.contains("webhook.url"), "{problems}");
        assert!(problems.contains("batch_max"), "{problems}");
        config.webhook.url = "http://127.0.0.1:8080/hook".into();
        config.webhook.batch_max = 10;
        assert!(config.validate().is_empty());
    }

    #[test]
    fn worker_threads_default_to_one_per_core_and_are_bounded() {
        let mut config = Config::default();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(config.worker_thread_count(), cores);
        config.worker_threads = 1;
        assert_eq!(config.worker_thread_count(), 1);
        assert!(config.validate().is_empty());
        config.worker_threads = 4096;
        let problems = problems(&config);
        assert!(problems.contains("worker_threads"), "{problems}");
    }

    /// Empty input, and the commented example in the repository root,
    /// which stays valid and equal to the defaults it documents.
    #[test]
    fn empty_input_and_the_example_file_are_the_default() {
        for text in ["", include_str!("../../../switchboard.example.toml")] {
            let config = load(text, &[]).unwrap();
            assert_eq!(config, Config::default());
            assert!(config.validate().is_empty());
        }
    }

    #[test]
    fn file_then_env_then_flags_override_in_order() {
        let toml = r#"
            listen = "127.0.0.1:5000"
            admin_listen = "127.0.0.1:5001"
            shards = 3
            [presence]
            offline_grace = "2s"
            [limits]
            max_watched_users = 10
        "#;
        let env = env(&[
            ("SWITCHBOARD_SHARDS", "5"),
            ("SWITCHBOARD_PRESENCE__OFFLINE_GRACE", "750ms"),
            ("SWITCHBOARD_LISTEN", "127.0.0.1:6000"),
            ("SWITCHBOARD_TOKEN", "not configuration"),
            ("SWITCHBOARD_SERVER", "127.0.0.1:1"),
            ("OTHER", "x"),
        ]);
        let flags = FlagOverrides {
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            admin_listen: None,
        };
        let config = Config::load_str(toml, &env, &flags).unwrap();
        assert_eq!(config.listen.port(), 7000, "flag wins");
        assert_eq!(config.admin_listen.port(), 5001, "file wins over default");
        assert_eq!(config.shards, 5, "env wins over file");
        assert_eq!(config.presence.offline_grace, Duration::from_millis(750));
        assert_eq!(config.limits.max_watched_users, 10);
    }

    /// The top-level fields of [`Config`], read off its serialized form:
    /// a section added to `Config` is covered the day it is added.
    fn top_level_fields() -> Vec<String> {
        match figment::value::Value::serialize(Config::default()) {
            Ok(figment::value::Value::Dict(_, fields)) => fields.into_keys().collect(),
            other => unreachable!("Config serializes to a dictionary, not {other:?}"),
        }
    }

    #[test]
    fn every_top_level_field_can_be_set_from_the_environment() {
        let fields = top_level_fields();
        for expected in [
            "listen",
            "limits",
            "delivery",
            "api",
            "webhook",
            "log_format",
        ] {
            assert!(
                fields.iter().any(|f| f == expected),
                "{expected} in {fields:?}"
            );
        }
        // A value no field accepts: loading fails, naming the field, only if
        // the variable was read.
        for field in &fields {
            let default = figment::value::Value::serialize(Config::default()).unwrap();
            let path = match default.find_ref(field) {
                Some(figment::value::Value::Dict(_, inner)) => {
                    let leaf = inner.keys().next().expect("a section has fields");
                    format!("{field}__{leaf}")
                }
                _ => field.clone(),
            };
            let variable = format!("SWITCHBOARD_{}", path.to_ascii_uppercase());
            let result = load("", &env(&[(&variable, "[[not, a, value]]")]));
            assert!(result.is_err(), "{variable} was ignored");
        }
    }

    #[test]
    fn webhook_api_and_delivery_come_from_the_environment() {
        let token = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(token.path(), "an-api-token-of-at-least-32-bytes-long").unwrap();
        let env = env(&[
            ("SWITCHBOARD_WEBHOOK__URL", "http://127.0.0.1:9/hook"),
            (
                "SWITCHBOARD_API__TOKEN_FILE",
                token.path().to_str().unwrap(),
            ),
            ("SWITCHBOARD_DELIVERY__DELIVERY_WINDOW", "64"),
        ]);
        let config = load("", &env).unwrap();
        assert_eq!(config.webhook.url, "http://127.0.0.1:9/hook");
        assert_eq!(config.api.token_file.as_deref(), Some(token.path()));
        assert_eq!(config.delivery.delivery_window, 64);
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let err = load("[limits]\nmax_frames = 3\n", &[]).unwrap_err();
        assert!(err.to_string().contains("max_frames"), "{err}");
        let err = load("", &env(&[("SWITCHBOARD_LIMITS__BOGUS", "1")])).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn bad_values_are_explained() {
        let err = load("listen = \"nowhere\"", &[]).unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");

        let toml = r#"
            heartbeat_interval = "1ms"
            [tls]
            cert = "/nonexistent/cert.pem"
            [auth]
            secret_file = "/nonexistent/secret"
            [limits]
            max_frame_bytes = 1000
            max_payload_bytes = 1000
        "#;
        let joined = load(toml, &[]).unwrap_err().to_string();
        for field in [
            "tls.key",
            "auth.secret_file",
            "heartbeat_interval",
            "limits.max_payload_bytes",
        ] {
            assert!(joined.contains(field), "{field} missing from:\n{joined}");
        }
    }

    /// A newcomer's config with several mistakes, in the file and in the
    /// environment: every one is reported in one run, each with its key,
    /// where it was set, what is wrong and what would be right.
    #[test]
    fn every_mistake_is_reported_at_once_with_its_source() {
        let toml = r#"
            admin_listen = 9464
            shards = "four"
            [presense]
            offline_grace = "2s"
            [limits]
            max_watched_users = 10
            max_frame_bytes = 100
        "#;
        let env = env(&[
            ("SWITCHBOARD_PRESENCE__OFFLINE_GRACE", "five seconds"),
            ("SWITCHBOARD_LISTN", "127.0.0.1:1"),
            ("SWITCHBOARD_TOKEN", "not configuration"),
        ]);
        let error = load(toml, &env).unwrap_err();
        let lines: Vec<String> = error.problems.iter().map(|p| p.to_string()).collect();
        let expected = [
            "admin_listen = 9464 (in config.toml): expected socket address, found signed int `9464`; the default is \"127.0.0.1:9464\"",
            "presense.offline_grace = \"2s\" (in config.toml): no key `presense` at the top level; did you mean `presence`?",
            "shards = \"four\" (in config.toml): expected usize, found string \"four\"; the default is 0",
            "presence.offline_grace = \"five seconds\" (from SWITCHBOARD_PRESENCE__OFFLINE_GRACE): ",
            "listn = \"127.0.0.1:1\" (from SWITCHBOARD_LISTN): no key `listn` at the top level; did you mean `listen`?",
            "limits.max_frame_bytes (in config.toml): 100 is outside 256 to 16777216",
            "limits.max_payload_bytes: 65536 does not fit in a frame of limits.max_frame_bytes = 100",
        ];
        assert_eq!(lines.len(), expected.len(), "{error}");
        for (line, expected) in lines.iter().zip(expected) {
            assert!(
                line.starts_with(expected),
                "expected {expected}\n     got {line}"
            );
        }
        assert!(
            error
                .to_string()
                .starts_with("the configuration has 7 problems:\n  - "),
            "{error}"
        );
    }

    #[test]
    fn a_file_that_is_not_toml_is_named_with_the_place() {
        let error = load("listen = [", &[]).unwrap_err();
        assert_eq!(error.problems.len(), 1);
        let line = error.problems[0].to_string();
        assert!(line.starts_with("config.toml: not valid TOML: "), "{line}");
        assert!(line.contains("line 1"), "{line}");
    }

    /// L-4 of the hardening issue: absurd durations and counts passed
    /// check-config and then panicked at start or in a task. Every duration
    /// and count of `Config`, found by walking its serialized form, is
    /// bounded: an absurd value is refused, naming the key.
    #[test]
    fn every_duration_and_count_is_bounded() {
        use figment::value::Value;
        fn leaves(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
            match value {
                Value::Dict(_, dict) => {
                    for (key, inner) in dict {
                        let path = if prefix.is_empty() {
                            key.clone()
                        } else {
                            format!("{prefix}.{key}")
                        };
                        leaves(&path, inner, out);
                    }
                }
                leaf => out.push((prefix.to_owned(), leaf.clone())),
            }
        }
        let mut all = Vec::new();
        leaves("", &Value::serialize(Config::default()).unwrap(), &mut all);
        let mut checked = 0;
        for (key, default) in all {
            let absurd = match default {
                Value::Num(..) => "5000000000",
                Value::String(_, text) if humantime::parse_duration(&text).is_ok() => {
                    "\"5000days\""
                }
                _ => continue,
            };
            let error = load(&format!("{key} = {absurd}"), &[])
                .map(|_| ())
                .expect_err(&format!("{key} = {absurd} was accepted"));
            assert!(error.to_string().contains(&key), "{key}: {error}");
            checked += 1;
        }
        assert!(checked >= 25, "only {checked} durations and counts found");
    }
}
