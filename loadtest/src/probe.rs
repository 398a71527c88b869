//! The probe carried in every load-test payload: who sent it, the sender's
//! sequence number, and when it was *scheduled* to be sent (nanoseconds since
//! the run's start), so latency includes any lateness of the sender itself
//! (no coordinated omission).

/// Bytes a probe takes at the start of a payload.
pub const PROBE_BYTES: usize = 4 + 8 + 8;

/// The header of one load-test message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Index of the sending session.
    pub sender: u32,
    /// Per-sender sequence number, from 1.
    pub seq: u64,
    /// When the message was scheduled, ns since the run's start.
    pub scheduled_ns: u64,
}

impl Probe {
    /// Encodes the probe, padded with zeros to `size` bytes (at least
    /// [`PROBE_BYTES`]).
    pub fn encode(&self, size: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(size.max(PROBE_BYTES));
        out.extend_from_slice(&self.sender.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.scheduled_ns.to_be_bytes());
        out.resize(size.max(PROBE_BYTES), 0);
        out
    }

    /// Decodes a probe from the start of `payload`.
    pub fn decode(payload: &[u8]) -> Option<Probe> {
        let header = payload.get(..PROBE_BYTES)?;
        Some(Probe {
            sender: u32::from_be_bytes(header[0..4].try_into().ok()?),
            seq: u64::from_be_bytes(header[4..12].try_into().ok()?),
            scheduled_ns: u64::from_be_bytes(header[12..20].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let probe = Probe {
            sender: 7,
            seq: 42,
            scheduled_ns: 123_456_789,
        };
        let bytes = probe.encode(80);
        assert_eq!(bytes.len(), 80);
        assert_eq!(Probe::decode(&bytes), Some(probe));
        assert_eq!(Probe::decode(&bytes[..10]), None);
    }
}
