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
//! [`runner::Runner`] runs the steps; [`bench_report::BenchReport`] is
//! what they measured, written out by [`markdown`], [`plot`] and as JSON.

mod bench_cli;
mod bench_report;
mod calibrate;
mod commands;
mod cpu_per_message;
mod ladder;
mod markdown;
mod nats;
mod plot;
mod procstat;
mod router;
mod runner;
mod server_process;
mod step;
mod summary;
mod target;
mod verdict;

use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let cli = bench_cli::BenchCli::parse();
    // Before anything else runs, so the machine is idle.
    let calibration = calibrate::Calibration::measure_and_tell();
    let out = cli.out.clone();
    let report = runner::Runner::new(cli)?.run(calibration)?;
    report.write(&out)
}
