//! What this machine charges for the kernel work a QUIC router lives on,
//! measured before the run so reports from different machines can be
//! compared.
//!
//! Two machines sold as the same "2 cores / 24 GiB" gave Switchboard
//! 35,000 and 12,500 sustainable chat msgs/s: the router sends and
//! receives several UDP datagrams per message, so what a system call and a
//! loopback datagram cost (CPU model, virtualisation, speculative-execution
//! mitigations) moves every figure in the report. nats-server, on TCP with
//! batched writes, moves less.

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
}

impl Calibration {
    /// Measures this machine (about a second). Run it while the machine is
    /// otherwise idle.
    pub(crate) fn measure() -> std::io::Result<Calibration> {
        Ok(Calibration {
            cpu: cpu_model(),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            syscall_ns: syscall_ns(1_000_000),
            udp_loopback_round_ns: udp_loopback_round_ns(100_000)?,
        })
    }

    /// One sentence for a report.
    pub(crate) fn describe(&self) -> String {
        format!(
            "CPU {}, Linux {}; a system call took {:.0} ns and a {DATAGRAM_BYTES}-byte loopback UDP datagram sent and received {:.1} µs",
            self.cpu,
            self.kernel,
            self.syscall_ns,
            self.udp_loopback_round_ns / 1000.0
        )
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_measures_positive_costs_and_says_so() {
        let c = Calibration {
            cpu: cpu_model(),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            syscall_ns: syscall_ns(10_000),
            udp_loopback_round_ns: udp_loopback_round_ns(1_000).expect("loopback UDP"),
        };
        assert!(c.syscall_ns > 0.0 && c.syscall_ns < 1e6, "{c:?}");
        // A round is two system calls and more.
        assert!(c.udp_loopback_round_ns > c.syscall_ns, "{c:?}");
        let line = c.describe();
        assert!(line.contains("1200-byte loopback UDP datagram"), "{line}");
        assert!(line.contains(&c.kernel), "{line}");
    }
}
