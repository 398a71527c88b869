//! Node liveness on Redis: one heartbeat key per node, never one per
//! session, so idle sessions cost Redis nothing.
//!
//! - A node [`register`]s once at start and gets a [`NodeId`] unique in the
//!   cluster for good (`INCR <prefix>:node-seq`): a restarted node is a new
//!   node, and what the old one claimed is cleaned up like any dead node's.
//! - Every `heartbeat_interval` it [`beat`]s: `SET <prefix>:node:<id> <ms>
//!   PX <node_timeout>` and `ZADD <prefix>:nodes <ms> <id>`, one script,
//!   one round trip. The key says "alive" by existing; the sorted set lets
//!   anyone list the nodes that stopped beating without scanning keys. A
//!   node that was cleaned up and forgotten is refused (fenced) instead of
//!   being listed again.
//! - [`silent_nodes`] lists the nodes whose last beat is older than
//!   `node_timeout`. One live node [`claim_cleanup`]s each (a script:
//!   only while it is still listed and silent, and `SET NX`, so only one
//!   does), clears what the dead node held, and [`forget`]s it;
//!   [`sweep`] does all three, and [`spawn_janitor`] sweeps every so often.
//!   A dead node is therefore cleaned up within `node_timeout` plus one
//!   sweep interval of its last beat.
//! - [`Heartbeat`] runs the beats as a task and keeps the time of the last
//!   one that Redis acknowledged, and whether the node found itself fenced.
//!
//! Times are Unix milliseconds from each node's clock, compared across
//! nodes: `node_timeout` must be many heartbeats long and the clocks kept by
//! NTP. (Taking the time from Redis instead is a step still to come.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionLike;

use super::EngineError;

/// A node's id in the cluster, unique for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where the liveness keys live and how often nodes beat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    /// Start of every key (`<prefix>:nodes`, …), so that several clusters
    /// can share one Redis.
    pub key_prefix: String,
    /// How often a node beats.
    pub heartbeat_interval: Duration,
    /// How long after its last beat a node counts as dead.
    pub node_timeout: Duration,
}

impl Liveness {
    fn node_seq_key(&self) -> String {
        format!("{}:node-seq", self.key_prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.key_prefix)
    }

    /// The key that exists while `node` beats.
    pub fn node_key(&self, node: NodeId) -> String {
        format!("{}:node:{node}", self.key_prefix)
    }

    fn cleanup_key(&self, node: NodeId) -> String {
        format!("{}:cleanup:{node}", self.key_prefix)
    }
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Takes a new node id and lists the node as beating at `now_ms`.
pub async fn register(
    redis: &mut impl ConnectionLike,
    liveness: &Liveness,
    now_ms: u64,
) -> Result<NodeId, EngineError> {
    let id: u64 = redis::cmd("INCR")
        .arg(liveness.node_seq_key())
        .query_async(redis)
        .await?;
    let node = NodeId(id);
    // A first beat lists the node; it is never refused.
    beat_script(redis, liveness, node, now_ms, true).await?;
    Ok(node)
}

/// The beat, in Redis so that it is atomic: a node no longer listed
/// (cleaned up and forgotten) is refused rather than brought back.
const BEAT: &str = r"
if ARGV[4] == '0' and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
";

async fn beat_script(
    redis: &mut impl ConnectionLike,
    liveness: &Liveness,
    node: NodeId,
    now_ms: u64,
    first: bool,
) -> Result<bool, EngineError> {
    let beaten: u8 = redis::Script::new(BEAT)
        .key(liveness.nodes_key())
        .key(liveness.node_key(node))
        .arg(node.0)
        .arg(now_ms)
        .arg(millis(liveness.node_timeout))
        .arg(u8::from(first))
        .invoke_async(redis)
        .await?;
    Ok(beaten == 1)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// One heartbeat of `node` at `now_ms`: true, or false when the node was
/// cleaned up and forgotten meanwhile (it is fenced: the others took its
/// users offline, so it must not carry on as if alive).
pub async fn beat(
    redis: &mut impl ConnectionLike,
    liveness: &Liveness,
    node: NodeId,
    now_ms: u64,
) -> Result<bool, EngineError> {
    beat_script(redis, liveness, node, now_ms, false).await
}

/// The nodes whose last beat is older than `node_timeout` at `now_ms`,
/// oldest first.
pub async fn silent_nodes(
    redis: &mut impl ConnectionLike,
    liveness: &Liveness,
    now_ms: u64,
) -> Result<Vec<NodeId>, EngineError> {
    let newest_silent = now_ms.saturating_sub(millis(liveness.node_timeout));
    let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(liveness.nodes_key())
        .arg("-inf")
        .arg(format!("({newest_silent}"))
        .query_async(redis)
        .await?;
    ids.iter()
        .map(|id| {
            id.parse()
                .map(NodeId)
                .map_err(|_| EngineError::Unexpected(format!("node id {id:?} in the nodes set")))
        })
        .collect()
}

/// Claims, at `now_ms`, the clean-up of silent node `dead` for `me`: true
/// for exactly one claimant, and only while `dead` is still listed and
/// still silent (a list read a moment ago may be stale: the node may have
/// beaten again, or been cleaned up and forgotten by another). The claim
/// lapses after `node_timeout`, leaving a claimant that died to another.
pub async fn claim_cleanup(
    redis: &mut impl ConnectionLike,
    liveness: &Liveness,
    dead: NodeId,
    me: NodeId,
    now_ms: u64,
) -> Result<bool, EngineError> {
    const CLAIM: &str = r"
local last = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not last or tonumber(last) >= tonumber(ARGV[2]) then return 0 end
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then return 1 end
return 0
";
    let cutoff = now_ms.saturating_sub(millis(liveness.node_timeout));
    let claimed: u8 = redis::Script::new(CLAIM)
        .key(liveness.nodes_key())
        .key(liveness.cleanup_key(dead))
        .arg(dead.0)
        .arg(cutoff)
        .arg(me.0)
        .arg(millis(liveness.node_timeout))
        .invoke_async(redis)
        .await?;
    Ok(claimed == 1)
}

/// Forgets a dead node once its clean-up is done. The claim is left to
/// lapse on its own: another node that listed the dead one as silent just
/// before it was forgotten then still finds it claimed, and does not clean
/// up a second time.
pub async fn forget(
    redis: &mut impl ConnectionLike,
    liveness: &Liveness,
    dead: NodeId,
) -> Result<(), EngineError> {
    redis::pipe()
        .cmd("ZREM")
        .arg(liveness.nodes_key())
        .arg(dead.0)
        .ignore()
        .cmd("DEL")
        .arg(liveness.node_key(dead))
        .ignore()
        .query_async::<()>(redis)
        .await?;
    Ok(())
}

/// What a live node does for a dead one (take its users offline, …);
/// an error leaves the dead node to be tried again once the claim lapses.
pub type Cleanup = Arc<dyn Fn(NodeId) -> CleanupFuture + Send + Sync>;

/// What a [`Cleanup`] returns.
pub type CleanupFuture = Pin<Box<dyn Future<Output = Result<(), EngineError>> + Send>>;

/// One sweep by node `me` at `now_ms`: every silent node other than `me`
/// that `me` claims is cleaned up and forgotten. Returns the nodes it
/// cleaned up. (A node that finds itself silent leaves itself alone: its
/// beats failed, and the others will clean up after it.)
pub async fn sweep(
    redis: &mut impl ConnectionLike,
    liveness: &Liveness,
    me: NodeId,
    now_ms: u64,
    cleanup: &Cleanup,
) -> Result<Vec<NodeId>, EngineError> {
    let mut cleaned = Vec::new();
    for dead in silent_nodes(redis, liveness, now_ms).await? {
        if dead == me || !claim_cleanup(redis, liveness, dead, me, now_ms).await? {
            continue;
        }
        cleanup(dead).await?;
        forget(redis, liveness, dead).await?;
        cleaned.push(dead);
    }
    Ok(cleaned)
}

/// Sweeps for node `me` every `interval` until the handle is aborted;
/// failures are logged and the next sweep tries again.
pub fn spawn_janitor<C>(
    mut redis: C,
    liveness: Liveness,
    me: NodeId,
    interval: Duration,
    cleanup: Cleanup,
) -> tokio::task::JoinHandle<()>
where
    C: ConnectionLike + Send + 'static,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match sweep(&mut redis, &liveness, me, unix_ms(), &cleanup).await {
                Ok(cleaned) => {
                    for dead in cleaned {
                        tracing::info!(node = %me, dead = %dead, "cleaned up after a dead node");
                    }
                }
                Err(error) => tracing::warn!(%error, node = %me, "sweep for dead nodes failed"),
            }
        }
    })
}

/// This node's heartbeat, run as a task by [`Heartbeat::spawn`].
#[derive(Debug)]
pub struct Heartbeat {
    node: NodeId,
    /// Unix ms of the last beat Redis acknowledged (0: none yet).
    last_beat_ms: AtomicU64,
    /// Beats that failed.
    failures: AtomicU64,
    /// The node was cleaned up by the others; it beats no more.
    fenced: AtomicBool,
}

impl Heartbeat {
    /// Beats for `node` every `heartbeat_interval` on `redis` (a
    /// reconnecting connection: a failed beat is counted and the next one
    /// tried on time) until the returned task is aborted, or until the node
    /// finds itself fenced (see [`beat`]). A beat Redis does not answer
    /// within half of `node_timeout` counts as failed.
    pub fn spawn<C>(
        mut redis: C,
        liveness: Liveness,
        node: NodeId,
    ) -> (Arc<Heartbeat>, tokio::task::JoinHandle<()>)
    where
        C: ConnectionLike + Send + 'static,
    {
        let heartbeat = Arc::new(Heartbeat {
            node,
            last_beat_ms: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            fenced: AtomicBool::new(false),
        });
        let state = heartbeat.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(liveness.heartbeat_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let now = unix_ms();
                // A beat Redis does not answer in time is given up, so that a
                // hung connection cannot stop the beats.
                let beat = tokio::time::timeout(
                    liveness.node_timeout / 2,
                    beat(&mut redis, &liveness, node, now),
                );
                match beat.await {
                    Ok(Ok(true)) => state.last_beat_ms.store(now, Ordering::Relaxed),
                    Ok(Ok(false)) => {
                        state.fenced.store(true, Ordering::Relaxed);
                        tracing::error!(node = %node, "this node was cleaned up as dead; it stops beating");
                        return;
                    }
                    Ok(Err(error)) => {
                        state.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, node = %node, "heartbeat failed");
                    }
                    Err(_) => {
                        state.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(node = %node, "heartbeat timed out");
                    }
                }
            }
        });
        (heartbeat, task)
    }

    /// The node beating.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// How long ago, at `now_ms`, Redis acknowledged the last beat; `None`
    /// before the first.
    pub fn age(&self, now_ms: u64) -> Option<Duration> {
        match self.last_beat_ms.load(Ordering::Relaxed) {
            0 => None,
            last => Some(Duration::from_millis(now_ms.saturating_sub(last))),
        }
    }

    /// Beats that failed so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Whether the others cleaned this node up as dead: it must then stop
    /// claiming its users, and register again as a new node to go on.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Relaxed)
    }
}
