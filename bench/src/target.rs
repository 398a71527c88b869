//! [`Target`]: the server a step drives, Switchboard or the nats-server
//! baseline: its process (for `/proc` sampling and `--server-pid`) and how
//! the load generator reaches and trusts it.

use std::net::SocketAddr;
use std::path::PathBuf;

/// A router the bench started.
#[derive(Debug, Clone)]
pub(crate) struct RouterTarget {
    /// Its process id.
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
    /// Its process id.
    pub(crate) pid: u32,
    /// Its URL (`--nats-url`).
    pub(crate) url: String,
    /// Its self-signed certificate (`--nats-ca`).
    pub(crate) ca: PathBuf,
}

/// The server a step drives.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// A Switchboard router.
    Switchboard(RouterTarget),
    /// The nats-server baseline, over TLS.
    Nats(NatsTarget),
}

impl Target {
    /// The server's process id.
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
