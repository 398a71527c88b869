//! [`SessionDirectory`]: the one shared map from [`SessionId`] to the
//! endpoint driver that owns that session's connection, so any shard can
//! write to any session. Writing is a [`DriverCommand`] on the driver's
//! channel: the driver owns the connection and enforces the session's queue
//! limit (it knows what has been written).
//!
//! Lock discipline: a DashMap guard is held only for a non-blocking channel
//! send, never across `.await`.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use switchboard_core::{FrameClass, SessionId};
use switchboard_proto::close::CloseCode;
use switchboard_proto::frame::OutFrame;
use tokio::sync::{mpsc, Notify};

use crate::metrics;

/// A frame queued for a session.
#[derive(Debug)]
pub(crate) struct QueuedFrame {
    pub(crate) frame: OutFrame,
    pub(crate) class: FrameClass,
}

/// Where one session lives: its driver's command channel and the
/// connection's handle there.
#[derive(Debug)]
pub(crate) struct SessionRoute {
    pub(crate) commands: mpsc::UnboundedSender<DriverCommand>,
    pub(crate) conn: usize,
}

/// What shards ask of an endpoint driver for one of its sessions. The
/// session id guards against a connection handle reused by a newer session.
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
        reason: Cow<'static, str>,
    },
    /// Shutdown has begun: send every session a GoAway (the driver refuses
    /// new connections once `ServerContext::draining` is set, before this).
    Drain,
    /// Draining is over: close every connection now.
    CloseAll,
}

/// All live sessions of this node, by id.
#[derive(Debug, Default)]
pub(crate) struct SessionDirectory {
    /// Keyed by the server's own session numbers: foldhash, not SipHash.
    sessions: DashMap<SessionId, SessionRoute, foldhash::fast::RandomState>,
    /// How many sessions it holds, kept apart from the map: counting a
    /// DashMap locks each of its shards.
    len: AtomicUsize,
    /// Notified when the last session leaves (shutdown waits for it).
    emptied: Notify,
}

impl SessionDirectory {
    pub(crate) fn insert(&self, session: SessionId, route: SessionRoute) {
        if self.sessions.insert(session, route).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn remove(&self, session: SessionId) {
        if self.sessions.remove(&session).is_some() && self.len.fetch_sub(1, Ordering::Relaxed) == 1
        {
            self.emptied.notify_waiters();
        }
    }

    /// Resolves once no session is left.
    pub(crate) async fn wait_until_empty(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            // Registered before the check, so a removal between the check
            // and the wait is not missed.
            emptied.as_mut().enable();
            if self.len() == 0 {
                return;
            }
            emptied.await;
        }
    }

    /// Queues a frame for `session`; a message for a session already gone
    /// is counted dropped.
    pub(crate) fn transmit(&self, session: SessionId, frame: OutFrame, class: FrameClass) {
        let is_message = matches!(class, FrameClass::Message { .. });
        let sent = self.sessions.get(&session).is_some_and(|route| {
            let command = DriverCommand::Frame {
                conn: route.conn,
                session,
                queued: QueuedFrame { frame, class },
            };
            route.commands.send(command).is_ok()
        });
        if !sent && is_message {
            metrics::message_dropped("session_gone");
        }
    }

    /// Asks the driver that owns the session's connection to close it with
    /// `code`.
    pub(crate) fn close(&self, session: SessionId, code: CloseCode, reason: Cow<'static, str>) {
        if let Some(route) = self.sessions.get(&session) {
            let _ = route.commands.send(DriverCommand::Close {
                conn: route.conn,
                session,
                code,
                reason,
            });
        }
    }

    /// Number of sessions registered.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_for_an_empty_directory_ends_when_the_last_session_leaves() {
        let directory = std::sync::Arc::new(SessionDirectory::default());
        directory.wait_until_empty().await;
        let (commands, _receiver) = mpsc::unbounded_channel();
        for id in [1, 2] {
            let route = SessionRoute {
                commands: commands.clone(),
                conn: id,
            };
            directory.insert(SessionId(id as u64), route);
        }
        let waiting = tokio::spawn({
            let directory = directory.clone();
            async move { directory.wait_until_empty().await }
        });
        directory.remove(SessionId(1));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one session is left");
        directory.remove(SessionId(2));
        waiting.await.unwrap();
    }
}
