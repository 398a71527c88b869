//! `rooms`: the sessions are grouped into rooms of `group` members (each
//! created by its first member, open, and joined by the others); members
//! send to their room at an open-loop aggregate rate, and every member but
//! the sender must receive each message once and in per-sender order.
//! Measured: delivery latency from the scheduled send time over all
//! deliveries, and the fan-out spread, from a message's first member
//! delivery to its last. Driver fleet only. Given the server's process id,
//! a run also measures the server's CPU time while it sends
//! ([`crate::proc_cpu`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use switchboard_client::ErrorCode;
use switchboard_proto::frame;
use switchboard_proto::v1::{
    client_frame, server_frame::Body, ClientFrame, CreateRoom, JoinRoom, Send as SendFrame,
};

use super::chat::{send_and_judge, wait_for_answers, ChatOptions, ChatRun, DriverFleetReceiver};
use crate::driver_fleet::{DriverFleet, FleetSender, FrameHandler};
use crate::fleet::FleetOptions;
use crate::probe::Probe;
use crate::proc_cpu;
use crate::progress::Counters;
use crate::report::Report;
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

/// Everything the fleet's frames tell the scenario: what a chat run's
/// receiver sees, the fan-out spread and the room set-up's answers.
struct RoomsReceiver {
    chat: DriverFleetReceiver,
    spread: Mutex<HashMap<(u32, u64), Spread>>,
    setup_ok: AtomicU64,
    setup_refused: AtomicU64,
}

impl FrameHandler for RoomsReceiver {
    fn frame(&self, index: u32, body: Body) {
        match &body {
            Body::Deliver(deliver) => {
                let (Some(&start), Some(message)) = (self.chat.start.get(), &deliver.message)
                else {
                    return;
                };
                let Some(probe) = Probe::decode(&message.payload) else {
                    return;
                };
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
        self.chat.frame(index, body);
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
    proc_cpu::ensure_readable(server_pid)?;
    let receiver = Arc::new(RoomsReceiver {
        chat: DriverFleetReceiver::new(DeliveryTracker::default(), counters),
        spread: Mutex::default(),
        setup_ok: AtomicU64::new(0),
        setup_refused: AtomicU64::new(0),
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

    let start = *receiver.chat.start.get_or_init(Instant::now);
    let chat = &rooms.chat;
    let payload_bytes = chat.payload_bytes;
    let names: Vec<String> = (0..room_count).map(room_name).collect();
    let members: Vec<u32> = opened[..room_count * group].to_vec();
    let counters_for_send = counters.clone();
    let mut seqs = vec![0u64; members.len()];
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5eed);
    let each = move |_, due_ns| {
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
    };
    let (tally, fleet_ref) = (&receiver.chat.tally, &fleet);
    // Every send answered (or failed), then every delivery in, or drain.
    let senders_done = |scheduled| async move {
        let deadline = Instant::now() + chat.drain;
        wait_for_answers(tally, fleet_ref, scheduled, deadline).await;
        Ok(deadline)
    };
    let failed_sends = || fleet.send_failures();
    let run = ChatRun {
        start,
        tally,
        tracker: &receiver.chat.tracker,
        fan_out: (group - 1) as u64,
        server_pid,
        failed_sends: Some(&failed_sends),
    };
    send_and_judge(&mut report, chat, run, each, senders_done).await?;
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
