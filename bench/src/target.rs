//! [`Target`]: the server a step drives, Switchboard or the nats-server
//! baseline: its process (for `/proc` sampling and `--server-pid`) and how
//! the load generator reaches and trusts it.
//!
//! [`ServerProcess`]: a server the bench started (the router or
//! nats-server), stopped the way an operator would: SIGTERM, a bounded wait
//! for it to exit, and a kill only if it has not. Dropping one stops it, so
//! a step that fails does not leave a server holding its port.
//!
//! [`start_nats`], the baseline: `nats-server` with TLS on loopback, with a
//! fresh self-signed certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Longest a server may take to exit after SIGTERM before it is killed:
/// past the router's default `shutdown_timeout` of 10 s.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a stopping server is checked for having exited.
const EXIT_POLL: Duration = Duration::from_millis(50);
/// Longest nats-server may take to accept connections.
const NATS_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A router the bench started.
#[derive(Debug, Clone)]
pub(crate) struct RouterTarget {
    pub(crate) pid: u32,
    /// Its QUIC address.
    pub(crate) addr: SocketAddr,
    /// SHA-256 of its certificate, hex (`--cert-sha256`).
    pub(crate) fingerprint: String,
    /// The token secret it checks (`--secret-file`).
    pub(crate) secret_file: PathBuf,
}

/// A nats-server the bench started.
#[derive(Debug, Clone)]
pub(crate) struct NatsTarget {
    pub(crate) pid: u32,
    /// Its URL (`--nats-url`).
    pub(crate) url: String,
    /// Its self-signed certificate (`--nats-ca`).
    pub(crate) ca: PathBuf,
}

/// The server a step drives.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Switchboard(RouterTarget),
    /// The nats-server baseline, over TLS.
    Nats(NatsTarget),
}

impl Target {
    pub(crate) fn pid(&self) -> u32 {
        match self {
            Target::Switchboard(router) => router.pid,
            Target::Nats(nats) => nats.pid,
        }
    }

    /// What the report calls it.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Target::Switchboard(_) => "switchboard",
            Target::Nats(_) => "nats-server (TLS)",
        }
    }
}

/// A running server process.
pub(crate) struct ServerProcess {
    /// What it is, for messages.
    name: &'static str,
    child: Child,
}

impl ServerProcess {
    /// Takes charge of `child`, the server called `name`.
    pub(crate) fn new(name: &'static str, child: Child) -> ServerProcess {
        ServerProcess { name, child }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM, waits up to [`STOP_TIMEOUT`] for the process to exit,
    /// and kills it if it has not. Returns how it exited.
    pub(crate) fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.stop_within(STOP_TIMEOUT)
    }

    /// [`ServerProcess::stop`], killing the process `timeout` after SIGTERM.
    fn stop_within(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let name = self.name;
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let pid = i32::try_from(self.child.id()).context("process id out of range")?;
        match kill(Pid::from_raw(pid), Signal::SIGTERM) {
            // Gone already: the wait below collects it.
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(error) => return Err(error).with_context(|| format!("SIGTERM to {name}")),
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(EXIT_POLL);
        }
        eprintln!(
            "   ({name} still running {:.1} s after SIGTERM: killing it)",
            timeout.as_secs_f64()
        );
        self.child
            .kill()
            .with_context(|| format!("killing {name}"))?;
        self.child
            .wait()
            .with_context(|| format!("waiting for {name}"))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("stopping {}: {error:#}", self.name);
        }
    }
}

/// Starts nats-server `bin` on `127.0.0.1:port` with TLS, its certificate
/// in `dir/nats-tls`, and returns it and how the load generator reaches it
/// once it accepts TCP connections; `None` if the binary is not installed.
pub(crate) fn start_nats(
    bin: &Path,
    port: u16,
    dir: &Path,
) -> anyhow::Result<Option<(ServerProcess, Target)>> {
    anyhow::ensure!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} is taken (a nats-server left running?); pick another with --nats-port",
    );
    let tls_dir = dir.join("nats-tls");
    switchboard_router::tls::load_or_create_dev_cert(&tls_dir)
        .with_context(|| format!("creating a certificate in {}", tls_dir.display()))?;
    let cert = tls_dir.join(switchboard_proto::dev::CERT_FILE);
    let key = tls_dir.join(switchboard_proto::dev::KEY_FILE);
    let spawned = Command::new(bin)
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--tls",
            "--tlscert",
        ])
        .arg(&cert)
        .arg("--tlskey")
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let process = match spawned {
        Ok(child) => ServerProcess::new("nats-server", child),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("starting {}", bin.display())),
    };
    let deadline = Instant::now() + NATS_STARTUP_TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "nats-server did not start listening on port {port} within {} s",
            NATS_STARTUP_TIMEOUT.as_secs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let target = Target::Nats(NatsTarget {
        pid: process.pid(),
        url: format!("tls://localhost:{port}"),
        ca: cert,
    });
    Ok(Some((process, target)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    #[test]
    fn a_server_that_heeds_sigterm_exits_by_it() {
        let child = Command::new("sleep").arg("60").spawn().unwrap();
        let mut server = ServerProcess::new("sleep", child);
        assert!(server.exited().is_none());
        let status = server.stop().unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));
        // Stopping again just reports the same exit.
        assert_eq!(server.stop().unwrap(), status);
    }

    #[test]
    fn a_server_that_ignores_sigterm_is_killed_after_the_wait() {
        let child = Command::new("sh")
            .args(["-c", "trap '' TERM; exec sleep 30"])
            .spawn()
            .unwrap();
        let mut server = ServerProcess::new("stubborn", child);
        // Once the shell has become `sleep`, its trap is in place.
        let comm = format!("/proc/{}/comm", server.pid());
        let patience = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
            assert!(Instant::now() < patience, "the shell never ran sleep");
            std::thread::sleep(Duration::from_millis(10));
        }
        let started = Instant::now();
        let status = server.stop_within(Duration::from_millis(300)).unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
