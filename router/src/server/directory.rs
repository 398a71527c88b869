//! [`SessionDirectory`]: the one shared map from [`SessionId`] to whoever
//! writes that session's connection, so any shard can write to any session:
//! the session's own task (task-per-connection shell), or the endpoint
//! driver that owns the connection (lean shell).
//!
//! Lock discipline: a DashMap guard is held only for a non-blocking
//! `try_send` or a `watch` send, never across `.await`.

use dashmap::DashMap;
use switchboard_proto::close::CloseCode;
use switchboard_proto::frame::OutFrame;
use tokio::sync::{mpsc, watch};

use crate::core::{FrameClass, SessionId};
use crate::metrics;

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
    /// A connection task's bounded queue and close signal.
    Task {
        frames: mpsc::Sender<QueuedFrame>,
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
}

/// The receiving side, owned by the connection task.
#[derive(Debug)]
pub(crate) struct SessionQueues {
    pub(crate) frames: mpsc::Receiver<QueuedFrame>,
    pub(crate) close: watch::Receiver<CloseRequest>,
}

/// Creates a session's queues, holding at most `capacity` frames.
pub(crate) fn session_queues(capacity: usize) -> (SessionSink, SessionQueues) {
    let (frames_tx, frames_rx) = mpsc::channel(capacity);
    let (close_tx, close_rx) = watch::channel(None);
    (
        SessionSink::Task {
            frames: frames_tx,
            close: close_tx,
        },
        SessionQueues {
            frames: frames_rx,
            close: close_rx,
        },
    )
}

/// All live sessions of this node, by id.
#[derive(Debug, Default)]
pub(crate) struct SessionDirectory {
    sessions: DashMap<SessionId, SessionSink>,
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
            SessionSink::Task { frames, close } => match frames.try_send(queued) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if is_message {
                        metrics::message_dropped("slow_consumer");
                    }
                    close.send_replace(Some((CloseCode::SlowConsumer, "session queue full")));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    if is_message {
                        metrics::message_dropped("session_gone");
                    }
                }
            },
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
