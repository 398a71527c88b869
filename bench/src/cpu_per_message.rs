//! The report's first table: at each chat rate that both Switchboard (the
//! 10k-session ladder) and nats-server ran, each server's CPU time per
//! delivered message over the step's full-rate window, as
//! `switchboard-load --server-pid` measured it, and their ratio.

use serde::Serialize;

use crate::ladder::{NATS_LADDER, SWITCHBOARD_LADDER};
use crate::step::Step;
use crate::verdict::sustainable;

/// One server's figure at one rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ServerCpu {
    /// The step it comes from: the try that was sustainable, else the last.
    pub(crate) step: String,
    /// Whether that step's rate was sustainable.
    pub(crate) sustainable: bool,
    /// Server CPU microseconds per delivered message; `None` when not
    /// measured.
    pub(crate) us_per_delivered: Option<f64>,
}

/// One rate both servers ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct CpuPerMessage {
    /// Messages per second.
    pub(crate) rate_per_s: f64,
    /// Switchboard's figure.
    pub(crate) switchboard: ServerCpu,
    /// nats-server's figure.
    pub(crate) nats_server: ServerCpu,
    /// Switchboard's CPU per message over nats-server's.
    pub(crate) ratio_switchboard_to_nats: Option<f64>,
}

/// The rows, by rate in the order Switchboard's ladder ran them.
pub(crate) fn compare(steps: &[Step]) -> Vec<CpuPerMessage> {
    let mut rates: Vec<f64> = Vec::new();
    for rung in steps.iter().filter_map(|s| s.rung.as_ref()) {
        if rung.ladder == SWITCHBOARD_LADDER && !rates.contains(&rung.rate_per_s) {
            rates.push(rung.rate_per_s);
        }
    }
    rates
        .into_iter()
        .filter_map(|rate| {
            let switchboard = figure(steps, SWITCHBOARD_LADDER, rate)?;
            let nats_server = figure(steps, NATS_LADDER, rate)?;
            let ratio = match (switchboard.us_per_delivered, nats_server.us_per_delivered) {
                (Some(ours), Some(theirs)) if theirs > 0.0 => Some(ours / theirs),
                _ => None,
            };
            Some(CpuPerMessage {
                rate_per_s: rate,
                switchboard,
                nats_server,
                ratio_switchboard_to_nats: ratio,
            })
        })
        .collect()
}

/// The figure of `ladder` at `rate`: from the try that was sustainable,
/// else from the last try; `None` if the ladder did not run the rate.
fn figure(steps: &[Step], ladder: &str, rate: f64) -> Option<ServerCpu> {
    let tries: Vec<&Step> = steps
        .iter()
        .filter(|s| {
            s.rung
                .as_ref()
                .is_some_and(|r| r.ladder == ladder && r.rate_per_s == rate)
        })
        .collect();
    let step = tries
        .iter()
        .find(|s| sustainable(&s.report))
        .or(tries.last())?;
    Some(ServerCpu {
        step: step.name.clone(),
        sustainable: sustainable(&step.report),
        us_per_delivered: step.server_cpu_us_per_delivered(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ladder::Rung;
    use crate::verdict::tests::chat_report;

    /// A rung step of `ladder` at `rate` that was sustainable or not, with
    /// the server's CPU µs per message.
    pub(crate) fn rung_step(ladder: &str, rate: f64, retry: bool, ok: bool, us: f64) -> Step {
        let rung = Rung {
            ladder: ladder.into(),
            rate_per_s: rate,
            retry,
        };
        let mut report = chat_report(1_000, if ok { 10.0 } else { 80.0 });
        report.traffic.as_mut().unwrap().server_cpu_us_per_delivered = Some(us);
        Step {
            name: rung.step_name(),
            target: String::new(),
            command: String::new(),
            rung: Some(rung),
            report,
            router_rss_before_kib: 0,
            router_rss_peak_kib: 0,
            router_cpu_percent_avg: 0.0,
            load_rss_peak_kib: 0,
            started_s: 0.0,
            ended_s: 0.0,
            samples: Vec::new(),
        }
    }

    #[test]
    fn a_row_per_rate_both_ran_from_the_try_that_passed() {
        let steps = vec![
            rung_step("chat", 2_000.0, false, true, 20.0),
            rung_step("chat", 5_000.0, false, false, 99.0),
            rung_step("chat", 5_000.0, true, true, 18.0),
            rung_step("chat", 10_000.0, false, true, 16.0),
            rung_step("nats-chat", 2_000.0, false, true, 40.0),
            rung_step("nats-chat", 5_000.0, false, true, 36.0),
            // Only the 10k-session ladder counts.
            rung_step("chat-100000-sessions", 2_000.0, false, true, 50.0),
        ];
        let rows = compare(&steps);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].rate_per_s, 2_000.0);
        assert_eq!(rows[0].ratio_switchboard_to_nats, Some(0.5));
        assert_eq!(rows[1].switchboard.step, "chat-5000-retry");
        assert_eq!(rows[1].switchboard.us_per_delivered, Some(18.0));
        assert_eq!(rows[1].ratio_switchboard_to_nats, Some(0.5));
    }

    #[test]
    fn a_rate_neither_try_sustained_shows_the_last_try_as_such() {
        let steps = vec![
            rung_step("chat", 30_000.0, false, false, 30.0),
            rung_step("chat", 30_000.0, true, false, 32.0),
            rung_step("nats-chat", 30_000.0, false, true, 16.0),
        ];
        let rows = compare(&steps);
        assert_eq!(rows[0].switchboard.step, "chat-30000-retry");
        assert!(!rows[0].switchboard.sustainable);
        assert!(rows[0].nats_server.sustainable);
        assert_eq!(rows[0].ratio_switchboard_to_nats, Some(2.0));
    }

    #[test]
    fn no_nats_ladder_no_rows() {
        assert!(compare(&[rung_step("chat", 2_000.0, false, true, 20.0)]).is_empty());
    }
}
