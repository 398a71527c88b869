//! `chat`: every session sends direct messages to random other sessions at an
//! open-loop aggregate rate. Each payload carries a [`Probe`], so receivers
//! measure latency from the scheduled send time and detect loss, duplicates
//! and per-sender reordering.
//!
//! `churn` is the same run (driver fleet) while random sessions drop and
//! reconnect at `reconnect_rate`, resuming after the last message they
//! handed on: every accepted message must still arrive exactly once and in
//! order. Sends that find their session reconnecting are not sent, and are
//! reported apart.
//!
//! Given the server's process id, a run also measures the server's CPU
//! time over its full-rate window ([`crate::proc_cpu`]).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use switchboard_client::{ErrorCode, Event};
use switchboard_proto::frame;
use switchboard_proto::v1::{client_frame, server_frame::Body, ClientFrame, Send as SendFrame};
use tokio::sync::mpsc;

use crate::driver_fleet::{DriverFleet, FrameHandler};
use crate::fleet::{self, ClientKind, FleetOptions};
use crate::probe::Probe;
use crate::proc_cpu::{self, CpuWindow};
use crate::progress::Counters;
use crate::report::{Report, Traffic};
use crate::scenario::Schedule;
use crate::tracking::DeliveryTracker;

impl ChatOptions {
    /// Settings with the standard 10 s wait for stragglers.
    pub fn new(rate: f64, duration: Duration, payload_bytes: usize) -> Self {
        Self {
            rate,
            duration,
            payload_bytes,
            drain: Duration::from_secs(10),
            reconnect_rate: 0.0,
            ramp_up: Duration::ZERO,
        }
    }

    /// When the run's messages are due: the ramp-up, then the rate.
    pub(crate) fn schedule(&self) -> Schedule {
        Schedule {
            rate: self.rate,
            ramp_up: self.ramp_up,
            duration: self.duration,
        }
    }
}

/// Chat traffic settings.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Aggregate messages per second.
    pub rate: f64,
    /// How long to send at the full rate (after `ramp_up`).
    pub duration: Duration,
    /// Payload size in bytes (at least the probe's 20).
    pub payload_bytes: usize,
    /// How long to wait for stragglers after sending stops.
    pub drain: Duration,
    /// Sessions dropped and reconnected per second while sending (churn;
    /// driver fleet only). 0: none.
    pub reconnect_rate: f64,
    /// How long the rate rises from 0 before `duration` at the full rate.
    /// What is sent meanwhile is checked for loss, duplicates and order
    /// like the rest, but the latency and rate figures describe the full
    /// rate only.
    pub ramp_up: Duration,
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

impl SendTally {
    /// Counts one SendResult: routed, or refused.
    pub(crate) fn count(&mut self, result: &switchboard_proto::v1::SendResult) {
        if result.error == ErrorCode::None as i32 {
            self.routed += 1;
        } else {
            self.refused += 1;
        }
    }
}

/// Runs the scenario on the fleet `options.client` picks.
pub async fn run(
    options: &FleetOptions,
    chat: &ChatOptions,
    counters: &Arc<Counters>,
) -> anyhow::Result<Report> {
    run_with_server_cpu(options, chat, None, counters).await
}

/// [`run`], also measuring the CPU time of the server process `server_pid`
/// (when given) over the full-rate window.
pub async fn run_with_server_cpu(
    options: &FleetOptions,
    chat: &ChatOptions,
    server_pid: Option<u32>,
    counters: &Arc<Counters>,
) -> anyhow::Result<Report> {
    proc_cpu::ensure_readable(server_pid)?;
    match options.client {
        ClientKind::Driver => run_on_driver_fleet(options, chat, server_pid, counters).await,
        ClientKind::Sdk => run_sdk(options, chat, server_pid, counters).await,
    }
}

/// Receives a driver fleet's frames: deliveries into the tracker, send
/// results into the tally.
pub(crate) struct DriverFleetReceiver {
    pub(crate) tracker: Mutex<DeliveryTracker>,
    pub(crate) tally: Mutex<SendTally>,
    counters: Arc<Counters>,
    /// When sending began (probes' times count from it); set once the fleet
    /// is open.
    pub(crate) start: OnceLock<Instant>,
}

impl DriverFleetReceiver {
    pub(crate) fn new(tracker: DeliveryTracker, counters: &Arc<Counters>) -> Self {
        DriverFleetReceiver {
            tracker: Mutex::new(tracker),
            tally: Mutex::default(),
            counters: counters.clone(),
            start: OnceLock::new(),
        }
    }
}

impl FrameHandler for DriverFleetReceiver {
    fn frame(&self, index: u32, body: Body) {
        match body {
            Body::Deliver(deliver) => {
                if let (Some(&start), Some(message)) = (self.start.get(), &deliver.message) {
                    let payload = &message.payload;
                    DeliveryTracker::receive(&self.tracker, &self.counters, start, index, payload);
                }
            }
            Body::SendResult(result) => {
                self.tally.lock().expect("not poisoned").count(&result);
            }
            _ => {}
        }
    }
}

/// Waits until each of `scheduled` sends on `fleet` has been answered
/// (routed or refused) or has failed, or until `deadline`.
pub(crate) async fn wait_for_answers(
    tally: &Mutex<SendTally>,
    fleet: &DriverFleet,
    scheduled: u64,
    deadline: Instant,
) {
    let answered = || {
        let tally = tally.lock().expect("not poisoned");
        tally.routed + tally.refused + fleet.send_failures()
    };
    while answered() < scheduled && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run_on_driver_fleet(
    options: &FleetOptions,
    chat: &ChatOptions,
    server_pid: Option<u32>,
    counters: &Arc<Counters>,
) -> anyhow::Result<Report> {
    let tracker = DeliveryTracker::for_chat(chat, options.sessions as u64);
    let receiver = Arc::new(DriverFleetReceiver::new(tracker, counters));
    let fleet = DriverFleet::open(options, receiver.clone(), counters).await?;
    let churn = chat.reconnect_rate > 0.0;
    let name = if churn { "churn" } else { "chat" };
    let mut report = crate::base_report(name, options, &fleet.outcome);
    let opened = Arc::new(fleet.opened.clone());
    anyhow::ensure!(
        opened.len() >= 2,
        "chat needs at least 2 open sessions, got {}",
        opened.len()
    );
    let start = *receiver.start.get_or_init(Instant::now);
    let sender = fleet.sender();
    let churner = churn.then(|| {
        let (sender, options, opened) = (sender.clone(), options.clone(), opened.clone());
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0xc4u64);
        let churn = Schedule::steady(chat.reconnect_rate, chat.ramp_up + chat.duration);
        super::paced(start, churn, move |_, _| {
            let index = opened[rng.random_range(0..opened.len())];
            let server = options.servers[index as usize % options.servers.len()];
            sender.reconnect(index, server, options.token(index as usize));
        })
    });
    let users: Vec<String> = opened.iter().map(|&i| options.user(i as usize)).collect();
    let counters_for_send = counters.clone();
    let send = move |from: usize, to: usize, payload: Vec<u8>| {
        Counters::bump(&counters_for_send.sent);
        let frame = ClientFrame {
            r#ref: 1,
            body: Some(client_frame::Body::Send(SendFrame {
                to: users[to].clone(),
                payload: payload.into(),
                ..SendFrame::default()
            })),
        };
        sender.send(opened[from], frame::encode(&frame));
    };
    // Every send is answered by a SendResult, or counted as failed when its
    // session was gone.
    let (receiver_ref, fleet_ref) = (&receiver, &fleet);
    let senders_done = move |scheduled: u64| async move {
        let deadline = Instant::now() + chat.drain;
        wait_for_answers(&receiver_ref.tally, fleet_ref, scheduled, deadline).await;
        // Under churn a send that finds its session reconnecting is not a
        // failure: it was never sent (reported apart).
        let failed = if churn { 0 } else { fleet_ref.send_failures() };
        receiver_ref.tally.lock().expect("not poisoned").failed = failed;
        Ok(Instant::now() + chat.drain)
    };
    let run = ChatRun {
        start,
        tally: &receiver.tally,
        tracker: &receiver.tracker,
        fan_out: 1,
        server_pid,
        failed_sends: None,
    };
    let each = direct_messages(fleet.opened.len(), chat.payload_bytes, send);
    send_and_judge(&mut report, chat, run, each, senders_done).await?;
    if let Some(churner) = churner {
        let scheduled = super::joined(churner).await?;
        report.reconnects = Some(fleet.reconnects());
        report.reconnect_retries = Some(fleet.reconnect_retries());
        report.sends_skipped = Some(fleet.send_failures());
        fleet.report_failed_reconnects(&mut report);
        anyhow::ensure!(
            scheduled > 0 || chat.duration.is_zero(),
            "no reconnect was scheduled"
        );
    }
    fleet.report_lost(&mut report);
    fleet.close().await;
    Ok(report)
}

async fn run_sdk(
    options: &FleetOptions,
    chat: &ChatOptions,
    server_pid: Option<u32>,
    counters: &Arc<Counters>,
) -> anyhow::Result<Report> {
    let mut fleet = fleet::open(options, counters).await?;
    let mut report = crate::base_report("chat", options, &fleet.outcome);
    let n = fleet.members.len();
    anyhow::ensure!(n >= 2, "chat needs at least 2 open sessions, got {n}");
    let users = Arc::new(fleet.users(options));
    let tracker = DeliveryTracker::for_chat(chat, n as u64);
    let tracker = Arc::new(Mutex::new(tracker));
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
                let Event::Message(deliver) = event else {
                    continue;
                };
                let Some(message) = deliver.message else {
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

    let run = ChatRun {
        start,
        tally: &tally,
        tracker: &tracker,
        fan_out: 1,
        server_pid,
        failed_sends: None,
    };
    send_through_outboxes(&mut report, chat, run, outboxes, senders).await?;
    for receiver in receivers {
        receiver.abort();
    }
    fleet.close().await;
    Ok(report)
}

/// [`send_and_judge`] for clients that send through one queue per session
/// (`outboxes`), each drained in order by its task in `senders`: the SDK
/// and NATS runs.
pub(crate) async fn send_through_outboxes(
    report: &mut Report,
    chat: &ChatOptions,
    run: ChatRun<'_>,
    outboxes: Vec<mpsc::UnboundedSender<(usize, Vec<u8>)>>,
    senders: Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    let n = outboxes.len();
    let send = move |from: usize, to: usize, payload: Vec<u8>| {
        let _ = outboxes[from].send((to, payload));
    };
    let senders_done = |_| async move {
        for sender in senders {
            sender.await?;
        }
        Ok(Instant::now() + chat.drain)
    };
    let each = direct_messages(n, chat.payload_bytes, send);
    send_and_judge(report, chat, run, each, senders_done).await
}

/// The shared state of one chat (or rooms) run.
pub(crate) struct ChatRun<'a> {
    /// Probes' scheduled times count from here.
    pub(crate) start: Instant,
    /// What the senders saw.
    pub(crate) tally: &'a Mutex<SendTally>,
    /// What the receivers saw.
    pub(crate) tracker: &'a Mutex<DeliveryTracker>,
    /// Deliveries each accepted message is due (1 for a direct message).
    pub(crate) fan_out: u64,
    /// The server process whose CPU time over the full-rate window is
    /// measured, if any.
    pub(crate) server_pid: Option<u32>,
    /// Sends that failed, counted apart from the tally once the stragglers
    /// are in (rooms).
    pub(crate) failed_sends: Option<&'a dyn Fn() -> u64>,
}

/// Random direct messages among `n` sessions, numbered from 0, through
/// `send(from, to, payload)` (which must keep each sender's messages in
/// order): what a chat run paces.
fn direct_messages(
    n: usize,
    payload_bytes: usize,
    mut send: impl FnMut(usize, usize, Vec<u8>) + Send + 'static,
) -> impl FnMut(u64, u64) + Send + 'static {
    let mut seqs = vec![0u64; n];
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5eed);
    move |_, due_ns| {
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
        send(from, to, probe.encode(payload_bytes));
    }
}

/// Calls `each(i, due_ns)` for every message of the chat schedule, waits
/// for `senders_done(scheduled)`, which gives the deadline for stragglers,
/// and until then for the deliveries due; then fills in the report's
/// traffic and lists every violation: lost, duplicated, reordered, refused
/// or failed messages. Each accepted message is due `fan_out` deliveries;
/// one not in by the deadline counts as lost. The server's CPU window, if
/// measured, runs from the end of the ramp-up until the last message is
/// handed on.
pub(crate) async fn send_and_judge<Done>(
    report: &mut Report,
    chat: &ChatOptions,
    run: ChatRun<'_>,
    each: impl FnMut(u64, u64) + Send + 'static,
    senders_done: impl FnOnce(u64) -> Done,
) -> anyhow::Result<()>
where
    Done: std::future::Future<Output = anyhow::Result<Instant>>,
{
    let full_rate_from = run.start + chat.ramp_up;
    let cpu_window = run
        .server_pid
        .map(|pid| CpuWindow::begin_at(pid, full_rate_from));
    let scheduled = super::joined(super::paced(run.start, chat.schedule(), each)).await?;
    let sending_time = run.start.elapsed();
    let server_cpu = cpu_window.and_then(CpuWindow::end_or_warn);
    let deadline = senders_done(scheduled).await?;
    let fan_out = run.fan_out;
    let due = run.tally.lock().expect("not poisoned").routed * fan_out;
    while run.tracker.lock().expect("not poisoned").delivered < due && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tally = std::mem::take(&mut *run.tally.lock().expect("not poisoned"));
    if let Some(failed_sends) = run.failed_sends {
        tally.failed = failed_sends();
    }
    let t = std::mem::take(&mut *run.tracker.lock().expect("not poisoned"));
    let lost = (tally.routed * fan_out).saturating_sub(t.delivered);
    // The figures describe the full rate: the time and the deliveries
    // after the ramp-up.
    let at_full_rate = sending_time.saturating_sub(chat.ramp_up);
    let mut traffic = Traffic {
        offered_rate_per_s: chat.rate,
        duration_s: at_full_rate.as_secs_f64(),
        ramp_up_s: chat.ramp_up.as_secs_f64(),
        scheduled,
        routed: tally.routed,
        refused: tally.refused,
        deliveries_per_message: fan_out,
        delivered: t.delivered,
        lost,
        duplicated: t.duplicated,
        reordered: t.reordered,
        delivered_rate_per_s: t.delivered_measured as f64 / at_full_rate.as_secs_f64().max(1e-9),
        latency: t.latency.summary(),
        ..Traffic::default()
    };
    if let Some(cpu) = server_cpu {
        proc_cpu::record(&mut traffic, cpu, t.delivered_measured);
    }
    report.traffic = Some(traffic);
    let not_delivered = format!(
        "accepted messages were not delivered within {} of the last send",
        humantime::format_duration(chat.drain)
    );
    for (count, what) in [
        (lost, not_delivered.as_str()),
        (t.duplicated, "messages were delivered twice"),
        (t.reordered, "messages arrived out of per-sender order"),
        (tally.refused, "messages were refused by the server"),
        (tally.failed, "sends failed (session lost)"),
    ] {
        if count > 0 {
            report.violations.push(format!("{count} {what}"));
        }
    }
    Ok(())
}
