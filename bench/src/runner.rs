//! [`Runner`]: runs the standard steps in order, keeping what they
//! measured: connect, the chat ladder, rooms and churn on one router; the
//! same ladder against nats-server; the ladder with many more sessions on
//! a fresh router. Between steps it lets the target go quiet.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use switchboard_loadtest::cli::Cli;

use crate::bench_cli::BenchCli;
use crate::bench_report::BenchReport;
use crate::calibrate::{self, Calibration};
use crate::commands::Commands;
use crate::ladder::{rungs_below, Ladder, Rung, NATS_LADDER, SWITCHBOARD_LADDER};
use crate::nats::NatsServer;
use crate::procstat;
use crate::router::{Router, RouterSetup};
use crate::step::{Step, SAMPLE_EVERY};
use crate::summary::{BestRates, Summary};
use crate::target::Target;
use crate::verdict::sustainable;

/// Below this share of a core the target counts as quiet between steps.
const QUIET_CPU_PERCENT: f64 = 15.0;
/// Least and most time given to the target to go quiet between steps.
const SETTLE_AT_LEAST: Duration = Duration::from_secs(2);
const SETTLE_AT_MOST: Duration = Duration::from_secs(60);
/// The chat rate churn runs at when no chat rung was sustainable: half of it.
const CHURN_FALLBACK_CHAT_RATE: f64 = 2_000.0;

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
    /// That configuration as written for the router.
    router_config: String,
}

impl Runner {
    /// A run as `cli` says, its files in a fresh work directory.
    pub(crate) fn new(cli: BenchCli) -> anyhow::Result<Runner> {
        let work_dir =
            std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("creating {}", work_dir.display()))?;
        let router_setup = RouterSetup::new(&work_dir, cli.port, cli.shards, cli.threads_each());
        let router_config = router_setup.config_toml()?;
        Ok(Runner {
            cli,
            work_dir,
            epoch: Instant::now(),
            steps: Vec::new(),
            samples: Vec::new(),
            router_setup,
            router_config,
        })
    }

    /// Runs every standard step and returns the report.
    pub(crate) fn run(mut self, calibration: Option<Calibration>) -> anyhow::Result<BenchReport> {
        let chat = self.switchboard_steps()?;
        let nats = self.nats_ladder()?;
        let chat_large = self.large_ladder()?;
        let best = BestRates {
            chat,
            chat_large,
            nats,
        };
        Ok(self.into_report(calibration, best))
    }

    /// Starts a router with the run's configuration.
    fn start_router(&self) -> anyhow::Result<Router> {
        let bin = self.cli.router_bin();
        Router::start(
            &bin,
            &self.work_dir,
            &self.router_setup,
            &self.router_config,
        )
    }

    /// Runs one step against `target` and keeps it.
    fn run_step(
        &mut self,
        target: &Target,
        name: &str,
        command: Cli,
        rung: Option<Rung>,
    ) -> anyhow::Result<&Step> {
        let load_bin = self.cli.load_bin();
        let step = Step::run(&load_bin, target, name, &command, rung, self.epoch)?;
        self.steps.push(step);
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
        let router = self.start_router()?;
        let sampler = procstat::Sampler::start(router.pid(), SAMPLE_EVERY, self.epoch);
        let router_target = router.target();
        let target = Target::Switchboard(router_target.clone());
        let command = Commands::new(&self.cli, &self.work_dir).connect(&router_target, "connect");
        self.run_step(&target, "connect", command, None)?;
        // Let the closed sessions leave before chat.
        self.settle(&target);
        let best = self.chat_ladder(&Ladder {
            target: &target,
            sessions: self.cli.chat_sessions,
            name: SWITCHBOARD_LADDER,
            half_rate_step: true,
        })?;
        // Room fan-out, and chat at half the sustainable rate while sessions
        // drop and resume.
        let commands = Commands::new(&self.cli, &self.work_dir);
        let rooms = commands.rooms(&router_target, "rooms-100");
        let churn_rate = (best.unwrap_or(CHURN_FALLBACK_CHAT_RATE) / 2.0).round();
        let churn = commands.churn(&router_target, "churn", churn_rate);
        self.run_step(&target, "rooms-100", rooms, None)?;
        self.run_step(&target, "churn", churn, None)?;
        self.samples.extend(sampler.finish());
        router.stop()?;
        Ok(best)
    }

    /// The chat ladder against nats-server; `None` when it was not run.
    fn nats_ladder(&mut self) -> anyhow::Result<Option<f64>> {
        if self.cli.no_nats {
            return Ok(None);
        }
        let Some(nats) =
            NatsServer::start(&self.cli.nats_server, self.cli.nats_port, &self.work_dir)?
        else {
            eprintln!(
                "nats-server not found ({}): no baseline",
                self.cli.nats_server.display()
            );
            return Ok(None);
        };
        let best = self.chat_ladder(&Ladder {
            target: &nats.target(),
            sessions: self.cli.chat_sessions,
            name: NATS_LADDER,
            half_rate_step: true,
        })?;
        nats.stop()?;
        Ok(Some(best.unwrap_or(0.0)))
    }

    /// The ladder with `--chat-large-sessions`, on a router of its own so
    /// the users, inboxes and rooms of the steps before do not weigh on
    /// it; `None` when skipped.
    fn large_ladder(&mut self) -> anyhow::Result<Option<f64>> {
        if self.cli.chat_large_sessions == 0 {
            return Ok(None);
        }
        let router = self.start_router()?;
        let sampler = procstat::Sampler::start(router.pid(), SAMPLE_EVERY, self.epoch);
        let name = format!("chat-{}-sessions", self.cli.chat_large_sessions);
        let best = self.chat_ladder(&Ladder {
            target: &Target::Switchboard(router.target()),
            sessions: self.cli.chat_large_sessions,
            name: &name,
            half_rate_step: false,
        })?;
        self.samples.extend(sampler.finish());
        router.stop()?;
        Ok(Some(best.unwrap_or(0.0)))
    }

    /// Runs a chat rate ladder until a step is not sustainable, then (if
    /// asked) once at half the best rate. Returns the best sustainable rate.
    /// When even the first rung fails, it steps down ([`rungs_below`]) so a
    /// target slower than the ladder still gets a figure instead of a zero.
    fn chat_ladder(&mut self, ladder: &Ladder) -> anyhow::Result<Option<f64>> {
        let mut best: Option<f64> = None;
        let first = self.cli.chat_rates.first().copied().unwrap_or(1_000.0);
        let mut rates: Vec<f64> = self.cli.chat_rates.clone();
        let mut descending = false;
        let mut i = 0;
        while let Some(rate) = rates.get(i).copied() {
            i += 1;
            let ok = self.chat_rung(ladder, rate)?;
            match (ok, descending) {
                (true, false) => best = Some(rate),
                (true, true) => {
                    best = Some(rate);
                    break;
                }
                (false, false) if best.is_none() => {
                    descending = true;
                    rates = rungs_below(first);
                    i = 0;
                }
                (false, false) => break,
                (false, true) => {} // keep stepping down
            }
        }
        if let Some(best) = best.filter(|_| ladder.half_rate_step) {
            let half = best / 2.0;
            let name = format!("{}-half-{half}", ladder.name);
            let command = Commands::new(&self.cli, &self.work_dir).chat(
                ladder.target,
                &name,
                ladder.sessions,
                half,
            );
            self.run_step(ladder.target, &name, command, None)?;
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
            let command = Commands::new(&self.cli, &self.work_dir).chat(
                ladder.target,
                &name,
                ladder.sessions,
                rate,
            );
            let ok = sustainable(
                &self
                    .run_step(ladder.target, &name, command, Some(rung))?
                    .report,
            );
            self.settle(ladder.target);
            if ok {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The report of the finished run.
    fn into_report(self, calibration: Option<Calibration>, best: BestRates) -> BenchReport {
        let summary = Summary::new(&self.cli, &self.steps, best);
        BenchReport {
            date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            machine: calibrate::machine_size(),
            calibration,
            router_bin: self.cli.router_bin().display().to_string(),
            load_bin: self.cli.load_bin().display().to_string(),
            threads_each: self.cli.threads_each(),
            chat_ramp_up_s: self.cli.chat_ramp_up.as_secs_f64(),
            chat_duration_s: self.cli.chat_duration.as_secs_f64(),
            router_config: self.router_config,
            steps: self.steps,
            summary,
            samples: self.samples,
        }
    }
}
