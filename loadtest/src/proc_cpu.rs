//! The CPU time a process has used so far, read from `/proc/PID/stat`
//! (Linux): user plus system time of all its threads, in clock ticks
//! (`USER_HZ`, asked of `sysconf`), and the parsing of that line.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;

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
    fn reads_this_process() {
        let before = cpu_ticks(std::process::id()).unwrap();
        let spin_until = std::time::Instant::now() + Duration::from_millis(50);
        while std::time::Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        assert!(cpu_ticks(std::process::id()).unwrap() >= before);
        assert!(cpu_ticks(u32::MAX).is_err(), "no such process");
    }

    #[test]
    fn ticks_convert_at_user_hz() {
        let hz = ticks_per_second();
        assert!(hz > 0);
        assert_eq!(ticks_to_duration(hz * 3), Duration::from_secs(3));
        assert_eq!(ticks_to_duration(hz / 2), Duration::from_millis(500));
    }
}
