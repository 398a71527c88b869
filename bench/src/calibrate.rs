//! The machine a report ran on: its size, and what it charges for the
//! work a QUIC router lives on, measured before the run so reports from
//! different machines can be compared.
//!
//! Two machines that both report "2 cores / 24 GiB" can differ severalfold
//! in what the same build sustains. The router pays per datagram (system calls, the loopback stack) and, with 100k
//! sessions, per cache miss in their state; nats-server, batching a TCP
//! stream, pays less of both. So every report records what a system call,
//! a loopback datagram and a miss cost where it ran.

use std::net::UdpSocket;
use std::time::Instant;

use serde::Serialize;

/// Bytes in each calibration datagram: about a full QUIC packet.
const DATAGRAM_BYTES: usize = 1200;

/// The machine's measured costs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Calibration {
    /// `model name` from `/proc/cpuinfo`.
    pub(crate) cpu: String,
    /// The running kernel's release.
    pub(crate) kernel: String,
    /// Nanoseconds for one trivial system call (`getpid`, which glibc no
    /// longer caches).
    pub(crate) syscall_ns: f64,
    /// Nanoseconds to send one 1,200-byte UDP datagram to a loopback
    /// socket and receive it there: two system calls and the network stack.
    pub(crate) udp_loopback_round_ns: f64,
    /// Nanoseconds per load when each load's address depends on the last
    /// one, over a working set far beyond the caches: what a miss costs,
    /// which dominates a router with 100k sessions' state.
    pub(crate) memory_miss_ns: f64,
}

impl Calibration {
    /// Measures this machine (about a second; run it while the machine is
    /// otherwise idle), saying on stderr what it found; `None`, with the
    /// reason said, when it could not measure.
    pub(crate) fn measure_and_tell() -> Option<Calibration> {
        Calibration::measure_with(1)
            .inspect(|calibration| eprintln!("machine: {}", calibration.describe()))
            .inspect_err(|error| eprintln!("machine calibration failed: {error}"))
            .ok()
    }

    /// Measures with every count (and the chase's working set) divided by
    /// `divisor`: 1 is the full calibration, about a second.
    fn measure_with(divisor: u32) -> std::io::Result<Calibration> {
        Ok(Calibration {
            cpu: cpu_model(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned()),
            syscall_ns: syscall_ns(1_000_000 / divisor),
            udp_loopback_round_ns: udp_loopback_round_ns(100_000 / divisor)?,
            // 16 Mi slots of 4 bytes, 64 MiB, beyond any cache on the
            // machines this runs on.
            memory_miss_ns: memory_miss_ns((1 << 24) / divisor as usize, 2_000_000 / divisor),
        })
    }

    /// One sentence for a report.
    pub(crate) fn describe(&self) -> String {
        format!(
            "CPU {}, Linux {}; a system call took {:.0} ns, a {DATAGRAM_BYTES}-byte loopback UDP datagram sent and received {:.1} µs, and a dependent load beyond the caches {:.0} ns",
            self.cpu,
            self.kernel,
            self.syscall_ns,
            self.udp_loopback_round_ns / 1000.0,
            self.memory_miss_ns
        )
    }
}

/// Cores and memory, as the report's first line gives them.
pub(crate) fn machine_size() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        // The first line's value: `MemTotal:  <kib> kB`.
        .and_then(|m| m.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    format!(
        "{cores} cores, {:.0} GiB RAM",
        mem_kib as f64 / 1024.0 / 1024.0
    )
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Mean nanoseconds of `getpid` over `calls` calls.
fn syscall_ns(calls: u32) -> f64 {
    let start = Instant::now();
    let mut sum = 0u64;
    for _ in 0..calls {
        sum = sum.wrapping_add(u64::from(std::process::id()));
    }
    std::hint::black_box(sum);
    start.elapsed().as_nanos() as f64 / f64::from(calls)
}

/// Mean nanoseconds to send a datagram to a loopback socket and receive it.
fn udp_loopback_round_ns(rounds: u32) -> std::io::Result<f64> {
    let receiver = UdpSocket::bind("127.0.0.1:0")?;
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    sender.connect(receiver.local_addr()?)?;
    let out = [7u8; DATAGRAM_BYTES];
    let mut into = [0u8; DATAGRAM_BYTES];
    let start = Instant::now();
    for _ in 0..rounds {
        sender.send(&out)?;
        let n = receiver.recv(&mut into)?;
        if n != DATAGRAM_BYTES {
            return Err(std::io::Error::other("short calibration datagram"));
        }
    }
    Ok(start.elapsed().as_nanos() as f64 / f64::from(rounds))
}

/// Mean nanoseconds per step of a walk through one random cycle over
/// `slots` slots: every load waits for the one before, so none overlap.
fn memory_miss_ns(slots: usize, steps: u32) -> f64 {
    let next = single_cycle(slots);
    let mut at = 0u32;
    let start = Instant::now();
    for _ in 0..steps {
        at = next[at as usize];
    }
    std::hint::black_box(at);
    start.elapsed().as_nanos() as f64 / f64::from(steps)
}

/// `next[i]` is the slot after `i` in one random cycle through all
/// `slots` (Sattolo's shuffle). A xorshift generator is enough: the order
/// only has to defeat the prefetchers.
fn single_cycle(slots: usize) -> Vec<u32> {
    let mut next: Vec<u32> = (0..slots as u32).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..slots).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        next.swap(i, (state % i as u64) as usize);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_measures_positive_costs_and_says_so() {
        let c = Calibration::measure_with(256).expect("loopback UDP");
        assert!(c.memory_miss_ns > 0.0 && c.memory_miss_ns < 1e5, "{c:?}");
        assert!(c.syscall_ns > 0.0 && c.syscall_ns < 1e6, "{c:?}");
        // A round is two system calls and more.
        assert!(c.udp_loopback_round_ns > c.syscall_ns, "{c:?}");
        let line = c.describe();
        assert!(line.contains("1200-byte loopback UDP datagram"), "{line}");
        assert!(line.contains(&c.kernel), "{line}");
        assert!(line.contains("dependent load"), "{line}");
    }

    #[test]
    fn the_chase_visits_every_slot_once_per_cycle() {
        // One cycle through all slots, so no walk gets stuck in a loop
        // that fits in the caches.
        let slots = 1 << 10;
        let next = single_cycle(slots);
        let mut at = 0u32;
        let mut seen = vec![false; slots];
        for _ in 0..slots {
            assert!(!seen[at as usize], "slot {at} visited twice");
            seen[at as usize] = true;
            at = next[at as usize];
        }
        assert_eq!(at, 0, "the walk returns to its start after every slot");
    }
}
