//! Live progress: shared atomic [`Counters`] shown by an indicatif bar on a
//! terminal, or as a plain line per second when output is not a terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counters every scenario updates; read by the progress display.
#[derive(Debug, Default)]
pub struct Counters {
    /// Sessions currently open.
    pub sessions: AtomicU64,
    /// Failed connects or sessions lost.
    pub errors: AtomicU64,
    /// Messages (or status changes) sent.
    pub sent: AtomicU64,
    /// Messages (or presence events) received.
    pub received: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running progress display; stops when dropped.
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Progress {
    /// Starts showing `counters` under the name `scenario`.
    pub fn start(scenario: &'static str, counters: Arc<Counters>, quiet: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let bar = terminal.then(|| {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            });
            let mut last = (0u64, 0u64);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let sent = counters.sent.load(Ordering::Relaxed);
                let received = counters.received.load(Ordering::Relaxed);
                let line = format!(
                    "{scenario} {:>5.0}s sessions={} sent={} ({}/s) received={} ({}/s) errors={}",
                    started.elapsed().as_secs_f64(),
                    counters.sessions.load(Ordering::Relaxed),
                    sent,
                    sent - last.0,
                    received,
                    received - last.1,
                    counters.errors.load(Ordering::Relaxed),
                );
                last = (sent, received);
                match &bar {
                    Some(bar) => bar.set_message(line),
                    None if !quiet => eprintln!("{line}"),
                    None => {}
                }
            }
        });
        Progress { task }
    }
}
