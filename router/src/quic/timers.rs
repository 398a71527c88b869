//! [`TimerSet`]: one ordered set of deadlines for every connection a driver
//! owns, instead of a timer per connection.

use std::collections::BTreeSet;
use std::time::Instant;

/// Deadlines by connection handle. Each connection remembers the deadline
/// it registered (the `registered` arguments), so moving it is one removal
/// and one insertion.
#[derive(Debug, Default)]
pub struct TimerSet {
    deadlines: BTreeSet<(Instant, usize)>,
}

impl TimerSet {
    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Moves `handle`'s deadline from `*registered` to `deadline` (`None`
    /// removes it) and records the new one in `registered`.
    pub fn reschedule(
        &mut self,
        handle: usize,
        registered: &mut Option<Instant>,
        deadline: Option<Instant>,
    ) {
        if *registered == deadline {
            return;
        }
        if let Some(old) = registered.take() {
            self.deadlines.remove(&(old, handle));
        }
        if let Some(at) = deadline {
            self.deadlines.insert((at, handle));
        }
        *registered = deadline;
    }

    /// Takes the earliest deadline that is due at `now`, with its handle.
    /// The caller clears the connection's `registered` deadline when it
    /// equals the one returned.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize)> {
        let &(at, handle) = self.deadlines.first()?;
        if at > now {
            return None;
        }
        self.deadlines.pop_first();
        Some((at, handle))
    }
}

#[cfg(test)]
mod tests {
    use super::TimerSet;
    use std::time::{Duration, Instant};

    #[test]
    fn moves_and_pops_deadlines_in_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut timers = TimerSet::default();
        let (mut a, mut b) = (None, None);
        timers.reschedule(1, &mut a, Some(t0 + ms(30)));
        timers.reschedule(2, &mut b, Some(t0 + ms(20)));
        assert_eq!(timers.next(), Some(t0 + ms(20)));
        timers.reschedule(1, &mut a, Some(t0 + ms(10)));
        assert_eq!(a, Some(t0 + ms(10)));
        assert_eq!(timers.pop_due(t0 + ms(5)), None);
        assert_eq!(timers.pop_due(t0 + ms(25)), Some((t0 + ms(10), 1)));
        assert_eq!(timers.pop_due(t0 + ms(25)), Some((t0 + ms(20), 2)));
        assert_eq!(timers.pop_due(t0 + ms(25)), None);
        timers.reschedule(2, &mut b, None);
        assert_eq!((b, timers.next()), (None, None));
    }
}
