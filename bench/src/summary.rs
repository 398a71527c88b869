//! The run's headline figures ([`Summary`]), drawn from its steps: memory
//! per session, connect rate, idle CPU, the sustainable chat rates and the
//! comparison with nats-server. Also whether a step passed: its
//! correctness violations, and for a chat rung whether its rate was
//! sustainable (everything scheduled delivered, p99 under
//! [`SUSTAINABLE_P99_MS`]).
//!
//! The report's first table ([`CpuPerMessage`]): at each chat rate that
//! both Switchboard (the 10k-session ladder) and nats-server ran, each
//! server's CPU time per delivered message over the step's full-rate
//! window, as `switchboard-load --server-pid` measured it, and their ratio.

use serde::Serialize;
use switchboard_loadtest::report::Report;

use crate::commands::KEEP_ALIVE;
use crate::procstat;
use crate::report::{Step, NATS_LADDER, SWITCHBOARD_LADDER};
use crate::BenchCli;

/// The p99 delivery latency under which a chat rate counts as sustainable.
pub(crate) const SUSTAINABLE_P99_MS: f64 = 50.0;

/// The best sustainable chat rates the ladders found.
#[derive(Debug, Default, Clone)]
pub(crate) struct BestRates {
    /// The 10k-session ladder's; `None` when no rung was sustainable.
    pub(crate) chat: Option<f64>,
    /// The large ladder's; `None` when it was skipped, 0 when no rung held.
    pub(crate) chat_large: Option<f64>,
    /// nats-server's; `None` when it was not run, 0 when no rung held.
    pub(crate) nats: Option<f64>,
    /// Why nats-server was not run, when it was not.
    pub(crate) nats_not_run: Option<String>,
}

/// The headline figures.
#[derive(Debug, Serialize, Default)]
pub(crate) struct Summary {
    /// Server CPU per delivered message at each rate both servers ran.
    pub(crate) server_cpu_per_message: Vec<CpuPerMessage>,
    pub(crate) router_kib_per_idle_session: f64,
    pub(crate) load_kib_per_session: f64,
    pub(crate) connect_rate_per_s: f64,
    /// `None` when the hold left less than two keep-alive intervals idle:
    /// a shorter window can miss every keep-alive and read 0.
    pub(crate) router_idle_cpu_percent_per_100k_sessions: Option<f64>,
    /// The idle window the figure above was (or would have been) taken over.
    pub(crate) idle_window_s: f64,
    pub(crate) chat_sessions: usize,
    /// The highest rate of `--chat-rates`: a best rate equal to it is only
    /// a lower bound.
    pub(crate) chat_top_rung_msgs_per_s: f64,
    pub(crate) chat_sustainable_msgs_per_s: f64,
    pub(crate) chat_p99_ms_at_half_rate: f64,
    pub(crate) chat_large_sessions: usize,
    pub(crate) chat_large_sustainable_msgs_per_s: Option<f64>,
    pub(crate) nats_tls_sustainable_msgs_per_s: Option<f64>,
    pub(crate) nats_not_run: Option<String>,
    pub(crate) ratio_to_nats_tls: Option<f64>,
}

impl Summary {
    /// The figures of a run with `steps` that found `best`.
    pub(crate) fn new(cli: &BenchCli, steps: &[Step], best: BestRates) -> Summary {
        let mut summary = Summary {
            server_cpu_per_message: compare(steps),
            chat_sessions: cli.chat_sessions,
            chat_large_sessions: cli.chat_large_sessions,
            chat_top_rung_msgs_per_s: cli.chat_rates.iter().copied().fold(0.0, f64::max),
            nats_not_run: best.nats_not_run.clone(),
            chat_sustainable_msgs_per_s: best.chat.unwrap_or(0.0),
            chat_large_sustainable_msgs_per_s: best.chat_large,
            nats_tls_sustainable_msgs_per_s: best.nats,
            ratio_to_nats_tls: best
                .nats
                .filter(|n| *n > 0.0)
                .map(|n| best.chat.unwrap_or(0.0) / n),
            ..Summary::default()
        };
        if let Some(connect) = steps.iter().find(|s| s.name == "connect") {
            summary.add_connect(connect, cli.hold.as_secs_f64());
        }
        if let Some(half) = steps.iter().find(|s| s.name.starts_with("chat-half")) {
            let traffic = half.report.traffic.as_ref();
            summary.chat_p99_ms_at_half_rate = traffic.map_or(0.0, |t| t.latency.p99_ms);
        }
        summary
    }

    /// Memory per session, connect rate, and idle CPU over the connect
    /// step's hold of `hold_s` seconds.
    fn add_connect(&mut self, connect: &Step, hold_s: f64) {
        let sessions = connect.report.sessions_opened.max(1) as f64;
        let grown = connect
            .router_rss_peak_kib
            .saturating_sub(connect.router_rss_before_kib);
        self.router_kib_per_idle_session = grown as f64 / sessions;
        self.load_kib_per_session = connect.load_rss_peak_kib as f64 / sessions;
        self.connect_rate_per_s = connect.report.connect_rate_per_s;
        // Idle CPU: only the hold, after every session opened and before the
        // verification pings.
        let idle_from = connect.started_s + connect.report.open_time_s + 2.0;
        let idle_to = connect.started_s + connect.report.open_time_s + hold_s - 1.0;
        self.idle_window_s = (idle_to - idle_from).max(0.0);
        if self.idle_window_s < 2.0 * KEEP_ALIVE.as_secs_f64() {
            self.router_idle_cpu_percent_per_100k_sessions = None;
            return;
        }
        let idle: Vec<procstat::Sample> = connect
            .samples
            .iter()
            .filter(|s| s.t_s >= idle_from && s.t_s <= idle_to)
            .copied()
            .collect();
        self.router_idle_cpu_percent_per_100k_sessions =
            Some(procstat::mean_cpu_percent(&idle) * 100_000.0 / sessions);
    }
}

/// Whether a step's rate was sustainable: no violations, traffic carried,
/// everything delivered in time.
pub(crate) fn sustainable(report: &Report) -> bool {
    report.violations.is_empty() && report.traffic.is_some() && shortfall(report).is_none()
}

/// Why a correct chat step was not sustainable: not everything it scheduled
/// was delivered, or its p99 reached [`SUSTAINABLE_P99_MS`]. `None` when
/// it was (or carried no traffic).
fn shortfall(r: &Report) -> Option<String> {
    let t = r.traffic.as_ref()?;
    let due = t.scheduled * t.deliveries_per_message.max(1);
    if t.delivered < due {
        Some(format!("{} of {due} delivered", t.delivered))
    } else if t.latency.p99_ms >= SUSTAINABLE_P99_MS {
        Some(format!("p99 >= {SUSTAINABLE_P99_MS:.0} ms"))
    } else {
        None
    }
}

/// The report's verdict on one step: its correctness violations, else, for
/// a chat ladder step, whether it was sustainable, else `pass`. Rooms and
/// churn steps are judged on correctness alone: a room's p99 spans its
/// whole fan-out, and churn skips sends while a session reconnects.
pub(crate) fn verdict(r: &Report) -> String {
    if !r.violations.is_empty() {
        return r.violations.join("; ");
    }
    match shortfall(r) {
        Some(why) if matches!(r.scenario.as_str(), "chat" | "nats-chat") => {
            format!("correct, not sustainable: {why}")
        }
        _ => "pass".to_owned(),
    }
}

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
    pub(crate) switchboard: ServerCpu,
    pub(crate) nats_server: ServerCpu,
    /// Switchboard's CPU per message over nats-server's.
    pub(crate) ratio_switchboard_to_nats: Option<f64>,
}

/// The rows, by rate in the order Switchboard's ladder ran them.
fn compare(steps: &[Step]) -> Vec<CpuPerMessage> {
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
        .filter(|s| matches!(&s.rung, Some(r) if r.ladder == ladder && r.rate_per_s == rate))
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
    use crate::report::Rung;
    use switchboard_loadtest::report::Traffic;

    /// A chat report with 1,000 messages scheduled.
    fn chat_report(delivered: u64, p99_ms: f64) -> Report {
        let mut traffic = Traffic {
            scheduled: 1_000,
            deliveries_per_message: 1,
            delivered,
            ..Traffic::default()
        };
        traffic.latency.p99_ms = p99_ms;
        Report {
            scenario: "chat".into(),
            traffic: Some(traffic),
            ..Report::default()
        }
    }

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
            rung: Some(rung),
            report,
            ..Step::default()
        }
    }

    #[test]
    fn only_a_correct_timely_complete_step_passes_and_is_sustainable() {
        for (delivered, p99_ms, expected) in [
            (1_000, 12.0, "pass"),
            (1_000, 50.0, "correct, not sustainable: p99 >= 50 ms"),
            (999, 12.0, "correct, not sustainable: 999 of 1000 delivered"),
        ] {
            let report = chat_report(delivered, p99_ms);
            assert_eq!(verdict(&report), expected);
            assert_eq!(sustainable(&report), expected == "pass", "{expected}");
        }
        let mut lossy = chat_report(990, 12.0);
        lossy.violations = vec!["10 lost".into()];
        assert_eq!(verdict(&lossy), "10 lost");
        assert_eq!(verdict(&Report::default()), "pass");
        assert!(!sustainable(&Report::default()), "no traffic");
        let mut slow_room = chat_report(1_000, 168.0);
        slow_room.scenario = "rooms".into();
        assert_eq!(verdict(&slow_room), "pass");
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
