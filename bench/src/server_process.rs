//! [`ServerProcess`]: a server the bench started (the router or
//! nats-server), stopped the way an operator would: SIGTERM, a bounded wait
//! for it to exit, and a kill only if it has not. Dropping one stops it, so
//! a step that fails does not leave a server holding its port.

use std::process::{Child, ExitStatus};
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

    /// Its process id.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::Command;

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

    #[test]
    fn a_server_that_has_exited_is_not_signalled() {
        let child = Command::new("true").spawn().unwrap();
        let mut server = ServerProcess::new("true", child);
        let status = server.stop().unwrap();
        assert!(status.success() || status.signal() == Some(Signal::SIGTERM as i32));
    }
}
