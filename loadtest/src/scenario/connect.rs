//! `connect`: open N sessions at a target rate, hold them, then verify every
//! one with a ping round trip through its shard.

use std::sync::Arc;
use std::time::Duration;

use crate::fleet::{self, FleetOptions};
use crate::progress::Counters;
use crate::report::Report;

/// Runs the scenario.
pub async fn run(
    options: &FleetOptions,
    hold: Duration,
    counters: &Arc<Counters>,
) -> anyhow::Result<Report> {
    let fleet = fleet::open(options, counters).await?;
    tokio::time::sleep(hold).await;
    let alive = fleet.verify_alive(1_000, counters).await;
    let mut report = crate::base_report("connect", options, &fleet);
    report.sessions_verified_alive = Some(alive);
    if alive < fleet.members.len() as u64 {
        report.violations.push(format!(
            "{} of {} sessions did not answer a ping after the hold",
            fleet.members.len() as u64 - alive,
            fleet.members.len()
        ));
    }
    fleet.close().await;
    Ok(report)
}
