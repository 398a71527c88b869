//! [`LaterKeys`]: the 1-RTT packet keys of later key phases, handed to
//! quinn-proto at once but derived only when first used.
//!
//! quinn-proto asks for the next phase's keys as soon as a connection has
//! 1-RTT keys, and for the phase after that at each key update, and keeps
//! them until a key update needs them. Two ring AES-GCM keys take over a
//! kilobyte; a [`LaterPacketKey`] is a few dozen bytes until it is first
//! used, and all of a connection's share one copy of the secrets they
//! derive from.
//!
//! quinn-proto makes a first key update early on purpose (after 10 to 1,000
//! packets), so every long-lived connection reaches one, and then asks the
//! phase after for its confidentiality limit. The suite's limits and tag
//! length are therefore answered from the keys in use when the phases were
//! handed out, never by deriving: a derived key that no packet used would
//! stay with the connection for its life (a kilobyte per session that the
//! soak saw as RSS creeping up while sessions reached their first update).

use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use quinn_proto::crypto::{self, CryptoError, KeyPair};
use rustls::quic::Secrets;

/// The secrets later phases derive from, and how many phases were handed
/// out.
pub(super) struct LaterKeys {
    first: Arc<Origin>,
    handed_out: u32,
}

/// What every later phase of a connection shares.
struct Origin {
    /// The secrets of the first phase handed out.
    secrets: Secrets,
    /// The suite's figures, the same in every phase.
    suite: SuiteLimits,
}

/// What quinn-proto asks a packet key about its cipher suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SuiteLimits {
    tag_len: usize,
    confidentiality: u64,
    integrity: u64,
}

impl SuiteLimits {
    /// The figures of `key`'s suite.
    pub(super) fn of(key: &dyn rustls::quic::PacketKey) -> SuiteLimits {
        SuiteLimits {
            tag_len: key.tag_len(),
            confidentiality: key.confidentiality_limit(),
            integrity: key.integrity_limit(),
        }
    }
}

impl LaterKeys {
    /// Keys for the phases `first` starts (the `next` of rustls'
    /// `KeyChange::OneRtt`), whose suite has the figures `suite` (those of
    /// the `keys` beside it).
    pub(super) fn new(first: Secrets, suite: SuiteLimits) -> LaterKeys {
        LaterKeys {
            first: Arc::new(Origin {
                secrets: first,
                suite,
            }),
            handed_out: 0,
        }
    }

    /// The next phase's keys, not yet derived.
    pub(super) fn next_pair(&mut self) -> KeyPair<Box<dyn crypto::PacketKey>> {
        let phase = self.handed_out;
        self.handed_out += 1;
        KeyPair {
            local: Box::new(self.key(phase, true)),
            remote: Box::new(self.key(phase, false)),
        }
    }

    /// One direction's key of `phase` (0: the first handed out).
    pub(super) fn key(&self, phase: u32, local: bool) -> LaterPacketKey {
        LaterPacketKey {
            first: self.first.clone(),
            phase,
            local,
            key: OnceLock::new(),
        }
    }
}

/// One direction's packet key of one later phase, derived on first use.
pub(super) struct LaterPacketKey {
    first: Arc<Origin>,
    /// Phases after the first: how many times the secrets are updated.
    phase: u32,
    /// Seals what this side sends (else opens what the peer sends).
    local: bool,
    key: OnceLock<Box<dyn rustls::quic::PacketKey>>,
}

impl LaterPacketKey {
    // The box itself: quinn implements its `PacketKey` for it.
    #[allow(clippy::borrowed_box)]
    fn derived(&self) -> &Box<dyn rustls::quic::PacketKey> {
        self.key.get_or_init(|| {
            let mut secrets = self.first.secrets.clone();
            for _ in 0..self.phase {
                secrets.next_packet_keys();
            }
            let keys = secrets.next_packet_keys();
            if self.local {
                keys.local
            } else {
                keys.remote
            }
        })
    }

    /// Whether the key was derived (it was used).
    #[cfg(test)]
    pub(super) fn is_derived(&self) -> bool {
        self.key.get().is_some()
    }
}

impl crypto::PacketKey for LaterPacketKey {
    fn encrypt(&self, packet: u64, buf: &mut [u8], header_len: usize) {
        crypto::PacketKey::encrypt(self.derived(), packet, buf, header_len)
    }

    fn decrypt(
        &self,
        packet: u64,
        header: &[u8],
        payload: &mut BytesMut,
    ) -> Result<(), CryptoError> {
        crypto::PacketKey::decrypt(self.derived(), packet, header, payload)
    }

    // The suite's figures, without deriving (see the module docs).
    fn tag_len(&self) -> usize {
        self.first.suite.tag_len
    }

    fn confidentiality_limit(&self) -> u64 {
        self.first.suite.confidentiality
    }

    fn integrity_limit(&self) -> u64 {
        self.first.suite.integrity
    }
}
