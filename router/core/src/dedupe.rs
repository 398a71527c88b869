//! [`DedupeWindow`]: the idempotency keys (`Send.client_msg_id`) one user used
//! recently, each with the result of the first `Send` that carried it, so a
//! resend after a lost result gets that result again instead of a second
//! message.
//!
//! Keys are forgotten after the window's duration or, oldest first, beyond
//! its count, checked whenever the window is used (no timer). A key whose
//! first Send is still being routed is never forgotten, so every repeat
//! waiting for it gets its answer.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use switchboard_proto::v1::ErrorCode;

use super::api::Requester;

/// Bounds of each user's idempotency window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupeLimits {
    /// How long a key is remembered.
    pub window: Duration,
    /// Most keys remembered per user.
    pub max_keys: usize,
}

impl Default for DedupeLimits {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            max_keys: 256,
        }
    }
}

/// What the first `Send` with a key got.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendOutcome {
    /// The message id.
    pub message_id: u64,
    /// Recipient devices reached at once.
    pub devices: u32,
    /// The sender's own inbox sequence number of its copy.
    pub seq: u64,
}

/// Why a `Send` was not stored: the code its `SendResult` carries and,
/// for a refusal that passes (a rate limit, a full node), when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendError {
    /// The `SendResult.error`.
    pub code: ErrorCode,
    /// The `SendResult.retry_after_ms`: 0 unless retrying later can succeed.
    pub retry_after_ms: u32,
}

impl From<ErrorCode> for SendError {
    fn from(code: ErrorCode) -> Self {
        Self {
            code,
            retry_after_ms: 0,
        }
    }
}

/// A remembered key.
#[derive(Debug)]
pub enum KeyState {
    /// The first Send is still being routed; these repeats wait for its
    /// result.
    Pending(Vec<Requester>),
    /// The first Send's result.
    Done(SendOutcome),
}

/// One user's recent idempotency keys.
#[derive(Debug, Default)]
pub struct DedupeWindow {
    keys: HashMap<Box<str>, KeyState>,
    /// Keys in the order they were first used, with that time.
    order: VecDeque<(Instant, Box<str>)>,
}

impl DedupeWindow {
    /// The state of `key`, after forgetting what is too old.
    pub fn get_mut(
        &mut self,
        key: &str,
        now: Instant,
        limits: &DedupeLimits,
    ) -> Option<&mut KeyState> {
        self.forget_expired(now, limits);
        self.keys.get_mut(key)
    }

    /// Remembers a new key as pending.
    pub fn insert_pending(&mut self, key: &str, now: Instant, limits: &DedupeLimits) {
        self.forget_expired(now, limits);
        let key: Box<str> = key.into();
        self.order.push_back((now, key.clone()));
        self.keys.insert(key, KeyState::Pending(Vec::new()));
        while self.order.len() > limits.max_keys && self.front_is_done() {
            if let Some((_, old)) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
    }

    /// True when the oldest key's first Send has its result.
    fn front_is_done(&self) -> bool {
        self.order
            .front()
            .is_some_and(|(_, key)| matches!(self.keys.get(key), Some(KeyState::Done(_)) | None))
    }

    /// Records the first Send's result; returns the repeats waiting for it.
    pub fn complete(&mut self, key: &str, outcome: SendOutcome) -> Vec<Requester> {
        match self.keys.get_mut(key) {
            Some(state) => match std::mem::replace(state, KeyState::Done(outcome)) {
                KeyState::Pending(waiting) => waiting,
                KeyState::Done(_) => Vec::new(),
            },
            None => Vec::new(), // forgotten meanwhile (count limit)
        }
    }

    /// Forgets `key`: its Send failed, so a resend is a new attempt.
    pub fn remove(&mut self, key: &str) -> Vec<Requester> {
        self.order.retain(|(_, k)| &**k != key);
        match self.keys.remove(key) {
            Some(KeyState::Pending(waiting)) => waiting,
            _ => Vec::new(),
        }
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Forgets every key older than the window (whose Send is settled).
    pub fn forget_expired(&mut self, now: Instant, limits: &DedupeLimits) {
        while let Some((at, _)) = self.order.front() {
            if *at + limits.window > now || !self.front_is_done() {
                break;
            }
            let (_, key) = self.order.pop_front().expect("front exists");
            self.keys.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SessionId;

    const OUTCOME: SendOutcome = SendOutcome {
        message_id: 7,
        devices: 1,
        seq: 3,
    };

    /// Finds `key` pending at `at`, waits on it (as a repeated send does)
    /// and checks that its result hands the waiter back.
    fn wait_for_result(window: &mut DedupeWindow, key: &str, at: Instant, limits: &DedupeLimits) {
        let waiter = Requester::Session(SessionId(1), 9);
        match window.get_mut(key, at, limits) {
            Some(KeyState::Pending(waiting)) => waiting.push(waiter),
            other => panic!("expected {key} pending, got {other:?}"),
        }
        assert_eq!(window.complete(key, OUTCOME), [waiter]);
    }

    #[test]
    fn a_key_is_pending_then_done_and_hands_back_its_waiters() {
        let now = Instant::now();
        let limits = DedupeLimits::default();
        let mut window = DedupeWindow::default();
        assert!(window.get_mut("k", now, &limits).is_none());
        window.insert_pending("k", now, &limits);
        wait_for_result(&mut window, "k", now, &limits);
        assert!(matches!(
            window.get_mut("k", now, &limits),
            Some(KeyState::Done(OUTCOME))
        ));
    }

    #[test]
    fn keys_expire_by_age_and_by_count() {
        let now = Instant::now();
        let limits = DedupeLimits {
            window: Duration::from_secs(10),
            max_keys: 2,
        };
        let mut window = DedupeWindow::default();
        for (key, at) in [("a", 0), ("b", 5), ("c", 6)] {
            window.insert_pending(key, now + Duration::from_secs(at), &limits);
            window.complete(key, OUTCOME);
        }
        assert!(window.get_mut("a", now, &limits).is_none(), "count limit");
        let later = now + Duration::from_secs(15);
        assert!(window.get_mut("b", later, &limits).is_none(), "aged out");
        assert!(window.get_mut("c", later, &limits).is_some());
        assert_eq!(window.remove("c"), []);
        assert!(window.is_empty());
    }

    #[test]
    fn a_pending_key_outlives_the_window_until_its_result() {
        let now = Instant::now();
        let limits = DedupeLimits {
            window: Duration::from_secs(10),
            max_keys: 1,
        };
        let mut window = DedupeWindow::default();
        window.insert_pending("slow", now, &limits);
        window.insert_pending("next", now, &limits);
        let later = now + Duration::from_secs(60);
        wait_for_result(&mut window, "slow", later, &limits);
        assert!(
            window.get_mut("slow", later, &limits).is_none(),
            "then it ages out"
        );
    }
}
