//! The run's headline figures ([`Summary`]), drawn from its steps: memory
//! per session, connect rate, idle CPU, the sustainable chat rates and the
//! comparison with nats-server.

use serde::Serialize;

use crate::bench_cli::BenchCli;
use crate::cpu_per_message::{self, CpuPerMessage};
use crate::step::Step;

/// The best sustainable chat rates the ladders found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BestRates {
    /// The 10k-session ladder's; `None` when no rung was sustainable.
    pub(crate) chat: Option<f64>,
    /// The large ladder's; `None` when it was skipped, 0 when no rung held.
    pub(crate) chat_large: Option<f64>,
    /// nats-server's; `None` when it was not run, 0 when no rung held.
    pub(crate) nats: Option<f64>,
}

/// The headline figures.
#[derive(Debug, Serialize, Default)]
pub(crate) struct Summary {
    /// Server CPU per delivered message at each rate both servers ran.
    pub(crate) server_cpu_per_message: Vec<CpuPerMessage>,
    pub(crate) router_kib_per_idle_session: f64,
    pub(crate) load_kib_per_session: f64,
    pub(crate) connect_rate_per_s: f64,
    pub(crate) router_idle_cpu_percent_per_100k_sessions: f64,
    pub(crate) chat_sessions: usize,
    pub(crate) chat_sustainable_msgs_per_s: f64,
    pub(crate) chat_p99_ms_at_half_rate: f64,
    pub(crate) chat_large_sessions: usize,
    pub(crate) chat_large_sustainable_msgs_per_s: Option<f64>,
    pub(crate) nats_tls_sustainable_msgs_per_s: Option<f64>,
    pub(crate) ratio_to_nats_tls: Option<f64>,
}

impl Summary {
    /// The figures of a run with `steps` that found `best`.
    pub(crate) fn new(cli: &BenchCli, steps: &[Step], best: BestRates) -> Summary {
        let mut summary = Summary {
            server_cpu_per_message: cpu_per_message::compare(steps),
            chat_sessions: cli.chat_sessions,
            chat_large_sessions: cli.chat_large_sessions,
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
            summary.chat_p99_ms_at_half_rate = half
                .report
                .traffic
                .as_ref()
                .map_or(0.0, |t| t.latency.p99_ms);
        }
        summary
    }

    /// Memory per session, connect rate, and idle CPU over the connect
    /// step's hold of `hold_s` seconds.
    fn add_connect(&mut self, connect: &Step, hold_s: f64) {
        let sessions = connect.report.sessions_opened.max(1) as f64;
        self.router_kib_per_idle_session = connect
            .router_rss_peak_kib
            .saturating_sub(connect.router_rss_before_kib)
            as f64
            / sessions;
        self.load_kib_per_session = connect.load_rss_peak_kib as f64 / sessions;
        self.connect_rate_per_s = connect.report.connect_rate_per_s;
        // Idle CPU: only the hold, after every session opened and before the
        // verification pings.
        let idle_from = connect.started_s + connect.report.open_time_s + 2.0;
        let idle_to = connect.started_s + connect.report.open_time_s + hold_s - 1.0;
        let idle: Vec<f64> = connect
            .samples
            .iter()
            .filter(|s| s.t_s >= idle_from && s.t_s <= idle_to)
            .map(|s| s.cpu_percent)
            .collect();
        let idle_cpu = idle.iter().sum::<f64>() / idle.len().max(1) as f64;
        self.router_idle_cpu_percent_per_100k_sessions = idle_cpu * 100_000.0 / sessions;
    }
}
