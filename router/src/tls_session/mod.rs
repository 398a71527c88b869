//! A server-side QUIC TLS session that lets go of rustls once the handshake
//! is over.
//!
//! quinn's own rustls session keeps the whole `rustls::quic::ServerConnection`
//! for the connection's life: record-layer keys QUIC never uses, the
//! handshake's buffers and key schedule: ~3.5 KiB per idle connection,
//! measured at 100k sessions. After the handshake quinn-proto asks a server
//! session for only two things: the next 1-RTT keys at each key update, and
//! whether new post-handshake CRYPTO data is acceptable (a QUIC client sends
//! none; it is refused outright, where rustls would first buffer a partial
//! message). [`LeanServerSession`] therefore keeps the
//! connection while it is handshaking, and then only the
//! `rustls::quic::Secrets` the next keys derive from, plus what
//! `handshake_data` reports. Initial keys and retry tags come from quinn's
//! own configuration, which [`LeanServerConfig`] wraps. Not offered: 0-RTT,
//! client certificates (`peer_identity` is always `None`) and keying-material
//! export.

use std::any::Any;
use std::sync::Arc;

use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use quinn_proto::crypto::{self, ExportKeyingMaterialError, KeyPair, Keys, UnsupportedVersion};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::{ConnectionId, Side, TransportError, TransportErrorCode};
use rustls::quic::{KeyChange, Secrets, ServerConnection, Version};

/// TLS alert `unexpected_message`, for CRYPTO data after the handshake.
const UNEXPECTED_MESSAGE: u8 = 10;

/// Server crypto configuration whose sessions release rustls after the
/// handshake.
pub struct LeanServerConfig {
    tls: Arc<rustls::ServerConfig>,
    quinn: QuicServerConfig,
}

impl LeanServerConfig {
    /// Wraps `tls`, which must offer TLS 1.3, accept no early data and ask
    /// for no client certificates (which this session would not report).
    pub fn new(tls: Arc<rustls::ServerConfig>) -> Result<LeanServerConfig, rustls::Error> {
        if tls.max_early_data_size != 0 {
            return Err(rustls::Error::General(
                "the lean TLS session offers no 0-RTT: max_early_data_size must be 0".into(),
            ));
        }
        // Fails now, not on every connection, if rustls cannot run QUIC
        // with this configuration.
        ServerConnection::new(tls.clone(), Version::V1, Vec::new())?;
        let quinn = QuicServerConfig::try_from(tls.clone())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(LeanServerConfig { tls, quinn })
    }
}

/// The rustls name for a QUIC version quinn-proto accepted (the same
/// mapping as quinn's: drafts 29-32 and version 1).
fn rustls_version(version: u32) -> Result<Version, UnsupportedVersion> {
    match version {
        0xff00_001d..=0xff00_0020 => Ok(Version::V1Draft),
        0x0000_0001 | 0xff00_0021..=0xff00_0022 => Ok(Version::V1),
        _ => Err(UnsupportedVersion),
    }
}

impl crypto::ServerConfig for LeanServerConfig {
    fn initial_keys(
        &self,
        version: u32,
        dst_cid: &ConnectionId,
    ) -> Result<Keys, UnsupportedVersion> {
        self.quinn.initial_keys(version, dst_cid)
    }

    fn retry_tag(&self, version: u32, orig_dst_cid: &ConnectionId, packet: &[u8]) -> [u8; 16] {
        self.quinn.retry_tag(version, orig_dst_cid, packet)
    }

    fn start_session(
        self: Arc<Self>,
        version: u32,
        params: &TransportParameters,
    ) -> Box<dyn crypto::Session> {
        Box::new(LeanServerSession::start(self, version, params))
    }
}

/// One connection's TLS state.
pub struct LeanServerSession {
    version: u32,
    config: Arc<LeanServerConfig>,
    state: State,
}

enum State {
    /// The handshake runs on the rustls connection.
    Handshaking {
        connection: Box<ServerConnection>,
        got_handshake_data: bool,
        /// The secrets of the next 1-RTT keys, once there are 1-RTT keys.
        next: Option<Box<Secrets>>,
    },
    /// The handshake is over: only what later calls need is left.
    Established {
        next: Secrets,
        protocol: Option<Box<[u8]>>,
        server_name: Option<Box<str>>,
    },
}

impl LeanServerSession {
    fn start(
        config: Arc<LeanServerConfig>,
        version: u32,
        params: &TransportParameters,
    ) -> LeanServerSession {
        // quinn-proto starts a session only for a version `initial_keys`
        // accepted.
        let tls_version = rustls_version(version).expect("a version initial_keys accepted");
        let mut encoded = Vec::new();
        params.write(&mut encoded);
        let connection = ServerConnection::new(config.tls.clone(), tls_version, encoded)
            .expect("a TLS 1.3 configuration");
        LeanServerSession {
            version,
            config,
            state: State::Handshaking {
                connection: Box::new(connection),
                got_handshake_data: false,
                next: None,
            },
        }
    }

    /// Whether the rustls connection is still held.
    pub fn holds_tls_connection(&self) -> bool {
        matches!(self.state, State::Handshaking { .. })
    }

    /// Drops the rustls connection once the handshake is over, its 1-RTT
    /// keys are out and it has nothing left to write.
    fn release_when_done(&mut self) {
        let State::Handshaking {
            connection, next, ..
        } = &mut self.state
        else {
            return;
        };
        if connection.is_handshaking() || next.is_none() {
            return;
        }
        let protocol = connection.alpn_protocol().map(Box::from);
        let server_name = connection.server_name().map(Box::from);
        let next = *next.take().expect("checked above");
        self.state = State::Established {
            next,
            protocol,
            server_name,
        };
    }
}

fn boxed_keys(keys: rustls::quic::Keys) -> Keys {
    Keys {
        header: KeyPair {
            local: Box::new(keys.local.header),
            remote: Box::new(keys.remote.header),
        },
        packet: KeyPair {
            local: Box::new(keys.local.packet),
            remote: Box::new(keys.remote.packet),
        },
    }
}

impl crypto::Session for LeanServerSession {
    fn initial_keys(&self, dst_cid: &ConnectionId, side: Side) -> Keys {
        debug_assert_eq!(side, Side::Server, "a server session");
        crypto::ServerConfig::initial_keys(&*self.config, self.version, dst_cid)
            .expect("the session's own version")
    }

    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        let (protocol, server_name) = match &self.state {
            State::Handshaking {
                got_handshake_data: false,
                ..
            } => return None,
            State::Handshaking { connection, .. } => (
                connection.alpn_protocol().map(<[u8]>::to_vec),
                connection.server_name().map(str::to_owned),
            ),
            State::Established {
                protocol,
                server_name,
                ..
            } => (
                protocol.as_deref().map(<[u8]>::to_vec),
                server_name.as_deref().map(str::to_owned),
            ),
        };
        Some(Box::new(HandshakeData {
            protocol,
            server_name,
        }))
    }

    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        // No client certificates.
        None
    }

    fn early_crypto(&self) -> Option<(Box<dyn crypto::HeaderKey>, Box<dyn crypto::PacketKey>)> {
        // No 0-RTT.
        None
    }

    fn early_data_accepted(&self) -> Option<bool> {
        None
    }

    fn is_handshaking(&self) -> bool {
        match &self.state {
            State::Handshaking { connection, .. } => connection.is_handshaking(),
            State::Established { .. } => false,
        }
    }

    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, TransportError> {
        let State::Handshaking {
            connection,
            got_handshake_data,
            ..
        } = &mut self.state
        else {
            if buf.is_empty() {
                return Ok(false);
            }
            return Err(TransportError {
                code: TransportErrorCode::crypto(UNEXPECTED_MESSAGE),
                frame: None,
                reason: "TLS data after the handshake".into(),
            });
        };
        connection
            .read_hs(buf)
            .map_err(|error| match connection.alert() {
                Some(alert) => TransportError {
                    code: TransportErrorCode::crypto(alert.into()),
                    frame: None,
                    reason: error.to_string(),
                },
                None => TransportError {
                    code: TransportErrorCode::PROTOCOL_VIOLATION,
                    frame: None,
                    reason: format!("TLS error: {error}"),
                },
            })?;
        // As quinn does: the first time ALPN or SNI is known (or the
        // handshake is over), report that handshake data is available.
        if !*got_handshake_data
            && (connection.alpn_protocol().is_some()
                || connection.server_name().is_some()
                || !connection.is_handshaking())
        {
            *got_handshake_data = true;
            return Ok(true);
        }
        Ok(false)
    }

    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        let State::Handshaking { connection, .. } = &self.state else {
            return Ok(None);
        };
        match connection.quic_transport_parameters() {
            None => Ok(None),
            Some(mut encoded) => Ok(Some(TransportParameters::read(Side::Server, &mut encoded)?)),
        }
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<Keys> {
        let State::Handshaking {
            connection, next, ..
        } = &mut self.state
        else {
            return None;
        };
        let written = buf.len();
        match connection.write_hs(buf) {
            Some(KeyChange::Handshake { keys }) => Some(boxed_keys(keys)),
            Some(KeyChange::OneRtt {
                keys,
                next: secrets,
            }) => {
                *next = Some(Box::new(secrets));
                Some(boxed_keys(keys))
            }
            None => {
                if buf.len() == written {
                    self.release_when_done();
                }
                None
            }
        }
    }

    fn next_1rtt_keys(&mut self) -> Option<KeyPair<Box<dyn crypto::PacketKey>>> {
        let secrets = match &mut self.state {
            State::Handshaking { next, .. } => next.as_deref_mut()?,
            State::Established { next, .. } => next,
        };
        let keys = secrets.next_packet_keys();
        Some(KeyPair {
            local: Box::new(keys.local),
            remote: Box::new(keys.remote),
        })
    }

    fn is_valid_retry(
        &self,
        _orig_dst_cid: &ConnectionId,
        _header: &[u8],
        _payload: &[u8],
    ) -> bool {
        // Only a client receives Retry packets.
        false
    }

    /// Not offered: rustls exports only from a finished handshake, and the
    /// exporter secret goes with the TLS connection. Nothing in the router
    /// asks for it.
    fn export_keying_material(
        &self,
        _output: &mut [u8],
        _label: &[u8],
        _context: &[u8],
    ) -> Result<(), ExportKeyingMaterialError> {
        Err(ExportKeyingMaterialError)
    }
}

#[cfg(test)]
mod tests {
    //! A rustls QUIC client and a [`LeanServerSession`] trade handshake
    //! bytes in memory (no packets: rustls tracks the encryption levels).

    use super::*;
    use crypto::Session;

    #[test]
    fn the_tls_connection_goes_once_the_handshake_is_done_and_key_updates_still_agree() {
        let dir = tempfile::tempdir().unwrap();
        let certified = crate::tls::load_or_create_dev_cert(dir.path()).unwrap();
        let client_tls = Arc::new(crate::tls::test_client_tls(&certified));
        let server_config = crate::tls::server_crypto(certified).unwrap();
        let params = TransportParameters::read(Side::Server, &mut &[][..]).unwrap();
        let mut server = LeanServerSession::start(server_config, 1, &params);
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client =
            rustls::quic::ClientConnection::new(client_tls, Version::V1, name, vec![]).unwrap();

        let mut client_next = None;
        // The first next keys, which quinn-proto asks for as soon as it has
        // 1-RTT keys, while the handshake still runs.
        let (mut server_first, mut client_first) = (None, None);
        let mut handshake_data_reported = 0;
        // Each side's bytes go over in one piece per encryption level, as
        // in QUIC's CRYPTO frames of one packet number space.
        for _ in 0..10 {
            let mut to_server = vec![Vec::new()];
            while let Some(change) = client.write_hs(to_server.last_mut().unwrap()) {
                if let KeyChange::OneRtt { mut next, .. } = change {
                    client_first = Some(next.next_packet_keys());
                    client_next = Some(next);
                }
                to_server.push(Vec::new());
            }
            for piece in to_server.iter().filter(|p| !p.is_empty()) {
                if server.read_handshake(piece).unwrap() {
                    handshake_data_reported += 1;
                    assert!(server.transport_parameters().unwrap().is_some());
                }
            }
            let mut to_client = vec![Vec::new()];
            while server
                .write_handshake(to_client.last_mut().unwrap())
                .is_some()
            {
                if server_first.is_none() {
                    server_first = server.next_1rtt_keys();
                    assert!(server_first.is_none() || server.holds_tls_connection());
                }
                to_client.push(Vec::new());
            }
            for piece in to_client.iter().filter(|p| !p.is_empty()) {
                client.read_hs(piece).unwrap();
            }
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        assert_eq!(handshake_data_reported, 1);
        assert!(!server.holds_tls_connection(), "rustls is let go");
        let data = server.handshake_data().unwrap();
        let data = data.downcast::<HandshakeData>().unwrap();
        assert_eq!(data.protocol.as_deref(), Some(switchboard_proto::ALPN));
        assert_eq!(data.server_name.as_deref(), Some("localhost"));
        // CRYPTO data after the handshake is refused; none is fine.
        assert!(server.read_handshake(&[]).is_ok());
        let refused = server.read_handshake(&[1, 2, 3]).unwrap_err();
        assert_eq!(refused.code, TransportErrorCode::crypto(UNEXPECTED_MESSAGE));

        // The keys handed out during the handshake, then three key
        // updates after it: each side opens what the other sealed.
        let mut client_next = client_next.expect("the client has 1-RTT keys");
        agree(
            &server_first.expect("the server had next keys during the handshake"),
            &client_first.unwrap(),
            0,
        );
        for generation in 1..4u64 {
            let server_keys = server.next_1rtt_keys().unwrap();
            agree(&server_keys, &client_next.next_packet_keys(), generation);
        }
    }

    /// Seals a packet with each side's local key and opens it with the
    /// other side's remote key.
    fn agree(
        server: &KeyPair<Box<dyn crypto::PacketKey>>,
        client: &rustls::quic::PacketKeySet,
        packet_number: u64,
    ) {
        let header = [0x40u8, 1, 2, 3];
        let payload = b"after the handshake";
        let tag = server.local.tag_len();
        let mut packet = [&header[..], payload, &vec![0; tag]].concat();
        server
            .local
            .encrypt(packet_number, &mut packet, header.len());
        let (_, sealed) = packet.split_at_mut(header.len());
        let opened = client
            .remote
            .decrypt_in_place(packet_number, &header, sealed);
        assert_eq!(opened.expect("client opens"), payload, "{packet_number}");

        let mut sealed = payload.to_vec();
        let tag = client
            .local
            .encrypt_in_place(packet_number, &header, &mut sealed)
            .unwrap();
        sealed.extend_from_slice(tag.as_ref());
        let mut sealed = bytes::BytesMut::from(&sealed[..]);
        server
            .remote
            .decrypt(packet_number, &header, &mut sealed)
            .expect("server opens");
        assert_eq!(&sealed[..], payload, "{packet_number}");
    }
}
