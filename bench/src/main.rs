//! `switchboard-bench`: the one command a tester runs for a load test. It
//! starts a release router on loopback, drives the standard scenarios through
//! `switchboard-load`, samples router (and load generator) RSS and CPU from
//! `/proc`, and writes a dated report (Markdown, JSON, SVG) to `--out`
//! (default `target/bench-results/`; the published ones are kept in
//! `bench/results/`).
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
    eprintln!(
        "switchboard-bench: the standard run takes up to about {} min with these options \
         (--help shows how to shorten it); the report goes to {}",
        cli.estimate().as_secs().div_ceil(60),
        cli.out.display()
    );
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
    about = "Run the standard Switchboard load test and write a report",
    long_about = "Run the standard Switchboard load test and write a report.\n\n\
        With the defaults the run takes up to about 17 minutes on 2 cores: connect and hold \
        10k sessions, a chat rate ladder at 10k sessions, rooms, churn, the same ladder \
        against nats-server, and the ladder again at 100k sessions. --chat-large-sessions 0, \
        --no-nats, fewer --chat-rates and a shorter --hold make it shorter. Build the \
        binaries with `cargo build --profile perf` first."
)]
pub(crate) struct BenchCli {
    /// Directory holding `switchboard` and `switchboard-load`, as built by
    /// `cargo build --profile perf`.
    #[arg(long, default_value = "target/perf")]
    pub(crate) bin_dir: PathBuf,
    /// The router binary under test. Default: `<bin-dir>/switchboard`. With
    /// --load-bin, one build's load generator can measure another build's
    /// router.
    #[arg(long)]
    pub(crate) router_bin: Option<PathBuf>,
    /// The load generator binary. Default: `<bin-dir>/switchboard-load`.
    #[arg(long)]
    pub(crate) load_bin: Option<PathBuf>,
    /// Where reports go; `bench/results` keeps the published ones.
    #[arg(long, default_value = "target/bench-results")]
    pub(crate) out: PathBuf,
    /// Sessions for the connect (memory) scenario.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) connect_sessions: usize,
    /// How long the connect scenario holds its sessions. Idle CPU is
    /// measured over the hold, which must leave at least two of the
    /// sessions' 30 s keep-alive intervals idle (else it is not reported).
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
    /// --chat-duration at the full rate, for both servers. The ramp's
    /// messages must all arrive, but only the full rate's are in the
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
    /// A rough upper bound of the run's length: every rung of every ladder
    /// run, each with its connect phase, ramp, full rate, drain and settle.
    pub(crate) fn estimate(&self) -> Duration {
        let opening =
            |sessions: usize| Duration::from_secs_f64(sessions as f64 / self.connect_rate);
        // Drain, settle, verification and close, as a step spends them.
        let overhead = Duration::from_secs(25);
        let step = |sessions| opening(sessions) + self.chat_ramp_up + self.chat_duration + overhead;
        let rungs = self.chat_rates.len() as u32;
        // Calibration, then connect and hold.
        let mut total = Duration::from_secs(15) + opening(self.connect_sessions) + self.hold;
        // The ladder with its half-rate step, rooms and churn.
        total += step(self.chat_sessions) * (rungs + 3);
        if !self.no_nats {
            total += step(self.chat_sessions) * (rungs + 1);
        }
        if self.chat_large_sessions > 0 {
            total += step(self.chat_large_sessions) * rungs;
        }
        total
    }

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
    fn the_estimate_counts_every_ladder_run() {
        let parse = |args: &[&str]| {
            BenchCli::try_parse_from(
                std::iter::once("switchboard-bench").chain(args.iter().copied()),
            )
            .unwrap()
            .estimate()
        };
        let full = parse(&[]);
        let short = parse(&["--no-nats", "--chat-large-sessions", "0"]);
        // The --help text quotes the default run's length.
        assert_eq!(full.as_secs().div_ceil(60), 17, "{full:?}");
        assert!(short < full / 2, "{short:?} of {full:?}");
    }

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
