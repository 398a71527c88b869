//! [`SessionDirectory`]: the one shared map from [`SessionId`] to whoever
//! writes that session's connection, so any shard can write to any session:
//! the session's own task (task-per-connection shell), or the endpoint
//! driver that owns the connection (lean shell).
//!
//! Lock discipline: a DashMap guard is held only for a non-blocking
//! `try_send` or a `watch` send, never across `.await`.

use dashmap::DashMap;
use std::sync::{Arc, Mutex};
use switchboard_proto::close::CloseCode;
use switchboard_proto::frame::OutFrame;

use tokio::sync::{mpsc, watch, Notify};

use super::outbox::{Full, Outbox};
use crate::metrics;
use switchboard_core::{FrameClass, SessionId};

/// A frame queued for a session.
#[derive(Debug)]
pub(crate) struct QueuedFrame {
    pub(crate) frame: OutFrame,
    pub(crate) class: FrameClass,
}

/// A request to close a session, with the code and reason to send.
pub(crate) type CloseRequest = Option<(CloseCode, &'static str)>;

/// How to reach one session.
#[derive(Debug)]
pub(crate) enum SessionSink {
    /// A connection task's queue, its wake-up, and close signal.
    Task {
        outbox: Arc<Mutex<Outbox>>,
        ready: Arc<Notify>,
        close: watch::Sender<CloseRequest>,
    },
    /// An endpoint driver's command inbox and the connection's slot there.
    Driver {
        commands: mpsc::UnboundedSender<DriverCommand>,
        conn: usize,
    },
}

/// What shards ask of an endpoint driver for one of its sessions. The
/// session id guards against a connection slot reused by a newer session.
#[derive(Debug)]
pub(crate) enum DriverCommand {
    /// Write a frame.
    Frame {
        conn: usize,
        session: SessionId,
        queued: QueuedFrame,
    },
    /// Close the connection.
    Close {
        conn: usize,
        session: SessionId,
        code: CloseCode,
        reason: &'static str,
    },
    /// Shutdown has begun: send every session a GoAway (the driver refuses
    /// new connections once `ServerContext::draining` is set, before this).
    Drain,
    /// Draining is over: close every connection now.
    CloseAll,
}

/// The receiving side, owned by the connection task.
#[derive(Debug)]
pub(crate) struct SessionQueues {
    pub(crate) outbox: Arc<Mutex<Outbox>>,
    pub(crate) ready: Arc<Notify>,
    pub(crate) close: watch::Receiver<CloseRequest>,
}

impl SessionQueues {
    /// The next frame to write, if any.
    pub(crate) fn next_frame(&self) -> Option<QueuedFrame> {
        self.outbox.lock().expect("not poisoned").pop_front()
    }
}

/// Creates a session's queues (the limit is applied by `transmit`).
pub(crate) fn session_queues() -> (SessionSink, SessionQueues) {
    let outbox = Arc::new(Mutex::new(Outbox::default()));
    let ready = Arc::new(Notify::new());
    let (close_tx, close_rx) = watch::channel(None);
    (
        SessionSink::Task {
            outbox: outbox.clone(),
            ready: ready.clone(),
            close: close_tx,
        },
        SessionQueues {
            outbox,
            ready,
            close: close_rx,
        },
    )
}

/// All live sessions of this node, by id.
#[derive(Debug)]
pub(crate) struct SessionDirectory {
    /// Keyed by the server's own session numbers: foldhash, not SipHash.
    sessions: DashMap<SessionId, SessionSink, foldhash::fast::RandomState>,
    /// Frames a task-shell session may queue (`limits.session_queue_frames`).
    queue_limit: usize,
}

impl SessionDirectory {
    /// An empty directory whose task-shell sessions queue at most
    /// `queue_limit` frames.
    pub(crate) fn new(queue_limit: usize) -> Self {
        Self {
            sessions: DashMap::default(),
            queue_limit,
        }
    }
}

impl SessionDirectory {
    pub(crate) fn insert(&self, session: SessionId, sink: SessionSink) {
        self.sessions.insert(session, sink);
    }

    pub(crate) fn remove(&self, session: SessionId) {
        self.sessions.remove(&session);
    }

    /// Queues a frame; a session whose queue is full is closed as a slow
    /// consumer, and a message for a session already gone is counted dropped.
    pub(crate) fn transmit(&self, session: SessionId, frame: OutFrame, class: FrameClass) {
        let is_message = matches!(class, FrameClass::Message { .. });
        let Some(sink) = self.sessions.get(&session) else {
            if is_message {
                metrics::message_dropped("session_gone");
            }
            return;
        };
        let queued = QueuedFrame { frame, class };
        match &*sink {
            SessionSink::Task {
                outbox,
                ready,
                close,
            } => {
                let limit = self.queue_limit;
                let pushed = outbox.lock().expect("not poisoned").push(queued, limit);
                match pushed {
                    Ok(()) => ready.notify_one(),
                    Err(Full) => {
                        metrics::slow_consumer("queue_full");
                        if is_message {
                            metrics::message_dropped("slow_consumer");
                        }
                        close.send_replace(Some((CloseCode::SlowConsumer, "session queue full")));
                    }
                }
            }
            // The driver enforces the queue limit (it knows what is written).
            SessionSink::Driver { commands, conn } => {
                let command = DriverCommand::Frame {
                    conn: *conn,
                    session,
                    queued,
                };
                if commands.send(command).is_err() && is_message {
                    metrics::message_dropped("session_gone");
                }
            }
        }
    }

    /// Asks whoever owns the session's connection to close it with `code`.
    pub(crate) fn close(&self, session: SessionId, code: CloseCode, reason: &'static str) {
        let Some(sink) = self.sessions.get(&session) else {
            return;
        };
        match &*sink {
            SessionSink::Task { close, .. } => {
                close.send_replace(Some((code, reason)));
            }
            SessionSink::Driver { commands, conn } => {
                let _ = commands.send(DriverCommand::Close {
                    conn: *conn,
                    session,
                    code,
                    reason,
                });
            }
        }
    }

    /// Number of sessions registered.
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }
}
