//! The router under test: its configuration (a
//! [`switchboard_router::config::Config`] written as TOML), and starting
//! it: the certificate fingerprint and the listening line are read from its
//! stdout, which a thread then keeps draining into a log file in the work
//! directory, so the router never writes into a closed pipe.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use switchboard_router::config::{AuthConfig, Config};

use crate::target::{RouterTarget, ServerProcess};

/// The token secret the bench's router and load generator share.
const BENCH_SECRET: &str = "bench-secret-bench-secret-bench-secret-0123";
/// How often every session must show life: the sessions' 30 s keep-alive.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Longest the router may take to say it is listening.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long stopping waits for the stdout drain to see the pipe close.
const DRAIN_JOIN_WAIT: Duration = Duration::from_secs(2);
/// The line that carries the router's certificate fingerprint.
const FINGERPRINT_PREFIX: &str = "certificate SHA-256 fingerprint: ";
/// The start of the line the router prints once it listens.
const LISTENING_PREFIX: &str = "switchboard listening";

/// The router's settings for a bench run, in `dir`.
pub(crate) struct RouterSetup {
    /// The configuration.
    pub(crate) config: Config,
    /// The configuration as TOML, with only what differs from the
    /// defaults: the file then reads as the bench's choices, and a router
    /// of another build (which rejects fields it does not know) accepts it
    /// as long as those fields exist there.
    pub(crate) toml: String,
    /// The token secret file it names.
    secret_file: PathBuf,
    /// Where its files go.
    dir: PathBuf,
}

impl RouterSetup {
    /// Loopback on `port`, an ephemeral admin port, `shards` shards,
    /// `worker_threads` runtime threads, its dev files and secret in `dir`,
    /// and the 30 s heartbeat; the rest at the router's defaults.
    pub(crate) fn new(
        dir: &Path,
        port: u16,
        shards: usize,
        worker_threads: usize,
    ) -> anyhow::Result<RouterSetup> {
        let secret_file = dir.join("secret");
        let config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            shards,
            worker_threads,
            dev_dir: dir.join("dev"),
            heartbeat_interval: HEARTBEAT_INTERVAL,
            auth: AuthConfig {
                secret_file: Some(secret_file.clone()),
                ..AuthConfig::default()
            },
            ..Config::default()
        };
        let chosen = toml::Table::try_from(&config).context("the router config as TOML")?;
        let defaults =
            toml::Table::try_from(Config::default()).context("the default config as TOML")?;
        let toml = toml::to_string(&differences(chosen, &defaults))
            .context("writing the router config")?;
        Ok(RouterSetup {
            config,
            toml,
            secret_file,
            dir: dir.to_owned(),
        })
    }
}

/// The entries of `table` whose values differ from `defaults`', tables
/// compared entry by entry.
fn differences(table: toml::Table, defaults: &toml::Table) -> toml::Table {
    table
        .into_iter()
        .filter_map(|(key, value)| match (value, defaults.get(&key)) {
            (toml::Value::Table(inner), Some(toml::Value::Table(default))) => {
                let inner = differences(inner, default);
                (!inner.is_empty()).then_some((key, toml::Value::Table(inner)))
            }
            (value, Some(default)) if value == *default => None,
            (value, _) => Some((key, value)),
        })
        .collect()
}

/// A running router.
pub(crate) struct Router {
    process: ServerProcess,
    /// How the load generator reaches it.
    pub(crate) target: RouterTarget,
    /// Copies its stdout into the log until the pipe closes.
    stdout_drain: JoinHandle<()>,
}

impl Router {
    /// Writes the secret and configuration of `setup` into its directory,
    /// starts `bin` with them, and returns once it says it is listening.
    /// Its stdout goes on into `router-<pid>.log` there.
    pub(crate) fn start(bin: &Path, setup: &RouterSetup) -> anyhow::Result<Router> {
        let dir = &setup.dir;
        std::fs::write(&setup.secret_file, BENCH_SECRET)
            .with_context(|| format!("writing {}", setup.secret_file.display()))?;
        let config_path = dir.join("router.toml");
        std::fs::write(&config_path, &setup.toml)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("SWITCHBOARD_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!(
                    "starting the router {} (build it with `cargo build --release`)",
                    bin.display()
                )
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut process = ServerProcess::new("the router", child);
        let log_path = dir.join(format!("router-{}.log", process.pid()));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let (lines_tx, lines) = mpsc::channel();
        let stdout_drain = std::thread::spawn(move || drain(stdout, log, lines_tx));
        let fingerprint = wait_until_listening(&lines).with_context(|| {
            let exited = process
                .exited()
                .map_or(String::new(), |status| format!(" (it exited: {status})"));
            let log = log_path.display();
            format!("starting the router{exited}; its stdout is in {log}")
        })?;
        Ok(Router {
            target: RouterTarget {
                pid: process.pid(),
                addr: setup.config.listen,
                fingerprint,
                secret_file: setup.secret_file.clone(),
            },
            process,
            stdout_drain,
        })
    }

    /// Stops it (SIGTERM, then a kill if it lingers) and lets the stdout
    /// drain finish.
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        let status = self.process.stop()?;
        if !status.success() {
            eprintln!("   (the router exited with {status})");
        }
        let deadline = Instant::now() + DRAIN_JOIN_WAIT;
        while !self.stdout_drain.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// Copies the router's stdout into `log` line by line until the pipe
/// closes, handing each line to `lines` while someone listens there.
fn drain(stdout: ChildStdout, mut log: std::fs::File, lines: mpsc::Sender<String>) {
    let mut listening = true;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log, "{line}");
        if listening {
            listening = lines.send(line).is_ok();
        }
    }
}

/// Reads startup lines until the listening line; returns the certificate
/// fingerprint seen before it.
fn wait_until_listening(lines: &mpsc::Receiver<String>) -> anyhow::Result<String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut fingerprint = None;
    loop {
        let line = match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "it did not say it was listening within {} s",
                STARTUP_TIMEOUT.as_secs()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("its stdout closed before it said it was listening")
            }
        };
        if let Some(printed) = line.strip_prefix(FINGERPRINT_PREFIX) {
            fingerprint = Some(printed.trim().to_owned());
        }
        if line.starts_with(LISTENING_PREFIX) {
            return fingerprint.context("it listens but printed no certificate fingerprint");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_holds_the_bench_choices_and_reads_back_as_the_same_config() {
        let setup = RouterSetup::new(Path::new("/tmp/bench-work"), 14433, 2, 1).unwrap();
        let text = &setup.toml;
        let read: Config = toml::from_str(text).unwrap();
        assert_eq!(read, setup.config);
        for line in [
            "listen = \"127.0.0.1:14433\"",
            "admin_listen = \"127.0.0.1:0\"",
            "shards = 2",
            "worker_threads = 1",
            "dev_dir = \"/tmp/bench-work/dev\"",
            "heartbeat_interval = \"30s\"",
            "[auth]",
            "secret_file = \"/tmp/bench-work/secret\"",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("udp_buffer_bytes"), "a default in\n{text}");
        assert!(!text.contains("[limits]"), "a default section in\n{text}");
    }

    #[test]
    fn differences_keep_only_what_changed_section_by_section() {
        let defaults: toml::Table =
            toml::from_str("a = 1\nb = 2\n[t]\nx = 1\ny = 2\n[u]\nz = 3\n").unwrap();
        let chosen: toml::Table =
            toml::from_str("a = 1\nb = 5\n[t]\nx = 1\ny = 7\n[u]\nz = 3\n").unwrap();
        let expected: toml::Table = toml::from_str("b = 5\n[t]\ny = 7\n").unwrap();
        assert_eq!(differences(chosen, &defaults), expected);
    }

    /// What [`wait_until_listening`] makes of `lines`, then the pipe closing.
    fn startup(lines: &[&str]) -> anyhow::Result<String> {
        let (tx, rx) = mpsc::channel();
        for line in lines {
            tx.send(line.to_string()).unwrap();
        }
        drop(tx);
        wait_until_listening(&rx)
    }

    #[test]
    fn startup_yields_the_fingerprint_once_the_router_listens() {
        let fingerprint = "certificate SHA-256 fingerprint: ab12cd ";
        let listening =
            "switchboard listening: quic=127.0.0.1:14433 admin=http://127.0.0.1:40000 shards=2";
        let error = startup(&["some banner", fingerprint]).unwrap_err();
        assert!(format!("{error}").contains("stdout closed"), "{error}");
        let fingerprint = startup(&["some banner", fingerprint, listening]).unwrap();
        assert_eq!(fingerprint, "ab12cd");
        let error = startup(&[listening]).unwrap_err();
        assert!(
            format!("{error}").contains("no certificate fingerprint"),
            "{error}"
        );
    }

    #[test]
    fn a_router_that_exits_at_once_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let setup = RouterSetup::new(dir.path(), 14433, 1, 1).unwrap();
        // `true` accepts any arguments, prints nothing and exits.
        let Err(error) = Router::start(Path::new("true"), &setup) else {
            panic!("`true` is no router");
        };
        let message = format!("{error:#}");
        assert!(message.contains("stdout closed"), "{message}");
        assert!(message.contains("router-"), "{message}");
    }
}
