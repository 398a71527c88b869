//! [`DeliveryTracker`]: what receivers saw of the probes sent to them:
//! latency from the scheduled time, and duplicates or reordering per
//! (sender, recipient) pair. Shared by the Switchboard and NATS chat runs so
//! both are judged by the same rules.
//!
//! It runs inside the load generator's drivers, on every delivery, so its
//! map of pairs is sized up front for the run ([`DeliveryTracker::for_chat`]):
//! grown on the way, each doubling would rehash every pair seen so far
//! while the driver's sessions wait.

use std::collections::HashMap;
use std::time::Duration;

use crate::probe::Probe;
use crate::scenario::chat::ChatOptions;
use crate::stats::Latency;

/// Receiver-side bookkeeping for one run.
#[derive(Debug, Default)]
pub struct DeliveryTracker {
    /// Highest sequence seen per (sender, recipient).
    last_seq: HashMap<(u32, u32), u64, foldhash::fast::RandomState>,
    /// First-time, in-order deliveries.
    pub delivered: u64,
    /// Deliveries of a sequence already seen.
    pub duplicated: u64,
    /// Deliveries older than one already seen.
    pub reordered: u64,
    /// First-time, in-order deliveries of probes scheduled at or after
    /// `measured_from_ns`: the ones the run's rate figure counts.
    pub delivered_measured: u64,
    /// Latency from the scheduled send time, of probes scheduled at or
    /// after `measured_from_ns`.
    pub latency: Latency,
    /// Probes scheduled before this (ns from the run's start, a ramp-up)
    /// are checked for loss, duplicates and order but not measured.
    measured_from_ns: u64,
}

/// Most (sender, recipient) pairs a tracker makes room for up front: 2^20
/// pairs take 2^21 buckets of 17 bytes (~35 MiB), room for a 30,000 msgs/s
/// run of 30 s. A run with more grows the map past it.
const MAX_PAIRS_UP_FRONT: u64 = 1 << 20;

impl DeliveryTracker {
    /// A tracker for a chat run among `users`: room for its pairs, one per
    /// message scheduled (each to a random contact), at most every pair of
    /// `users`; latency measured from the end of its ramp-up.
    pub fn for_chat(chat: &ChatOptions, users: u64) -> DeliveryTracker {
        let schedule = chat.schedule();
        let pairs = schedule
            .total()
            .min(users.saturating_mul(users.saturating_sub(1)))
            .min(MAX_PAIRS_UP_FRONT);
        DeliveryTracker {
            last_seq: HashMap::with_capacity_and_hasher(pairs as usize, Default::default()),
            measured_from_ns: schedule.full_rate_from_ns(),
            ..DeliveryTracker::default()
        }
    }

    /// Records a received load-test payload, if it carries a [`Probe`]:
    /// latency from its scheduled time (ns since `start`), and the
    /// `received` progress counter.
    pub fn receive(
        tracker: &std::sync::Mutex<DeliveryTracker>,
        counters: &crate::progress::Counters,
        start: std::time::Instant,
        recipient: u32,
        payload: &[u8],
    ) {
        let Some(probe) = Probe::decode(payload) else {
            return;
        };
        let latency = start
            .elapsed()
            .saturating_sub(Duration::from_nanos(probe.scheduled_ns));
        crate::progress::Counters::bump(&counters.received);
        tracker
            .lock()
            .expect("not poisoned")
            .record(probe, recipient, latency);
    }

    /// Records that `recipient` received `probe` `latency` after it was
    /// scheduled.
    pub fn record(&mut self, probe: Probe, recipient: u32, latency: Duration) {
        let measured = probe.scheduled_ns >= self.measured_from_ns;
        if measured {
            self.latency.record(latency);
        }
        let last = self.last_seq.entry((probe.sender, recipient)).or_insert(0);
        if probe.seq == *last {
            self.duplicated += 1;
        } else if probe.seq < *last {
            self.reordered += 1;
        } else {
            *last = probe.seq;
            self.delivered += 1;
            self.delivered_measured += u64::from(measured);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_duplicates_and_reordering_per_pair() {
        let mut t = DeliveryTracker::default();
        let probe = |sender, seq| Probe {
            sender,
            seq,
            scheduled_ns: 0,
        };
        let ms = Duration::from_millis(1);
        t.record(probe(1, 1), 2, ms);
        t.record(probe(1, 3), 2, ms);
        t.record(probe(1, 3), 2, ms); // duplicate
        t.record(probe(1, 2), 2, ms); // late
        t.record(probe(1, 2), 5, ms); // another recipient: fine
        assert_eq!((t.delivered, t.duplicated, t.reordered), (3, 1, 1));
        assert_eq!(t.latency.count(), 5);
    }

    #[test]
    fn a_chat_tracker_holds_every_pair_of_its_run_without_growing() {
        // 100 msgs/s for 2 s among 1,000 users: room for 200 pairs.
        let chat = ChatOptions::new(100.0, Duration::from_secs(2), 80);
        let mut t = DeliveryTracker::for_chat(&chat, 1_000);
        let room = t.last_seq.capacity();
        assert!(room >= 200, "room for {room} pairs");
        for sender in 0..200 {
            let probe = Probe {
                sender,
                seq: 1,
                scheduled_ns: 0,
            };
            t.record(probe, sender + 1, Duration::from_millis(1));
        }
        assert_eq!(t.delivered, 200);
        assert_eq!(t.last_seq.capacity(), room, "the map grew during the run");

        // Three users make at most six pairs, however long the run.
        let chat = ChatOptions::new(1e6, Duration::from_secs(60), 80);
        let small = DeliveryTracker::for_chat(&chat, 3);
        assert!((6..200).contains(&small.last_seq.capacity()));
    }

    #[test]
    fn a_ramp_ups_probes_are_checked_but_not_measured() {
        let mut chat = ChatOptions::new(1_000.0, Duration::from_secs(10), 80);
        chat.ramp_up = Duration::from_secs(2);
        let mut t = DeliveryTracker::for_chat(&chat, 100);
        let probe = |seq, scheduled_ms: u64| Probe {
            sender: 1,
            seq,
            scheduled_ns: scheduled_ms * 1_000_000,
        };
        t.record(probe(1, 1_000), 2, Duration::from_millis(400));
        t.record(probe(2, 1_999), 2, Duration::from_millis(300));
        t.record(probe(3, 2_000), 2, Duration::from_millis(2));
        t.record(probe(2, 1_999), 2, Duration::from_millis(1)); // late
        assert_eq!((t.delivered, t.delivered_measured, t.reordered), (3, 1, 1));
        assert_eq!(t.latency.count(), 1, "only the full rate's probe");
        assert!(t.latency.summary().max_ms < 10.0);
    }
}
