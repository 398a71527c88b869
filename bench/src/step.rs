//! One step of the run: a `switchboard-load` invocation against a target,
//! with the target's memory and CPU sampled from `/proc` meanwhile and the
//! load generator's own peak memory, and what the report keeps of it,
//! including its place on a chat rate ladder.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use switchboard_loadtest::cli::Cli;
use switchboard_loadtest::report::Report;

use crate::commands::shown_command;
use crate::procstat;
use crate::target::Target;

/// How often the target is sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// How often the load generator's memory is read.
const LOAD_RSS_EVERY: Duration = Duration::from_millis(250);

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
    pub(crate) samples: Vec<procstat::Sample>,
}

impl Step {
    /// Runs `load_bin` with `command` against `target`, sampling the target
    /// meanwhile (times in seconds since `epoch`), and reads the report the
    /// command writes.
    pub(crate) fn run(
        load_bin: &Path,
        target: &Target,
        name: &str,
        command: &Cli,
        rung: Option<Rung>,
        epoch: Instant,
    ) -> anyhow::Result<Step> {
        let json = command
            .json_report()
            .with_context(|| format!("{name}: its command line writes no --json report"))?;
        let args = command.to_args();
        let shown = shown_command(&args);
        eprintln!("== {name}: {shown}");
        let pid = target.pid();
        let rss_before = procstat::rss_kib(pid).unwrap_or(0);
        let started = epoch.elapsed().as_secs_f64();
        let sampler = procstat::Sampler::start(pid, SAMPLE_EVERY, epoch);
        let mut child = Command::new(load_bin)
            .args(&args)
            .stdout(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", load_bin.display()))?;
        let mut load_peak = 0;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            load_peak = load_peak.max(procstat::rss_kib(child.id()).unwrap_or(0));
            std::thread::sleep(LOAD_RSS_EVERY);
        };
        let samples = sampler.finish();
        let text = std::fs::read_to_string(json).with_context(|| {
            format!(
                "{name}: no report in {} (switchboard-load exited with {status})",
                json.display()
            )
        })?;
        let report: Report = serde_json::from_str(&text)
            .with_context(|| format!("{name}: reading {}", json.display()))?;
        Ok(Step {
            name: name.to_owned(),
            target: target.label().to_owned(),
            command: shown,
            rung,
            report,
            router_rss_before_kib: rss_before,
            router_rss_peak_kib: samples
                .iter()
                .map(|s| s.rss_kib)
                .max()
                .unwrap_or(rss_before),
            router_cpu_percent_avg: procstat::mean_cpu_percent(&samples),
            load_rss_peak_kib: load_peak,
            started_s: started,
            ended_s: epoch.elapsed().as_secs_f64(),
            samples,
        })
    }

    /// The server's CPU microseconds per delivered message over the
    /// step's full-rate window, when measured.
    pub(crate) fn server_cpu_us_per_delivered(&self) -> Option<f64> {
        self.report.traffic.as_ref()?.server_cpu_us_per_delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
