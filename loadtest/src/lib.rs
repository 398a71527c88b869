//! `switchboard-load`: the load generator. It speaks the real protocol over
//! real QUIC and checks what it measures.
//!
//! - [`cli`]: the command line as typed values, which a runner can build
//!   and turn back into arguments.
//! - [`driver_fleet`]: the default way sessions are held: quinn-proto
//!   connections driven by a few `switchboard_quic::Driver` tasks, one per
//!   UDP socket.
//! - [`fleet`]: the same through the client SDK (one quinn connection and
//!   task per session), as `--client sdk` and for the presence scenario.
//! - [`scenario`]: `connect`, `chat`, `churn`, `rooms`, `presence` and
//!   `nats-chat`.
//! - [`probe`]: the header each message carries (sender, sequence,
//!   scheduled send time) for latency, loss and order checks.
//! - [`tracking`]: what receivers saw of those probes.
//! - [`proc_cpu`]: a process's CPU time from `/proc`, and the server's
//!   over a run's full-rate window (`--server-pid`).
//! - [`stats`], [`report`], [`progress`]: HDR latency histograms, the final
//!   [`report::Report`] (table and JSON), and the live progress display.
//!
//! Latency is measured from the *scheduled* send time, so a sender that falls
//! behind shows up in the numbers instead of hiding (no coordinated omission).
#![forbid(unsafe_code)]

pub mod cli;
pub mod driver_fleet;
pub mod fleet;
pub mod probe;
pub mod proc_cpu;
pub mod progress;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod tracking;

use fleet::{FleetOptions, OpenOutcome};
use report::Report;

/// The report fields every scenario shares, from what opening cost.
pub(crate) fn base_report(scenario: &str, options: &FleetOptions, opened: &OpenOutcome) -> Report {
    let mut report = Report {
        scenario: scenario.to_owned(),
        sessions_requested: options.sessions,
        sessions_opened: opened.opened,
        connect_failures: opened.failed.count,
        connect_rate_per_s: opened.opened as f64 / opened.open_time.as_secs_f64().max(1e-9),
        connect_latency: Some(opened.connect_latency.summary()),
        open_time_s: opened.open_time.as_secs_f64(),
        ..Report::default()
    };
    opened.failed.report("sessions failed to open", &mut report);
    report
}
