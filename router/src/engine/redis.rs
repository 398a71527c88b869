//! The Redis engine at work: [`RedisEngine`] connects, loads the inbox
//! scripts, keeps the inbox epoch in Redis (so a restarted node's
//! sequence numbers still mean what they meant) and registers the node
//! (a new id per start: message ids carry it, so they do not repeat across
//! restarts, and its heartbeat key says it is alive);
//! [`RedisEngine::spawn_writer`] runs one writer task per shard, and
//! [`RedisEngine::start`] the heartbeat and the subscriber to the node's
//! channel, where other nodes publish what they append for users with a
//! device here (several nodes on one Redis).
//!
//! A writer takes what its shard asked ([`EngineRequest`]s, in the order
//! emitted), sends everything waiting as one pipeline on one connection,
//! so Redis applies it in that order (a group commit: one round trip
//! however many requests queued meanwhile), and hands each answer back to
//! the shard as [`ShardInput::EngineReply`]. An entry it appended is also
//! handed to the shard that owns the user on this node
//! ([`ShardInput::Appended`]), which sends it to the user's sessions.
//! A request Redis did not answer (unreachable, timed out, an error) gets
//! [`EngineReply::Unavailable`]: the shard refuses with a retryable error;
//! nothing waits forever.

use std::collections::hash_map::{Entry, HashMap};
use std::sync::Arc;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Value};
use switchboard_core::engine::{AppendedEntry, EngineReply, EngineRequest, EngineTicket};
use switchboard_core::mailbox::MailboxLimits;
use switchboard_core::placement::shard_of;
use switchboard_core::remote_inbox::{device_key, sender_key, EntryHeader};
use switchboard_core::{DeviceId, ShardId, ShardInput, UserId};
use tokio::sync::mpsc;

use super::inbox::{self, InboxStore};
use super::liveness::{self, unix_ms, NodeId};
use super::subscriber;
use super::EngineError;
use crate::config::RedisConfig;
use crate::metrics;

/// Most requests one pipeline carries.
const MAX_BATCH: usize = 512;

/// Where a writer hands the shards their inputs.
pub type Deliver = Arc<dyn Fn(ShardId, ShardInput) + Send + Sync>;

/// What a shard's writer is handed: the shard's requests, in order.
pub type EngineQueue = mpsc::UnboundedSender<(EngineTicket, EngineRequest)>;

/// A connected Redis engine; see the module docs.
pub struct RedisEngine {
    store: Arc<InboxStore>,
    connections: Vec<ConnectionManager>,
    epoch: u64,
    node: NodeId,
    config: RedisConfig,
}

impl RedisEngine {
    /// Connects to the Redis of `config` (`config.connections`
    /// connections), loads the scripts and reads (or, on an empty Redis,
    /// sets) the inbox epoch.
    pub async fn connect(config: &RedisConfig, limits: MailboxLimits) -> Result<Self, EngineError> {
        let url = config
            .urls
            .first()
            .ok_or_else(|| EngineError::Unexpected("no redis URL".into()))?;
        let client = redis::Client::open(url.as_str())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout));
        let mut connections = Vec::with_capacity(config.connections);
        for _ in 0..config.connections.max(1) {
            let connection = client
                .get_connection_manager_with_config(manager_config.clone())
                .await?;
            connections.push(connection);
        }
        let store = Arc::new(InboxStore::new(&config.key_prefix, config.buckets, limits));
        let redis = &mut connections[0];
        store.load_scripts(redis).await?;
        let epoch_key = format!("{}:epoch", config.key_prefix);
        let _: Value = redis::cmd("SET")
            .arg(&epoch_key)
            .arg(unix_ms())
            .arg("NX")
            .query_async(redis)
            .await?;
        let epoch: u64 = redis::cmd("GET").arg(&epoch_key).query_async(redis).await?;
        let node = liveness::register(redis, &config.liveness(), unix_ms()).await?;
        Ok(Self {
            store,
            connections,
            epoch,
            node,
            config: config.clone(),
        })
    }

    /// The inbox epoch kept in Redis: the same for every node and run
    /// that share its data.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// This node's id among every node run on this Redis, new at each
    /// start (message ids carry it, so ids of messages kept across runs do
    /// not repeat).
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Starts what runs beside the writers: the node's heartbeat, and the
    /// subscriber that hands entries other nodes appended for users with a
    /// device here (published to this node's channel) to the shards that
    /// own them, of `shard_count`. The subscription is renewed by itself
    /// after Redis comes back.
    pub async fn start(
        &self,
        shard_count: u32,
        deliver: Deliver,
    ) -> Result<EngineHealth, EngineError> {
        let (heartbeat, _) = liveness::Heartbeat::spawn(
            self.connections[0].clone(),
            self.config.liveness(),
            self.node,
        );
        let health = EngineHealth {
            heartbeat,
            // Two beats missed, and the third late by a command timeout.
            max_age: 2 * self.config.heartbeat_interval + self.config.command_timeout,
        };
        let gauge = health.clone();
        let interval = self.config.heartbeat_interval;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            loop {
                ticks.tick().await;
                if let Some(age) = gauge.heartbeat.age(unix_ms()) {
                    metrics::engine_heartbeat_age(age);
                }
            }
        });
        let channel = self.store.node_channel(self.node.0);
        subscriber::spawn(&self.config, channel, shard_count, deliver).await?;
        Ok(health)
    }

    /// Starts the writer of shard `shard` of `shard_count`, which hands
    /// answers and appended entries to `deliver`; returns its queue. The
    /// writer ends when the queue's senders are gone.
    pub fn spawn_writer(&self, shard: ShardId, shard_count: u32, deliver: Deliver) -> EngineQueue {
        let (queue, requests) = mpsc::unbounded_channel();
        let connection = self.connections[shard.0 as usize % self.connections.len()].clone();
        let writer = Writer {
            store: self.store.clone(),
            redis: connection,
            shard,
            shard_count,
            node: self.node.0,
            deliver,
        };
        tokio::spawn(writer.run(requests));
        queue
    }
}

/// Whether this node can reach Redis, from its heartbeat: what `/readyz`
/// answers with the Redis engine.
#[derive(Debug, Clone)]
pub struct EngineHealth {
    heartbeat: Arc<liveness::Heartbeat>,
    max_age: std::time::Duration,
}

impl EngineHealth {
    /// Why the node is not ready, if it is not: Redis has not acknowledged
    /// a heartbeat for more than two intervals and a command timeout, or
    /// the other nodes cleaned this one up as dead.
    pub fn unready(&self) -> Option<&'static str> {
        if self.heartbeat.is_fenced() {
            return Some("fenced: the other nodes took this one for dead\n");
        }
        match self.heartbeat.age(unix_ms()) {
            Some(age) if age <= self.max_age => None,
            _ => Some("redis unreachable\n"),
        }
    }
}

/// One shard's writer; see the module docs.
struct Writer {
    store: Arc<InboxStore>,
    redis: ConnectionManager,
    shard: ShardId,
    shard_count: u32,
    /// This node's id: attaches name it, appends are not published to it.
    node: u64,
    deliver: Deliver,
}

impl Writer {
    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<(EngineTicket, EngineRequest)>) {
        let mut batch = Vec::new();
        while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let now_ms = unix_ms();
            let needed = needed(&batch);
            let sent: Vec<&EngineRequest> = batch
                .iter()
                .zip(&needed)
                .filter(|(_, needed)| **needed)
                .map(|((_, request), _)| request)
                .collect();
            let mut results = self.execute(&sent, now_ms).await.into_iter();
            for ((ticket, request), needed) in batch.drain(..).zip(needed) {
                let Some(result) = needed.then(|| results.next()).flatten() else {
                    // An ack a later one of the batch covers.
                    let reply = EngineReply::Done;
                    (self.deliver)(self.shard, ShardInput::EngineReply { ticket, reply });
                    continue;
                };
                let reply = match result {
                    Ok(value) => reply_to(&request, value).unwrap_or_else(|error| {
                        tracing::warn!(%error, "the redis engine answered something unexpected");
                        metrics::engine_error("reply");
                        EngineReply::Unavailable
                    }),
                    Err(error) => {
                        tracing::debug!(%error, "a redis engine request failed");
                        metrics::engine_error(error_kind(&error));
                        EngineReply::Unavailable
                    }
                };
                self.announce(&request, &reply, now_ms);
                (self.deliver)(self.shard, ShardInput::EngineReply { ticket, reply });
            }
        }
    }

    /// Runs `batch` as one pipeline, in order; one result per request.
    /// Scripts Redis lost (it restarted) are loaded again and the requests
    /// that found them missing are run once more, still in order: a
    /// missing script changed nothing.
    async fn execute(&mut self, batch: &[&EngineRequest], now_ms: u64) -> Vec<RedisResult<Value>> {
        let sent_at = std::time::Instant::now();
        let mut results = self.pipeline(batch, now_ms).await;
        metrics::engine_pipeline(batch.iter().map(|r| op_name(r)), sent_at.elapsed());
        let missing: Vec<usize> = (0..results.len())
            .filter(|&i| matches!(&results[i], Err(e) if inbox::is_no_script(e)))
            .collect();
        if !missing.is_empty() && self.store.load_scripts(&mut self.redis).await.is_ok() {
            let again: Vec<&EngineRequest> = missing.iter().map(|&i| batch[i]).collect();
            for (i, result) in missing.into_iter().zip(self.pipeline(&again, now_ms).await) {
                results[i] = result;
            }
        }
        results
    }

    /// Sends the commands of `requests` as one pipeline: one result each
    /// (all the same error when the pipeline as a whole failed).
    async fn pipeline(
        &mut self,
        requests: &[&EngineRequest],
        now_ms: u64,
    ) -> Vec<RedisResult<Value>> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for request in requests {
            pipe.add_command(command(&self.store, request, now_ms, self.node));
        }
        match pipe
            .query_async::<Vec<RedisResult<Value>>>(&mut self.redis)
            .await
        {
            Ok(results) if results.len() == requests.len() => results,
            Ok(results) => {
                let error = redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "pipeline answered the wrong number of replies",
                    format!("{} for {}", results.len(), requests.len()),
                ));
                vec![Err(error); requests.len()]
            }
            Err(error) => vec![Err(error); requests.len()],
        }
    }

    /// Hands the entries this writer appended to the shards that own their
    /// users here, for the users' sessions on this node.
    fn announce(&self, request: &EngineRequest, reply: &EngineReply, now_ms: u64) {
        let entries = match (request, reply) {
            (
                EngineRequest::Append {
                    user, message, own, ..
                },
                EngineReply::Appended { seq, first_seq, .. },
            ) => vec![(user, message, *own, *seq, *first_seq)],
            (
                EngineRequest::Deliver { to, message },
                EngineReply::Delivered {
                    seq,
                    first_seq,
                    own_seq,
                    own_first_seq,
                    ..
                },
            ) => vec![
                (to, message, false, *seq, *first_seq),
                (&message.from, message, true, *own_seq, *own_first_seq),
            ],
            _ => return,
        };
        for (user, message, own, seq, first_seq) in entries {
            let entry = AppendedEntry {
                user: user.clone(),
                seq,
                first_seq,
                header: header(message, own, now_ms),
                message: message.encoded.clone(),
            };
            let owner = shard_of(user, self.shard_count);
            (self.deliver)(owner, ShardInput::Appended(entry));
        }
    }
}

/// Which requests of `batch` must go to Redis: all but the acks that a
/// later ack of the same device in the batch covers (acks are cumulative;
/// clients ack every few messages, and a busy device's acks pile up while
/// a pipeline is out).
fn needed(batch: &[(EngineTicket, EngineRequest)]) -> Vec<bool> {
    let mut later: HashMap<(&UserId, &DeviceId), u64> = HashMap::new();
    let mut needed = vec![true; batch.len()];
    for (i, (_, request)) in batch.iter().enumerate().rev() {
        if let EngineRequest::Ack { user, device, seq } = request {
            match later.entry((user, device)) {
                Entry::Occupied(covering) if *covering.get() >= *seq => needed[i] = false,
                Entry::Occupied(mut lower) => {
                    lower.insert(*seq);
                }
                Entry::Vacant(none) => {
                    none.insert(*seq);
                }
            }
        }
    }
    needed
}

/// The `op` label of `request`'s metrics.
fn op_name(request: &EngineRequest) -> &'static str {
    match request {
        EngineRequest::Deliver { .. } => "deliver",
        EngineRequest::Append { .. } => "append",
        EngineRequest::Attach { .. } => "attach",
        EngineRequest::Fetch { .. } => "fetch",
        EngineRequest::Ack { .. } => "ack",
        EngineRequest::Detach { .. } => "detach",
    }
}

/// The `kind` label of a failed request's metric.
fn error_kind(error: &redis::RedisError) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal()
    {
        "connection"
    } else {
        "script"
    }
}

/// The entry header of `message` stored at `now_ms`.
fn header(message: &switchboard_core::StoredMessage, own: bool, now_ms: u64) -> EntryHeader {
    EntryHeader {
        stored_ms: now_ms,
        own,
        sender: sender_key(&message.from),
        device: device_key(&message.from_device),
    }
}

/// The Redis command of `request` from node `node`.
fn command(store: &InboxStore, request: &EngineRequest, now_ms: u64, node: u64) -> redis::Cmd {
    match request {
        EngineRequest::Deliver { to, message } => {
            let entry = header(message, false, now_ms).encode_with(&message.encoded);
            store.deliver_cmd(to, &message.from, &entry, now_ms, node)
        }
        EngineRequest::Append {
            user,
            message,
            own,
            check_share,
        } => {
            let entry = header(message, *own, now_ms).encode_with(&message.encoded);
            store.append_cmd(user, &entry, *own, *check_share, now_ms, node)
        }
        EngineRequest::Attach {
            user,
            device,
            resume,
            count,
        } => store.attach_cmd(user, device_key(device), *resume, *count, now_ms, node),
        EngineRequest::Fetch {
            user,
            device,
            after,
            count,
        } => store.fetch_cmd(user, device_key(device), *after, *count, now_ms),
        EngineRequest::Ack { user, device, seq } => {
            store.ack_cmd(user, device_key(device), *seq, now_ms)
        }
        EngineRequest::Detach { user, device } => {
            store.detach_cmd(user, device_key(device), now_ms)
        }
    }
}

/// The core's reply to `request` from Redis's answer.
fn reply_to(request: &EngineRequest, value: Value) -> Result<EngineReply, EngineError> {
    match request {
        EngineRequest::Deliver { .. } => inbox::parse_delivered(value),
        EngineRequest::Append { .. } => inbox::parse_appended(value),
        EngineRequest::Attach { .. } => inbox::parse_attached(value),
        EngineRequest::Fetch { .. } => Ok(EngineReply::Fetched(inbox::parse_window(value)?)),
        EngineRequest::Ack { .. } | EngineRequest::Detach { .. } => {
            inbox::parse_bounds(value)?;
            Ok(EngineReply::Done)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(user: &str, device: &str, seq: u64) -> (EngineTicket, EngineRequest) {
        let request = EngineRequest::Ack {
            user: UserId::parse(user).unwrap(),
            device: DeviceId::parse(device).unwrap(),
            seq,
        };
        (EngineTicket(seq), request)
    }

    #[test]
    fn an_ack_a_later_one_covers_is_not_sent() {
        let batch = [
            ack("bob", "phone", 3),
            ack("bob", "laptop", 4),
            ack("bob", "phone", 5),
            ack("ann", "phone", 1),
            // Lower than the one before (a replaced session's): both go.
            ack("bob", "laptop", 2),
        ];
        assert_eq!(needed(&batch), [false, true, true, true, true]);
    }
}
