//! The `switchboard-load` command line as typed values: [`Cli`], its
//! [`Scenario`]s and their [`Common`] session options. The binary parses
//! it; a runner such as `switchboard-bench` builds the values and turns them
//! into arguments with [`Cli::to_args`], so a flag renamed here fails the
//! round-trip test rather than a run minutes in. Flag names are a contract
//! with older binaries: they may be added to, never renamed.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use serde_json::Value;
use switchboard_client::Trust;

use crate::fleet::{ClientKind, FleetOptions};

#[cfg(test)]
mod tests;

/// `switchboard-load SCENARIO [OPTIONS]`.
#[derive(Parser, Serialize, Debug, Clone, PartialEq)]
#[command(
    name = "switchboard-load",
    version,
    about = "Switchboard load generator"
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub scenario: Scenario,
    /// Async runtime threads; 0 = one per core. On a box shared with the
    /// router, giving each process its own cores (e.g. 1 and 1 on 2 cores)
    /// spares both the cost of preempting each other's threads.
    #[arg(long, global = true, default_value_t = 0)]
    pub threads: usize,
}

/// What to run, with its own options.
#[derive(Subcommand, Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "kebab-case", rename_all_fields = "kebab-case")]
pub enum Scenario {
    /// Open N sessions at a target rate, hold them, verify each with a ping.
    Connect {
        /// How to reach the router and open the sessions.
        #[command(flatten)]
        #[serde(flatten)]
        common: Common,
        /// How long to hold the sessions before verifying.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        #[serde(serialize_with = "duration_arg")]
        hold: Duration,
    },
    /// Direct messages between random sessions at an open-loop rate.
    Chat {
        /// How to reach the router and open the sessions.
        #[command(flatten)]
        #[serde(flatten)]
        common: Common,
        /// Aggregate messages per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// How long to send at the full rate (after --ramp-up).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        #[serde(serialize_with = "duration_arg")]
        duration: Duration,
        /// Payload bytes per message (at least 20).
        #[arg(long, default_value_t = 80)]
        payload: usize,
        /// How long to wait after the last send for messages still in
        /// flight; an accepted message not delivered by then counts as lost.
        /// Past saturation, a longer wait tells late messages from lost ones.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        #[serde(serialize_with = "duration_arg")]
        drain: Duration,
        /// How long the rate rises from 0 before --duration at the full
        /// rate. Its messages are checked like the rest but left out of
        /// the latency and rate figures.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        #[serde(serialize_with = "duration_arg")]
        ramp_up: Duration,
        /// Process id of the server under test (on this machine): report
        /// its CPU time (user + system, from /proc) over the full-rate
        /// window, and that per delivered message.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Rooms of GROUP members; members send to their room at an open-loop
    /// rate and every other member must receive each message.
    Rooms {
        /// How to reach the router and open the sessions.
        #[command(flatten)]
        #[serde(flatten)]
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
        #[serde(serialize_with = "duration_arg")]
        duration: Duration,
        /// Payload bytes per message (at least 20).
        #[arg(long, default_value_t = 80)]
        payload: usize,
        /// Process id of the server under test (on this machine): report
        /// its CPU time (user + system, from /proc) while sending, and that
        /// per delivered message.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Chat while random sessions drop and reconnect (resuming) at
    /// --reconnect-rate: every accepted message must arrive exactly once.
    Churn {
        /// How to reach the router and open the sessions.
        #[command(flatten)]
        #[serde(flatten)]
        common: Common,
        /// Aggregate messages per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Sessions dropped and reconnected per second.
        #[arg(long, default_value_t = 20.0)]
        reconnect_rate: f64,
        /// How long to send (and churn).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        #[serde(serialize_with = "duration_arg")]
        duration: Duration,
        /// Payload bytes per message (at least 20).
        #[arg(long, default_value_t = 80)]
        payload: usize,
        /// Process id of the server under test (on this machine): report
        /// its CPU time (user + system, from /proc) while sending, and that
        /// per delivered message.
        #[arg(long)]
        server_pid: Option<u32>,
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
        #[serde(serialize_with = "duration_arg")]
        duration: Duration,
        /// Payload bytes per message (at least 20).
        #[arg(long, default_value_t = 80)]
        payload: usize,
        /// How long the rate rises from 0 before --duration at the full
        /// rate. Its messages are checked like the rest but left out of
        /// the latency and rate figures.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        #[serde(serialize_with = "duration_arg")]
        ramp_up: Duration,
        /// Process id of the nats-server (on this machine): report its CPU
        /// time (user + system, from /proc) over the full-rate window, and
        /// that per delivered message.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// No periodic progress lines.
        #[arg(long)]
        quiet: bool,
    },
    /// Status churn measured by watchers.
    Presence {
        /// How to reach the router and open the sessions.
        #[command(flatten)]
        #[serde(flatten)]
        common: Common,
        /// Aggregate status changes per second.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// How long to change statuses.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        #[serde(serialize_with = "duration_arg")]
        duration: Duration,
        /// Users each session watches.
        #[arg(long, default_value_t = 10)]
        watch: usize,
    },
}

/// How the Switchboard scenarios reach the router and open their sessions.
#[derive(Args, Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Common {
    /// Router QUIC address(es), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:4433")]
    pub server: Vec<SocketAddr>,
    /// CA (or self-signed certificate) PEM to trust. Default: the dev
    /// certificate of a `switchboard serve` on this machine.
    #[arg(long, conflicts_with = "cert_sha256")]
    pub ca: Option<PathBuf>,
    /// Pinned SHA-256 of the router certificate (64 hex digits).
    #[arg(long)]
    pub cert_sha256: Option<String>,
    /// Token secret file shared with the router. Default: the dev secret.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Number of sessions.
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    /// New sessions per second while opening.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Most handshakes in flight.
    #[arg(long, default_value_t = 256)]
    pub max_inflight: usize,
    /// How sessions are held: `driver` (quinn-proto connections driven by
    /// one task per UDP socket, no task per session; `lean` is an alias)
    /// or `sdk` (the client SDK: a quinn connection and tasks per session).
    /// The presence scenario always uses the SDK.
    #[arg(long, value_enum, default_value_t = ClientKind::Driver)]
    pub client: ClientKind,
    /// Client endpoints (UDP sockets); 0 = one per 10,000 sessions, at
    /// least 4 (driver), or one per 2,000 (sdk).
    #[arg(long, default_value_t = 0)]
    pub endpoints: usize,
    /// Local addresses to spread endpoints over, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub local_addr: Vec<IpAddr>,
    /// User ids are PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "load-")]
    pub user_prefix: String,
    /// QUIC keep-alive interval.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "duration_arg")]
    pub keep_alive: Duration,
    /// TLS server name.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No periodic progress lines.
    #[arg(long)]
    pub quiet: bool,
}

impl Cli {
    /// The arguments (without the program name) that parse back to this
    /// value. Flags at their default are left out, so the line reads as a
    /// person would write it, and a binary that predates a flag still
    /// takes a line that leaves it at its default. Each field is written
    /// as clap names it (`--kebab-case`), from its serialized form: a
    /// field added to the CLI needs nothing here.
    pub fn to_args(&self) -> Vec<String> {
        let defaults = Cli::try_parse_from(["switchboard-load", self.scenario.name()])
            .expect("every scenario parses with its options left out");
        let (value, defaults) = (serialized(self), serialized(&defaults));
        let scenario = |v: &Value| v["scenario"][self.scenario.name()].clone();
        let mut args = vec![self.scenario.name().to_owned()];
        push_flags(&scenario(&value), &scenario(&defaults), &mut args);
        if self.threads != defaults["threads"] {
            args.extend(["--threads".to_owned(), self.threads.to_string()]);
        }
        args
    }

    /// Where the run writes its JSON report (`--json`), if anywhere.
    pub fn json_report(&self) -> Option<&Path> {
        self.output().0
    }

    /// Where the run writes its JSON report (`--json`), and whether its
    /// periodic progress lines are off (`--quiet`).
    pub fn output(&self) -> (Option<&Path>, bool) {
        match &self.scenario {
            Scenario::NatsChat { json, quiet, .. } => (json.as_deref(), *quiet),
            Scenario::Connect { common, .. }
            | Scenario::Chat { common, .. }
            | Scenario::Rooms { common, .. }
            | Scenario::Churn { common, .. }
            | Scenario::Presence { common, .. } => (common.json.as_deref(), common.quiet),
        }
    }
}

impl Scenario {
    /// The subcommand's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Connect { .. } => "connect",
            Scenario::Chat { .. } => "chat",
            Scenario::Rooms { .. } => "rooms",
            Scenario::Churn { .. } => "churn",
            Scenario::NatsChat { .. } => "nats-chat",
            Scenario::Presence { .. } => "presence",
        }
    }

    /// The session options of a scenario that drives a router (all but
    /// `nats-chat`).
    pub fn common(&self) -> Option<&Common> {
        match self {
            Scenario::NatsChat { .. } => None,
            Scenario::Connect { common, .. }
            | Scenario::Chat { common, .. }
            | Scenario::Rooms { common, .. }
            | Scenario::Churn { common, .. }
            | Scenario::Presence { common, .. } => Some(common),
        }
    }
}

/// A duration as the command line takes it: humantime, no spaces (`1m30s`).
fn duration_arg<S: serde::Serializer>(duration: &Duration, out: S) -> Result<S::Ok, S::Error> {
    let text = humantime::format_duration(*duration).to_string();
    out.serialize_str(&text.replace(' ', ""))
}

fn serialized(cli: &Cli) -> Value {
    serde_json::to_value(cli).expect("the CLI serializes")
}

/// Appends `--name value` for each of `options`' fields that differs from
/// `defaults`: a switch that is on as `--name`, a list comma-separated, a
/// value that starts with `-` as `--name=value`.
fn push_flags(options: &Value, defaults: &Value, args: &mut Vec<String>) {
    let Value::Object(fields) = options else {
        return;
    };
    for (name, value) in fields {
        if defaults.get(name) == Some(value) {
            continue;
        }
        let text = match value {
            Value::Null | Value::Bool(false) => continue,
            Value::Bool(true) => {
                args.push(format!("--{name}"));
                continue;
            }
            Value::String(text) => text.clone(),
            // A whole rate reads as one (`2000`, not `2000.0`).
            Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0 && !n.is_u64()) => {
                format!("{}", n.as_f64().unwrap_or_default() as i64)
            }
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map_or_else(|| item.to_string(), str::to_owned)
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        if text.starts_with('-') {
            args.push(format!("--{name}={text}"));
        } else {
            args.extend([format!("--{name}"), text]);
        }
    }
}

impl Default for Common {
    /// Every option at its command-line default.
    fn default() -> Common {
        #[derive(Parser)]
        struct CommonAlone {
            #[command(flatten)]
            common: Common,
        }
        CommonAlone::try_parse_from(["switchboard-load"])
            .expect("every common option has a default")
            .common
    }
}

impl Common {
    /// The fleet these options describe, with the token secret read from
    /// `--secret-file` (or the dev secret) and the router's certificate
    /// trusted as `--ca`, `--cert-sha256` or the dev certificate say.
    pub fn fleet_options(&self) -> anyhow::Result<FleetOptions> {
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
