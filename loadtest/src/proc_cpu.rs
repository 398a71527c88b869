//! The CPU time a process has used so far, read from `/proc/PID/stat`
//! (Linux): user plus system time of all its threads, in clock ticks
//! (`USER_HZ`, asked of `sysconf`), and the parsing of that line.
//!
//! With it, the server's CPU time over a chat run's full-rate window
//! (`--server-pid`): read when the ramp-up ends and again when the last
//! message has been handed on, so it covers the same window as the
//! deliveries the run's rate figure counts
//! ([`crate::tracking::DeliveryTracker::delivered_measured`]), and divided
//! by those deliveries it is the server's CPU per message.

use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::report::Traffic;

/// Clock ticks per second when `sysconf(_SC_CLK_TCK)` gives no answer: the
/// `USER_HZ` of every Linux architecture in common use.
const FALLBACK_TICKS_PER_SECOND: u64 = 100;

/// Index of `utime` among the fields after the command name (field 14 of
/// the whole line); `stime` follows it.
const UTIME_AFTER_NAME: usize = 11;

/// User plus system CPU time in a `/proc/PID/stat` line, in clock ticks.
/// `None` when the line is not one.
///
/// The second field is the command name in parentheses, which may itself
/// hold spaces and parentheses, so the fields are counted from the last
/// `)` of the line.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(UTIME_AFTER_NAME);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// User plus system CPU time `pid` has used, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_cpu_ticks(&stat).with_context(|| format!("{path}: no utime and stime in {stat:?}"))
}

/// Clock ticks per second, the unit of [`cpu_ticks`].
pub fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
            Ok(Some(ticks)) => u64::try_from(ticks).ok().filter(|&t| t > 0),
            _ => None,
        }
        .unwrap_or(FALLBACK_TICKS_PER_SECOND)
    })
}

/// `ticks` clock ticks as a duration.
pub fn ticks_to_duration(ticks: u64) -> Duration {
    let per_second = ticks_per_second();
    Duration::from_secs(ticks / per_second)
        + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second)
}

/// Fails unless the CPU time of `pid` (if given) can be read, so that a
/// wrong `--server-pid` stops a run before it opens any session.
pub(crate) fn ensure_readable(pid: Option<u32>) -> anyhow::Result<()> {
    pid.map_or(Ok(()), |pid| {
        cpu_ticks(pid)
            .map(drop)
            .with_context(|| format!("--server-pid {pid}: cannot read its CPU time"))
    })
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
            cpu_ticks(pid)
        });
        CpuWindow { pid, start_reading }
    }

    /// Ends the window now and returns the CPU time the server used in it.
    pub(crate) fn end(self) -> anyhow::Result<Duration> {
        let at_start = self
            .start_reading
            .join()
            .map_err(|_| anyhow::anyhow!("the thread reading the window's start panicked"))??;
        let at_end = cpu_ticks(self.pid)?;
        Ok(ticks_to_duration(at_end.saturating_sub(at_start)))
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

/// Puts the server's CPU time over the full-rate window, and that in
/// microseconds per message delivered from it (`None` when nothing was),
/// into `traffic`.
pub(crate) fn record(traffic: &mut Traffic, cpu: Duration, delivered_at_full_rate: u64) {
    traffic.server_cpu_s = Some(cpu.as_secs_f64());
    traffic.server_cpu_us_per_delivered = (delivered_at_full_rate > 0)
        .then(|| cpu.as_secs_f64() * 1e6 / delivered_at_full_rate as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/proc/PID/stat` line of a process whose command name holds
    /// spaces and parentheses; utime 1234 and stime 567.
    const STAT_WITH_AWKWARD_NAME: &str = "4242 (my (odd) server) S 1 4242 4242 0 -1 \
        4194560 1000 0 0 0 1234 567 0 0 20 0 9 0 123456 987654321 2345 \
        18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn reads_user_and_system_time_past_a_name_with_spaces_and_parentheses() {
        assert_eq!(parse_cpu_ticks(STAT_WITH_AWKWARD_NAME), Some(1234 + 567));
        let plain = STAT_WITH_AWKWARD_NAME.replace("(my (odd) server)", "(switchboard)");
        assert_eq!(parse_cpu_ticks(&plain), Some(1801));
    }

    #[test]
    fn a_line_that_is_not_a_stat_line_has_no_cpu_time() {
        assert_eq!(parse_cpu_ticks(""), None);
        assert_eq!(parse_cpu_ticks("4242 (cut short) S 1 2 3"), None);
        assert_eq!(parse_cpu_ticks("no parentheses at all"), None);
    }

    #[test]
    fn ticks_convert_at_user_hz() {
        let hz = ticks_per_second();
        assert!(hz > 0);
        assert_eq!(ticks_to_duration(hz * 3), Duration::from_secs(3));
        assert_eq!(ticks_to_duration(hz / 2), Duration::from_millis(500));
    }

    #[test]
    fn recording_fills_cpu_time_and_microseconds_per_delivered_message() {
        // 2.5 s of server CPU for 100,000 messages: 25 µs each.
        for (cpu_ms, delivered, per_message) in [
            (2_500, 100_000, Some(25.0)),
            (300, 6_000, Some(50.0)),
            (1_000, 0, None),
            (0, 10, Some(0.0)),
        ] {
            let mut traffic = Traffic::default();
            record(&mut traffic, Duration::from_millis(cpu_ms), delivered);
            assert_eq!(traffic.server_cpu_s, Some(cpu_ms as f64 / 1e3));
            let got = traffic.server_cpu_us_per_delivered;
            let close = |(got, want): (f64, f64)| (got - want).abs() < 1e-9;
            assert!(
                got.zip(per_message).map_or(got == per_message, close),
                "{got:?}"
            );
        }
    }

    #[test]
    fn a_window_measures_this_process_between_its_ends() {
        let pid = std::process::id();
        ensure_readable(Some(pid)).unwrap();
        ensure_readable(None).unwrap();
        assert!(ensure_readable(Some(u32::MAX)).is_err());
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
