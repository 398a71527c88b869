//! `chat`: every session sends direct messages to random other sessions at an
//! open-loop aggregate rate. Each payload carries a [`Probe`], so receivers
//! measure latency from the scheduled send time and detect loss, duplicates
//! and per-sender reordering.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use switchboard_client::{ErrorCode, Event};
use tokio::sync::mpsc;

use crate::fleet::{self, FleetOptions};
use crate::probe::Probe;
use crate::progress::Counters;
use crate::report::{Report, Traffic};
use crate::tracking::DeliveryTracker;

impl ChatOptions {
    /// Settings with the standard 10 s wait for stragglers.
    pub fn new(rate: f64, duration: Duration, payload_bytes: usize) -> Self {
        Self {
            rate,
            duration,
            payload_bytes,
            drain: Duration::from_secs(10),
        }
    }
}

/// Chat traffic settings.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Aggregate messages per second.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// Payload size in bytes (at least the probe's 20).
    pub payload_bytes: usize,
    /// How long to wait for stragglers after sending stops.
    pub drain: Duration,
}

/// What the senders saw.
#[derive(Debug, Default)]
pub(crate) struct SendTally {
    /// Accepted by the server.
    pub(crate) routed: u64,
    /// Refused by the server, with a reason.
    pub(crate) refused: u64,
    /// Failed because the session was lost.
    pub(crate) failed: u64,
}

/// Fills in the report's traffic and lists every violation: lost,
/// duplicated, reordered, refused or failed messages.
pub(crate) fn judge(
    report: &mut Report,
    rate: f64,
    sending_time: Duration,
    scheduled: u64,
    tally: &SendTally,
    t: DeliveryTracker,
) {
    let lost = tally.routed.saturating_sub(t.delivered);
    report.traffic = Some(Traffic {
        offered_rate_per_s: rate,
        duration_s: sending_time.as_secs_f64(),
        scheduled,
        routed: tally.routed,
        refused: tally.refused,
        delivered: t.delivered,
        lost,
        duplicated: t.duplicated,
        reordered: t.reordered,
        delivered_rate_per_s: t.delivered as f64 / sending_time.as_secs_f64().max(1e-9),
        latency: t.latency.summary(),
    });
    for (count, what) in [
        (lost, "accepted messages were never delivered"),
        (t.duplicated, "messages were delivered twice"),
        (t.reordered, "messages arrived out of per-sender order"),
        (tally.refused, "messages were refused by the server"),
        (tally.failed, "sends failed (session lost)"),
    ] {
        if count > 0 {
            report.violations.push(format!("{count} {what}"));
        }
    }
}

/// Runs the scenario.
pub async fn run(
    options: &FleetOptions,
    chat: &ChatOptions,
    counters: &Arc<Counters>,
) -> anyhow::Result<Report> {
    let mut fleet = fleet::open(options, counters).await?;
    let mut report = crate::base_report("chat", options, &fleet);
    let n = fleet.members.len();
    anyhow::ensure!(n >= 2, "chat needs at least 2 open sessions, got {n}");
    let users: Arc<Vec<String>> = Arc::new(
        fleet
            .members
            .iter()
            .map(|m| options.user(m.index))
            .collect(),
    );
    let tracker = Arc::new(Mutex::new(DeliveryTracker::default()));
    let tally = Arc::new(Mutex::new(SendTally::default()));
    let start = Instant::now();

    let mut receivers = Vec::with_capacity(n);
    let mut outboxes = Vec::with_capacity(n);
    let mut senders = Vec::with_capacity(n);
    for (position, member) in fleet.members.iter_mut().enumerate() {
        let mut events = member.events.take().expect("events not taken yet");
        let tracker = tracker.clone();
        let received = counters.clone();
        receivers.push(tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let Event::Message(message) = event else {
                    continue;
                };
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
        let client = member.client.clone();
        let users = users.clone();
        let tally = tally.clone();
        let counters = counters.clone();
        senders.push(tokio::spawn(async move {
            // One task per session keeps each sender's messages in order.
            while let Some((to, payload)) = rx.recv().await {
                Counters::bump(&counters.sent);
                let result = client.send(&users[to], payload).await;
                let mut tally = tally.lock().expect("not poisoned");
                match result {
                    Ok(r) if r.error == ErrorCode::None as i32 => tally.routed += 1,
                    Ok(_) => tally.refused += 1,
                    Err(_) => {
                        tally.failed += 1;
                        Counters::bump(&counters.errors);
                    }
                }
            }
        }));
    }

    send_and_judge(
        &mut report,
        chat,
        start,
        outboxes,
        senders,
        &tally,
        &tracker,
    )
    .await?;
    for receiver in receivers {
        receiver.abort();
    }
    fleet.close().await;
    Ok(report)
}

/// Sends random direct messages from `outboxes` (one per session, drained
/// in order by `senders`) at the chat rate, waits for the senders and for
/// stragglers, then judges what `tracker` saw against `tally`.
pub(crate) async fn send_and_judge(
    report: &mut Report,
    chat: &ChatOptions,
    start: Instant,
    outboxes: Vec<mpsc::UnboundedSender<(usize, Vec<u8>)>>,
    senders: Vec<tokio::task::JoinHandle<()>>,
    tally: &Mutex<SendTally>,
    tracker: &Mutex<DeliveryTracker>,
) -> anyhow::Result<()> {
    let n = outboxes.len();
    let payload_bytes = chat.payload_bytes;
    let mut seqs = vec![0u64; n];
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5eed);
    let pacer = super::paced(start, chat.rate, chat.duration, move |_, due_ns| {
        let from = rng.random_range(0..n);
        let mut to = rng.random_range(0..n - 1);
        if to >= from {
            to += 1;
        }
        seqs[from] += 1;
        let probe = Probe {
            sender: from as u32,
            seq: seqs[from],
            scheduled_ns: due_ns,
        };
        let _ = outboxes[from].send((to, probe.encode(payload_bytes)));
    });
    let scheduled =
        tokio::task::spawn_blocking(move || pacer.join().expect("pacer thread")).await?;
    let sending_time = start.elapsed();
    for sender in senders {
        sender.await?;
    }
    let routed = tally.lock().expect("not poisoned").routed;
    let deadline = Instant::now() + chat.drain;
    while tracker.lock().expect("not poisoned").delivered < routed && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tally = std::mem::take(&mut *tally.lock().expect("not poisoned"));
    let t = std::mem::take(&mut *tracker.lock().expect("not poisoned"));
    judge(report, chat.rate, sending_time, scheduled, &tally, t);
    Ok(())
}
