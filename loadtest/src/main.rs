//! `switchboard-load SCENARIO --server ADDR[,ADDR...] (--ca PEM | --cert-sha256 HEX)
//! --sessions N [--rate R] [--hold 60s] [--json FILE]`: drive a router and
//! report latency and correctness. Exits non-zero on any violation.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use switchboard_client::Trust;
use switchboard_loadtest::fleet::{ClientKind, FleetOptions};
use switchboard_loadtest::progress::{Counters, Progress};
use switchboard_loadtest::scenario::{chat, connect, nats_chat, presence, rooms};
use switchboard_quic::huge_pages::{self, HeapPages};

#[derive(Parser)]
#[command(
    name = "switchboard-load",
    version,
    about = "Switchboard load generator"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Async runtime threads; 0 = one per core. On a box shared with the
    /// router, giving each process its own cores (e.g. 1 and 1 on 2 cores)
    /// spares both the cost of preempting each other's threads.
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
}

#[derive(Subcommand)]
enum Scenario {
    /// Open N sessions at a target rate, hold them, verify each with a ping.
    Connect {
        #[command(flatten)]
        common: Common,
        /// How long to hold the sessions before verifying.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        hold: Duration,
    },
    /// Direct messages between random sessions at an open-loop rate.
    Chat {
        #[command(flatten)]
        common: Common,
        /// Aggregate messages per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// How long to send at the full rate (after --ramp-up).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Payload bytes per message (at least 20).
        #[arg(long, default_value_t = 80)]
        payload: usize,
        /// How long to wait after the last send for messages still in
        /// flight; an accepted message not delivered by then counts as lost.
        /// Past saturation, a longer wait tells late messages from lost ones.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        drain: Duration,
        /// How long the rate rises from 0 before --duration at the full
        /// rate. Its messages are checked like the rest but left out of
        /// the latency and rate figures.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        ramp_up: Duration,
    },
    /// Rooms of GROUP members; members send to their room at an open-loop
    /// rate and every other member must receive each message.
    Rooms {
        #[command(flatten)]
        common: Common,
        /// Members per room.
        #[arg(long, default_value_t = 10)]
        group: usize,
        /// Aggregate messages sent per second (deliveries are GROUP-1 times
        /// that).
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// How long to send.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Payload bytes per message (at least 20).
        #[arg(long, default_value_t = 80)]
        payload: usize,
    },
    /// Chat while random sessions drop and reconnect (resuming) at
    /// --reconnect-rate: every accepted message must arrive exactly once.
    Churn {
        #[command(flatten)]
        common: Common,
        /// Aggregate messages per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Sessions dropped and reconnected per second.
        #[arg(long, default_value_t = 20.0)]
        reconnect_rate: f64,
        /// How long to send (and churn).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Payload bytes per message (at least 20).
        #[arg(long, default_value_t = 80)]
        payload: usize,
    },
    /// The chat scenario against a nats-server (the baseline).
    NatsChat {
        /// NATS URL; `tls://` requires TLS.
        #[arg(long, default_value = "tls://localhost:4222")]
        nats_url: String,
        /// CA (or self-signed certificate) PEM for the NATS server.
        #[arg(long)]
        nats_ca: Option<PathBuf>,
        /// Number of connections (one per simulated user).
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        /// New connections per second.
        #[arg(long, default_value_t = 2000.0)]
        connect_rate: f64,
        /// Most connects in flight.
        #[arg(long, default_value_t = 256)]
        max_inflight: usize,
        /// Aggregate messages per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// How long to send at the full rate (after --ramp-up).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Payload bytes per message (at least 20).
        #[arg(long, default_value_t = 80)]
        payload: usize,
        /// How long the rate rises from 0 before --duration at the full
        /// rate. Its messages are checked like the rest but left out of
        /// the latency and rate figures.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        ramp_up: Duration,
        /// Write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// No periodic progress lines.
        #[arg(long)]
        quiet: bool,
    },
    /// Status churn measured by watchers.
    Presence {
        #[command(flatten)]
        common: Common,
        /// Aggregate status changes per second.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// How long to change statuses.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Users each session watches.
        #[arg(long, default_value_t = 10)]
        watch: usize,
    },
}

#[derive(Args)]
struct Common {
    /// Router QUIC address(es), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:4433")]
    server: Vec<SocketAddr>,
    /// CA (or self-signed certificate) PEM to trust. Default: the dev
    /// certificate of a `switchboard serve` on this machine.
    #[arg(long, conflicts_with = "cert_sha256")]
    ca: Option<PathBuf>,
    /// Pinned SHA-256 of the router certificate (64 hex digits).
    #[arg(long)]
    cert_sha256: Option<String>,
    /// Token secret file shared with the router. Default: the dev secret.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Number of sessions.
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// New sessions per second while opening.
    #[arg(long, default_value_t = 2000.0)]
    connect_rate: f64,
    /// Most handshakes in flight.
    #[arg(long, default_value_t = 256)]
    max_inflight: usize,
    /// How sessions are held: `lean` (quinn-proto driven by one task per
    /// UDP socket, ~15 KiB per session) or `sdk` (the client SDK: a quinn
    /// connection and tasks per session). The presence scenario always uses
    /// the SDK.
    #[arg(long, value_enum, default_value_t = ClientKind::Lean)]
    client: ClientKind,
    /// Client endpoints (UDP sockets); 0 = one per 10,000 sessions, at
    /// least 4 (lean), or one per 2,000 (sdk).
    #[arg(long, default_value_t = 0)]
    endpoints: usize,
    /// Local addresses to spread endpoints over, comma-separated.
    #[arg(long, value_delimiter = ',')]
    local_addr: Vec<IpAddr>,
    /// User ids are PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "load-")]
    user_prefix: String,
    /// QUIC keep-alive interval.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    keep_alive: Duration,
    /// TLS server name.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No periodic progress lines.
    #[arg(long)]
    quiet: bool,
}

impl Common {
    fn fleet(&self) -> anyhow::Result<FleetOptions> {
        let dev_dir = switchboard_proto::dev::default_dir();
        let trust = match (&self.ca, &self.cert_sha256) {
            (Some(ca), _) => Trust::CaFile(ca.clone()),
            (None, Some(pin)) => Trust::fingerprint_hex(pin)?,
            (None, None) => Trust::CaFile(dev_dir.join(switchboard_proto::dev::CERT_FILE)),
        };
        let (path, hint) = match &self.secret_file {
            Some(path) => (path.clone(), ""),
            None => (
                dev_dir.join(switchboard_proto::dev::SECRET_FILE),
                " (the dev secret; or pass --secret-file)",
            ),
        };
        let text =
            std::fs::read(&path).with_context(|| format!("reading {}{hint}", path.display()))?;
        let secret = switchboard_proto::token::secret_from_file(&text)
            .with_context(|| format!("{}{hint}", path.display()))?;
        Ok(FleetOptions {
            servers: self.server.clone(),
            trust,
            server_name: self.server_name.clone(),
            secret,
            sessions: self.sessions,
            connect_rate: self.connect_rate,
            max_inflight: self.max_inflight,
            endpoints: self.endpoints,
            local_addrs: self.local_addr.clone(),
            user_prefix: self.user_prefix.clone(),
            keep_alive: self.keep_alive,
            client: self.client,
        })
    }
}

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
    // A current-thread runtime saved ~4-5% of the CPU per chat message but
    // put stalls of ~100 ms into the tail with 100k sessions (bench/README.md,
    // "One thread is a current-thread runtime, for the router").
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
    let (json, report) = match &cli.scenario {
        Scenario::Connect { common, hold } => {
            let _progress = Progress::start("connect", counters.clone(), common.quiet);
            let report = connect::run(&common.fleet()?, *hold, &counters).await?;
            (&common.json, report)
        }
        Scenario::Chat {
            common,
            rate,
            duration,
            payload,
            drain,
            ramp_up,
        } => {
            let _progress = Progress::start("chat", counters.clone(), common.quiet);
            let mut options = chat::ChatOptions::new(*rate, *duration, *payload);
            options.drain = *drain;
            options.ramp_up = *ramp_up;
            let report = chat::run(&common.fleet()?, &options, &counters).await?;
            (&common.json, report)
        }
        Scenario::Churn {
            common,
            rate,
            reconnect_rate,
            duration,
            payload,
        } => {
            let _progress = Progress::start("churn", counters.clone(), common.quiet);
            let mut options = chat::ChatOptions::new(*rate, *duration, *payload);
            options.reconnect_rate = *reconnect_rate;
            let mut fleet = common.fleet()?;
            fleet.client = switchboard_loadtest::fleet::ClientKind::Lean;
            let report = chat::run(&fleet, &options, &counters).await?;
            (&common.json, report)
        }
        Scenario::Rooms {
            common,
            group,
            rate,
            duration,
            payload,
        } => {
            let _progress = Progress::start("rooms", counters.clone(), common.quiet);
            let options = rooms::RoomsOptions {
                chat: chat::ChatOptions::new(*rate, *duration, *payload),
                group: *group,
            };
            let report = rooms::run(&common.fleet()?, &options, &counters).await?;
            (&common.json, report)
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
            json,
            quiet,
        } => {
            let _progress = Progress::start("nats-chat", counters.clone(), *quiet);
            let nats = nats_chat::NatsOptions {
                url: nats_url.clone(),
                ca: nats_ca.clone(),
                sessions: *sessions,
                connect_rate: *connect_rate,
                max_inflight: *max_inflight,
            };
            let mut options = chat::ChatOptions::new(*rate, *duration, *payload);
            options.ramp_up = *ramp_up;
            (json, nats_chat::run(&nats, &options, &counters).await?)
        }
        Scenario::Presence {
            common,
            rate,
            duration,
            watch,
        } => {
            let _progress = Progress::start("presence", counters.clone(), common.quiet);
            let options = presence::PresenceOptions {
                rate: *rate,
                duration: *duration,
                watch: *watch,
                drain: Duration::from_secs(10),
            };
            let report = presence::run(&common.fleet()?, &options, &counters).await?;
            (&common.json, report)
        }
    };
    print!("{}", report.to_table());
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.violations.is_empty())
}
