//! Samples a process's resident memory and CPU time from `/proc` (Linux).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
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

/// `ticks` of CPU time over `secs` seconds, as percent of one core.
fn percent_of_a_core(ticks: u64, secs: f64) -> f64 {
    ticks as f64 / proc_cpu::ticks_per_second() as f64 / secs * 100.0
}

/// The mean of `samples`' CPU percent; 0 without samples.
pub(crate) fn mean_cpu_percent(samples: &[Sample]) -> f64 {
    samples.iter().map(|s| s.cpu_percent).sum::<f64>() / samples.len().max(1) as f64
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
    let mut last = proc_cpu::cpu_ticks(pid).ok();
    while started.elapsed() < at_most {
        std::thread::sleep(window);
        let now = proc_cpu::cpu_ticks(pid).ok();
        let (Some(before), Some(after)) = (last, now) else {
            break;
        };
        if percent_of_a_core(after - before, window.as_secs_f64()) < below_percent {
            break;
        }
        last = now;
    }
    started.elapsed()
}

/// Samples `pid` every `every` on a background thread until finished.
pub(crate) struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling.
    pub(crate) fn start(pid: u32, every: Duration, epoch: Instant) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            let mut last = (Instant::now(), proc_cpu::cpu_ticks(pid).unwrap_or(0));
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                let (Some(rss), Some(ticks)) = (rss_kib(pid), proc_cpu::cpu_ticks(pid).ok()) else {
                    break;
                };
                let now = Instant::now();
                let cpu = percent_of_a_core(ticks - last.1, (now - last.0).as_secs_f64());
                last = (now, ticks);
                samples.push(Sample {
                    t_s: now.duration_since(epoch).as_secs_f64(),
                    rss_kib: rss,
                    cpu_percent: cpu,
                });
            }
            samples
        });
        Sampler { stop, thread }
    }

    /// Stops and returns the samples.
    pub(crate) fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(proc_cpu::cpu_ticks(pid).is_ok());
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
        let stop = Arc::new(AtomicBool::new(false));
        let spinning = stop.clone();
        let spinner = std::thread::spawn(move || {
            while !spinning.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let limit = Duration::from_millis(600);
        let waited = wait_until_quiet(std::process::id(), 5.0, Duration::from_millis(200), limit);
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
        assert!(waited >= limit, "waited only {waited:?}");
    }
}
