//! [`TimerWheel`]: the deadlines of every connection a driver owns, in one
//! hierarchical timing wheel instead of a timer per connection.
//!
//! A driver moves a connection's deadline after nearly every packet
//! (quinn-proto's delayed-ACK, loss-detection and keep-alive timers take
//! turns being the earliest), so moving one must be cheap: here it is
//! unlinking a node from one slot's list and linking it into another, with
//! no search and no allocation. (In an ordered set, each move would be a
//! search and a rebalance, at one move per packet.)
//!
//! A driver sleeps on one [`WakeTimer`], re-armed only when the wheel's next
//! wake-up moves (at most once a tick), rather than registering a new tokio
//! timer on every turn.
//!
//! Time is counted in ticks of [`TICK`] from the wheel's creation. Four
//! levels of 64 slots each cover 64 ticks, 64², 64³ and 64⁴ ticks (~4.7 h);
//! a deadline is filed on the lowest level whose slot tells it apart from
//! the current tick, and moves down a level when the wheel reaches its slot,
//! so each deadline is touched at most once per level. Deadlines past the
//! top level's current block wait in an overflow list, filed again when the
//! wheel enters the next block. Deadlines fire up to one tick late, never
//! early.

use std::pin::Pin;
use std::time::{Duration, Instant};

/// The wheel's resolution: deadlines fire at most this late. Under a
/// second, and a whole fraction of one (`ticks_and_rest`).
const TICK: Duration = Duration::from_millis(1);

/// Slots per level, and bits of the tick count each level covers.
const SLOTS: usize = 64;
const SLOT_BITS: u32 = 6;
const LEVELS: usize = 4;
/// Ticks the whole wheel spans: a block of the top level.
const SPAN_BITS: u32 = SLOT_BITS * LEVELS as u32;
/// The position of the overflow list, after every level's slots: it is
/// "level `LEVELS`, slot 0".
const OVERFLOW: usize = LEVELS * SLOTS;

/// No node: the end of a slot's list, or a handle with no deadline.
const NIL: u32 = u32::MAX;

/// One handle's place in the wheel.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// The deadline, exactly as set.
    deadline: Instant,
    /// `level * SLOTS + slot` (or [`OVERFLOW`]), or `NIL` when the handle
    /// has no deadline.
    position: u32,
    prev: u32,
    next: u32,
}

/// Deadlines by connection handle (the dense, reused indexes of a
/// [`super::ConnTable`]); a handle has at most one.
#[derive(Debug)]
pub struct TimerWheel {
    origin: Instant,
    /// The tick up to which every deadline has been handed out or filed
    /// further down.
    elapsed: u64,
    /// Nodes by handle; grows to the largest handle seen.
    nodes: Vec<Node>,
    /// First node of each slot's list, by `level * SLOTS + slot`, then the
    /// overflow list's.
    heads: Vec<u32>,
    /// Per level, a bit per slot that holds any node; last, bit 0 for the
    /// overflow list.
    occupied: [u64; LEVELS + 1],
    len: usize,
}

impl TimerWheel {
    /// An empty wheel counting ticks from `origin`.
    pub fn new(origin: Instant) -> Self {
        TimerWheel {
            origin,
            elapsed: 0,
            nodes: Vec::new(),
            heads: vec![NIL; OVERFLOW + 1],
            occupied: [0; LEVELS + 1],
            len: 0,
        }
    }

    /// Number of handles with a deadline.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no handle has a deadline.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `handle`'s deadline.
    pub fn deadline(&self, handle: usize) -> Option<Instant> {
        self.nodes
            .get(handle)
            .filter(|node| node.position != NIL)
            .map(|node| node.deadline)
    }

    /// Sets `handle`'s deadline to `deadline`, replacing the one it had;
    /// `None` removes it.
    pub fn set(&mut self, handle: usize, deadline: Option<Instant>) {
        if self.deadline(handle) == deadline {
            return;
        }
        if handle >= self.nodes.len() {
            assert!(handle < NIL as usize, "timer handle out of range");
            self.nodes.resize(
                handle + 1,
                Node {
                    deadline: self.origin,
                    position: NIL,
                    prev: NIL,
                    next: NIL,
                },
            );
        }
        let index = handle as u32;
        if self.nodes[handle].position != NIL {
            self.unlink(index);
            self.len -= 1;
        }
        if let Some(deadline) = deadline {
            self.nodes[handle].deadline = deadline;
            self.file(index);
            self.len += 1;
        }
    }

    /// When to call [`TimerWheel::pop_due`] next: the end of the earliest
    /// deadline's tick, or earlier, when the wheel must first move a slot
    /// of deadlines a level down. A driver sleeps until then.
    pub fn next(&self) -> Option<Instant> {
        let tick = self.next_expiry()?.0;
        Some(self.origin + Duration::from_nanos(tick * TICK.as_nanos() as u64))
    }

    /// Takes a handle whose deadline is due at `now` and clears its
    /// deadline; `None` once none is.
    pub fn pop_due(&mut self, now: Instant) -> Option<usize> {
        let now_tick = self.ticks_and_rest(now).0;
        while let Some((tick, level, slot)) = self.next_expiry() {
            if tick > now_tick {
                break;
            }
            self.elapsed = tick;
            let head = self.heads[level * SLOTS + slot];
            if level > 0 {
                self.cascade(level, slot);
                continue;
            }
            self.unlink(head);
            self.len -= 1;
            return Some(head as usize);
        }
        self.elapsed = self.elapsed.max(now_tick);
        None
    }

    /// The earliest non-empty slot: its tick, level and slot. Every node on
    /// level `l` lies in the same 64^(l+1)-tick block as `elapsed`, in a
    /// slot at or after `elapsed`'s, so the lowest non-empty level holds
    /// the earliest slot, and its first occupied slot from `elapsed`'s on
    /// is the one. With the levels empty, the overflow list is due at the
    /// start of the next top-level block.
    fn next_expiry(&self) -> Option<(u64, usize, usize)> {
        let in_levels = (0..LEVELS).find_map(|level| {
            let shift = SLOT_BITS * level as u32;
            let current = ((self.elapsed >> shift) as usize) & (SLOTS - 1);
            let ahead = self.occupied[level] & (u64::MAX << current);
            if ahead == 0 {
                return None;
            }
            let slot = ahead.trailing_zeros() as usize;
            let block = self.elapsed & !((1u64 << (shift + SLOT_BITS)) - 1);
            Some((block + ((slot as u64) << shift), level, slot))
        });
        in_levels.or_else(|| {
            let next_block = ((self.elapsed >> SPAN_BITS) + 1) << SPAN_BITS;
            (self.occupied[LEVELS] != 0).then_some((next_block, LEVELS, 0))
        })
    }

    /// Files every node of a slot above level 0 (or of the overflow list)
    /// again, relative to `elapsed`, which has reached the slot's start:
    /// each lands lower.
    fn cascade(&mut self, level: usize, slot: usize) {
        let mut index = self.heads[level * SLOTS + slot];
        self.heads[level * SLOTS + slot] = NIL;
        self.occupied[level] &= !(1 << slot);
        while index != NIL {
            let next = self.nodes[index as usize].next;
            self.file(index);
            index = next;
        }
    }

    /// Links node `index` (not linked anywhere) into the slot for its
    /// deadline.
    fn file(&mut self, index: u32) {
        let deadline = self.nodes[index as usize].deadline;
        let tick = self.ticks_ceil(deadline).max(self.elapsed);
        // The level is that of the highest 6-bit group in which the tick
        // differs from `elapsed`; past the top level, the overflow list.
        let differs = (tick ^ self.elapsed) | (SLOTS as u64 - 1);
        let level = ((63 - differs.leading_zeros()) / SLOT_BITS).min(LEVELS as u32) as usize;
        let slot = if level == LEVELS {
            0
        } else {
            ((tick >> (SLOT_BITS * level as u32)) as usize) & (SLOTS - 1)
        };
        let position = level * SLOTS + slot;
        let head = self.heads[position];
        if head != NIL {
            self.nodes[head as usize].prev = index;
        }
        let node = &mut self.nodes[index as usize];
        node.position = position as u32;
        node.prev = NIL;
        node.next = head;
        self.heads[position] = index;
        self.occupied[level] |= 1 << slot;
    }

    /// Unlinks node `index` from its slot's list.
    fn unlink(&mut self, index: u32) {
        let Node {
            position,
            prev,
            next,
            ..
        } = self.nodes[index as usize];
        if prev == NIL {
            self.heads[position as usize] = next;
            if next == NIL {
                let (level, slot) = (position as usize / SLOTS, position as usize % SLOTS);
                self.occupied[level] &= !(1 << slot);
            }
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        self.nodes[index as usize].position = NIL;
    }

    /// Ticks from the origin to `at`, rounded up: the first tick whose start
    /// is not before `at`.
    fn ticks_ceil(&self, at: Instant) -> u64 {
        let (whole, rest) = self.ticks_and_rest(at);
        whole + u64::from(rest > 0)
    }

    /// Whole ticks from the origin to `at` (0 before it) and the
    /// nanoseconds left over, in 64-bit arithmetic (`Duration::as_nanos` is
    /// 128-bit, and its division a library call on every deadline filed).
    fn ticks_and_rest(&self, at: Instant) -> (u64, u32) {
        const TICK_NANOS: u32 = TICK.subsec_nanos();
        const TICKS_PER_SECOND: u64 = 1_000_000_000 / TICK_NANOS as u64;
        let since = at.saturating_duration_since(self.origin);
        let nanos = since.subsec_nanos();
        (
            since.as_secs() * TICKS_PER_SECOND + u64::from(nanos / TICK_NANOS),
            nanos % TICK_NANOS,
        )
    }
}

/// The one tokio timer a task sleeps on until its next deadline (a driver's
/// [`TimerWheel::next`], a shard's earliest timer), reset only when that
/// deadline moves rather than registered afresh on every turn.
#[derive(Debug)]
pub struct WakeTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
}

impl Default for WakeTimer {
    fn default() -> Self {
        WakeTimer {
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            armed: None,
        }
    }
}

impl WakeTimer {
    /// Arms the timer for `at` (`None` disarms it); a no-op when it is
    /// already armed for `at`.
    pub fn arm(&mut self, at: Option<Instant>) {
        if at != self.armed {
            if let Some(at) = at {
                self.sleep.as_mut().reset(at.into());
            }
            self.armed = at;
        }
    }

    /// Completes once the armed time has come; never while disarmed.
    pub async fn fired(&mut self) {
        match self.armed {
            Some(_) => self.sleep.as_mut().await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{TimerWheel, TICK};
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    #[test]
    fn moves_and_pops_deadlines_in_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut timers = TimerWheel::new(t0);
        timers.set(1, Some(t0 + ms(30)));
        timers.set(2, Some(t0 + ms(20)));
        assert_eq!(timers.next(), Some(t0 + ms(20)));
        timers.set(1, Some(t0 + ms(10)));
        assert_eq!(timers.deadline(1), Some(t0 + ms(10)));
        assert_eq!(timers.pop_due(t0 + ms(5)), None);
        assert_eq!(timers.pop_due(t0 + ms(25)), Some(1));
        assert_eq!(timers.deadline(1), None);
        assert_eq!(timers.pop_due(t0 + ms(25)), Some(2));
        assert_eq!(timers.pop_due(t0 + ms(25)), None);
        timers.set(2, Some(t0 + ms(40)));
        timers.set(2, None);
        assert_eq!(
            (timers.deadline(2), timers.next(), timers.len()),
            (None, None, 0)
        );
    }

    #[test]
    fn fires_within_a_tick_after_the_deadline_never_before() {
        let t0 = Instant::now();
        let mut timers = TimerWheel::new(t0);
        let deadline = t0 + Duration::from_micros(2_300);
        timers.set(7, Some(deadline));
        let fires_at = timers.next().unwrap();
        assert!(fires_at >= deadline && fires_at < deadline + TICK);
        assert_eq!(timers.pop_due(deadline - Duration::from_nanos(1)), None);
        assert_eq!(timers.pop_due(fires_at), Some(7));
    }

    #[test]
    fn a_deadline_in_the_past_is_due_at_once() {
        let t0 = Instant::now();
        let mut timers = TimerWheel::new(t0);
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(10)), None);
        timers.set(3, Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(10)), Some(3));
    }

    #[test]
    fn deadlines_beyond_the_wheel_fire_on_time() {
        let t0 = Instant::now();
        let mut timers = TimerWheel::new(t0);
        let far = t0 + Duration::from_secs(6 * 3600);
        timers.set(0, Some(far));
        timers.set(1, Some(t0 + Duration::from_secs(30)));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(31)), Some(1));
        // Step through the hours as a driver would, waking at `next`.
        let mut woke = 0;
        while let Some(at) = timers.next() {
            woke += 1;
            if let Some(handle) = timers.pop_due(at) {
                assert_eq!((handle, at >= far, at < far + TICK), (0, true, true));
                break;
            }
            assert!(at < far && woke < 20, "woke at {:?}", at - t0);
        }
        assert!(timers.is_empty());
    }

    /// One step a driver might take.
    #[derive(Clone, Debug)]
    enum Op {
        /// Set a handle's deadline to `now` + that many microseconds.
        Set(usize, u64),
        Clear(usize),
        /// Move the clock on by that many microseconds, popping what is due.
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            // Near deadlines (ACK, loss detection) and far ones (keep-alive,
            // idle timeout, past the wheel's first levels).
            (0..40usize, 0..100_000u64).prop_map(|(h, us)| Op::Set(h, us)),
            (0..40usize, 0..400_000_000u64).prop_map(|(h, us)| Op::Set(h, us)),
            // Past the top level's 4.7 h block: the overflow list.
            (0..40usize, 0..30_000_000_000u64).prop_map(|(h, us)| Op::Set(h, us)),
            (0..40usize).prop_map(Op::Clear),
            (0..5_000u64).prop_map(Op::Advance),
            (0..90_000_000u64).prop_map(Op::Advance),
            (0..3_000_000_000u64).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Against a map of exact deadlines: every deadline fires, once, no
        /// earlier than set and less than a tick after the time asked.
        #[test]
        fn agrees_with_a_map_of_deadlines(ops in prop::collection::vec(op(), 1..300)) {
            let t0 = Instant::now();
            let mut wheel = TimerWheel::new(t0);
            let mut model: BTreeMap<usize, Instant> = BTreeMap::new();
            let mut now = t0;
            for op in ops {
                match op {
                    Op::Set(h, us) => {
                        let at = now + Duration::from_micros(us);
                        wheel.set(h, Some(at));
                        model.insert(h, at);
                    }
                    Op::Clear(h) => {
                        wheel.set(h, None);
                        model.remove(&h);
                    }
                    Op::Advance(us) => {
                        now += Duration::from_micros(us);
                        // The wheel's own wake-ups, as a driver would take them.
                        while let Some(at) = wheel.next().filter(|at| *at <= now) {
                            while let Some(h) = wheel.pop_due(at) {
                                let deadline = model.remove(&h).expect("fired once");
                                prop_assert!(deadline <= at && at < deadline + TICK);
                            }
                        }
                        while let Some(h) = wheel.pop_due(now) {
                            let deadline = model.remove(&h).expect("fired once");
                            prop_assert!(deadline <= now);
                        }
                        prop_assert!(model.values().all(|at| *at + TICK > now));
                    }
                }
                prop_assert_eq!(wheel.len(), model.len());
                for (h, at) in &model {
                    prop_assert_eq!(wheel.deadline(*h), Some(*at));
                }
                // The wake-up may come early (to move deadlines down a
                // level), never more than a tick late.
                let earliest = model.values().min().copied();
                match (wheel.next(), earliest) {
                    (Some(next), Some(at)) => prop_assert!(next < at.max(now) + TICK + TICK),
                    (next, at) => prop_assert_eq!(next.is_some(), at.is_some()),
                }
            }
        }
    }
}
