//! The baseline: `nats-server` with TLS on loopback, with a fresh
//! self-signed certificate.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::server_process::ServerProcess;
use crate::target::{NatsTarget, Target};

/// Longest nats-server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running nats-server.
pub(crate) struct NatsServer {
    process: ServerProcess,
    url: String,
    ca: PathBuf,
}

impl NatsServer {
    /// Starts `bin` on `127.0.0.1:port` with TLS, its certificate in
    /// `dir/nats-tls`, and returns once it accepts TCP connections; `None`
    /// if the binary is not installed.
    pub(crate) fn start(bin: &Path, port: u16, dir: &Path) -> anyhow::Result<Option<NatsServer>> {
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
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "nats-server did not start listening on port {port} within {} s",
                STARTUP_TIMEOUT.as_secs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Some(NatsServer {
            process,
            url: format!("tls://localhost:{port}"),
            ca: cert,
        }))
    }

    /// How the load generator reaches it.
    pub(crate) fn target(&self) -> Target {
        Target::Nats(NatsTarget {
            pid: self.process.pid(),
            url: self.url.clone(),
            ca: self.ca.clone(),
        })
    }

    /// Stops it (SIGTERM, then a kill if it lingers).
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        self.process.stop().map(drop)
    }
}
