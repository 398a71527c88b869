//! `presence`: every session watches a few others; status changes are made
//! at an open-loop aggregate rate, each carrying its scheduled time in the
//! status text, and watchers measure how long the change took to reach them.
//! Versions must only grow per watched user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use switchboard_client::{Event, Status};
use tokio::sync::mpsc;

use crate::fleet::{self, FleetOptions};
use crate::progress::Counters;
use crate::report::{Report, Traffic};
use crate::stats::Latency;

/// Presence traffic settings.
#[derive(Debug, Clone)]
pub struct PresenceOptions {
    /// Aggregate status changes per second.
    pub rate: f64,
    /// How long to change statuses.
    pub duration: Duration,
    /// Users each session watches.
    pub watch: usize,
    /// How long to wait for stragglers.
    pub drain: Duration,
}

#[derive(Default)]
struct Tracker {
    delivered: u64,
    stale_versions: u64,
    versions: HashMap<(usize, String), u64>,
    latency: Latency,
}

/// Runs the scenario.
pub async fn run(
    options: &FleetOptions,
    presence: &PresenceOptions,
    counters: &Arc<Counters>,
) -> anyhow::Result<Report> {
    let mut fleet = fleet::open(options, counters).await?;
    let mut report = crate::base_report("presence", options, &fleet.outcome);
    let n = fleet.members.len();
    anyhow::ensure!(n >= 2, "presence needs at least 2 open sessions, got {n}");
    let watch = presence.watch.min(n - 1).max(1);
    let users = fleet.users(options);
    // Session p watches p+1 .. p+watch (mod n): every user has `watch` watchers.
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut outboxes = Vec::new();
    for (position, member) in fleet.members.iter_mut().enumerate() {
        let watched: Vec<&str> = (1..=watch)
            .map(|k| users[(position + k) % n].as_str())
            .collect();
        member.client.watch(&watched).await?;
        let mut events = member.events.take().expect("events not taken yet");
        let tracker = tracker.clone();
        let received = counters.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let Event::Presence(p) = event else { continue };
                let mut t = tracker.lock().expect("not poisoned");
                let last = t.versions.entry((position, p.user_id.clone())).or_insert(0);
                let stale = p.version <= *last && *last != 0;
                *last = (*last).max(p.version);
                if stale {
                    t.stale_versions += 1;
                }
                if let Ok(scheduled_ns) = p.text.parse::<u64>() {
                    t.latency.record(
                        start
                            .elapsed()
                            .saturating_sub(Duration::from_nanos(scheduled_ns)),
                    );
                    t.delivered += 1;
                    Counters::bump(&received.received);
                }
            }
        }));
        let (tx, mut rx) = mpsc::unbounded_channel::<(Status, String)>();
        outboxes.push(tx);
        let client = member.client.clone();
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            while let Some((status, text)) = rx.recv().await {
                Counters::bump(&counters.sent);
                if client.set_status(status, &text).await.is_err() {
                    Counters::bump(&counters.errors);
                }
            }
        }));
    }
    // Let the watch snapshots arrive before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start_changes = Instant::now();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0xfeed);
    let mut flips = vec![false; n];
    let offset_ns = start_changes.duration_since(start).as_nanos() as u64;
    let pacer = super::paced(
        start_changes,
        super::Schedule::steady(presence.rate, presence.duration),
        move |_, due_ns| {
            let who = rng.random_range(0..n);
            flips[who] = !flips[who];
            let status = if flips[who] {
                Status::Away
            } else {
                Status::Busy
            };
            let _ = outboxes[who].send((status, (due_ns + offset_ns).to_string()));
        },
    );
    let scheduled = super::joined(pacer).await?;
    let sending_time = start_changes.elapsed();
    let expected = scheduled * watch as u64;
    let deadline = Instant::now() + presence.drain;
    while tracker.lock().expect("not poisoned").delivered < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = std::mem::take(&mut *tracker.lock().expect("not poisoned"));
    let lost = expected.saturating_sub(t.delivered);
    report.traffic = Some(Traffic {
        offered_rate_per_s: presence.rate,
        duration_s: sending_time.as_secs_f64(),
        scheduled,
        routed: scheduled,
        deliveries_per_message: 1,
        delivered: t.delivered,
        lost,
        reordered: t.stale_versions,
        delivered_rate_per_s: t.delivered as f64 / sending_time.as_secs_f64().max(1e-9),
        latency: t.latency.summary(),
        ..Traffic::default()
    });
    if lost > 0 {
        report.violations.push(format!(
            "{lost} of {expected} presence events never reached their watcher"
        ));
    }
    if t.stale_versions > 0 {
        report.violations.push(format!(
            "{} presence events did not increase the version",
            t.stale_versions
        ));
    }
    for task in tasks {
        task.abort();
    }
    fleet.close().await;
    Ok(report)
}
