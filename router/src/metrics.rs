//! Every metric the router exports, in one place: names, units, help texts
//! and histogram buckets. Library code records through the functions here
//! (which use the `metrics` facade); only the binary installs the Prometheus
//! recorder ([`install_prometheus`]).
//!
//! Beside the router's own, the standard `process_*` series (CPU, RSS,
//! open and maximum file descriptors, threads, start time) come from
//! `metrics_process`, collected at every scrape and upkeep.
//!
//! The unlabelled metrics recorded for every message are registered once,
//! when the recorder is installed, and recorded through the handles kept in
//! `Hot`: the `counter!` family looks its key up in the recorder's
//! registry (hashing and comparing it) on every call, a cost worth sparing
//! the per-message path.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use switchboard_core::stats::{Reason, Refusal, Rejection, Throttle};
use switchboard_core::ShardStats;
use switchboard_proto::close::CloseCode;
use switchboard_proto::v1::ErrorCode;

use crate::auth::AuthError;

/// Open sessions (gauge).
pub const SESSIONS: &str = "switchboard_sessions";
/// Users with at least one session or in their offline grace period (gauge).
pub const ONLINE_USERS: &str = "switchboard_online_users";
/// QUIC connections that completed the handshake (counter).
pub const CONNECTIONS: &str = "switchboard_connections_accepted_total";
/// Sessions opened after a successful Hello (counter).
pub const SESSIONS_OPENED: &str = "switchboard_sessions_opened_total";
/// Connections ended after their handshake completed, by `reason`
/// (counter): `connections_accepted_total` minus this is what is open.
pub const CONNECTIONS_CLOSED: &str = "switchboard_connections_closed_total";
/// Failed authentications, by `reason` (counter).
pub const AUTH_FAILURES: &str = "switchboard_auth_failures_total";
/// Client frames rejected, by `reason` (counter).
pub const FRAMES_REJECTED: &str = "switchboard_frames_rejected_total";
/// Direct messages accepted into the recipient's inbox (counter).
pub const MESSAGES_ROUTED: &str = "switchboard_messages_routed_total";
/// Message frames written to a recipient device's stream (counter).
pub const MESSAGES_DELIVERED: &str = "switchboard_messages_delivered_total";
/// Messages not routed or not delivered, by `reason` (counter).
pub const MESSAGES_DROPPED: &str = "switchboard_messages_dropped_total";
/// Presence events queued to watchers (counter).
pub const PRESENCE_EVENTS: &str = "switchboard_presence_events_sent_total";
/// Messages stored in a user's inbox (recipient inboxes and the sender's
/// copies), counter.
pub const MAILBOX_STORED: &str = "switchboard_mailbox_stored_total";
/// Stored messages dropped before every device acknowledged them, by
/// `reason` (`limit`: count or bytes; `age`), counter.
pub const MAILBOX_EVICTED: &str = "switchboard_mailbox_evicted_total";
/// Messages held in inboxes now (gauge).
pub const MAILBOX_MESSAGES: &str = "switchboard_mailbox_messages";
/// Bytes of encoded messages held in inboxes now, counted once per inbox
/// (gauge).
pub const MAILBOX_BYTES: &str = "switchboard_mailbox_bytes";
/// Gap frames sent: ranges a device will never receive (counter).
pub const INBOX_GAPS: &str = "switchboard_inbox_gaps_total";
/// Acks accepted from devices (counter).
pub const ACKS: &str = "switchboard_acks_total";
/// Sends answered from the idempotency window instead of sent again
/// (counter).
pub const DUPLICATE_SENDS: &str = "switchboard_duplicate_sends_total";
/// Ephemeral signals (typing) queued to sessions (counter).
pub const SIGNALS_RELAYED: &str = "switchboard_signals_relayed_total";
/// Ephemeral signals sent, by `via` (`datagram` or `stream`), counter.
pub const SIGNALS_SENT: &str = "switchboard_signals_sent_total";
/// Sessions closed as slow consumers, by `reason`: `ack_timeout` (sent
/// messages held unacked too long) or `queue_full`, counter.
pub const SLOW_CONSUMERS: &str = "switchboard_slow_consumers_total";
/// Presence and signal frames in session queues, by `outcome`:
/// `coalesced` (replaced by a newer one) or `dropped` (queue full), counter.
pub const OUTBOX_EPHEMERAL: &str = "switchboard_outbox_ephemeral_total";
/// Webhook events, by `outcome`: `sent`, `dropped_queue_full`,
/// `dropped_failed` (counter).
pub const WEBHOOK_EVENTS: &str = "switchboard_webhook_events_total";
/// Server API calls, by `outcome` (`OK` or the error name), counter.
pub const API_REQUESTS: &str = "switchboard_api_requests_total";
/// Time from reading a `Send` off its sender's connection to writing each
/// `Deliver` of it to a device's stream, seconds (histogram). A message
/// stored for a device that was offline counts the time it waited.
pub const DELIVERY_LATENCY: &str = "switchboard_delivery_latency_seconds";
/// Time from a presence change being handled to its event's write to a
/// watcher's stream, seconds (histogram).
pub const PRESENCE_LATENCY: &str = "switchboard_presence_latency_seconds";
/// Time from accepting a QUIC connection to its handshake's completion,
/// seconds (histogram).
pub const HANDSHAKE_DURATION: &str = "switchboard_handshake_duration_seconds";
/// Bytes queued in sessions' outbound queues, over every session (gauge):
/// what slow readers hold.
pub const OUTBOX_BYTES: &str = "switchboard_outbox_bytes";
/// Inputs waiting in each shard's queue, by `shard` (gauge): a shard that
/// cannot keep up shows here first.
pub const SHARD_QUEUE_DEPTH: &str = "switchboard_shard_queue_depth";
/// New QUIC connections not accepted at once, by `reason`: `retry` (asked
/// to validate its address first), `over_limit` (`limits.max_handshakes`
/// in progress), `draining` (counter).
pub const HANDSHAKES_TURNED_AWAY: &str = "switchboard_handshakes_turned_away_total";
/// Admin connections beyond `admin.max_connections`: answered for the
/// health checks only, or closed (counter).
pub const ADMIN_OVER_LIMIT: &str = "switchboard_admin_connections_over_limit_total";
/// QUIC handshakes that were accepted but never completed, by `reason`:
/// `idle_timeout`, `peer_closed`, `transport_error`, `refused` (by
/// quinn-proto), or the close code the router sent (counter).
pub const HANDSHAKES_FAILED: &str = "switchboard_handshakes_failed_total";
/// Requests refused by a rate limit, by `limit`: `session`, `user`,
/// `new_recipients`, `room` (counter).
pub const RATE_LIMITED: &str = "switchboard_rate_limited_total";
/// User records freed because they held nothing (counter).
pub const USERS_FORGOTTEN: &str = "switchboard_users_forgotten_total";
/// Rooms deleted for being idle past `limits.room_idle_ttl` (counter).
pub const ROOMS_RECLAIMED: &str = "switchboard_rooms_reclaimed_total";
/// Requests a shard made of the Redis engine, by `op` (counter).
pub const ENGINE_REQUESTS: &str = "switchboard_engine_requests_total";
/// Engine requests Redis did not answer, by `kind` (counter): the sends
/// among them were refused with SERVER_BUSY.
pub const ENGINE_ERRORS: &str = "switchboard_engine_errors_total";
/// Round trip of one pipeline of engine requests to Redis (histogram).
pub const ENGINE_LATENCY: &str = "switchboard_engine_latency_seconds";
/// Times the node subscribed to its channel again after losing Redis, and
/// read every inbox it mirrors anew (counter).
pub const ENGINE_RESUBSCRIBES: &str = "switchboard_engine_resubscribes_total";
/// Age of the node's last heartbeat Redis acknowledged (gauge): beyond
/// `redis.node_timeout` the other nodes count this one dead.
pub const ENGINE_HEARTBEAT_AGE: &str = "switchboard_engine_heartbeat_age_seconds";
/// Always 1, labelled with the running `version` (gauge): joins any series
/// to the build that produced it.
pub const BUILD_INFO: &str = "switchboard_build_info";

/// How often the recorder's histograms are drained of samples recorded
/// since the last scrape, so an unscraped router does not pile them up.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Buckets of the latency histograms ([`DELIVERY_LATENCY`],
/// [`PRESENCE_LATENCY`], [`HANDSHAKE_DURATION`], [`ENGINE_LATENCY`]),
/// seconds: 50 us to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Handles to the unlabelled metrics on the per-message and per-session
/// paths.
struct Hot {
    sessions: Gauge,
    sessions_opened: Counter,
    online_users: Gauge,
    connections: Counter,
    messages_routed: Counter,
    messages_delivered: Counter,
    delivery_latency: Histogram,
    presence_latency: Histogram,
    handshake_duration: Histogram,
    outbox_bytes: Gauge,
    presence_events: Counter,
    mailbox_stored: Counter,
    mailbox_messages: Gauge,
    mailbox_bytes: Gauge,
    acks: Counter,
    signals_relayed: Counter,
}

/// [`Hot`] for the recorder [`install_prometheus`] installed.
static HOT: OnceLock<Hot> = OnceLock::new();

impl Hot {
    /// Registers every handle with the recorder installed now.
    fn register() -> Hot {
        Hot {
            sessions: gauge!(SESSIONS),
            sessions_opened: counter!(SESSIONS_OPENED),
            online_users: gauge!(ONLINE_USERS),
            connections: counter!(CONNECTIONS),
            messages_routed: counter!(MESSAGES_ROUTED),
            messages_delivered: counter!(MESSAGES_DELIVERED),
            delivery_latency: histogram!(DELIVERY_LATENCY),
            presence_latency: histogram!(PRESENCE_LATENCY),
            handshake_duration: histogram!(HANDSHAKE_DURATION),
            outbox_bytes: gauge!(OUTBOX_BYTES),
            presence_events: counter!(PRESENCE_EVENTS),
            mailbox_stored: counter!(MAILBOX_STORED),
            mailbox_messages: gauge!(MAILBOX_MESSAGES),
            mailbox_bytes: gauge!(MAILBOX_BYTES),
            acks: counter!(ACKS),
            signals_relayed: counter!(SIGNALS_RELAYED),
        }
    }

    /// Runs `record` with the handles of the installed recorder; without
    /// [`install_prometheus`] (tests, or an embedder's own recorder), with
    /// handles registered for this call.
    fn with(record: impl FnOnce(&Hot)) {
        match HOT.get() {
            Some(hot) => record(hot),
            None => record(&Hot::register()),
        }
    }
}

/// What kind of metric a name is.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric with its kind, unit, label (for a metric counted by one)
/// and help text.
#[rustfmt::skip]
const DESCRIPTIONS: &[(&str, Kind, Unit, Option<&str>, &str)] = &[
    (SESSIONS, Kind::Gauge, Unit::Count, None, "Open sessions."),
    (ONLINE_USERS, Kind::Gauge, Unit::Count, None, "Users online (a session open or within the offline grace period)."),
    (CONNECTIONS, Kind::Counter, Unit::Count, None, "QUIC connections accepted."),
    (SESSIONS_OPENED, Kind::Counter, Unit::Count, None, "Sessions opened after a valid Hello."),
    (CONNECTIONS_CLOSED, Kind::Counter, Unit::Count, Some("reason"), "Connections closed after their handshake completed, by reason."),
    (AUTH_FAILURES, Kind::Counter, Unit::Count, Some("reason"), "Failed authentications, by reason."),
    (FRAMES_REJECTED, Kind::Counter, Unit::Count, Some("reason"), "Client frames rejected, by reason."),
    (MESSAGES_ROUTED, Kind::Counter, Unit::Count, None, "Direct messages accepted into the recipient's inbox."),
    (MESSAGES_DELIVERED, Kind::Counter, Unit::Count, None, "Message frames written to a device."),
    (MESSAGES_DROPPED, Kind::Counter, Unit::Count, Some("reason"), "Messages not routed or not delivered, by reason."),
    (PRESENCE_EVENTS, Kind::Counter, Unit::Count, None, "Presence events sent to watchers."),
    (MAILBOX_STORED, Kind::Counter, Unit::Count, None, "Messages stored in user inboxes (including senders' copies)."),
    (MAILBOX_EVICTED, Kind::Counter, Unit::Count, Some("reason"), "Stored messages dropped before every device acknowledged them, by reason."),
    (MAILBOX_MESSAGES, Kind::Gauge, Unit::Count, None, "Messages held in inboxes."),
    (MAILBOX_BYTES, Kind::Gauge, Unit::Bytes, None, "Encoded message bytes held in inboxes, counted per inbox."),
    (INBOX_GAPS, Kind::Counter, Unit::Count, None, "Gap frames sent to devices (ranges they will never receive)."),
    (ACKS, Kind::Counter, Unit::Count, None, "Acks accepted from devices."),
    (DUPLICATE_SENDS, Kind::Counter, Unit::Count, None, "Sends answered from the idempotency window."),
    (SIGNALS_RELAYED, Kind::Counter, Unit::Count, None, "Ephemeral signals (typing) queued to sessions."),
    (SIGNALS_SENT, Kind::Counter, Unit::Count, Some("via"), "Ephemeral signals written, by path (datagram or stream)."),
    (SLOW_CONSUMERS, Kind::Counter, Unit::Count, Some("reason"), "Sessions closed as slow consumers, by reason."),
    (OUTBOX_EPHEMERAL, Kind::Counter, Unit::Count, Some("outcome"), "Presence and signal frames coalesced or dropped in full session queues."),
    (WEBHOOK_EVENTS, Kind::Counter, Unit::Count, Some("outcome"), "Offline-delivery webhook events, by outcome (sent or why dropped)."),
    (API_REQUESTS, Kind::Counter, Unit::Count, Some("outcome"), "Server API calls, by outcome (OK or the error name)."),
    (DELIVERY_LATENCY, Kind::Histogram, Unit::Seconds, None, "Time from reading a Send to writing each of its Deliver frames to a device."),
    (PRESENCE_LATENCY, Kind::Histogram, Unit::Seconds, None, "Time from a presence change to its event's write to a watcher."),
    (HANDSHAKE_DURATION, Kind::Histogram, Unit::Seconds, None, "Time from accepting a QUIC connection to its handshake's completion."),
    (OUTBOX_BYTES, Kind::Gauge, Unit::Bytes, None, "Bytes queued in sessions' outbound queues."),
    (SHARD_QUEUE_DEPTH, Kind::Gauge, Unit::Count, Some("shard"), "Inputs waiting in each shard's queue."),
    (HANDSHAKES_TURNED_AWAY, Kind::Counter, Unit::Count, Some("reason"), "New QUIC connections sent a Retry or refused, by reason."),
    (ADMIN_OVER_LIMIT, Kind::Counter, Unit::Count, None, "Admin connections beyond admin.max_connections (health checks only, or closed)."),
    (HANDSHAKES_FAILED, Kind::Counter, Unit::Count, Some("reason"), "QUIC handshakes accepted that never completed, by reason."),
    (RATE_LIMITED, Kind::Counter, Unit::Count, Some("limit"), "Sends, receipts and signals refused by a rate limit, by limit."),
    (USERS_FORGOTTEN, Kind::Counter, Unit::Count, None, "User records freed because they held nothing worth keeping."),
    (ROOMS_RECLAIMED, Kind::Counter, Unit::Count, None, "Rooms deleted for having been idle past limits.room_idle_ttl."),
    (ENGINE_REQUESTS, Kind::Counter, Unit::Count, Some("op"), "Requests of the shards to the Redis engine, by operation."),
    (ENGINE_ERRORS, Kind::Counter, Unit::Count, Some("kind"), "Redis engine requests Redis did not answer, by kind (sends among them got SERVER_BUSY)."),
    (ENGINE_LATENCY, Kind::Histogram, Unit::Seconds, None, "Round trip of one pipeline of Redis engine requests."),
    (ENGINE_RESUBSCRIBES, Kind::Counter, Unit::Count, None, "Subscriptions renewed after losing Redis (every mirrored inbox read again)."),
    (ENGINE_HEARTBEAT_AGE, Kind::Gauge, Unit::Seconds, None, "Age of the node's last heartbeat acknowledged by Redis (Redis engine)."),
    (BUILD_INFO, Kind::Gauge, Unit::Count, Some("version"), "Always 1; the label names the running version."),
];

/// Every value the label of a labelled counter takes, so that each series
/// is exported at 0 from the first scrape: an alert on its rate then sees
/// the first event, not only the second. Recording a value missing here
/// fails a debug build (every test), so the list cannot fall behind.
fn label_values(name: &str) -> Vec<&'static str> {
    fn with(mut values: Vec<&'static str>, more: &[&'static str]) -> Vec<&'static str> {
        values.extend_from_slice(more);
        values
    }
    match name {
        CONNECTIONS_CLOSED => with(
            CloseCode::ALL.iter().map(|code| code.as_str()).collect(),
            &["peer_closed", "idle_timeout", "transport_error"],
        ),
        HANDSHAKES_FAILED => with(
            CloseCode::ALL.iter().map(|code| code.as_str()).collect(),
            &["peer_closed", "idle_timeout", "transport_error", "refused"],
        ),
        AUTH_FAILURES => with(
            AuthError::ALL.iter().map(|e| e.as_str()).collect(),
            &["timeout"],
        ),
        FRAMES_REJECTED => with(
            Rejection::ALL.iter().map(|r| r.as_str()).collect(),
            &[
                "before_hello",
                "malformed",
                "frame_too_large",
                "invalid_device_id",
                "reserved_device_id",
                "datagram_before_hello",
                "datagram_no_credit",
                "datagram_not_signal",
                "datagram_malformed",
            ],
        ),
        MESSAGES_DROPPED => with(
            Refusal::ALL.iter().map(|r| r.as_str()).collect(),
            &["session_gone", "slow_consumer"],
        ),
        MAILBOX_EVICTED => vec!["limit", "age"],
        RATE_LIMITED => Throttle::ALL.iter().map(|t| t.as_str()).collect(),
        HANDSHAKES_TURNED_AWAY => vec!["retry", "over_limit", "draining"],
        SIGNALS_SENT => vec!["datagram", "stream"],
        SLOW_CONSUMERS => vec!["ack_timeout", "queue_full"],
        OUTBOX_EPHEMERAL => vec!["coalesced", "dropped"],
        WEBHOOK_EVENTS => vec!["sent", "dropped_queue_full", "dropped_failed"],
        API_REQUESTS => with(
            (1..64)
                .filter_map(|code| ErrorCode::try_from(code).ok())
                .map(|code| code.as_str_name().trim_start_matches("ERROR_CODE_"))
                .collect(),
            &[
                "OK",
                "INVALID_REQUEST",
                "UNAUTHORIZED",
                "UNAVAILABLE",
                "INTERNAL",
            ],
        ),
        ENGINE_REQUESTS => vec!["deliver", "append", "attach", "fetch", "ack", "detach"],
        ENGINE_ERRORS => vec!["timeout", "connection", "script", "reply"],
        BUILD_INFO => vec![env!("CARGO_PKG_VERSION")],
        _ => Vec::new(),
    }
}

/// Fails a debug build when `value` is not among `name`'s label values.
fn labelled(name: &'static str, value: &'static str) -> &'static str {
    debug_assert!(
        label_values(name).contains(&value),
        "{name}: label value {value:?} is missing from metrics::label_values"
    );
    value
}

/// Builds the Prometheus recorder with our buckets, installs it globally and
/// describes every metric. Call once, from the binary.
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    let mut builder = PrometheusBuilder::new();
    for name in [
        DELIVERY_LATENCY,
        PRESENCE_LATENCY,
        HANDSHAKE_DURATION,
        ENGINE_LATENCY,
    ] {
        builder =
            builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), LATENCY_BUCKETS)?;
    }
    let handle = builder.install_recorder()?;
    for &(name, kind, unit, _, help) in DESCRIPTIONS {
        match kind {
            Kind::Counter => describe_counter!(name, unit, help),
            Kind::Gauge => describe_gauge!(name, unit, help),
            Kind::Histogram => describe_histogram!(name, unit, help),
        }
    }
    // Only the first install's handles are kept; a second install fails
    // above, since the global recorder can be set once.
    let _ = HOT.set(Hot::register());
    // Start the gauges and unlabelled counters at zero so they appear in the
    // first scrape, before any session exists.
    for &(name, kind, _, label, _) in DESCRIPTIONS {
        match (kind, label) {
            (Kind::Gauge, None) => gauge!(name).set(0.0),
            (Kind::Counter, None) => counter!(name).absolute(0),
            (Kind::Counter, Some(label)) => {
                for value in label_values(name) {
                    counter!(name, label => value).absolute(0);
                }
            }
            _ => {}
        }
    }
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    process_metrics().describe();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            process_metrics().collect();
            upkeep.run_upkeep();
        })
        .expect("a thread for the metrics upkeep");
    Ok(handle)
}

/// The `process_*` collector.
fn process_metrics() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// The exposition text of `handle`, with the `process_*` series fresh.
pub fn render(handle: &PrometheusHandle) -> String {
    process_metrics().collect();
    handle.render()
}

pub(crate) fn connection_accepted() {
    Hot::with(|hot| hot.connections.increment(1));
}

pub(crate) fn handshake_turned_away(reason: &'static str) {
    counter!(HANDSHAKES_TURNED_AWAY, "reason" => labelled(HANDSHAKES_TURNED_AWAY, reason))
        .increment(1);
}

pub(crate) fn admin_over_limit() {
    counter!(ADMIN_OVER_LIMIT).increment(1);
}

pub(crate) fn disconnected(reason: &'static str) {
    counter!(CONNECTIONS_CLOSED, "reason" => labelled(CONNECTIONS_CLOSED, reason)).increment(1);
}

pub(crate) fn auth_failed(reason: &'static str) {
    counter!(AUTH_FAILURES, "reason" => labelled(AUTH_FAILURES, reason)).increment(1);
}

pub(crate) fn frame_rejected(reason: &'static str) {
    counter!(FRAMES_REJECTED, "reason" => labelled(FRAMES_REJECTED, reason)).increment(1);
}

pub(crate) fn message_delivered(latency: Duration) {
    Hot::with(|hot| {
        hot.messages_delivered.increment(1);
        hot.delivery_latency.record(latency.as_secs_f64());
    });
}

pub(crate) fn handshake_failed(reason: &'static str) {
    counter!(HANDSHAKES_FAILED, "reason" => labelled(HANDSHAKES_FAILED, reason)).increment(1);
}

/// Moves the outbox-bytes gauge by what a driver's queues gained or lost.
pub(crate) fn outbox_bytes(change: i64) {
    Hot::with(|hot| hot.outbox_bytes.increment(change as f64));
}

pub(crate) fn presence_delivered(latency: Duration) {
    Hot::with(|hot| hot.presence_latency.record(latency.as_secs_f64()));
}

pub(crate) fn handshake_completed(duration: Duration) {
    Hot::with(|hot| hot.handshake_duration.record(duration.as_secs_f64()));
}

/// The gauge of shard `index`'s queue depth, registered once by its task.
/// A pipeline of engine requests, one `op` each, took `round_trip`.
pub(crate) fn engine_pipeline(ops: impl Iterator<Item = &'static str>, round_trip: Duration) {
    for op in ops {
        counter!(ENGINE_REQUESTS, "op" => labelled(ENGINE_REQUESTS, op)).increment(1);
    }
    histogram!(ENGINE_LATENCY).record(round_trip.as_secs_f64());
}

/// An engine request Redis did not answer, by `kind`.
pub(crate) fn engine_error(kind: &'static str) {
    counter!(ENGINE_ERRORS, "kind" => labelled(ENGINE_ERRORS, kind)).increment(1);
}

/// The node subscribed again after losing Redis.
pub(crate) fn engine_resubscribed() {
    counter!(ENGINE_RESUBSCRIBES).increment(1);
}

/// The age of the node's last acknowledged heartbeat.
pub(crate) fn engine_heartbeat_age(age: Duration) {
    gauge!(ENGINE_HEARTBEAT_AGE).set(age.as_secs_f64());
}

pub(crate) fn shard_queue_depth(index: usize) -> Gauge {
    gauge!(SHARD_QUEUE_DEPTH, "shard" => index.to_string())
}

pub(crate) fn message_dropped(reason: &'static str) {
    counter!(MESSAGES_DROPPED, "reason" => labelled(MESSAGES_DROPPED, reason)).increment(1);
}

pub(crate) fn api_request(outcome: &'static str) {
    counter!(API_REQUESTS, "outcome" => labelled(API_REQUESTS, outcome)).increment(1);
}

pub(crate) fn webhook_events(outcome: &'static str, count: usize) {
    counter!(WEBHOOK_EVENTS, "outcome" => labelled(WEBHOOK_EVENTS, outcome))
        .increment(count as u64);
}

pub(crate) fn signal_sent(via: &'static str) {
    counter!(SIGNALS_SENT, "via" => labelled(SIGNALS_SENT, via)).increment(1);
}

pub(crate) fn outbox_ephemeral(outcome: &'static str) {
    counter!(OUTBOX_EPHEMERAL, "outcome" => labelled(OUTBOX_EPHEMERAL, outcome)).increment(1);
}

pub(crate) fn slow_consumer(reason: &'static str) {
    counter!(SLOW_CONSUMERS, "reason" => labelled(SLOW_CONSUMERS, reason)).increment(1);
}

/// Adds what a shard counted ([`ShardStats`]) to the exported metrics.
pub(crate) fn shard_stats(stats: &ShardStats) {
    if *stats == ShardStats::default() {
        return;
    }
    let mailbox = &stats.mailbox;
    // Only what changed: each write is an atomic on a line every shard
    // task shares.
    let net = |up: u64, down: u64| up as f64 - down as f64;
    let add_gauge = |gauge: &Gauge, change: f64| {
        if change != 0.0 {
            gauge.increment(change);
        }
    };
    let add_counter = |counter: &Counter, count: u64| {
        if count > 0 {
            counter.increment(count);
        }
    };
    Hot::with(|hot| {
        add_gauge(
            &hot.sessions,
            net(stats.sessions_opened, stats.sessions_closed),
        );
        add_counter(&hot.sessions_opened, stats.sessions_opened);
        let online = net(stats.users_came_online, stats.users_went_offline);
        add_gauge(&hot.online_users, online);
        add_counter(&hot.messages_routed, stats.messages_routed);
        add_counter(&hot.presence_events, stats.presence_events);
        add_counter(&hot.acks, stats.acks);
        add_counter(&hot.signals_relayed, stats.signals_relayed);
        add_counter(&hot.mailbox_stored, mailbox.stored);
        add_gauge(&hot.mailbox_messages, net(mailbox.stored, mailbox.released));
        let bytes = net(mailbox.stored_bytes, mailbox.released_bytes);
        add_gauge(&hot.mailbox_bytes, bytes);
    });
    let counts = [
        (DUPLICATE_SENDS, stats.duplicate_sends),
        (INBOX_GAPS, stats.inbox_gaps),
        (USERS_FORGOTTEN, stats.users_forgotten),
        (ROOMS_RECLAIMED, stats.rooms_reclaimed),
    ];
    for (name, count) in counts {
        if count > 0 {
            counter!(name).increment(count);
        }
    }
    if stats.ack_timeouts > 0 {
        counter!(SLOW_CONSUMERS, "reason" => "ack_timeout").increment(stats.ack_timeouts);
    }
    for (reason, count) in [
        ("limit", mailbox.evicted_by_limit),
        ("age", mailbox.evicted_by_age),
    ] {
        if count > 0 {
            counter!(MAILBOX_EVICTED, "reason" => reason).increment(count);
        }
    }
    for (reason, count) in stats.frames_rejected.iter() {
        counter!(FRAMES_REJECTED, "reason" => reason.as_str()).increment(count);
    }
    for (reason, count) in stats.sends_refused.iter() {
        counter!(MESSAGES_DROPPED, "reason" => reason.as_str()).increment(count);
    }
    for (limit, count) in stats.throttled.iter() {
        counter!(RATE_LIMITED, "limit" => limit.as_str()).increment(count);
    }
}
