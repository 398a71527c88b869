//! `switchboard-load SCENARIO --server ADDR[,ADDR...] (--ca PEM | --cert-sha256 HEX)
//! --sessions N [--rate R] [--hold 60s] [--json FILE]`: drive a router and
//! report latency and correctness. Exits non-zero on any violation. The
//! command line is [`switchboard_loadtest::cli::Cli`].

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use switchboard_loadtest::cli::{Cli, Scenario};
use switchboard_loadtest::fleet::ClientKind;
use switchboard_loadtest::progress::{Counters, Progress};
use switchboard_loadtest::scenario::{chat, connect, nats_chat, presence, rooms};
use switchboard_quic::huge_pages::{self, HeapPages};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread starts: this may restart the process image. With
    // one or two runtime threads, all of them allocate from the main arena
    // on huge pages (`huge_pages::Arenas::One`); more would contend for its
    // lock. `GLIBC_TUNABLES=glibc.malloc.hugetlb=0` keeps 4 KiB pages.
    let threads = match cli.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        threads => threads,
    };
    let arenas = if threads <= 2 {
        huge_pages::Arenas::One
    } else {
        huge_pages::Arenas::PerThread
    };
    let heap = huge_pages::use_huge_page_heap(arenas);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match heap {
        HeapPages::Huge => tracing::debug!(
            ?arenas,
            "heap on transparent huge pages (arenas as asked, unless GLIBC_TUNABLES set them)"
        ),
        HeapPages::Regular(why) => tracing::debug!(%why, "heap on regular pages"),
    }
    // Always the multi-threaded scheduler, even for one worker: the
    // scenario's own task then runs on the main thread beside the drivers.
    // A current-thread runtime costs a little less CPU per message but puts
    // long stalls into the latency tail with many sessions.
    let runtime = match switchboard_quic::runtime::multi_thread(cli.threads) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the scenario; `Ok(false)` when it found violations.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let counters = Arc::new(Counters::default());
    let (json, quiet) = cli.output();
    if let Some(common) = cli.scenario.common() {
        common.fleet_options()?.probe().await?;
    }
    let progress = Progress::start(cli.scenario.name(), counters.clone(), quiet);
    let report = match &cli.scenario {
        Scenario::Connect { common, hold } => {
            connect::run(&common.fleet_options()?, *hold, &counters).await?
        }
        Scenario::Chat {
            common,
            rate,
            duration,
            payload,
            drain,
            ramp_up,
            server_pid,
        } => {
            let mut options = chat::ChatOptions::new(*rate, *duration, *payload);
            options.drain = *drain;
            options.ramp_up = *ramp_up;
            let fleet = common.fleet_options()?;
            chat::run_with_server_cpu(&fleet, &options, *server_pid, &counters).await?
        }
        Scenario::Churn {
            common,
            rate,
            reconnect_rate,
            duration,
            payload,
            server_pid,
        } => {
            let mut options = chat::ChatOptions::new(*rate, *duration, *payload);
            options.reconnect_rate = *reconnect_rate;
            let mut fleet = common.fleet_options()?;
            fleet.client = ClientKind::Driver;
            chat::run_with_server_cpu(&fleet, &options, *server_pid, &counters).await?
        }
        Scenario::Rooms {
            common,
            group,
            rate,
            duration,
            payload,
            server_pid,
        } => {
            let options = rooms::RoomsOptions {
                chat: chat::ChatOptions::new(*rate, *duration, *payload),
                group: *group,
            };
            let fleet = common.fleet_options()?;
            rooms::run_with_server_cpu(&fleet, &options, *server_pid, &counters).await?
        }
        Scenario::NatsChat {
            nats_url,
            nats_ca,
            sessions,
            connect_rate,
            max_inflight,
            rate,
            duration,
            payload,
            ramp_up,
            server_pid,
            ..
        } => {
            let nats = nats_chat::NatsOptions {
                url: nats_url.clone(),
                ca: nats_ca.clone(),
                sessions: *sessions,
                connect_rate: *connect_rate,
                max_inflight: *max_inflight,
            };
            let mut options = chat::ChatOptions::new(*rate, *duration, *payload);
            options.ramp_up = *ramp_up;
            nats_chat::run(&nats, &options, *server_pid, &counters).await?
        }
        Scenario::Presence {
            common,
            rate,
            duration,
            watch,
        } => {
            let options = presence::PresenceOptions {
                rate: *rate,
                duration: *duration,
                watch: *watch,
                drain: Duration::from_secs(10),
            };
            presence::run(&common.fleet_options()?, &options, &counters).await?
        }
    };
    drop(progress);
    print!("{}", report.to_table());
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.violations.is_empty())
}
