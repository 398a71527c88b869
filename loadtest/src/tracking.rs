//! [`DeliveryTracker`]: what receivers saw of the probes sent to them:
//! latency from the scheduled time, and duplicates or reordering per
//! (sender, recipient) pair. Shared by the Switchboard and NATS chat runs so
//! both are judged by the same rules.

use std::collections::HashMap;
use std::time::Duration;

use crate::probe::Probe;
use crate::stats::Latency;

/// Receiver-side bookkeeping for one run.
#[derive(Debug, Default)]
pub struct DeliveryTracker {
    /// Highest sequence seen per (sender, recipient).
    last_seq: HashMap<(u32, u32), u64>,
    /// First-time, in-order deliveries.
    pub delivered: u64,
    /// Deliveries of a sequence already seen.
    pub duplicated: u64,
    /// Deliveries older than one already seen.
    pub reordered: u64,
    /// Latency from the scheduled send time.
    pub latency: Latency,
}

impl DeliveryTracker {
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
        self.latency.record(latency);
        let last = self.last_seq.entry((probe.sender, recipient)).or_insert(0);
        if probe.seq == *last {
            self.duplicated += 1;
        } else if probe.seq < *last {
            self.reordered += 1;
        } else {
            *last = probe.seq;
            self.delivered += 1;
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
}
