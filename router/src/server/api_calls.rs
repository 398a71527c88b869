//! [`ApiCalls`]: how the server API's HTTP handlers reach the shards. A call
//! takes a fresh [`ApiToken`], parks a oneshot under it, hands the shard the
//! request, and waits; the shard task resolves the oneshot when the shard
//! answers with that token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::oneshot;

use super::shard_task::ShardHandle;
use switchboard_core::{ApiReply, ApiRequest, ApiToken, ShardInput};

/// Longest a call waits for its shard.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an API call got no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ApiCallError {
    /// The shard did not answer in time (overloaded, or shutting down).
    #[error("the router did not answer within {0:?}")]
    Timeout(Duration),
    /// The shard task is gone (shutdown).
    #[error("the router is shutting down")]
    Gone,
}

/// The pending server API calls.
#[derive(Debug)]
pub(crate) struct ApiCalls {
    shards: Arc<[ShardHandle]>,
    next: AtomicU64,
    pending: DashMap<u64, oneshot::Sender<ApiReply>>,
}

impl ApiCalls {
    pub(crate) fn new(shards: Arc<[ShardHandle]>) -> Self {
        Self {
            shards,
            next: AtomicU64::new(1),
            pending: DashMap::new(),
        }
    }

    /// Hands `request` to its shard and waits for the answer.
    pub(crate) async fn call(&self, request: ApiRequest) -> Result<ApiReply, ApiCallError> {
        let token = ApiToken(self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.pending.insert(token.0, tx);
        let shard = request.shard(self.shards.len() as u32).0 as usize;
        let input = ShardInput::Api { token, request };
        if self.shards[shard].send(input.into()).is_err() {
            self.pending.remove(&token.0);
            return Err(ApiCallError::Gone);
        }
        let outcome = tokio::time::timeout(CALL_TIMEOUT, rx).await;
        self.pending.remove(&token.0);
        match outcome {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(ApiCallError::Gone),
            Err(_) => Err(ApiCallError::Timeout(CALL_TIMEOUT)),
        }
    }

    /// Delivers a shard's answer (dropped if the call gave up waiting).
    pub(crate) fn resolve(&self, token: ApiToken, reply: ApiReply) {
        if let Some((_, tx)) = self.pending.remove(&token.0) {
            let _ = tx.send(reply);
        }
    }
}
