//! `rooms`: the sessions are grouped into rooms of `group` members (each
//! created by its first member, open, and joined by the others); members
//! send to their room at an open-loop aggregate rate, and every member but
//! the sender must receive each message once and in per-sender order.
//! Measured: delivery latency from the scheduled send time over all
//! deliveries, and the fan-out spread, from a message's first member
//! delivery to its last. Driver fleet only. Given the server's process id,
//! a run also measures the server's CPU time while it sends
//! ([`crate::server_cpu`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use switchboard_client::ErrorCode;
use switchboard_proto::frame;
use switchboard_proto::v1::{
    client_frame, server_frame::Body, ClientFrame, CreateRoom, JoinRoom, Send as SendFrame,
};

use super::chat::{judge, ChatOptions, Outcome, SendTally};
use crate::driver_fleet::{DriverFleet, FleetSender, FrameHandler};
use crate::fleet::FleetOptions;
use crate::probe::Probe;
use crate::progress::Counters;
use crate::report::Report;
use crate::server_cpu::{self, CpuWindow};
use crate::stats::Latency;
use crate::tracking::DeliveryTracker;

/// Longest the room set-up (creates, then joins) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Rooms traffic settings.
#[derive(Debug, Clone)]
pub struct RoomsOptions {
    /// Rate, duration, payload size and drain, as for chat (the rate counts
    /// messages sent, not deliveries).
    pub chat: ChatOptions,
    /// Members per room (at least 2).
    pub group: usize,
}

/// First and last delivery latency of one message, and how many members
/// got it.
type Spread = (Duration, Duration, u32);

/// Everything the fleet's frames tell the scenario.
struct RoomsReceiver {
    tracker: Mutex<DeliveryTracker>,
    spread: Mutex<HashMap<(u32, u64), Spread>>,
    tally: Mutex<SendTally>,
    setup_ok: AtomicU64,
    setup_refused: AtomicU64,
    counters: Arc<Counters>,
    start: OnceLock<Instant>,
}

impl FrameHandler for RoomsReceiver {
    fn frame(&self, index: u32, body: Body) {
        match body {
            Body::Deliver(deliver) => {
                let (Some(&start), Some(message)) = (self.start.get(), deliver.message) else {
                    return;
                };
                let Some(probe) = Probe::decode(&message.payload) else {
                    return;
                };
                DeliveryTracker::receive(
                    &self.tracker,
                    &self.counters,
                    start,
                    index,
                    &message.payload,
                );
                let latency = start
                    .elapsed()
                    .saturating_sub(Duration::from_nanos(probe.scheduled_ns));
                let mut spread = self.spread.lock().expect("not poisoned");
                let entry = spread
                    .entry((probe.sender, probe.seq))
                    .or_insert((latency, latency, 0));
                entry.0 = entry.0.min(latency);
                entry.1 = entry.1.max(latency);
                entry.2 += 1;
            }
            Body::SendResult(result) => {
                self.tally.lock().expect("not poisoned").count(&result);
            }
            Body::RoomResult(result) => {
                let counter = if result.error == ErrorCode::None as i32 {
                    &self.setup_ok
                } else {
                    &self.setup_refused
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Runs the scenario on a driver fleet.
pub async fn run(
    options: &FleetOptions,
    rooms: &RoomsOptions,
    counters: &Arc<Counters>,
) -> anyhow::Result<Report> {
    run_with_server_cpu(options, rooms, None, counters).await
}

/// [`run`], also measuring the CPU time of the server process `server_pid`
/// (when given) over the full-rate window.
pub async fn run_with_server_cpu(
    options: &FleetOptions,
    rooms: &RoomsOptions,
    server_pid: Option<u32>,
    counters: &Arc<Counters>,
) -> anyhow::Result<Report> {
    if let Some(pid) = server_pid {
        server_cpu::ensure_readable(pid)?;
    }
    let receiver = Arc::new(RoomsReceiver {
        tracker: Mutex::default(),
        spread: Mutex::default(),
        tally: Mutex::default(),
        setup_ok: AtomicU64::new(0),
        setup_refused: AtomicU64::new(0),
        counters: counters.clone(),
        start: OnceLock::new(),
    });
    let fleet = DriverFleet::open(options, receiver.clone(), counters).await?;
    let mut report = crate::base_report("rooms", options, &fleet.outcome);
    let opened = fleet.opened.clone();
    let group = rooms.group.min(opened.len());
    anyhow::ensure!(
        group >= 2,
        "rooms need at least 2 members per room and 2 open sessions"
    );
    let room_count = opened.len() / group;
    let sender = fleet.sender();
    // A fresh room name space per run: rooms outlive sessions on the router.
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let room_name = |k: usize| format!("{}room{run_id}-{k}", options.user_prefix);
    let member = |k: usize, j: usize| opened[k * group + j];

    // Creators first, then everyone else joins.
    for k in 0..room_count {
        let body = client_frame::Body::CreateRoom(CreateRoom {
            room: room_name(k),
            open: true,
        });
        send_body(&sender, member(k, 0), body);
    }
    wait_for_setup(&receiver, room_count as u64).await?;
    for k in 0..room_count {
        for j in 1..group {
            let body = client_frame::Body::JoinRoom(JoinRoom {
                room: room_name(k),
                user: String::new(),
            });
            send_body(&sender, member(k, j), body);
        }
    }
    wait_for_setup(&receiver, (room_count * group) as u64).await?;
    let refused = receiver.setup_refused.load(Ordering::Relaxed);
    if refused > 0 {
        report
            .violations
            .push(format!("{refused} room creates or joins were refused"));
    }

    let start = *receiver.start.get_or_init(Instant::now);
    let chat = &rooms.chat;
    let payload_bytes = chat.payload_bytes;
    let names: Vec<String> = (0..room_count).map(room_name).collect();
    let members: Vec<u32> = opened[..room_count * group].to_vec();
    let counters_for_send = counters.clone();
    let mut seqs = vec![0u64; members.len()];
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5eed);
    let cpu_window = server_pid.map(|pid| CpuWindow::begin_at(pid, start + chat.ramp_up));
    let pacer = super::paced(start, chat.schedule(), move |_, due_ns| {
        let k = rng.random_range(0..room_count);
        let from = k * group + rng.random_range(0..group);
        seqs[from] += 1;
        let probe = Probe {
            sender: members[from],
            seq: seqs[from],
            scheduled_ns: due_ns,
        };
        Counters::bump(&counters_for_send.sent);
        let body = client_frame::Body::Send(SendFrame {
            room: names[k].clone(),
            payload: probe.encode(payload_bytes).into(),
            ..SendFrame::default()
        });
        send_body(&sender, members[from], body);
    });
    let scheduled =
        tokio::task::spawn_blocking(move || pacer.join().expect("pacer thread")).await?;
    let sending_time = start.elapsed();
    let server_cpu = cpu_window.and_then(CpuWindow::end_or_warn);

    // Every send answered (or failed), then every delivery in (or drain).
    let fan_out = (group - 1) as u64;
    let deadline = Instant::now() + chat.drain;
    let answered = || {
        let tally = receiver.tally.lock().expect("not poisoned");
        tally.routed + tally.refused + fleet.send_failures()
    };
    while answered() < scheduled && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let routed = receiver.tally.lock().expect("not poisoned").routed;
    while receiver.tracker.lock().expect("not poisoned").delivered < routed * fan_out
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tally = std::mem::take(&mut *receiver.tally.lock().expect("not poisoned"));
    tally.failed = fleet.send_failures();
    let outcome = Outcome {
        sending_time,
        scheduled,
        tally,
        tracker: std::mem::take(&mut *receiver.tracker.lock().expect("not poisoned")),
        fan_out,
        server_cpu,
    };
    judge(&mut report, chat, outcome);
    let mut spread = Latency::default();
    for (first, last, _) in receiver.spread.lock().expect("not poisoned").values() {
        spread.record(*last - *first);
    }
    report.fan_out_spread = Some(spread.summary());
    fleet.report_lost(&mut report);
    fleet.close().await;
    Ok(report)
}

fn send_body(sender: &FleetSender, index: u32, body: client_frame::Body) {
    let frame = ClientFrame {
        r#ref: 1,
        body: Some(body),
    };
    sender.send(index, frame::encode(&frame));
}

/// Waits until `total` room requests have been answered.
async fn wait_for_setup(receiver: &RoomsReceiver, total: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let answered = receiver.setup_ok.load(Ordering::Relaxed)
            + receiver.setup_refused.load(Ordering::Relaxed);
        if answered >= total {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "room set-up: {answered} of {total} requests answered in {SETUP_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
