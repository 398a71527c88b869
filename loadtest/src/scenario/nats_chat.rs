//! `nats-chat`: the `chat` scenario against a `nats-server`, the baseline a
//! user would otherwise pick. Each session is its own NATS connection (TLS
//! when the URL says `tls://`) subscribed to its own subject; messages go to
//! random subjects at the same open-loop rate, with the same `Probe`s and
//! the same loss, duplicate and order checks. Given nats-server's process
//! id, a run also measures its CPU time over the full-rate window
//! ([`crate::proc_cpu`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::chat::{ChatOptions, SendTally};
use crate::progress::Counters;
use crate::report::Report;
use crate::stats::Latency;
use crate::tracking::DeliveryTracker;

/// Where and how to reach the NATS server.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Server URL, e.g. `tls://localhost:4222`.
    pub url: String,
    /// CA (or self-signed certificate) PEM for TLS.
    pub ca: Option<PathBuf>,
    /// Number of connections (one per simulated user).
    pub sessions: usize,
    /// New connections per second.
    pub connect_rate: f64,
    /// Most connects in flight.
    pub max_inflight: usize,
}

fn subject(index: usize) -> String {
    format!("sb.load.{index}")
}

/// Runs the scenario, measuring the CPU time of the server process
/// `server_pid` (when given) over the full-rate window.
pub async fn run(
    nats: &NatsOptions,
    chat: &ChatOptions,
    server_pid: Option<u32>,
    counters: &Arc<Counters>,
) -> anyhow::Result<Report> {
    crate::proc_cpu::ensure_readable(server_pid)?;
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(nats.max_inflight.max(1)));
    let interval = Duration::from_secs_f64(1.0 / nats.connect_rate.max(0.001));
    let mut connecting = JoinSet::new();
    for index in 0..nats.sessions {
        tokio::time::sleep_until((started + interval.mul_f64(index as f64)).into()).await;
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let nats = nats.clone();
        connecting.spawn(async move {
            let begun = Instant::now();
            let mut options =
                async_nats::ConnectOptions::new().require_tls(nats.url.starts_with("tls://"));
            if let Some(ca) = &nats.ca {
                options = options.add_root_certificates(ca.clone());
            }
            let result = async {
                let client = options.connect(nats.url.as_str()).await?;
                let subscriber = client.subscribe(subject(index)).await?;
                client.flush().await?;
                anyhow::Ok((client, subscriber))
            }
            .await;
            drop(permit);
            (index, begun.elapsed(), result)
        });
    }
    let mut members = Vec::with_capacity(nats.sessions);
    let mut connect_latency = Latency::default();
    let mut failures = Vec::new();
    while let Some(joined) = connecting.join_next().await {
        let (index, took, result) = joined?;
        match result {
            Ok((client, subscriber)) => {
                Counters::bump(&counters.sessions);
                connect_latency.record(took);
                members.push((index, client, subscriber));
            }
            Err(error) => {
                Counters::bump(&counters.errors);
                failures.push(format!("connection {index}: {error}"));
            }
        }
    }
    let open_time = started.elapsed();
    members.sort_by_key(|(index, _, _)| *index);
    let n = members.len();
    let mut report = Report {
        scenario: "nats-chat".into(),
        sessions_requested: nats.sessions,
        sessions_opened: n,
        connect_failures: failures.len() as u64,
        connect_rate_per_s: n as f64 / open_time.as_secs_f64().max(1e-9),
        open_time_s: open_time.as_secs_f64(),
        connect_latency: Some(connect_latency.summary()),
        ..Report::default()
    };
    if !failures.is_empty() {
        report.violations.push(format!(
            "{} connections failed ({})",
            failures.len(),
            failures[..failures.len().min(3)].join("; ")
        ));
    }
    anyhow::ensure!(n >= 2, "nats-chat needs at least 2 connections, got {n}");

    let tracker = DeliveryTracker::for_chat(chat, n as u64);
    let tracker = Arc::new(Mutex::new(tracker));
    let tally = Arc::new(Mutex::new(SendTally::default()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut senders = Vec::new();
    let mut outboxes = Vec::new();
    let subjects: Arc<Vec<String>> =
        Arc::new(members.iter().map(|(i, _, _)| subject(*i)).collect());
    for (position, (_, client, mut subscriber)) in members.into_iter().enumerate() {
        let tracker = tracker.clone();
        let received = counters.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                DeliveryTracker::receive(
                    &tracker,
                    &received,
                    start,
                    position as u32,
                    &message.payload,
                );
            }
        }));
        let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Vec<u8>)>();
        outboxes.push(tx);
        let subjects = subjects.clone();
        let tally = tally.clone();
        let counters = counters.clone();
        senders.push(tokio::spawn(async move {
            while let Some((to, payload)) = rx.recv().await {
                Counters::bump(&counters.sent);
                let result = client.publish(subjects[to].clone(), payload.into()).await;
                let mut tally = tally.lock().expect("not poisoned");
                match result {
                    Ok(()) => tally.routed += 1,
                    Err(_) => {
                        tally.failed += 1;
                        Counters::bump(&counters.errors);
                    }
                }
            }
            let _ = client.flush().await;
        }));
    }
    let run = super::chat::ChatRun {
        start,
        tally: &tally,
        tracker: &tracker,
        fan_out: 1,
        server_pid,
        failed_sends: None,
    };
    super::chat::send_through_outboxes(&mut report, chat, run, outboxes, senders).await?;
    for task in tasks {
        task.abort();
    }
    Ok(report)
}
