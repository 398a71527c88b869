//! The subscriber of a node of the Redis engine: on its own RESP3
//! connection, which subscribes again by itself after Redis comes back, it
//! listens on the node's channel, where other nodes publish the entries
//! they append for users with a device attached here (`append.lua`), and
//! hands each to the shard that owns the user. Once subscribed again after
//! losing Redis, it hands every shard `ShardInput::Resync`: what was
//! published meanwhile never came, so every mirror reads its inbox anew.

use redis::aio::ConnectionManagerConfig;
use redis::{IntoConnectionInfo, PushInfo, PushKind, Value};
use switchboard_core::engine::AppendedEntry;
use switchboard_core::placement::shard_of;
use switchboard_core::{ShardId, ShardInput};
use tokio::sync::mpsc;

use super::inbox;
use super::redis::Deliver;
use super::EngineError;
use crate::config::RedisConfig;
use crate::metrics;

/// Subscribes to `channel` on the Redis of `config` and runs the
/// subscriber as a task, handing inputs for `shard_count` shards to
/// `deliver`.
pub async fn spawn(
    config: &RedisConfig,
    channel: String,
    shard_count: u32,
    deliver: Deliver,
) -> Result<(), EngineError> {
    let url = config.urls.first().map(String::as_str).unwrap_or_default();
    let info = url.into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    let client = redis::Client::open(info.set_redis_settings(settings))?;
    let (pushes, mut received) = mpsc::unbounded_channel();
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_push_sender(pushes)
        .set_automatic_resubscription();
    let mut connection = client
        .get_connection_manager_with_config(manager_config)
        .await?;
    connection.subscribe(channel).await?;
    tokio::spawn(async move {
        // Holding the connection keeps the subscription.
        let _connection = connection;
        let mut lost = false;
        while let Some(push) = received.recv().await {
            match push.kind {
                PushKind::Message => handle_message(&push, shard_count, &deliver),
                PushKind::Disconnection => lost = true,
                PushKind::Subscribe if lost => {
                    lost = false;
                    metrics::engine_resubscribed();
                    tracing::info!("subscribed again after losing redis; resyncing inboxes");
                    for shard in 0..shard_count {
                        deliver(ShardId(shard), ShardInput::Resync);
                    }
                }
                _ => {}
            }
        }
    });
    Ok(())
}

/// Hands the entry a channel message carries to the shard of its user.
fn handle_message(push: &PushInfo, shard_count: u32, deliver: &Deliver) {
    let Some(Value::BulkString(payload)) = push.data.get(1) else {
        return;
    };
    match inbox::parse_published(payload) {
        Ok(published) => {
            let owner = shard_of(&published.user, shard_count);
            let entry = AppendedEntry {
                user: published.user,
                seq: published.seq,
                first_seq: published.first_seq,
                header: published.header,
                message: published.message,
            };
            deliver(owner, ShardInput::Appended(entry));
        }
        Err(error) => tracing::warn!(%error, "a node channel message was dropped"),
    }
}
