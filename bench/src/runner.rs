//! [`Runner`]: runs the standard steps in order, keeping what they
//! measured: connect, the chat ladder, rooms and churn on one router; the
//! same ladder against nats-server; the ladder with many more sessions on
//! a fresh router. Each step runs `switchboard-load` with the target's
//! memory and CPU sampled from `/proc`; between steps the target goes quiet.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use switchboard_loadtest::cli::Cli;
use switchboard_loadtest::report::Report;

use crate::calibrate::{self, Calibration};
use crate::commands::{shown_command, Commands};
use crate::procstat;
use crate::report::{BenchReport, Rung, Step, NATS_LADDER, SWITCHBOARD_LADDER};
use crate::router::{Router, RouterSetup};
use crate::summary::{sustainable, BestRates, Summary};
use crate::target::{start_nats, RouterTarget, Target};
use crate::BenchCli;

/// How often the target is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// How often the load generator's memory is read.
const LOAD_RSS_EVERY: Duration = Duration::from_millis(250);
/// Below this share of a core the target counts as quiet between steps.
const QUIET_CPU_PERCENT: f64 = 15.0;
/// Least and most time given to the target to go quiet between steps.
const SETTLE_AT_LEAST: Duration = Duration::from_secs(2);
const SETTLE_AT_MOST: Duration = Duration::from_secs(60);
/// The chat rate churn runs at when no chat rung was sustainable: half of it.
const CHURN_FALLBACK_CHAT_RATE: f64 = 2_000.0;

/// One chat rate ladder: against which target, with how many sessions.
struct Ladder<'a> {
    /// The server it drives.
    target: &'a Target,
    /// Sessions (or nats connections) per rung.
    sessions: usize,
    /// Its name; rung steps are `{name}-{rate}`, a retry
    /// `{name}-{rate}-retry`.
    name: &'a str,
    /// Also run once at half the best rate (the latency figure).
    half_rate_step: bool,
}

/// The rungs tried, fastest first, when the ladder's first rung `first`
/// failed: halving, down to 1/16 of it.
fn rungs_below(first: f64) -> Vec<f64> {
    (1..=4).map(|k| first / f64::from(1u32 << k)).collect()
}

/// One bench run in progress.
pub(crate) struct Runner {
    cli: BenchCli,
    /// Where the router's files and the steps' reports go.
    work_dir: PathBuf,
    /// Times in the report count from here.
    epoch: Instant,
    steps: Vec<Step>,
    /// The routers' RSS and CPU over their whole lives.
    samples: Vec<procstat::Sample>,
    /// Every router of the run gets this configuration.
    router_setup: RouterSetup,
}

impl Runner {
    /// A run as `cli` says, its files in a fresh work directory.
    pub(crate) fn new(cli: BenchCli) -> anyhow::Result<Runner> {
        let work_dir =
            std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("creating {}", work_dir.display()))?;
        let router_setup = RouterSetup::new(&work_dir, cli.port, cli.shards, cli.threads_each())?;
        Ok(Runner {
            cli,
            work_dir,
            epoch: Instant::now(),
            steps: Vec::new(),
            samples: Vec::new(),
            router_setup,
        })
    }

    /// Runs every standard step and returns the report.
    pub(crate) fn run(mut self, calibration: Option<Calibration>) -> anyhow::Result<BenchReport> {
        let chat = self.switchboard_steps()?;
        let (nats, nats_not_run) = match self.nats_ladder()? {
            Ok(best) => (Some(best), None),
            Err(why) => (None, Some(why)),
        };
        let best = BestRates {
            chat,
            nats,
            nats_not_run,
            chat_large: self.large_ladder()?,
        };
        let cli = &self.cli;
        Ok(BenchReport {
            date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            machine: calibrate::machine_size(),
            calibration,
            router_bin: cli.router_bin().display().to_string(),
            load_bin: cli.load_bin().display().to_string(),
            threads_each: cli.threads_each(),
            chat_ramp_up_s: cli.chat_ramp_up.as_secs_f64(),
            chat_duration_s: cli.chat_duration.as_secs_f64(),
            router_config: self.router_setup.toml,
            summary: Summary::new(cli, &self.steps, best),
            steps: self.steps,
            samples: self.samples,
        })
    }

    fn commands(&self) -> Commands<'_> {
        Commands::new(&self.cli, &self.work_dir)
    }

    /// Starts a router with the run's configuration, runs `steps` on it
    /// while sampling it, and stops it.
    fn on_router<T>(
        &mut self,
        steps: impl FnOnce(&mut Runner, &RouterTarget) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let router = Router::start(&self.cli.router_bin(), &self.router_setup)?;
        let sampler = procstat::Sampler::start(router.target.pid, SAMPLE_EVERY, self.epoch);
        let result = steps(self, &router.target)?;
        self.samples.extend(sampler.finish());
        router.stop()?;
        Ok(result)
    }

    /// Runs the load generator with `command` against `target`, sampling
    /// the target meanwhile, and keeps the step with the report the
    /// command writes.
    fn run_step(
        &mut self,
        target: &Target,
        name: &str,
        command: Cli,
        rung: Option<Rung>,
    ) -> anyhow::Result<&Step> {
        let load_bin = self.cli.load_bin();
        let json = command
            .json_report()
            .with_context(|| format!("{name}: its command line writes no --json report"))?;
        let args = command.to_args();
        let shown = shown_command(&args);
        eprintln!("== {name}: {shown}");
        let pid = target.pid();
        let rss_before = procstat::rss_kib(pid).unwrap_or(0);
        let started = self.epoch.elapsed().as_secs_f64();
        let sampler = procstat::Sampler::start(pid, SAMPLE_EVERY, self.epoch);
        let mut child = Command::new(&load_bin)
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
        self.steps.push(Step {
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
            ended_s: self.epoch.elapsed().as_secs_f64(),
            samples,
        });
        Ok(self.steps.last().expect("just pushed"))
    }

    /// Waits (2 s at least, 60 s at most) until the target's CPU falls below
    /// 15% of a core, so that a step does not measure the teardown of the
    /// last one's sessions.
    fn settle(&self, target: &Target) {
        std::thread::sleep(SETTLE_AT_LEAST);
        let waited = procstat::wait_until_quiet(
            target.pid(),
            QUIET_CPU_PERCENT,
            Duration::from_millis(500),
            SETTLE_AT_MOST,
        );
        if waited > Duration::from_secs(1) {
            eprintln!(
                "   (waited {:.1} s more for the target to go quiet)",
                waited.as_secs_f64()
            );
        }
    }

    /// Connect, the chat ladder (with its half-rate step), rooms and churn,
    /// on one router; returns the best sustainable chat rate.
    fn switchboard_steps(&mut self) -> anyhow::Result<Option<f64>> {
        self.on_router(|runner, router| {
            let target = Target::Switchboard(router.clone());
            let command = runner.commands().connect(router, "connect");
            runner.run_step(&target, "connect", command, None)?;
            // Let the closed sessions leave before chat.
            runner.settle(&target);
            let best = runner.chat_ladder(&Ladder {
                target: &target,
                sessions: runner.cli.chat_sessions,
                name: SWITCHBOARD_LADDER,
                half_rate_step: true,
            })?;
            // Room fan-out, and chat at half the sustainable rate while
            // sessions drop and resume.
            let rooms = runner.commands().rooms(router, "rooms-100");
            let churn_rate = (best.unwrap_or(CHURN_FALLBACK_CHAT_RATE) / 2.0).round();
            let churn = runner.commands().churn(router, "churn", churn_rate);
            runner.run_step(&target, "rooms-100", rooms, None)?;
            runner.run_step(&target, "churn", churn, None)?;
            Ok(best)
        })
    }

    /// The chat ladder against nats-server: its best rate, or why it was
    /// not run.
    fn nats_ladder(&mut self) -> anyhow::Result<Result<f64, String>> {
        if self.cli.no_nats {
            return Ok(Err("--no-nats".into()));
        }
        let Some((mut nats, target)) =
            start_nats(&self.cli.nats_server, self.cli.nats_port, &self.work_dir)?
        else {
            let why = format!(
                "{} not found; install Debian's nats-server or pass --nats-server PATH",
                self.cli.nats_server.display()
            );
            eprintln!("no baseline: {why}");
            return Ok(Err(why));
        };
        let best = self.chat_ladder(&Ladder {
            target: &target,
            sessions: self.cli.chat_sessions,
            name: NATS_LADDER,
            half_rate_step: true,
        })?;
        nats.stop()?;
        Ok(Ok(best.unwrap_or(0.0)))
    }

    /// The ladder with `--chat-large-sessions`, on a router of its own so
    /// the users, inboxes and rooms of the steps before do not weigh on
    /// it; `None` when skipped.
    fn large_ladder(&mut self) -> anyhow::Result<Option<f64>> {
        let sessions = self.cli.chat_large_sessions;
        if sessions == 0 {
            return Ok(None);
        }
        let best = self.on_router(|runner, router| {
            runner.chat_ladder(&Ladder {
                target: &Target::Switchboard(router.clone()),
                sessions,
                name: &format!("chat-{sessions}-sessions"),
                half_rate_step: false,
            })
        })?;
        Ok(Some(best.unwrap_or(0.0)))
    }

    /// Climbs a chat rate ladder until a rung is not sustainable, then (if
    /// asked) runs once at half the best rate. Returns the best sustainable
    /// rate. When even the first rung fails, it steps down ([`rungs_below`])
    /// until one holds, so a target slower than the ladder still gets a
    /// figure instead of a zero.
    fn chat_ladder(&mut self, ladder: &Ladder) -> anyhow::Result<Option<f64>> {
        let mut best = None;
        for rate in self.cli.chat_rates.clone() {
            if !self.chat_rung(ladder, rate)? {
                break;
            }
            best = Some(rate);
        }
        if let (None, Some(&first)) = (best, self.cli.chat_rates.first()) {
            for rate in rungs_below(first) {
                if self.chat_rung(ladder, rate)? {
                    best = Some(rate);
                    break;
                }
            }
        }
        if let Some(best) = best.filter(|_| ladder.half_rate_step) {
            let half = best / 2.0;
            self.chat_step(ladder, &format!("{}-half-{half}", ladder.name), half, None)?;
        }
        Ok(best)
    }

    /// One rung of `ladder` at `rate`; whether it was sustainable. A rung
    /// that fails is run once more, for every target alike: on a shared
    /// 2-core box one stall of the machine can push a single 10 s run's
    /// p99 over the line. Both tries are in the report.
    fn chat_rung(&mut self, ladder: &Ladder, rate: f64) -> anyhow::Result<bool> {
        for retry in [false, true] {
            let rung = Rung {
                ladder: ladder.name.to_owned(),
                rate_per_s: rate,
                retry,
            };
            let name = rung.step_name();
            let ok = sustainable(&self.chat_step(ladder, &name, rate, Some(rung))?.report);
            self.settle(ladder.target);
            if ok {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Runs chat step `name` of `ladder` at `rate`.
    fn chat_step(
        &mut self,
        ladder: &Ladder,
        name: &str,
        rate: f64,
        rung: Option<Rung>,
    ) -> anyhow::Result<&Step> {
        let command = self
            .commands()
            .chat(ladder.target, name, ladder.sessions, rate);
        self.run_step(ladder.target, name, command, rung)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_down_by_halving_from_a_failed_first_rung() {
        assert_eq!(
            rungs_below(16_000.0),
            vec![8_000.0, 4_000.0, 2_000.0, 1_000.0]
        );
    }
}
