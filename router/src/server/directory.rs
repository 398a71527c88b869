//! [`SessionDirectory`]: the one shared map from [`SessionId`] to the queue of
//! the task that owns that session's connection, so any shard can write to
//! any session.
//!
//! Lock discipline: a DashMap guard is held only for a non-blocking
//! `try_send` or a `watch` send, never across `.await`.

use bytes::Bytes;
use dashmap::DashMap;
use switchboard_proto::close::CloseCode;
use tokio::sync::{mpsc, watch};

use crate::core::{FrameClass, SessionId};
use crate::metrics;

/// A frame queued for a session.
#[derive(Debug)]
pub(crate) struct QueuedFrame {
    pub(crate) frame: Bytes,
    pub(crate) class: FrameClass,
}

/// A request to close a session, with the code and reason to send.
pub(crate) type CloseRequest = Option<(CloseCode, &'static str)>;

/// The sending side of one session's queues.
#[derive(Debug)]
pub(crate) struct SessionSink {
    frames: mpsc::Sender<QueuedFrame>,
    close: watch::Sender<CloseRequest>,
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
        SessionSink {
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
    pub(crate) fn transmit(&self, session: SessionId, frame: Bytes, class: FrameClass) {
        let Some(sink) = self.sessions.get(&session) else {
            if matches!(class, FrameClass::Message { .. }) {
                metrics::message_dropped("session_gone");
            }
            return;
        };
        match sink.frames.try_send(QueuedFrame { frame, class }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(queued)) => {
                if matches!(queued.class, FrameClass::Message { .. }) {
                    metrics::message_dropped("slow_consumer");
                }
                sink.close
                    .send_replace(Some((CloseCode::SlowConsumer, "session queue full")));
            }
            Err(mpsc::error::TrySendError::Closed(queued)) => {
                if matches!(queued.class, FrameClass::Message { .. }) {
                    metrics::message_dropped("session_gone");
                }
            }
        }
    }

    /// Asks the session's task to close the connection with `code`.
    pub(crate) fn close(&self, session: SessionId, code: CloseCode, reason: &'static str) {
        if let Some(sink) = self.sessions.get(&session) {
            sink.close.send_replace(Some((code, reason)));
        }
    }

    /// Number of sessions registered.
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }
}
