//! Samples a process's resident memory and CPU time from `/proc` (Linux).

use std::time::{Duration, Instant};

use switchboard_loadtest::proc_cpu;

/// One sample of a process.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct Sample {
    /// Seconds since sampling started.
    pub(crate) t_s: f64,
    /// Resident set size, KiB.
    pub(crate) rss_kib: u64,
    /// CPU used since the previous sample, percent of one core.
    pub(crate) cpu_percent: f64,
}

/// Resident set size of `pid` in KiB (`VmRSS`).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU time of `pid`, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    proc_cpu::cpu_ticks(pid).ok()
}

/// Clock ticks per second (`USER_HZ`).
fn ticks_per_second() -> f64 {
    proc_cpu::ticks_per_second() as f64
}

/// Waits until `pid` used less than `below_percent` of a core over one
/// `window`, or until `at_most` has passed; returns how long it waited.
/// Between steps it lets the target finish the last step's work (a
/// router tearing down 100k closed sessions spends seconds on it) before
/// the next step measures.
pub(crate) fn wait_until_quiet(
    pid: u32,
    below_percent: f64,
    window: Duration,
    at_most: Duration,
) -> Duration {
    let started = Instant::now();
    let mut last = cpu_ticks(pid);
    while started.elapsed() < at_most {
        std::thread::sleep(window);
        let now = cpu_ticks(pid);
        let (Some(before), Some(after)) = (last, now) else {
            break;
        };
        let percent = (after - before) as f64 / ticks_per_second() / window.as_secs_f64() * 100.0;
        if percent < below_percent {
            break;
        }
        last = now;
    }
    started.elapsed()
}

/// Samples `pid` every `every` on a background thread until dropped.
pub(crate) struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Sample>>>,
}

impl Sampler {
    /// Starts sampling.
    pub(crate) fn start(pid: u32, every: Duration, epoch: Instant) -> Sampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            let mut last = (Instant::now(), cpu_ticks(pid).unwrap_or(0));
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(every);
                let (Some(rss), Some(ticks)) = (rss_kib(pid), cpu_ticks(pid)) else {
                    break;
                };
                let now = Instant::now();
                let cpu = (ticks - last.1) as f64
                    / ticks_per_second()
                    / now.duration_since(last.0).as_secs_f64()
                    * 100.0;
                last = (now, ticks);
                samples.push(Sample {
                    t_s: now.duration_since(epoch).as_secs_f64(),
                    rss_kib: rss,
                    cpu_percent: cpu,
                });
            }
            samples
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns the samples.
    pub(crate) fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(cpu_ticks(pid).is_some());
    }

    #[test]
    fn an_idle_process_is_quiet_after_one_window() {
        let mut idle = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let window = Duration::from_millis(100);
        let waited = wait_until_quiet(idle.id(), 5.0, window, Duration::from_secs(20));
        idle.kill().unwrap();
        idle.wait().unwrap();
        assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    }

    #[test]
    fn a_busy_process_is_waited_for_until_the_limit() {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinning = stop.clone();
        let spinner = std::thread::spawn(move || {
            while !spinning.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let limit = Duration::from_millis(600);
        let waited = wait_until_quiet(std::process::id(), 5.0, Duration::from_millis(200), limit);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spinner.join().unwrap();
        assert!(waited >= limit, "waited only {waited:?}");
    }
}
