//! The task that owns one [`Shard`]: it loops receive -> handle -> export
//! what the shard counted -> dispatch its outputs, sleeping until the
//! shard's next deadline. It is the only owner of the shard's state, so the core
//! needs no locks.
//!
//! A shard has one inbox, unbounded, from the endpoint drivers, other shards
//! and the server API: a sender never blocks, so two shards forwarding to
//! each other can never deadlock. What bounds it is each session's
//! [`Credit`]: a driver hands a shard at most that many of a session's
//! frames at once and stops reading the session's stream until credit comes
//! back, so QUIC flow control pushes back on the client. The inbox is FIFO,
//! which keeps every sender's order.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, Notify, Semaphore};

use super::api_calls::ApiCalls;
use super::directory::SessionDirectory;
use super::webhook::{OfflineEvent, Webhook};
use crate::engine::redis::EngineQueue;
use crate::metrics;
use switchboard_core::engine::EngineReply;
use switchboard_core::{Now, Output, Shard, ShardInput};
use switchboard_quic::WakeTimer;

/// Inputs to process per wake-up before dispatching outputs and yielding.
const BATCH: usize = 256;

/// An input for a shard. `credit` (for client frames) gets one permit back
/// once the shard has handled the frame and dispatched its replies, which
/// bounds the requests a session has in flight: a client that pipelines
/// requests waits for credit instead of flooding its own reply queue.
#[derive(Debug)]
pub(crate) struct SessionInput {
    pub(crate) input: ShardInput,
    pub(crate) credit: Option<Credit>,
}

/// A session's request credits: the driver takes a permit per client frame
/// it hands to the shard, and the shard task gives it back once the frame is
/// handled and its replies dispatched, waking the driver, which may be
/// waiting for it.
#[derive(Debug, Clone)]
pub(crate) struct Credit {
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) wake: Arc<Notify>,
}

impl Credit {
    pub(crate) fn give_back(&self) {
        self.permits.add_permits(1);
        self.wake.notify_one();
    }
}

impl From<ShardInput> for SessionInput {
    fn from(input: ShardInput) -> Self {
        SessionInput {
            input,
            credit: None,
        }
    }
}

/// How other tasks reach one shard: its inbox (see the module docs).
pub(crate) type ShardHandle = mpsc::UnboundedSender<SessionInput>;

/// The receiving end of a shard's inbox.
pub(crate) type ShardInbox = mpsc::UnboundedReceiver<SessionInput>;

/// The current time for the core.
pub(crate) fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    }
}

/// Runs `shard` until `Server::run` aborts the task at the end of shutdown
/// (every shard holds handles to all shards, so its inboxes never close).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_shard(
    index: usize,
    mut shard: Shard,
    mut inbox: ShardInbox,
    shards: Arc<[ShardHandle]>,
    directory: Arc<SessionDirectory>,
    api: Arc<ApiCalls>,
    webhook: Webhook,
    engine: Option<EngineQueue>,
) {
    let out = Dispatch {
        shards: &shards,
        directory: &directory,
        api: &api,
        webhook: &webhook,
        engine: engine.as_ref(),
    };
    let mut wake = WakeTimer::default();
    let queue_depth = metrics::shard_queue_depth(index);
    queue_depth.set(0.0);
    loop {
        wake.arm(shard.poll_timeout());
        let credit = tokio::select! {
            biased;
            Some(input) = inbox.recv() => handle_session_input(&mut shard, input),
            () = wake.fired() => {
                shard.handle_timeout(now());
                None
            }
            else => break,
        };
        out.dispatch(&mut shard);
        give_back(credit);
        // Take what else is already waiting before sleeping again.
        for _ in 0..BATCH {
            let Ok(input) = inbox.try_recv() else {
                break;
            };
            let credit = handle_session_input(&mut shard, input);
            out.dispatch(&mut shard);
            give_back(credit);
        }
        queue_depth.set(inbox.len() as f64);
    }
}

/// Hands `input` to the shard; returns its credit, to be given back once
/// the replies are dispatched.
fn handle_session_input(
    shard: &mut Shard,
    SessionInput { input, credit }: SessionInput,
) -> Option<Credit> {
    shard.handle(now(), input);
    credit
}

/// Gives a handled frame's credit back. Only after its replies are
/// dispatched: given back earlier, a driver on another thread could read
/// and hand over more requests while the replies to the last ones had not
/// reached it, and then take them all into the session's queue at once.
fn give_back(credit: Option<Credit>) {
    if let Some(credit) = credit {
        credit.give_back();
    }
}

/// Where a shard's outputs go.
struct Dispatch<'a> {
    shards: &'a [ShardHandle],
    directory: &'a SessionDirectory,
    api: &'a ApiCalls,
    webhook: &'a Webhook,
    /// The writer of this shard's engine requests (the Redis engine).
    engine: Option<&'a EngineQueue>,
}

impl Dispatch<'_> {
    /// Exports what the shard counted, then sends its outputs on: whoever
    /// sees an output's effect (a client, an API caller) finds the metrics
    /// of the input that caused it already counted.
    fn dispatch(&self, shard: &mut Shard) {
        crate::metrics::shard_stats(&shard.take_stats());
        while let Some(output) = shard.poll_output() {
            match output {
                Output::Transmit {
                    session,
                    frame,
                    class,
                } => self.directory.transmit(session, frame, class),
                Output::Close {
                    session,
                    code,
                    reason,
                } => self.directory.close(session, code, reason),
                Output::ApiReply { token, reply } => self.api.resolve(token, reply),
                Output::StoredForOffline { user, seq, message } => {
                    self.webhook.notify(OfflineEvent::new(&user, seq, &message))
                }
                Output::Forward {
                    shard: target,
                    input,
                } => {
                    // Fails only when the target task has ended, i.e. at shutdown.
                    let _ = self.shards[target.0 as usize].send(input.into());
                }
                Output::Engine { ticket, request } => {
                    let sent = self.engine.map(|engine| engine.send((ticket, request)));
                    if !matches!(sent, Some(Ok(()))) {
                        // No writer (in-memory shards never ask), or it
                        // ended: a retryable refusal, never a wait
                        // without end.
                        let reply = EngineReply::Unavailable;
                        let input = ShardInput::EngineReply { ticket, reply };
                        let _ = self.shards[shard.id().0 as usize].send(input.into());
                    }
                }
            }
        }
    }
}
