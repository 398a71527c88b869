//! The scenarios: [`connect`] (open, hold, verify), [`chat`] (direct
//! messages at an open-loop rate, checking loss, duplicates and order),
//! [`rooms`] (room messages fanned out to every member), [`presence`]
//! (status churn measured by watchers), and [`nats_chat`], the same chat
//! run against a `nats-server` as the baseline.

pub mod chat;
pub mod connect;
pub mod nats_chat;
pub mod presence;
pub mod rooms;

use std::time::{Duration, Instant};

/// How long a pacing thread sleeps while nothing is due: 1 ms, tokio's
/// timer granularity. Paced one by one (a sleep per message), the pacer
/// and the driver it hands each message to would wake once per message,
/// which costs both the load generator and the router (which also takes a
/// burst in one wake-up) far more CPU. Latency is still measured from each
/// message's own scheduled time, so the wait in the tick (half a tick on
/// average) is in every figure, not hidden.
const PACING_TICK: Duration = Duration::from_millis(1);

/// When each of a run's messages is due: a rise from 0 to `rate` over
/// `ramp_up`, linear in the rate, then `rate` for `duration`.
///
/// A step from idle to the full rate makes every session's first message
/// fall in the same few seconds, with the connect phase's work barely done;
/// the ramp lets a run measure what a rate costs once it is reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Schedule {
    /// Messages per second once the ramp is done.
    pub(crate) rate: f64,
    /// How long the rate rises before it holds.
    pub(crate) ramp_up: Duration,
    /// How long the full rate holds.
    pub(crate) duration: Duration,
}

impl Schedule {
    /// `rate` for `duration`, from the first message on.
    pub(crate) fn steady(rate: f64, duration: Duration) -> Schedule {
        Schedule {
            rate,
            ramp_up: Duration::ZERO,
            duration,
        }
    }

    /// Messages due during the ramp: the area under the rising rate,
    /// `rate` × `ramp_up` / 2.
    fn ramp_messages(&self) -> f64 {
        self.rate.max(0.0) * self.ramp_up.as_secs_f64() / 2.0
    }

    /// Messages due in all.
    pub(crate) fn total(&self) -> u64 {
        (self.ramp_messages() + self.rate.max(0.0) * self.duration.as_secs_f64()).round() as u64
    }

    /// When message `i` is due, in ns from the start. During the ramp the
    /// first `n` messages take `t` with `n = rate × t² / (2 × ramp_up)`.
    pub(crate) fn due_ns(&self, i: u64) -> u64 {
        let i = i as f64;
        let rate = self.rate.max(0.001);
        let ramp = self.ramp_up.as_secs_f64();
        let seconds = if i < self.ramp_messages() {
            (2.0 * ramp * i / rate).sqrt()
        } else {
            ramp + (i - self.ramp_messages()) / rate
        };
        (seconds * 1e9) as u64
    }

    /// When the full rate begins, in ns from the start: messages due from
    /// then on are the ones a run's latency and rate figures describe.
    pub(crate) fn full_rate_from_ns(&self) -> u64 {
        u64::try_from(self.ramp_up.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Calls `each(i)` for every message of `schedule`, from a dedicated OS
/// thread so the schedule does not depend on the async runtime's load, in
/// ticks of [`PACING_TICK`]: each wake-up sends everything due by then.
/// Returns how many were scheduled. Each call gets its scheduled time (ns
/// since `start`), which latency is measured from.
pub(crate) fn paced(
    start: Instant,
    schedule: Schedule,
    mut each: impl FnMut(u64, u64) + Send + 'static,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let total = schedule.total();
        let mut i = 0;
        while i < total {
            let due_ns = schedule.due_ns(i);
            let now_ns = start.elapsed().as_nanos() as u64;
            if due_ns > now_ns {
                std::thread::sleep(PACING_TICK);
                continue;
            }
            each(i, due_ns);
            i += 1;
        }
        total
    })
}

/// Waits, off the async runtime's threads, for a [`paced`] thread to end;
/// returns how many calls it scheduled.
pub(crate) async fn joined(pacer: std::thread::JoinHandle<u64>) -> anyhow::Result<u64> {
    Ok(tokio::task::spawn_blocking(move || pacer.join().expect("pacer thread")).await?)
}

#[cfg(test)]
mod tests {
    use super::Schedule;
    use std::time::Duration;

    #[test]
    fn a_steady_schedule_spaces_messages_evenly() {
        let s = Schedule::steady(1_000.0, Duration::from_secs(2));
        assert_eq!(s.total(), 2_000);
        assert_eq!(s.due_ns(0), 0);
        assert_eq!(s.due_ns(1), 1_000_000);
        assert_eq!(s.due_ns(1_500), 1_500_000_000);
        assert_eq!(s.full_rate_from_ns(), 0);
    }

    #[test]
    fn a_ramp_rises_linearly_then_holds_the_rate() {
        let s = Schedule {
            rate: 1_000.0,
            ramp_up: Duration::from_secs(4),
            duration: Duration::from_secs(10),
        };
        // 2,000 messages in the ramp (its average rate is half of 1,000/s),
        // then 10,000 at the full rate.
        assert_eq!(s.total(), 12_000);
        assert_eq!(s.full_rate_from_ns(), 4_000_000_000);
        // A quarter of the ramp's messages fall in its first half.
        assert_eq!(s.due_ns(500), 2_000_000_000);
        // The ramp ends where the steady part starts, and then one message
        // per millisecond follows.
        assert_eq!(s.due_ns(2_000), 4_000_000_000);
        assert_eq!(s.due_ns(2_001), 4_001_000_000);
        assert_eq!(s.due_ns(11_999), 13_999_000_000);
        // Gaps shrink through the ramp and never go negative.
        let gaps: Vec<u64> = (1..2_001).map(|i| s.due_ns(i) - s.due_ns(i - 1)).collect();
        assert!(gaps.windows(2).all(|w| w[1] <= w[0] + 1));
        assert!(gaps[0] > 50 * gaps[1_999]);
    }
}
