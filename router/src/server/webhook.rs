//! The webhook: shards report messages stored for users with no open
//! session (`Webhook::notify`, never blocking); one task batches them and
//! POSTs each batch as JSON to `webhook.url`, signed with HMAC-SHA256 when a
//! secret is configured, retrying a failed POST a few times with a growing
//! pause. Events beyond the queue, and batches that fail every attempt, are
//! dropped and counted: the inbox still holds the messages, only the push
//! hint is lost.
//!
//! Body: `{"events": [{"user", "seq", "message_id", "from", "from_device",
//! "room", "sent_at_ms", "payload_bytes"}]}` (README "Webhook"). Payloads are
//! not included: the backend decides what a push shows.

use std::sync::Arc;
use std::time::Duration;

use ring::hmac;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::WebhookConfig;
use crate::metrics;
use switchboard_core::{StoredMessage, UserId};

/// Header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-switchboard-signature";

/// One "stored for an offline user" event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OfflineEvent {
    /// The recipient with no open session.
    pub user: String,
    /// The message's sequence number in the recipient's inbox.
    pub seq: u64,
    /// Server-assigned message id.
    pub message_id: u64,
    /// Sender user id.
    pub from: String,
    /// Sender device id.
    pub from_device: String,
    /// The room, for a room message.
    pub room: Option<String>,
    /// When the router accepted the message, Unix milliseconds.
    pub sent_at_ms: u64,
    /// Size of the encoded message, bytes.
    pub payload_bytes: usize,
}

impl OfflineEvent {
    /// The event for `message` stored as `seq` in `user`'s inbox.
    pub fn new(user: &UserId, seq: u64, message: &StoredMessage) -> Self {
        Self {
            user: user.as_str().to_owned(),
            seq,
            message_id: message.message_id,
            from: message.from.as_str().to_owned(),
            from_device: message.from_device.as_str().to_owned(),
            room: message.room.as_ref().map(|r| r.as_str().to_owned()),
            sent_at_ms: message.sent_at_ms,
            payload_bytes: message.encoded.len(),
        }
    }
}

#[derive(Serialize)]
struct Batch<'a> {
    events: &'a [OfflineEvent],
}

/// Where shards hand events; cheap to clone. Does nothing without a URL.
#[derive(Debug, Clone, Default)]
pub struct Webhook {
    queue: Option<mpsc::Sender<OfflineEvent>>,
}

impl Webhook {
    /// Starts the sending task for `config` (nothing if `url` is empty).
    /// Fails when no HTTP client can be built (e.g. no CA certificates for
    /// https on this machine).
    pub(crate) fn start(config: &WebhookConfig, secret: Option<Vec<u8>>) -> Result<Self, String> {
        if config.url.is_empty() {
            return Ok(Self::default());
        }
        let (tx, rx) = mpsc::channel(config.queue_events);
        let sender = Sender {
            client: http_client(config.timeout)?,
            key: secret.map(|s| hmac::Key::new(hmac::HMAC_SHA256, &s)),
            config: config.clone(),
        };
        tokio::spawn(sender.run(rx));
        Ok(Self { queue: Some(tx) })
    }

    /// Queues `event`; drops it (counted) when the queue is full.
    pub(crate) fn notify(&self, event: OfflineEvent) {
        let Some(queue) = &self.queue else { return };
        if queue.try_send(event).is_err() {
            metrics::webhook_events("dropped_queue_full", 1);
        }
    }
}

fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    // reqwest is built without a crypto provider of its own; use ring, as
    // the QUIC side does. Installing fails harmlessly if one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("webhook HTTP client: {e}"))
}

struct Sender {
    client: reqwest::Client,
    key: Option<hmac::Key>,
    config: WebhookConfig,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<OfflineEvent>) {
        let mut batch = Vec::with_capacity(self.config.batch_max);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            let deadline = tokio::time::sleep(self.config.flush_interval);
            tokio::pin!(deadline);
            while batch.len() < self.config.batch_max {
                tokio::select! {
                    event = rx.recv() => match event {
                        Some(event) => batch.push(event),
                        None => break,
                    },
                    () = &mut deadline => break,
                }
            }
            self.post(&batch).await;
            batch.clear();
        }
    }

    /// POSTs one batch, retrying with a growing pause; counts the outcome.
    async fn post(&self, events: &[OfflineEvent]) {
        let body: Arc<[u8]> = serde_json::to_vec(&Batch { events })
            .expect("events serialize")
            .into();
        let signature = self
            .key
            .as_ref()
            .map(|key| format!("sha256={}", hex::encode(hmac::sign(key, &body).as_ref())));
        let mut pause = Duration::from_millis(200);
        for attempt in 1..=self.config.attempts {
            let mut request = self
                .client
                .post(&self.config.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
            if let Some(signature) = &signature {
                request = request.header(SIGNATURE_HEADER, signature);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    metrics::webhook_events("sent", events.len());
                    return;
                }
                Ok(response) => {
                    tracing::warn!(status = %response.status(), attempt, "webhook refused a batch");
                }
                Err(error) => tracing::warn!(%error, attempt, "webhook POST failed"),
            }
            if attempt < self.config.attempts {
                tokio::time::sleep(pause).await;
                pause *= 4;
            }
        }
        metrics::webhook_events("dropped_failed", events.len());
    }
}
