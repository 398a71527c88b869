//! `switchboard-bench`: the one command a tester runs for a load test. It
//! starts a release router on loopback, drives the standard scenarios through
//! `switchboard-load`, samples router (and load generator) RSS and CPU from
//! `/proc`, and writes a dated report (Markdown, JSON, SVG) under
//! `bench/results/`.
//!
//! Standard scenarios: `connect` (memory per idle session and idle CPU),
//! a `chat` rate ladder at 10k sessions (the highest rate with every
//! message delivered and p99 < 50 ms is "sustainable"; a failed rung is
//! tried twice), `chat` at half the sustainable rate (the latency figure),
//! `rooms` and `churn`, the same ladder against `nats-server` with TLS (the
//! baseline), and last the ladder with 100k sessions on a fresh router.
//! Every chat step reports the server's CPU time per delivered message over
//! its full-rate window, and the report opens with Switchboard's against
//! nats-server's.
//!
//! [`BenchCli`] is the command line: which binaries to run, the sizes,
//! rates and durations of the standard steps, and the ports and threads
//! the servers get. [`runner::Runner`] runs the steps; [`report::BenchReport`] is what they
//! measured, written out as Markdown, JSON and an SVG plot.

mod calibrate;
mod commands;
mod procstat;
mod report;
mod router;
mod runner;
mod summary;
mod target;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = BenchCli::parse();
    // Before anything else runs, so the machine is idle.
    let calibration = calibrate::Calibration::measure_and_tell();
    let out = cli.out.clone();
    runner::Runner::new(cli)?.run(calibration)?.write(&out)
}

/// `switchboard-bench [OPTIONS]`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "switchboard-bench",
    version,
    about = "Run the standard Switchboard load test and write a report"
)]
pub(crate) struct BenchCli {
    /// Directory holding release `switchboard` and `switchboard-load`.
    #[arg(long, default_value = "target/release")]
    pub(crate) bin_dir: PathBuf,
    /// The router binary under test. Default: `<bin-dir>/switchboard`. With
    /// --load-bin, one build's load generator can measure another build's
    /// router.
    #[arg(long)]
    pub(crate) router_bin: Option<PathBuf>,
    /// The load generator binary. Default: `<bin-dir>/switchboard-load`.
    #[arg(long)]
    pub(crate) load_bin: Option<PathBuf>,
    /// Where reports go.
    #[arg(long, default_value = "bench/results")]
    pub(crate) out: PathBuf,
    /// Sessions for the connect (memory) scenario.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) connect_sessions: usize,
    /// How long the connect scenario holds its sessions. Idle CPU is
    /// measured then (with the 30 s keep-alive), so keep it at
    /// several keep-alive intervals.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    pub(crate) hold: Duration,
    /// Sessions for the chat scenarios.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) chat_sessions: usize,
    /// Sessions for a second chat ladder (the same rates, no half-rate
    /// step), run last on a fresh router; 0 skips it.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) chat_large_sessions: usize,
    /// Chat rates to try, messages per second, ascending.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2000,5000,10000,20000,30000"
    )]
    pub(crate) chat_rates: Vec<f64>,
    /// Seconds of sending at the full rate per chat step.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) chat_duration: Duration,
    /// How long each chat step's rate rises from 0 before its
    /// --chat-duration at the full rate, for Switchboard and nats-server
    /// alike. Switched on at once, a rate reaches every freshly opened
    /// session within seconds of the connect phase, a step a deployment
    /// never sees, which alone can tip a loaded box into loss recovery. The
    /// ramp's messages must all arrive, but only the full rate's are in the
    /// latency and rate figures.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) chat_ramp_up: Duration,
    /// New sessions per second asked for while opening: above what the
    /// box sustains, so the report's connect rate is the capacity.
    #[arg(long, default_value_t = 6000.0)]
    pub(crate) connect_rate: f64,
    /// Router shards (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub(crate) shards: usize,
    /// QUIC port for the router under test.
    #[arg(long, default_value_t = 14433)]
    pub(crate) port: u16,
    /// The nats-server binary for the baseline (Debian package `nats-server`).
    #[arg(long, default_value = "nats-server")]
    pub(crate) nats_server: PathBuf,
    /// Skip the nats-server baseline.
    #[arg(long)]
    pub(crate) no_nats: bool,
    /// Port for the baseline nats-server.
    #[arg(long, default_value_t = 14222)]
    pub(crate) nats_port: u16,
    /// Runtime threads for the router (`worker_threads`) and for
    /// switchboard-load (`--threads`). They share the machine, so by
    /// default each gets half its cores (at least one) rather than both
    /// preempting each other on all of them. nats-server keeps Go's default
    /// `GOMAXPROCS`, which it runs best with: the baseline should.
    #[arg(long, default_value_t = 0)]
    pub(crate) threads_each: usize,
}

impl BenchCli {
    /// `--threads-each`, or half the cores (at least one) when 0.
    pub(crate) fn threads_each(&self) -> usize {
        if self.threads_each > 0 {
            return self.threads_each;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / 2).max(1)
    }

    /// The router binary: `--router-bin`, or `switchboard` in `--bin-dir`.
    pub(crate) fn router_bin(&self) -> PathBuf {
        self.router_bin
            .clone()
            .unwrap_or_else(|| self.bin_dir.join("switchboard"))
    }

    /// The load generator: `--load-bin`, or `switchboard-load` in
    /// `--bin-dir`.
    pub(crate) fn load_bin(&self) -> PathBuf {
        self.load_bin
            .clone()
            .unwrap_or_else(|| self.bin_dir.join("switchboard-load"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_default_to_the_bin_dir_and_can_each_be_named() {
        let cli = BenchCli::try_parse_from(["switchboard-bench", "--bin-dir", "/b"]).unwrap();
        assert_eq!(cli.router_bin(), PathBuf::from("/b/switchboard"));
        assert_eq!(cli.load_bin(), PathBuf::from("/b/switchboard-load"));
        let cli = BenchCli::try_parse_from([
            "switchboard-bench",
            "--router-bin",
            "/old/switchboard",
            "--load-bin",
            "/new/switchboard-load",
        ])
        .unwrap();
        assert_eq!(cli.router_bin(), PathBuf::from("/old/switchboard"));
        assert_eq!(cli.load_bin(), PathBuf::from("/new/switchboard-load"));
    }
}
