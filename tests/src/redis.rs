//! [`RedisServer`]: a throwaway `redis-server` on a loopback port, with its
//! own directory, for the tests of the Redis engine. It is Debian's
//! `redis-server` (7.0), which `.ci/run` installs when it is missing; the
//! tests start their own, never a system one, and never a service.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a started server gets to answer on its port.
const START_WAIT: Duration = Duration::from_secs(10);

/// A `redis-server` child process on 127.0.0.1; killed when dropped.
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// Keeps its data in an append-only file, synced at every write, so a
    /// restart finds it again.
    persistent: bool,
}

impl RedisServer {
    /// Starts one on a free port, keeping nothing on disk.
    pub fn start() -> RedisServer {
        Self::start_with(false)
    }

    /// Starts one on a free port that keeps its data across restarts
    /// (`appendonly yes`, `appendfsync always`), as a production Redis
    /// would.
    pub fn start_persistent() -> RedisServer {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> RedisServer {
        let port = free_port();
        let mut server = RedisServer {
            port,
            dir: tempfile::tempdir().expect("a temp dir"),
            child: None,
            persistent,
        };
        server.restart();
        server
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill the server before restarting it");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--protected-mode", "yes"])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run redis-server ({error}): the Redis engine's tests need \
                     Debian's redis-server (apt-get install redis-server; .ci/run does)"
                )
            });
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + START_WAIT;
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free port");
    listener.local_addr().expect("bound").port()
}
