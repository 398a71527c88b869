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
/// and the driver it hands each message to woke once per message; at 5,000
/// msgs/s with 10,000 sessions the load generator then used ~70% of a core
/// against ~45-50% with the tick, and the router ~61-64% against ~45-52%
/// (it, too, takes a burst in one wake-up). Latency is still measured from each
/// message's own scheduled time, so the wait in the tick (0.5 ms on
/// average) is in every figure, not hidden.
const PACING_TICK: Duration = Duration::from_millis(1);

/// Calls `each(i)` for i = 0, 1, ... at `rate` per second for `duration`,
/// from a dedicated OS thread so the schedule does not depend on the async
/// runtime's load, in ticks of [`PACING_TICK`]: each wake-up sends
/// everything due by then. Returns how many were scheduled. Each call gets
/// its scheduled time (ns since `start`), which latency is measured from.
pub(crate) fn paced(
    start: Instant,
    rate: f64,
    duration: Duration,
    mut each: impl FnMut(u64, u64) + Send + 'static,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let total = (rate * duration.as_secs_f64()).round() as u64;
        let interval_ns = 1e9 / rate.max(0.001);
        let mut i = 0;
        while i < total {
            let due_ns = (i as f64 * interval_ns) as u64;
            let now_ns = start.elapsed().as_nanos() as u64;
            if due_ns > now_ns {
                // What falls due meanwhile goes out in one burst, so the
                // drivers wake once per tick rather than once per message.
                std::thread::sleep(PACING_TICK);
                continue;
            }
            // Everything due by now goes out, each stamped with its own
            // scheduled time.
            each(i, due_ns);
            i += 1;
        }
        total
    })
}
