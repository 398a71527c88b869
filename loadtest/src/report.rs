//! The run [`Report`]: printed as a human table at the end, and written as
//! JSON with `--json FILE`. `violations` lists every correctness failure; any
//! makes the exit code non-zero.

use serde::{Deserialize, Serialize};

use crate::stats::LatencySummary;

/// What a run measured.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Report {
    /// The scenario name.
    pub scenario: String,
    /// Sessions asked for.
    pub sessions_requested: usize,
    /// Sessions that opened.
    pub sessions_opened: usize,
    /// Sessions that failed to open.
    pub connect_failures: u64,
    /// Sessions opened per second while opening.
    pub connect_rate_per_s: f64,
    /// Seconds it took to open the sessions.
    #[serde(default)]
    pub open_time_s: f64,
    /// Connect latency.
    pub connect_latency: Option<LatencySummary>,
    /// Sessions that answered a ping after the hold (connect scenario).
    pub sessions_verified_alive: Option<u64>,
    /// Message or status-change traffic, when the scenario has any.
    pub traffic: Option<Traffic>,
    /// Rooms: per message, from the first member's delivery to the last's.
    #[serde(default)]
    pub fan_out_spread: Option<LatencySummary>,
    /// Churn: sessions dropped and reopened with a resume point.
    #[serde(default)]
    pub reconnects: Option<u64>,
    /// Churn: reconnect tries that failed and were made again.
    #[serde(default)]
    pub reconnect_retries: Option<u64>,
    /// Churn: sends not made because their session was reconnecting.
    #[serde(default)]
    pub sends_skipped: Option<u64>,
    /// Correctness failures; empty on a clean run.
    pub violations: Vec<String>,
}

/// Traffic figures of a chat or presence run.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Traffic {
    /// Target aggregate rate, per second.
    pub offered_rate_per_s: f64,
    /// Seconds of sending at the full rate.
    pub duration_s: f64,
    /// Seconds the rate rose from 0 before that; what it sent is in the
    /// counts, not in the latency or the delivered rate.
    #[serde(default)]
    pub ramp_up_s: f64,
    /// Messages (or status changes) scheduled.
    pub scheduled: u64,
    /// Sent and accepted by the router.
    pub routed: u64,
    /// Sent and refused by the router (with a reason).
    pub refused: u64,
    /// Deliveries each accepted message is due (room members but the
    /// sender; 1 for direct messages).
    #[serde(default)]
    pub deliveries_per_message: u64,
    /// Received by recipients (or watchers).
    pub delivered: u64,
    /// Routed but never received.
    pub lost: u64,
    /// Received more than once.
    pub duplicated: u64,
    /// Received out of per-sender order.
    pub reordered: u64,
    /// Delivered per second at the full rate (after the ramp-up).
    pub delivered_rate_per_s: f64,
    /// Delivery (or propagation) latency from the scheduled send time.
    pub latency: LatencySummary,
    /// CPU time (user + system) the server used over the full-rate window,
    /// seconds; measured when the run was given `--server-pid`.
    #[serde(default)]
    pub server_cpu_s: Option<f64>,
    /// That CPU time in microseconds, per message delivered that was sent
    /// in the window (the deliveries `delivered_rate_per_s` counts).
    #[serde(default)]
    pub server_cpu_us_per_delivered: Option<f64>,
}

impl Report {
    /// The human-readable table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let mut row = |k: &str, v: String| out.push_str(&format!("{k:<26} {v}\n"));
        row("scenario", self.scenario.clone());
        row(
            "sessions",
            format!(
                "{} opened of {} ({} failed) at {:.0}/s",
                self.sessions_opened,
                self.sessions_requested,
                self.connect_failures,
                self.connect_rate_per_s
            ),
        );
        if let Some(latency) = &self.connect_latency {
            row("connect latency", latency.to_string());
        }
        if let Some(alive) = self.sessions_verified_alive {
            row("verified alive", alive.to_string());
        }
        if let Some(t) = &self.traffic {
            let ramp = if t.ramp_up_s > 0.0 {
                format!(" after a {:.1} s ramp-up", t.ramp_up_s)
            } else {
                String::new()
            };
            row(
                "offered",
                format!(
                    "{:.0}/s for {:.1} s{ramp} ({} scheduled)",
                    t.offered_rate_per_s, t.duration_s, t.scheduled
                ),
            );
            row("routed / refused", format!("{} / {}", t.routed, t.refused));
            row(
                "delivered",
                format!("{} ({:.0}/s)", t.delivered, t.delivered_rate_per_s),
            );
            row(
                "lost / dup / reordered",
                format!("{} / {} / {}", t.lost, t.duplicated, t.reordered),
            );
            row("latency", t.latency.to_string());
            if let Some(cpu_s) = t.server_cpu_s {
                let per_message = t
                    .server_cpu_us_per_delivered
                    .map_or("no message delivered".to_owned(), |us| {
                        format!("{us:.1} µs per delivered message")
                    });
                row(
                    "server CPU at full rate",
                    format!("{cpu_s:.2} s ({per_message})"),
                );
            }
        }
        if let Some(spread) = &self.fan_out_spread {
            row("fan-out spread", spread.to_string());
        }
        if let Some(reconnects) = self.reconnects {
            let skipped = self.sends_skipped.unwrap_or(0);
            let retried = self.reconnect_retries.unwrap_or(0);
            row(
                "reconnects (resumed)",
                format!(
                    "{reconnects} ({retried} tries again, \
                     {skipped} sends skipped while reconnecting)"
                ),
            );
        }
        if self.violations.is_empty() {
            row("result", "PASS".into());
        } else {
            row(
                "result",
                format!("FAIL ({} violations)", self.violations.len()),
            );
            for v in &self.violations {
                row("  violation", v.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_from_before_server_cpu_was_measured_still_parses() {
        let mut old = serde_json::to_value(Report {
            traffic: Some(Traffic::default()),
            ..Report::default()
        })
        .unwrap();
        let traffic = old["traffic"].as_object_mut().unwrap();
        traffic.remove("server_cpu_s");
        traffic.remove("server_cpu_us_per_delivered");
        let report: Report = serde_json::from_value(old).unwrap();
        let traffic = report.traffic.unwrap();
        assert_eq!(traffic.server_cpu_s, None);
        assert_eq!(traffic.server_cpu_us_per_delivered, None);
    }

    #[test]
    fn the_table_shows_server_cpu_only_when_measured() {
        let mut report = Report {
            traffic: Some(Traffic::default()),
            ..Report::default()
        };
        assert!(!report.to_table().contains("server CPU"));
        let traffic = report.traffic.as_mut().unwrap();
        traffic.server_cpu_s = Some(1.5);
        traffic.server_cpu_us_per_delivered = Some(30.0);
        assert!(report
            .to_table()
            .contains("1.50 s (30.0 µs per delivered message)"));
    }
}
