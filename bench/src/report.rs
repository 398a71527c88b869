//! [`BenchReport`]: everything a run measured, each [`Step`] with its place
//! on a chat rate ladder ([`Rung`]), and writing it out as
//! `<date>-report.{json,svg,md}` (the Markdown also to stdout).
//!
//! The Markdown report: the server CPU per message against nats-server
//! first, then the headline figures, every step, and the commands run.
//!
//! The plot: a dependency-free SVG line chart of the router's RSS and CPU
//! over a run, with the scenario phases marked.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use switchboard_loadtest::report::Report;

use crate::calibrate;
use crate::commands::KEEP_ALIVE;
use crate::procstat::Sample;
use crate::summary::{verdict, ServerCpu, Summary};

/// The whole run.
#[derive(Debug, Serialize, Default)]
pub(crate) struct BenchReport {
    pub(crate) date: String,
    pub(crate) machine: String,
    /// What a system call, a loopback datagram and a cache miss cost here,
    /// measured before the run: machines that differ in these give
    /// different figures.
    pub(crate) calibration: Option<calibrate::Calibration>,
    /// The router binary measured (`--router-bin`).
    pub(crate) router_bin: String,
    /// The load generator that measured it (`--load-bin`).
    pub(crate) load_bin: String,
    /// Runtime threads the router and the load generator each ran (see
    /// `--threads-each`).
    pub(crate) threads_each: usize,
    /// Seconds each chat step's rate rose before it held (`--chat-ramp-up`).
    pub(crate) chat_ramp_up_s: f64,
    /// Seconds each chat step held its full rate (`--chat-duration`).
    pub(crate) chat_duration_s: f64,
    pub(crate) router_config: String,
    pub(crate) steps: Vec<Step>,
    pub(crate) summary: Summary,
    pub(crate) samples: Vec<Sample>,
}

/// The 10k-session ladder against the router: steps `chat-<rate>`.
pub(crate) const SWITCHBOARD_LADDER: &str = "chat";
/// The same ladder against nats-server: steps `nats-chat-<rate>`.
pub(crate) const NATS_LADDER: &str = "nats-chat";

/// Where a step sits on a ladder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Rung {
    pub(crate) ladder: String,
    /// Messages per second.
    pub(crate) rate_per_s: f64,
    /// Whether this is the second try of the rate.
    pub(crate) retry: bool,
}

impl Rung {
    pub(crate) fn step_name(&self) -> String {
        let retry = if self.retry { "-retry" } else { "" };
        format!("{}-{}{retry}", self.ladder, self.rate_per_s)
    }
}

/// One scenario step in the report.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Step {
    pub(crate) name: String,
    /// What it drove.
    pub(crate) target: String,
    /// The load generator's command line, secrets masked.
    pub(crate) command: String,
    /// Its place on a chat ladder, if it is a rung.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rung: Option<Rung>,
    pub(crate) report: Report,
    pub(crate) router_rss_before_kib: u64,
    pub(crate) router_rss_peak_kib: u64,
    pub(crate) router_cpu_percent_avg: f64,
    pub(crate) load_rss_peak_kib: u64,
    pub(crate) started_s: f64,
    pub(crate) ended_s: f64,
    #[serde(skip)]
    pub(crate) samples: Vec<Sample>,
}

impl Step {
    /// The server's CPU microseconds per delivered message over the
    /// step's full-rate window, when measured.
    pub(crate) fn server_cpu_us_per_delivered(&self) -> Option<f64> {
        self.report.traffic.as_ref()?.server_cpu_us_per_delivered
    }
}

impl BenchReport {
    /// Writes `<out>/<date>-report.{json,svg,md}` and prints the Markdown.
    pub(crate) fn write(&self, out: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let stem = out.join(format!("{}-report", self.date.replace(':', "")));
        let svg = stem.with_extension("svg");
        let markdown = render(self, &svg.file_name().unwrap_or_default().to_string_lossy());
        for (path, contents) in [
            (
                stem.with_extension("json"),
                serde_json::to_string_pretty(self)?,
            ),
            (svg, plot_svg(&self.samples, &self.steps)),
            (stem.with_extension("md"), markdown.clone()),
        ] {
            std::fs::write(&path, contents)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        // A closed stdout (`| head`) is not an error: the files are written.
        let mut stdout = std::io::stdout().lock();
        match writeln!(stdout, "{markdown}").and_then(|()| stdout.flush()) {
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(error.into())
            }
            _ => {}
        }
        eprintln!("report written to {}.{{md,json,svg}}", stem.display());
        Ok(())
    }
}

/// Renders `report` as Markdown; `svg` is the plot's file name.
fn render(report: &BenchReport, svg: &str) -> String {
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
        let _ = write!(out, "Measured before the run: {}. Compare reports from machines that differ in these with care: on two machines of the same size, the router's CPU per chat message differed twofold.\n\n", c.describe());
    }
    cpu_per_message(&mut out, &report.summary);
    summary(&mut out, &report.summary);
    steps(&mut out, &report.steps);
    out.push_str("\n## Commands\n\n");
    for step in &report.steps {
        let _ = writeln!(out, "- `{}`", step.command);
    }
    let _ = writeln!(out, "\nPlot: `{svg}` (RSS blue, CPU orange, per step).");
    out
}

/// The first table: server CPU per delivered message, Switchboard against
/// nats-server, at each rate both ran.
fn cpu_per_message(out: &mut String, s: &Summary) {
    out.push_str("## Server CPU per delivered message\n\n");
    let _ = write!(
        out,
        "The server's CPU time (user + kernel, read from `/proc` by switchboard-load) over each chat step's full-rate window only, divided by the messages sent in that window and delivered, {} sessions; lower is better.\n\n",
        s.chat_sessions
    );
    if let Some(why) = &s.nats_not_run {
        let _ = write!(
            out,
            "nats-server was not run ({why}): there is nothing to compare with.\n\n"
        );
        return;
    }
    if s.server_cpu_per_message.is_empty() {
        out.push_str("No chat rate was run against both Switchboard and nats-server.\n\n");
        return;
    }
    out.push_str("| msgs/s | Switchboard µs/msg | nats-server (TLS) µs/msg | Switchboard / nats-server |\n|---|---|---|---|\n");
    for row in &s.server_cpu_per_message {
        let _ = writeln!(
            out,
            "| {:.0} | {} | {} | {} |",
            row.rate_per_s,
            cpu_cell(&row.switchboard),
            cpu_cell(&row.nats_server),
            ratio_cell(row.ratio_switchboard_to_nats)
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

fn ratio_cell(ratio: Option<f64>) -> String {
    ratio.map_or("n/a".to_owned(), |r| format!("{r:.2}"))
}

/// The headline figures.
fn summary(out: &mut String, s: &Summary) {
    let _ = write!(
        out,
        "## Summary\n\n| figure | value |\n|---|---|\n\
         | router RSS per idle session | {:.1} KiB |\n\
         | load generator RSS per session | {:.1} KiB |\n\
         | new sessions per second | {:.0} |\n\
         | router idle CPU per 100k sessions | {} |\n\
         | chat sustainable msgs/s ({} sessions, p99 < 50 ms, nothing lost) | {} |\n\
         | chat p99 at half that rate | {:.2} ms |\n",
        s.router_kib_per_idle_session,
        s.load_kib_per_session,
        s.connect_rate_per_s,
        idle_cpu_cell(s),
        s.chat_sessions,
        rate_cell(s.chat_sustainable_msgs_per_s, s),
        s.chat_p99_ms_at_half_rate
    );
    if let Some(large) = s.chat_large_sustainable_msgs_per_s {
        let sessions = s.chat_large_sessions;
        let large = rate_cell(large, s);
        let _ = writeln!(
            out,
            "| chat sustainable msgs/s ({sessions} sessions) | {large} |"
        );
    }
    match (s.nats_tls_sustainable_msgs_per_s, &s.nats_not_run) {
        (Some(nats), _) => {
            let _ = write!(
                out,
                "| nats-server (TLS) sustainable msgs/s, same scenario | {} |\n\
                 | ratio Switchboard / nats-server (TLS) | {} |\n\n",
                rate_cell(nats, s),
                ratio_cell(s.ratio_to_nats_tls)
            );
        }
        (None, why) => {
            let why = why.as_deref().unwrap_or("not run");
            let _ = write!(out, "| nats-server (TLS) baseline | not run: {why} |\n\n");
        }
    }
}

/// Idle CPU, or why it was not measured.
fn idle_cpu_cell(s: &Summary) -> String {
    match s.router_idle_cpu_percent_per_100k_sessions {
        Some(percent) => format!("{percent:.1}% of a core"),
        None => format!(
            "not measured: {:.0} s idle is under two {} s keep-alive intervals (raise --hold)",
            s.idle_window_s,
            KEEP_ALIVE.as_secs()
        ),
    }
}

/// A best rate; the ladder's top rung held is a lower bound, not a limit.
fn rate_cell(rate: f64, s: &Summary) -> String {
    if rate > 0.0 && rate >= s.chat_top_rung_msgs_per_s {
        format!("≥ {rate:.0} (the top rung held; add higher --chat-rates)")
    } else {
        format!("{rate:.0}")
    }
}

/// One row per step.
fn steps(out: &mut String, steps: &[Step]) {
    out.push_str("## Steps\n\n| step | target | sessions | offered/s | delivered/s | p50 ms | p99 ms | p99.9 ms | lost | server RSS peak MiB | server CPU avg % | server CPU µs/msg | result |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for step in steps {
        let r = &step.report;
        let traffic = r
            .traffic
            .as_ref()
            .map_or("- | - | - | - | - | -".to_owned(), |t| {
                format!(
                    "{:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {}",
                    t.offered_rate_per_s,
                    t.delivered_rate_per_s,
                    t.latency.p50_ms,
                    t.latency.p99_ms,
                    t.latency.p999_ms,
                    t.lost
                )
            });
        let cpu_per_message = step
            .server_cpu_us_per_delivered()
            .map_or("-".to_owned(), |us| format!("{us:.1}"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {traffic} | {:.0} | {:.0} | {cpu_per_message} | {} |",
            step.name,
            step.target,
            r.sessions_opened,
            step.router_rss_peak_kib as f64 / 1024.0,
            step.router_cpu_percent_avg,
            verdict(r)
        );
    }
}

/// Renders RSS (MiB, left axis) and CPU (% of a core, right axis) over
/// time, each step's span marked.
fn plot_svg(samples: &[Sample], phases: &[Step]) -> String {
    let (w, h, margin) = (900.0, 360.0, 50.0);
    let t_max = samples.last().map_or(1.0, |s| s.t_s).max(1.0);
    let mib = |s: &Sample| s.rss_kib as f64 / 1024.0;
    let rss_max = samples.iter().map(mib).fold(1.0, f64::max) * 1.1;
    let cpu_max = samples.iter().map(|s| s.cpu_percent).fold(100.0, f64::max) * 1.1;
    let x = |t: f64| margin + t / t_max * (w - 2.0 * margin);
    let y = |v: f64, max: f64| h - margin - v / max * (h - 2.0 * margin);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11"><rect width="{w}" height="{h}" fill="white"/>"#
    );
    for (i, phase) in phases.iter().enumerate() {
        let fill = if i % 2 == 0 { "#f0f4ff" } else { "#fff4e8" };
        let _ = write!(
            out,
            r#"<rect x="{:.1}" y="{margin}" width="{:.1}" height="{:.1}" fill="{fill}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            x(phase.started_s),
            (x(phase.ended_s) - x(phase.started_s)).max(1.0),
            h - 2.0 * margin,
            x(phase.started_s) + 2.0,
            margin - 4.0 - (i % 2) as f64 * 12.0,
            phase.name
        );
    }
    let line = |value: &dyn Fn(&Sample) -> f64, max: f64| {
        samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.t_s), y(value(s), max)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (stroke, width, points) in [
        ("#1f5fbf", "1.5", line(&mib, rss_max)),
        ("#d9480f", "1", line(&|s| s.cpu_percent, cpu_max)),
    ] {
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{stroke}" stroke-width="{width}" points="{points}"/>"#
        );
    }
    let _ = write!(
        out,
        r##"<line x1="{margin}" y1="{0}" x2="{1}" y2="{0}" stroke="black"/><text x="{margin}" y="{2}">0 s</text><text x="{3}" y="{2}">{t_max:.0} s</text>"##,
        h - margin,
        w - margin,
        h - margin + 14.0,
        w - margin - 20.0
    );
    let _ = write!(
        out,
        r##"<text x="4" y="{margin}" fill="#1f5fbf">RSS {rss_max:.0} MiB</text><text x="{:.0}" y="{margin}" fill="#d9480f">CPU {cpu_max:.0}%</text></svg>"##,
        w - 110.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::tests::rung_step;
    use crate::summary::BestRates;
    use clap::Parser as _;

    fn report(nats: bool) -> BenchReport {
        let cli = crate::BenchCli::try_parse_from(["switchboard-bench"]).unwrap();
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
            nats_not_run: (!nats).then(|| "--no-nats".to_owned()),
        };
        BenchReport {
            summary: Summary::new(&cli, &steps, best),
            steps,
            ..BenchReport::default()
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
        for expected in [
            "| 2000 | 21.2 | 42.5 | 0.50 |",
            "| 5000 | 30.0 \\* | 40.0 | 0.75 |",
            "not sustainable.",
            // The step table shows each step's figure too.
            "| 21.2 | pass |",
        ] {
            assert!(markdown.contains(expected), "{markdown}");
        }
    }

    #[test]
    fn without_nats_the_report_says_so() {
        let markdown = render(&report(false), "plot.svg");
        assert!(
            markdown.contains("nats-server was not run (--no-nats)"),
            "{markdown}"
        );
        assert!(markdown.contains("| not run: --no-nats |"), "{markdown}");
        assert!(
            !markdown.contains("Switchboard / nats-server |\n"),
            "{markdown}"
        );
    }

    #[test]
    fn rung_steps_are_named_by_ladder_rate_and_try() {
        let mut rung = Rung {
            ladder: "chat".into(),
            rate_per_s: 2_000.0,
            retry: false,
        };
        assert_eq!(rung.step_name(), "chat-2000");
        rung.retry = true;
        rung.rate_per_s = 625.5;
        assert_eq!(rung.step_name(), "chat-625.5-retry");
    }
}
