//! Engines: where what must outlive one node, or be shared by several,
//! is kept. The default is the in-memory engine, which is the routing core
//! itself; the Redis engine (issue 24) is being built here in stages.
//!
//! So far: [`inbox`], users' inboxes in Redis with the in-memory inbox's
//! rules; [`redis`], the engine that runs them for the core's shards
//! (`engine = "redis"`: inboxes outlive restarts, and several nodes share
//! one Redis); [`subscriber`], how a node hears of entries other nodes
//! append for its users; [`liveness`], which nodes are alive, from one
//! heartbeat key per node.

pub mod inbox;
pub mod liveness;
pub mod redis;
pub mod subscriber;

/// What a Redis operation of an engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Redis could not be reached or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis answered something this version does not understand.
    #[error("unexpected reply from redis: {0}")]
    Unexpected(String),
    /// A reply did not have the expected type.
    #[error("unexpected reply type from redis: {0}")]
    Parsing(#[from] ::redis::ParsingError),
}
