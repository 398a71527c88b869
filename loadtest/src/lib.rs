//! `switchboard-load`: the load generator. It speaks the real protocol over
//! real QUIC (through the client SDK) and checks what it measures.
//!
//! - [`fleet`]: opens N sessions at a paced rate with bounded in-flight
//!   handshakes, spread over several endpoints and servers.
//! - [`scenario`]: `connect`, `chat` and `presence`.
//! - [`probe`]: the header each message carries (sender, sequence,
//!   scheduled send time) for latency, loss and order checks.
//! - [`stats`], [`report`], [`progress`]: HDR latency histograms, the final
//!   [`report::Report`] (table and JSON), and the live progress display.
//!
//! Latency is measured from the *scheduled* send time, so a sender that falls
//! behind shows up in the numbers instead of hiding (no coordinated omission).
#![forbid(unsafe_code)]

pub mod fleet;
pub mod probe;
pub mod progress;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod tracking;

use fleet::{Fleet, FleetOptions};
use report::Report;

/// The report fields every scenario shares, from the opened fleet.
pub(crate) fn base_report(scenario: &str, options: &FleetOptions, fleet: &Fleet) -> Report {
    let mut report = Report {
        scenario: scenario.to_owned(),
        sessions_requested: options.sessions,
        sessions_opened: fleet.members.len(),
        connect_failures: fleet.failures,
        connect_rate_per_s: fleet.members.len() as f64 / fleet.open_time.as_secs_f64().max(1e-9),
        connect_latency: Some(fleet.connect_latency.summary()),
        open_time_s: fleet.open_time.as_secs_f64(),
        ..Report::default()
    };
    if fleet.failures > 0 {
        let samples = fleet.failure_samples.join("; ");
        report.violations.push(format!(
            "{} sessions failed to open ({samples})",
            fleet.failures
        ));
    }
    report
}
