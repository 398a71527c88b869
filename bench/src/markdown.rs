//! The Markdown report: the server CPU per message against nats-server
//! first, then the headline figures, every step, and the commands run.

use std::fmt::Write as _;

use crate::bench_report::BenchReport;
use crate::commands::KEEP_ALIVE;
use crate::cpu_per_message::{CpuPerMessage, ServerCpu};
use crate::verdict::verdict;

/// Renders `report`; `svg` is the plot's file name.
pub(crate) fn render(report: &BenchReport, svg: &str) -> String {
    let mut out = format!(
        "# Switchboard benchmark, {}\n\nMachine: {}. Router and load generator on the same machine, loopback; every session keeps alive every {}. The router and switchboard-load run {} runtime threads each (`worker_threads`, `--threads`); nats-server runs with Go's default `GOMAXPROCS`. Each chat step's rate rises from 0 over {:.0} s, then holds for {:.0} s; every message must arrive, and the latency and delivered/s columns are the full rate's. Router `{}`, load generator `{}`.\n\n",
        report.date,
        report.machine,
        humantime::format_duration(KEEP_ALIVE),
        report.threads_each,
        report.chat_ramp_up_s,
        report.chat_duration_s,
        report.router_bin,
        report.load_bin,
    );
    if let Some(c) = &report.calibration {
        out.push_str(&format!("Measured before the run: {}. Compare reports from machines that differ in these with care: on two machines of the same size, the router's CPU per chat message differed twofold.\n\n", c.describe()));
    }
    cpu_per_message(&mut out, report);
    summary(&mut out, report);
    steps(&mut out, report);
    out.push_str("\n## Commands\n\n");
    for step in &report.steps {
        out.push_str(&format!("- `{}`\n", step.command));
    }
    out.push_str(&format!(
        "\nPlot: `{svg}` (RSS blue, CPU orange, per step).\n"
    ));
    out
}

/// The first table: server CPU per delivered message, Switchboard against
/// nats-server, at each rate both ran.
fn cpu_per_message(out: &mut String, report: &BenchReport) {
    let s = &report.summary;
    out.push_str("## Server CPU per delivered message\n\n");
    out.push_str(&format!(
        "The server's CPU time (user + kernel, read from `/proc` by switchboard-load) over each chat step's full-rate window only, divided by the messages sent in that window and delivered, {} sessions; lower is better.\n\n",
        s.chat_sessions
    ));
    if s.nats_tls_sustainable_msgs_per_s.is_none() {
        out.push_str("nats-server was not run (not installed, or `--no-nats`): there is nothing to compare with.\n\n");
        return;
    }
    if s.server_cpu_per_message.is_empty() {
        out.push_str("No chat rate was run against both Switchboard and nats-server.\n\n");
        return;
    }
    out.push_str("| msgs/s | Switchboard µs/msg | nats-server (TLS) µs/msg | Switchboard / nats-server |\n|---|---|---|---|\n");
    for CpuPerMessage {
        rate_per_s,
        switchboard,
        nats_server,
        ratio_switchboard_to_nats,
    } in &s.server_cpu_per_message
    {
        let ratio = ratio_switchboard_to_nats.map_or("n/a".to_owned(), |r| format!("{r:.2}"));
        let _ = writeln!(
            out,
            "| {rate_per_s:.0} | {} | {} | {ratio} |",
            cpu_cell(switchboard),
            cpu_cell(nats_server)
        );
    }
    let unsustained = s
        .server_cpu_per_message
        .iter()
        .any(|row| !row.switchboard.sustainable || !row.nats_server.sustainable);
    if unsustained {
        out.push_str("\n\\* from a step whose rate was not sustainable.\n");
    }
    out.push('\n');
}

fn cpu_cell(cpu: &ServerCpu) -> String {
    let mark = if cpu.sustainable { "" } else { " \\*" };
    cpu.us_per_delivered
        .map_or("n/a".to_owned(), |us| format!("{us:.1}{mark}"))
}

/// The headline figures.
fn summary(out: &mut String, report: &BenchReport) {
    let s = &report.summary;
    out.push_str("## Summary\n\n| figure | value |\n|---|---|\n");
    out.push_str(&format!(
        "| router RSS per idle session | {:.1} KiB |\n",
        s.router_kib_per_idle_session
    ));
    out.push_str(&format!(
        "| load generator RSS per session | {:.1} KiB |\n",
        s.load_kib_per_session
    ));
    out.push_str(&format!(
        "| new sessions per second | {:.0} |\n",
        s.connect_rate_per_s
    ));
    out.push_str(&format!(
        "| router idle CPU per 100k sessions | {:.1}% of a core |\n",
        s.router_idle_cpu_percent_per_100k_sessions
    ));
    out.push_str(&format!(
        "| chat sustainable msgs/s ({} sessions, p99 < 50 ms, nothing lost) | {:.0} |\n",
        s.chat_sessions, s.chat_sustainable_msgs_per_s
    ));
    out.push_str(&format!(
        "| chat p99 at half that rate | {:.2} ms |\n",
        s.chat_p99_ms_at_half_rate
    ));
    if let Some(large) = s.chat_large_sustainable_msgs_per_s {
        out.push_str(&format!(
            "| chat sustainable msgs/s ({} sessions) | {large:.0} |\n",
            s.chat_large_sessions
        ));
    }
    match (s.nats_tls_sustainable_msgs_per_s, s.ratio_to_nats_tls) {
        (Some(nats), ratio) => {
            out.push_str(&format!(
                "| nats-server (TLS) sustainable msgs/s, same scenario | {nats:.0} |\n"
            ));
            out.push_str(&format!(
                "| ratio Switchboard / nats-server (TLS) | {} |\n\n",
                ratio.map_or("n/a".into(), |r| format!("{r:.2}"))
            ));
        }
        (None, _) => out.push_str(
            "| nats-server (TLS) baseline | not run (nats-server not installed or --no-nats) |\n\n",
        ),
    }
}

/// One row per step.
fn steps(out: &mut String, report: &BenchReport) {
    out.push_str("## Steps\n\n| step | target | sessions | offered/s | delivered/s | p50 ms | p99 ms | p99.9 ms | lost | server RSS peak MiB | server CPU avg % | server CPU µs/msg | result |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for step in &report.steps {
        let r = &step.report;
        let dash = || "-".to_owned();
        let (offered, delivered, p50, p99, p999, lost) =
            r.traffic
                .as_ref()
                .map_or((dash(), dash(), dash(), dash(), dash(), dash()), |t| {
                    (
                        format!("{:.0}", t.offered_rate_per_s),
                        format!("{:.0}", t.delivered_rate_per_s),
                        format!("{:.2}", t.latency.p50_ms),
                        format!("{:.2}", t.latency.p99_ms),
                        format!("{:.2}", t.latency.p999_ms),
                        t.lost.to_string(),
                    )
                });
        let cpu_per_message = step
            .server_cpu_us_per_delivered()
            .map_or_else(dash, |us| format!("{us:.1}"));
        out.push_str(&format!(
            "| {} | {} | {} | {offered} | {delivered} | {p50} | {p99} | {p999} | {lost} | {:.0} | {:.0} | {cpu_per_message} | {} |\n",
            step.name,
            step.target,
            r.sessions_opened,
            step.router_rss_peak_kib as f64 / 1024.0,
            step.router_cpu_percent_avg,
            verdict(r)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_per_message::tests::rung_step;
    use crate::summary::{BestRates, Summary};
    use clap::Parser as _;

    fn report(nats: bool) -> BenchReport {
        let cli = crate::bench_cli::BenchCli::try_parse_from(["switchboard-bench"]).unwrap();
        let mut steps = vec![
            rung_step("chat", 2_000.0, false, true, 21.24),
            rung_step("chat", 5_000.0, false, false, 30.0),
        ];
        if nats {
            steps.push(rung_step("nats-chat", 2_000.0, false, true, 42.5));
            steps.push(rung_step("nats-chat", 5_000.0, false, true, 40.0));
        }
        let best = BestRates {
            chat: Some(2_000.0),
            chat_large: None,
            nats: nats.then_some(5_000.0),
        };
        BenchReport {
            date: "2026-01-01T00:00:00Z".into(),
            machine: "2 cores".into(),
            calibration: None,
            router_bin: "target/release/switchboard".into(),
            load_bin: "target/release/switchboard-load".into(),
            threads_each: 1,
            chat_ramp_up_s: 5.0,
            chat_duration_s: 10.0,
            router_config: String::new(),
            summary: Summary::new(&cli, &steps, best),
            steps,
            samples: Vec::new(),
        }
    }

    #[test]
    fn the_first_table_compares_cpu_per_message_with_nats() {
        let markdown = render(&report(true), "plot.svg");
        let cpu = markdown
            .find("## Server CPU per delivered message")
            .unwrap();
        let summary = markdown.find("| figure | value |").unwrap();
        let first_table = markdown.find("\n|").unwrap();
        assert!(cpu < first_table && first_table < summary, "{markdown}");
        assert!(
            markdown.contains("| 2000 | 21.2 | 42.5 | 0.50 |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| 5000 | 30.0 \\* | 40.0 | 0.75 |"),
            "{markdown}"
        );
        assert!(markdown.contains("not sustainable."), "{markdown}");
        // The step table shows each step's figure too.
        assert!(markdown.contains("| 21.2 | pass |"), "{markdown}");
    }

    #[test]
    fn without_nats_the_report_says_so() {
        let markdown = render(&report(false), "plot.svg");
        assert!(markdown.contains("nats-server was not run"), "{markdown}");
        assert!(
            !markdown.contains("Switchboard / nats-server |\n"),
            "{markdown}"
        );
    }
}
