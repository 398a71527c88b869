//! `connect`: open N sessions at a target rate, hold them, then verify every
//! one with a ping round trip through its shard.

use std::sync::Arc;
use std::time::Duration;

use crate::driver_fleet::{DriverFleet, IgnoreFrames};
use crate::fleet::{self, ClientKind, FleetOptions};
use crate::progress::Counters;
use crate::report::Report;

/// Runs the scenario on the fleet `options.client` picks.
pub async fn run(
    options: &FleetOptions,
    hold: Duration,
    counters: &Arc<Counters>,
) -> anyhow::Result<Report> {
    let (mut report, opened, alive) = match options.client {
        ClientKind::Driver => {
            let fleet = DriverFleet::open(options, Arc::new(IgnoreFrames), counters).await?;
            tokio::time::sleep(hold).await;
            let alive = fleet.verify_alive().await;
            let mut report = crate::base_report("connect", options, &fleet.outcome);
            fleet.report_lost(&mut report);
            let opened = fleet.outcome.opened;
            fleet.close().await;
            (report, opened, alive)
        }
        ClientKind::Sdk => {
            let fleet = fleet::open(options, counters).await?;
            tokio::time::sleep(hold).await;
            let alive = fleet.verify_alive(1_000, counters).await;
            let report = crate::base_report("connect", options, &fleet.outcome);
            let opened = fleet.outcome.opened;
            fleet.close().await;
            (report, opened, alive)
        }
    };
    report.sessions_verified_alive = Some(alive);
    if alive < opened as u64 {
        report.violations.push(format!(
            "{} of {opened} sessions did not answer a ping after the hold",
            opened as u64 - alive
        ));
    }
    Ok(report)
}
