//! Which engine keeps what must outlive one node or be shared by several
//! ([`EngineKind`]), and how the Redis engine reaches Redis
//! ([`RedisConfig`]). The default is the in-memory engine: one node, no
//! other service.

use std::time::Duration;

use redis::IntoConnectionInfo;
use serde::{Deserialize, Serialize};

use crate::engine::liveness::Liveness;

/// Where inboxes, rooms and presence are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// In the router's memory: one node, lost on restart. The default.
    #[default]
    Memory,
    /// In Redis (`[redis]`): kept across restarts and shared by every node
    /// of a cluster.
    Redis,
}

/// How the Redis engine reaches Redis; read only with `engine = "redis"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URLs: `redis://` or `redis+unix://` (this build has no TLS to
    /// Redis). One for a single Redis (or a primary), or seed nodes of a
    /// Redis Cluster.
    /// Default `["redis://127.0.0.1:6379"]`.
    pub urls: Vec<String>,
    /// The URLs are seeds of a Redis Cluster (hash slots spread over
    /// several primaries). Default false.
    pub cluster: bool,
    /// Start of every key and channel, so that several deployments can
    /// share one Redis. Default `sb`.
    pub key_prefix: String,
    /// Connections each node keeps to each Redis node; commands are
    /// pipelined on them. Default 2.
    pub connections: usize,
    /// Longest a Redis command may take before it counts as failed (a send
    /// then gets a retryable `SERVER_BUSY`). Default `1s`.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Longest a connection attempt may take. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Users are grouped into this many buckets, each one hash slot (and
    /// one subscription per node). A power of two; keep it at or above the
    /// number of users with sessions divided by 100, so each bucket's hash
    /// stays in Redis's compact encoding. Fixed for the life of the data:
    /// a node refuses to start against data written with another count.
    /// Default 4,096.
    pub buckets: u32,
    /// How often each node writes its heartbeat key (one key per node,
    /// never one per session). Default `2s`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How long after its last heartbeat a node counts as dead: its users
    /// go offline for watchers elsewhere, and a node that could not beat
    /// for this long stops serving its sessions. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub node_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            urls: vec!["redis://127.0.0.1:6379".into()],
            cluster: false,
            key_prefix: "sb".into(),
            connections: 2,
            command_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            buckets: 4096,
            heartbeat_interval: Duration::from_secs(2),
            node_timeout: Duration::from_secs(10),
        }
    }
}

impl RedisConfig {
    /// Every problem with these settings, as `(field, problem)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.urls.is_empty() {
            problems.push((
                "redis.urls",
                "engine = \"redis\" needs at least one URL".into(),
            ));
        }
        for url in &self.urls {
            if let Err(e) = url.as_str().into_connection_info() {
                problems.push(("redis.urls", format!("{url:?}: {e}")));
            }
        }
        if !self.cluster && self.urls.len() > 1 {
            problems.push((
                "redis.urls",
                "several URLs are seeds of a Redis Cluster: set redis.cluster = true, or give one URL"
                    .into(),
            ));
        }
        let prefix_ok = !self.key_prefix.is_empty()
            && self.key_prefix.len() <= 32
            && self
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !prefix_ok {
            problems.push((
                "redis.key_prefix",
                format!(
                    "{:?} must be 1 to 32 of A-Z a-z 0-9 - _ . (no braces: they would change the hash slot)",
                    self.key_prefix
                ),
            ));
        }
        if !(1..=64).contains(&self.connections) {
            problems.push((
                "redis.connections",
                format!("{} is outside 1 to 64", self.connections),
            ));
        }
        if !self.buckets.is_power_of_two() || self.buckets > 1 << 16 {
            problems.push((
                "redis.buckets",
                format!("{} must be a power of two from 1 to 65536", self.buckets),
            ));
        }
        let ms = Duration::from_millis;
        for (field, value, min, max) in [
            (
                "redis.command_timeout",
                self.command_timeout,
                ms(10),
                ms(60_000),
            ),
            (
                "redis.connect_timeout",
                self.connect_timeout,
                ms(10),
                ms(60_000),
            ),
            (
                "redis.heartbeat_interval",
                self.heartbeat_interval,
                ms(100),
                ms(60_000),
            ),
            (
                "redis.node_timeout",
                self.node_timeout,
                ms(300),
                ms(600_000),
            ),
        ] {
            if value < min || value > max {
                problems.push((
                    field,
                    format!(
                        "{} is outside {} to {}",
                        humantime::format_duration(value),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                ));
            }
        }
        if self.node_timeout < 3 * self.heartbeat_interval {
            problems.push((
                "redis.node_timeout",
                format!(
                    "{} is less than 3 x redis.heartbeat_interval = {}: one late beat would declare a live node dead",
                    humantime::format_duration(self.node_timeout),
                    humantime::format_duration(3 * self.heartbeat_interval)
                ),
            ));
        }
        problems
    }

    /// The liveness settings these give ([`crate::engine::liveness`]).
    pub fn liveness(&self) -> Liveness {
        Liveness {
            key_prefix: self.key_prefix.clone(),
            heartbeat_interval: self.heartbeat_interval,
            node_timeout: self.node_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(config: &RedisConfig) -> Vec<&'static str> {
        config.problems().into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(fields(&RedisConfig::default()), Vec::<&str>::new());
    }

    #[test]
    fn urls_must_parse_and_several_need_a_cluster() {
        let mut config = RedisConfig {
            urls: vec!["http://127.0.0.1:6379".into()],
            ..RedisConfig::default()
        };
        assert_eq!(fields(&config), ["redis.urls"]);
        config.urls = vec![];
        assert_eq!(fields(&config), ["redis.urls"]);
        config.urls = vec![
            "redis://127.0.0.1:7000".into(),
            "redis://127.0.0.1:7001".into(),
        ];
        assert_eq!(fields(&config), ["redis.urls"]);
        config.cluster = true;
        assert_eq!(fields(&config), Vec::<&str>::new());
        config.urls = vec!["redis+unix:///run/redis.sock".into()];
        assert_eq!(fields(&config), Vec::<&str>::new());
    }

    #[test]
    fn prefix_buckets_and_timeouts_are_bounded() {
        let config = RedisConfig {
            key_prefix: "sb{1}".into(),
            buckets: 1000,
            connections: 0,
            heartbeat_interval: Duration::from_secs(5),
            node_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_millis(1),
            ..RedisConfig::default()
        };
        assert_eq!(
            fields(&config),
            [
                "redis.key_prefix",
                "redis.connections",
                "redis.buckets",
                "redis.command_timeout",
                "redis.node_timeout"
            ]
        );
    }
}
