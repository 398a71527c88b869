//! Rate limits on what sessions, users and rooms send: token buckets
//! (GCRA, from `governor`) keyed by session, user, room and device, and a fixed
//! window of the distinct recipients each user reached in the last minute.
//!
//! The buckets run on a [`ShardClock`] the shard sets from each input's
//! [`crate::Now`], so the core keeps no clock of its own and tests drive
//! limits with virtual time. A key's state is one `u64`; a key whose bucket
//! is full again is indistinguishable from a new one and is dropped by
//! a sweep of the shard's limiters every 10 s, so idle sessions and users
//! cost nothing here.
//!
//! A refused request consumes nothing from the bucket that refused it. One
//! that passes the session's bucket and fails the user's has spent its
//! share of the session's: the session was over nothing, its user was.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{Quota, RateLimiter};

use crate::ids::{DeviceId, RoomId, SessionId, UserId};
pub use crate::stats::Throttle;

/// A token bucket: `per_second` tokens refill each second, up to `burst`.
/// A rate of 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: u32,
    /// Most tokens held (what may go at once after a quiet spell).
    pub burst: u32,
}

impl Rate {
    /// A bucket of `per_second` holding `burst`.
    pub const fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }

    fn quota(self) -> Option<Quota> {
        let per_second = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst.max(self.per_second))?;
        Some(Quota::per_second(per_second).allow_burst(burst))
    }
}

/// The messages and payload bytes one session, or one user over all their
/// sessions, may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendRates {
    /// `Send`, `Receipt` and `Signal` frames.
    pub messages: Rate,
    /// `Send.payload` bytes.
    pub bytes: Rate,
}

/// Every rate limit the core enforces; see PROTOCOL.md §11.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Per session.
    pub session: SendRates,
    /// Per user, over all their sessions on this node.
    pub user: SendRates,
    /// Deliveries (members reached) per second per room.
    pub room_deliveries: Rate,
    /// Distinct users one user may send direct messages to in a minute,
    /// beyond those already reached in that minute. 0: no limit.
    pub new_recipients_per_minute: u32,
    /// Sessions one device (user and device id) may open per minute: a
    /// device that reconnects in a loop is refused for a back-off.
    /// 0: no limit.
    pub device_connects_per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            session: SendRates {
                messages: Rate::new(50, 200),
                bytes: Rate::new(1 << 20, 4 << 20),
            },
            user: SendRates {
                messages: Rate::new(100, 400),
                bytes: Rate::new(2 << 20, 8 << 20),
            },
            room_deliveries: Rate::new(200_000, 200_000),
            new_recipients_per_minute: 600,
            device_connects_per_minute: 30,
        }
    }
}

impl RateLimits {
    /// No limit at all.
    pub fn unlimited() -> Self {
        let free = SendRates {
            messages: Rate::new(0, 0),
            bytes: Rate::new(0, 0),
        };
        Self {
            session: free,
            user: free,
            room_deliveries: Rate::new(0, 0),
            new_recipients_per_minute: 0,
            device_connects_per_minute: 0,
        }
    }
}

/// The shard's clock for the buckets: time since the shard started, set
/// by the shard at every input. Cloned into each limiter; all read one cell.
#[derive(Debug, Clone)]
pub struct ShardClock {
    start: Instant,
    elapsed_nanos: Arc<AtomicU64>,
}

impl ShardClock {
    fn new(start: Instant) -> Self {
        Self {
            start,
            elapsed_nanos: Arc::default(),
        }
    }

    fn set(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.start).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
        // Time never goes back for the buckets, whatever an input carries.
        self.elapsed_nanos.fetch_max(nanos, Ordering::Relaxed);
    }
}

impl Clock for ShardClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos.load(Ordering::Relaxed))
    }
}

type Keyed<K> = RateLimiter<K, governor::state::keyed::HashMapStateStore<K>, ShardClock, NoOp>;
type NoOp = governor::middleware::NoOpMiddleware<Duration>;

/// One limit, keyed: `None` when its rate is 0 (no limit).
#[derive(Debug)]
struct Bucket<K: std::hash::Hash + Eq + Clone>(Option<Keyed<K>>);

impl<K: std::hash::Hash + Eq + Clone> Bucket<K> {
    fn new(rate: Rate, clock: &ShardClock) -> Self {
        Self::with_quota(rate.quota(), clock)
    }

    /// `per_minute` a minute, all of them at once at most.
    fn per_minute(per_minute: u32, clock: &ShardClock) -> Self {
        let quota = NonZeroU32::new(per_minute).map(Quota::per_minute);
        Self::with_quota(quota, clock)
    }

    fn with_quota(quota: Option<Quota>, clock: &ShardClock) -> Self {
        Self(quota.map(|quota| RateLimiter::hashmap_with_clock(quota, clock.clone())))
    }

    /// Takes `n` tokens for `key`, or says how long until they are there.
    fn take(&self, key: &K, n: u32, clock: &ShardClock) -> Result<(), Duration> {
        let (Some(limiter), Some(n)) = (&self.0, NonZeroU32::new(n)) else {
            return Ok(());
        };
        match limiter.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(clock.now())),
            // More than the burst at once: never fits; the caller's own
            // limits (payload, room size) keep this from happening with a
            // valid configuration. Say "in a second" rather than "never".
            Err(_) => Err(Duration::from_secs(1)),
        }
    }

    fn sweep(&self) {
        if let Some(limiter) = &self.0 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |l| l.len())
    }
}

/// A refusal by a rate limit: which one, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// The limit.
    pub by: Throttle,
    /// How long until the same request fits.
    pub retry_after: Duration,
}

/// The buckets of one shard.
#[derive(Debug)]
pub(crate) struct Limiters {
    clock: ShardClock,
    session_messages: Bucket<SessionId>,
    session_bytes: Bucket<SessionId>,
    user_messages: Bucket<UserId>,
    user_bytes: Bucket<UserId>,
    room_deliveries: Bucket<RoomId>,
    device_connects: Bucket<(UserId, DeviceId)>,
    new_recipients_per_minute: u32,
}

/// How long a window of new recipients lasts.
const RECIPIENT_WINDOW: Duration = Duration::from_secs(60);

/// The distinct users one user sent direct messages to in the current
/// minute (kept in the user's record while they send).
#[derive(Debug)]
pub(crate) struct RecipientWindow {
    started: Instant,
    reached: HashSet<UserId, foldhash::fast::FixedState>,
}

impl Limiters {
    pub(crate) fn new(limits: &RateLimits, start: Instant) -> Self {
        let clock = ShardClock::new(start);
        Self {
            session_messages: Bucket::new(limits.session.messages, &clock),
            session_bytes: Bucket::new(limits.session.bytes, &clock),
            user_messages: Bucket::new(limits.user.messages, &clock),
            user_bytes: Bucket::new(limits.user.bytes, &clock),
            room_deliveries: Bucket::new(limits.room_deliveries, &clock),
            device_connects: Bucket::per_minute(limits.device_connects_per_minute, &clock),
            new_recipients_per_minute: limits.new_recipients_per_minute,
            clock,
        }
    }

    /// Moves the buckets' clock to `now`.
    pub(crate) fn set_now(&self, now: Instant) {
        self.clock.set(now);
    }

    /// One message of `bytes` payload bytes from `session` of `user`.
    pub(crate) fn message(
        &self,
        session: SessionId,
        user: &UserId,
        bytes: usize,
    ) -> Result<(), Throttled> {
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        let by = |by| move |retry_after| Throttled { by, retry_after };
        self.session_messages
            .take(&session, 1, &self.clock)
            .and_then(|()| self.session_bytes.take(&session, bytes, &self.clock))
            .map_err(by(Throttle::Session))?;
        self.user_messages
            .take(user, 1, &self.clock)
            .and_then(|()| self.user_bytes.take(user, bytes, &self.clock))
            .map_err(by(Throttle::User))
    }

    /// A room message reaching `members` members.
    pub(crate) fn room(&self, room: &RoomId, members: usize) -> Result<(), Throttled> {
        let members = u32::try_from(members).unwrap_or(u32::MAX);
        self.room_deliveries
            .take(room, members, &self.clock)
            .map_err(|retry_after| Throttled {
                by: Throttle::Room,
                retry_after,
            })
    }

    /// A new session of `device` of `user`.
    pub(crate) fn connect(&self, user: &UserId, device: &DeviceId) -> Result<(), Throttled> {
        let key = (user.clone(), device.clone());
        self.device_connects
            .take(&key, 1, &self.clock)
            .map_err(|retry_after| Throttled {
                by: Throttle::Reconnects,
                retry_after,
            })
    }

    /// Whether `from` may send to `to` now: a user reached in this minute
    /// always may; a new one only while the minute's count is not spent.
    pub(crate) fn recipient(
        &self,
        window: &mut Option<Box<RecipientWindow>>,
        to: &UserId,
        now: Instant,
    ) -> Result<(), Throttled> {
        let limit = self.new_recipients_per_minute as usize;
        if limit == 0 {
            return Ok(());
        }
        let window = match window {
            Some(w) if now < w.started + RECIPIENT_WINDOW => w,
            _ => window.insert(Box::new(RecipientWindow {
                started: now,
                reached: HashSet::default(),
            })),
        };
        if window.reached.contains(to) {
            return Ok(());
        }
        if window.reached.len() >= limit {
            return Err(Throttled {
                by: Throttle::NewRecipients,
                retry_after: (window.started + RECIPIENT_WINDOW).saturating_duration_since(now),
            });
        }
        window.reached.insert(to.clone());
        Ok(())
    }

    /// Drops the state of every key whose bucket is full again.
    pub(crate) fn sweep(&self) {
        self.session_messages.sweep();
        self.session_bytes.sweep();
        self.user_messages.sweep();
        self.user_bytes.sweep();
        self.room_deliveries.sweep();
        self.device_connects.sweep();
    }

    /// Keys with state (for tests of the sweep).
    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        self.session_messages.len()
            + self.session_bytes.len()
            + self.user_messages.len()
            + self.user_bytes.len()
            + self.room_deliveries.len()
            + self.device_connects.len()
    }
}

impl RecipientWindow {
    /// True once the window is over (the record may drop it).
    pub(crate) fn is_over(&self, now: Instant) -> bool {
        now >= self.started + RECIPIENT_WINDOW
    }
}
