//! The server's CPU time over a chat run's full-rate window (`--server-pid`):
//! read from `/proc` when the ramp-up ends and again when the last message
//! has been handed on, so it covers the same window as the deliveries the
//! run's rate figure counts ([`crate::tracking::DeliveryTracker::delivered_measured`]),
//! and divided by those deliveries it is the server's CPU per message.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::proc_cpu;
use crate::report::Traffic;

/// Fails unless the CPU time of `pid` can be read, so that a wrong
/// `--server-pid` stops a run before it opens any session.
pub(crate) fn ensure_readable(pid: u32) -> anyhow::Result<()> {
    proc_cpu::cpu_ticks(pid)
        .map(drop)
        .with_context(|| format!("--server-pid {pid}: cannot read its CPU time"))
}

/// A window over which a server's CPU time is being measured.
pub(crate) struct CpuWindow {
    pid: u32,
    /// Reads the CPU time at the window's start, on its own thread, so the
    /// reading falls on the start however busy the runtime is then.
    start_reading: JoinHandle<anyhow::Result<u64>>,
}

impl CpuWindow {
    /// Begins a window at `from` (now, if that has passed).
    pub(crate) fn begin_at(pid: u32, from: Instant) -> CpuWindow {
        let start_reading = std::thread::spawn(move || {
            std::thread::sleep(from.saturating_duration_since(Instant::now()));
            proc_cpu::cpu_ticks(pid)
        });
        CpuWindow { pid, start_reading }
    }

    /// Ends the window now and returns the CPU time the server used in it.
    pub(crate) fn end(self) -> anyhow::Result<Duration> {
        let at_start = self
            .start_reading
            .join()
            .map_err(|_| anyhow::anyhow!("the thread reading the window's start panicked"))??;
        let at_end = proc_cpu::cpu_ticks(self.pid)?;
        Ok(proc_cpu::ticks_to_duration(at_end.saturating_sub(at_start)))
    }

    /// [`CpuWindow::end`], or `None` with a warning when the server could
    /// not be read (it exited, say): the run's other figures still stand.
    pub(crate) fn end_or_warn(self) -> Option<Duration> {
        let pid = self.pid;
        match self.end() {
            Ok(cpu) => Some(cpu),
            Err(error) => {
                tracing::warn!(pid, "server CPU not measured: {error:#}");
                None
            }
        }
    }
}

/// Server CPU microseconds per delivered message; `None` when nothing was
/// delivered.
pub fn cpu_us_per_delivered(cpu: Duration, delivered: u64) -> Option<f64> {
    (delivered > 0).then(|| cpu.as_secs_f64() * 1e6 / delivered as f64)
}

/// Puts the server's CPU time over the full-rate window, and that per
/// message delivered from it, into `traffic`.
pub(crate) fn record(traffic: &mut Traffic, cpu: Duration, delivered_at_full_rate: u64) {
    traffic.server_cpu_s = Some(cpu.as_secs_f64());
    traffic.server_cpu_us_per_delivered = cpu_us_per_delivered(cpu, delivered_at_full_rate);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_delivered_message_is_microseconds_over_messages() {
        // 2.5 s of server CPU for 100,000 messages: 25 µs each.
        let per_message = cpu_us_per_delivered(Duration::from_millis(2_500), 100_000).unwrap();
        assert!((per_message - 25.0).abs() < 1e-9, "{per_message}");
        assert_eq!(cpu_us_per_delivered(Duration::from_secs(1), 0), None);
        assert_eq!(cpu_us_per_delivered(Duration::ZERO, 10), Some(0.0));
    }

    #[test]
    fn recording_fills_both_figures() {
        let mut traffic = Traffic::default();
        record(&mut traffic, Duration::from_millis(300), 6_000);
        assert_eq!(traffic.server_cpu_s, Some(0.3));
        let per_message = traffic.server_cpu_us_per_delivered.unwrap();
        assert!((per_message - 50.0).abs() < 1e-9, "{per_message}");
    }

    #[test]
    fn a_window_measures_this_process_between_its_ends() {
        let pid = std::process::id();
        ensure_readable(pid).unwrap();
        assert!(ensure_readable(u32::MAX).is_err());
        let window = CpuWindow::begin_at(pid, Instant::now() + Duration::from_millis(20));
        let spin_until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        let cpu = window.end().unwrap();
        assert!(
            cpu > Duration::ZERO && cpu <= Duration::from_secs(5),
            "{cpu:?}"
        );
        let gone = CpuWindow::begin_at(u32::MAX, Instant::now());
        assert_eq!(gone.end_or_warn(), None);
    }
}
