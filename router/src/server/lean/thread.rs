//! [`DriverThread`]: each lean [`Driver`] on an OS thread of its own, under
//! a single-threaded tokio runtime that owns the driver's socket and timers.
//!
//! On the shared multi-threaded runtime a driver woke up through tokio's
//! scheduler: the reactor thread that saw the socket ready unparked a
//! worker, and idle workers were woken to look for work to steal. That cost
//! the router more context switches than it handled packets at idle. On its
//! own thread a driver sleeps in `epoll_wait` on its socket and wakes
//! itself; only shard commands and returned credit cross threads.

use std::sync::Arc;

use tokio::sync::{oneshot, watch};

use super::Driver;
use crate::server::ServerContext;

/// A driver running on its own thread; stopped by [`stop`](Self::stop) or
/// when dropped.
pub(crate) struct DriverThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DriverThread {
    /// Starts the driver for `socket` on a new thread named
    /// `switchboard-driver-{index}`; returns once it is receiving, or with
    /// the error that kept it from starting.
    pub(crate) async fn start(
        index: usize,
        socket: std::net::UdpSocket,
        server_config: quinn_proto::ServerConfig,
        ctx: Arc<ServerContext>,
        force_close: watch::Receiver<bool>,
    ) -> std::io::Result<DriverThread> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("switchboard-driver-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                runtime.block_on(async move {
                    // Built here, so the socket registers with this
                    // thread's reactor rather than the caller's.
                    let driver = match Driver::new(socket, server_config, ctx, force_close) {
                        Ok(driver) => driver,
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    // A dropped sender stops the driver as a sent stop does.
                    tokio::select! {
                        () = driver.run() => {}
                        _ = stop_rx => {}
                    }
                });
            })?;
        let mut started = DriverThread {
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.await {
            Ok(Ok(())) => Ok(started),
            Ok(Err(error)) => {
                started.join().await;
                Err(error)
            }
            Err(_) => {
                started.join().await;
                Err(std::io::Error::other(
                    "lean driver thread ended while starting",
                ))
            }
        }
    }

    /// Stops the driver (its connections end without a close frame, as on
    /// a crash: drain first) and waits until its thread has released the
    /// socket.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join().await;
    }

    async fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for DriverThread {
    fn drop(&mut self) {
        // Dropping the sender stops the thread; it is not joined here, as
        // that would block whatever async task dropped this.
        self.stop.take();
    }
}
