//! QUIC TLS sessions that let go of rustls once the handshake is over, on
//! both sides: the router's ([`ServerTls`]) and the load
//! generator's ([`ClientTls`]).
//!
//! quinn's own rustls session keeps the whole rustls QUIC connection for
//! the connection's life: record-layer keys QUIC never uses, the
//! handshake's buffers and key schedule, kilobytes per idle connection.
//! After the handshake quinn-proto asks a
//! session for little: the next 1-RTT keys at each key update, and whether
//! new post-handshake CRYPTO data is acceptable. A [`TlsSession`]
//! therefore keeps the connection while it is handshaking, and then only
//! the `rustls::quic::Secrets` the next keys derive from (and hands those
//! keys out underived, `later_keys`), plus what
//! `handshake_data` reports (and, on a client, the server's transport
//! parameters, which quinn-proto reads once the handshake is over).
//!
//! After the handshake a server refuses CRYPTO data (a QUIC client sends
//! none), where rustls would first buffer a partial message; a client
//! ignores it (a server may send session tickets, which it would not use).
//! Not offered: 0-RTT (a configuration that allows it is refused),
//! client certificates and keying-material export; `peer_identity` is
//! always `None`. The router uses none of them, nor does the load
//! generator.
//!
//! [`server_tls`] builds the server's configuration from a certificate with
//! the [`crypto_provider`].

mod client;
mod later_keys;
mod server;

use std::any::Any;
use std::sync::Arc;

use quinn_proto::crypto::rustls::HandshakeData;
use quinn_proto::crypto::{self, ExportKeyingMaterialError, KeyPair, Keys, UnsupportedVersion};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::{ConnectionId, Side, TransportError, TransportErrorCode};
use rustls::quic::{Connection, KeyChange, Version};

use later_keys::{LaterKeys, SuiteLimits};

pub use client::ClientTls;
pub use server::ServerTls;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The rustls crypto provider of the server: ring, with
/// TLS_AES_128_GCM_SHA256 first (the client SDK, which does not depend on
/// this crate, makes the same choice). Its key schedule runs on SHA-256, which ring
/// accelerates with the CPU's SHA extensions, where the default first choice
/// (AES_256_GCM_SHA384) runs SHA-512 in software, a large share of a
/// handshake's CPU. AES-128-GCM is TLS 1.3's mandatory suite, and QUIC's
/// Initial packets use it anyway.
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    }
}

/// A server's QUIC crypto for a certificate `chain` (leaf first) and its
/// `key`, offering the one ALPN protocol `alpn`: TLS 1.3 only, the server's
/// suite order, no early data and no session tickets.
pub fn server_tls(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[u8],
) -> Result<Arc<ServerTls>, rustls::Error> {
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // Our order, not the client's: a client preferring AES-256 would cost
    // the server SHA-384 in every handshake.
    tls.ignore_client_order = true;
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.max_early_data_size = 0;
    // No session tickets: rustls would send two after every handshake and
    // keep them in a cache that a node of a million clients overwrites long
    // before any of them reconnects. (Sessions resume at the protocol level.)
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(ServerTls::new(Arc::new(tls))?))
}

/// TLS alert `unexpected_message`, for CRYPTO data after the handshake.
const UNEXPECTED_MESSAGE: u8 = 10;

/// The rustls name for a QUIC version quinn-proto accepted (the same
/// mapping as quinn's: drafts 29-32 and version 1).
fn rustls_version(version: u32) -> Result<Version, UnsupportedVersion> {
    match version {
        0xff00_001d..=0xff00_0020 => Ok(Version::V1Draft),
        0x0000_0001 | 0xff00_0021..=0xff00_0022 => Ok(Version::V1),
        _ => Err(UnsupportedVersion),
    }
}

/// `params` as TLS carries them.
fn encode(params: &TransportParameters) -> Vec<u8> {
    let mut encoded = Vec::new();
    params.write(&mut encoded);
    encoded
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

/// Which end of the connection a session is, with its configuration.
enum Role {
    Server(Arc<ServerTls>),
    Client(Arc<ClientTls>),
}

impl Role {
    fn side(&self) -> Side {
        match self {
            Role::Server(_) => Side::Server,
            Role::Client(_) => Side::Client,
        }
    }
}

/// One connection's TLS state.
pub struct TlsSession {
    version: u32,
    role: Role,
    state: State,
}

enum State {
    /// The handshake runs on the rustls connection.
    Handshaking {
        connection: Box<Connection>,
        got_handshake_data: bool,
        /// The next 1-RTT keys, once there are 1-RTT keys.
        next: Option<LaterKeys>,
    },
    /// The handshake is over: only what later calls need is left.
    Established {
        next: LaterKeys,
        protocol: Option<Box<[u8]>>,
        server_name: Option<Box<str>>,
        /// The peer's transport parameters as TLS carried them, kept on a
        /// client only (a server reads them during the handshake).
        peer_params: Option<Box<[u8]>>,
    },
}

impl TlsSession {
    fn start(version: u32, role: Role, connection: Connection) -> TlsSession {
        TlsSession {
            version,
            role,
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
        let peer_params = match self.role {
            Role::Client(_) => connection.quic_transport_parameters().map(Box::from),
            Role::Server(_) => None,
        };
        let protocol = connection.alpn_protocol().map(Box::from);
        let server_name = server_name(connection).map(Box::from);
        let next = next.take().expect("checked above");
        self.state = State::Established {
            next,
            protocol,
            server_name,
            peer_params,
        };
    }
}

/// The name the client asked for, which a server reports.
fn server_name(connection: &Connection) -> Option<&str> {
    match connection {
        Connection::Server(server) => server.server_name(),
        Connection::Client(_) => None,
    }
}

impl crypto::Session for TlsSession {
    fn initial_keys(&self, dst_cid: &ConnectionId, side: Side) -> Keys {
        debug_assert_eq!(side, self.role.side());
        match &self.role {
            Role::Server(config) => config.initial_keys_for(self.version, dst_cid),
            Role::Client(config) => config.initial_keys_for(self.version, dst_cid),
        }
    }

    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        let (protocol, server_name) = match &self.state {
            State::Handshaking {
                got_handshake_data: false,
                ..
            } => return None,
            State::Handshaking { connection, .. } => (
                connection.alpn_protocol().map(<[u8]>::to_vec),
                server_name(connection).map(str::to_owned),
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
        // Not kept: nothing asks for the peer's certificates.
        None
    }

    fn early_crypto(&self) -> Option<(Box<dyn crypto::HeaderKey>, Box<dyn crypto::PacketKey>)> {
        // No 0-RTT.
        None
    }

    fn early_data_accepted(&self) -> Option<bool> {
        match self.role {
            Role::Client(_) => Some(false),
            Role::Server(_) => None,
        }
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
            if buf.is_empty() || matches!(self.role, Role::Client(_)) {
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
                || server_name(connection).is_some()
                || !connection.is_handshaking())
        {
            *got_handshake_data = true;
            return Ok(true);
        }
        Ok(false)
    }

    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        let encoded = match &self.state {
            State::Handshaking { connection, .. } => connection.quic_transport_parameters(),
            State::Established { peer_params, .. } => peer_params.as_deref(),
        };
        match encoded {
            None => Ok(None),
            Some(mut encoded) => Ok(Some(TransportParameters::read(
                self.role.side(),
                &mut encoded,
            )?)),
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
                let suite = SuiteLimits::of(keys.local.packet.as_ref());
                *next = Some(LaterKeys::new(secrets, suite));
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
        let later = match &mut self.state {
            State::Handshaking { next, .. } => next.as_mut()?,
            State::Established { next, .. } => next,
        };
        Some(later.next_pair())
    }

    fn is_valid_retry(&self, orig_dst_cid: &ConnectionId, header: &[u8], payload: &[u8]) -> bool {
        match self.role {
            Role::Client(_) => client::is_valid_retry(self.version, orig_dst_cid, header, payload),
            // Only a client receives Retry packets.
            Role::Server(_) => false,
        }
    }

    /// Not offered: rustls exports only from a finished handshake, and the
    /// exporter secret goes with the TLS connection. Nothing asks for it.
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
    //! Sessions trade handshake bytes in memory (no packets: rustls tracks
    //! the encryption levels): a [`TlsSession`] server with a rustls QUIC
    //! client, then with a [`TlsSession`] client.

    use super::*;
    use crypto::Session;

    #[test]
    fn the_tls_connection_goes_once_the_handshake_is_done_and_key_updates_still_agree() {
        let (server_config, client_tls) = crate::testing::tls_pair();
        let client_tls = Arc::new(client_tls);
        let params = TransportParameters::read(Side::Server, &mut &[][..]).unwrap();
        let mut server = server_config.session(1, &params);
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client =
            rustls::quic::ClientConnection::new(client_tls, Version::V1, name, vec![]).unwrap();

        let (mut client_next, mut client_suite) = (None, None);
        // The first next keys, which quinn-proto asks for as soon as it has
        // 1-RTT keys, while the handshake still runs.
        let (mut server_first, mut client_first) = (None, None);
        let mut handshake_data_reported = 0;
        // Each side's bytes go over in one piece per encryption level, as
        // in QUIC's CRYPTO frames of one packet number space.
        for _ in 0..10 {
            let mut to_server = vec![Vec::new()];
            while let Some(change) = client.write_hs(to_server.last_mut().unwrap()) {
                if let KeyChange::OneRtt { keys, mut next } = change {
                    client_suite = Some(SuiteLimits::of(keys.local.packet.as_ref()));
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
            pass(&mut server, &mut server_first, |piece| {
                client.read_hs(piece).unwrap();
                false
            });
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        assert_eq!(handshake_data_reported, 1);
        assert!(!server.holds_tls_connection(), "rustls is let go");
        let data = server.handshake_data().unwrap();
        let data = data.downcast::<HandshakeData>().unwrap();
        assert_eq!(data.protocol.as_deref(), Some(crate::testing::TEST_ALPN));
        assert_eq!(data.server_name.as_deref(), Some("localhost"));
        // CRYPTO data after the handshake is refused; none is fine.
        assert!(server.read_handshake(&[]).is_ok());
        let refused = server.read_handshake(&[1, 2, 3]).unwrap_err();
        assert_eq!(refused.code, TransportErrorCode::crypto(UNEXPECTED_MESSAGE));

        // The keys handed out during the handshake, then three key
        // updates after it: each side opens what the other sealed.
        let mut client_next = client_next.expect("the client has 1-RTT keys");
        // Later keys are derived when first used, and then agree with
        // rustls' own. (`client_next` is one phase on: the client's first
        // next keys came from it.)
        let suite = client_suite.unwrap();
        let later = LaterKeys::new(client_next.clone(), suite);
        let unused = later.key(1, true);
        let sealing = later.key(0, true);
        // What quinn-proto asks of the phase after a key update is answered
        // without deriving it, and is what the derived key would say.
        let asked = (
            crypto::PacketKey::tag_len(&unused),
            crypto::PacketKey::confidentiality_limit(&unused),
            crypto::PacketKey::integrity_limit(&unused),
        );
        assert!(!unused.is_derived());
        let derived = client_next.clone().next_packet_keys().local;
        let expected = (
            rustls::quic::PacketKey::tag_len(&*derived),
            rustls::quic::PacketKey::confidentiality_limit(&*derived),
            rustls::quic::PacketKey::integrity_limit(&*derived),
        );
        assert_eq!(asked, expected);
        let server_second = server.next_1rtt_keys().unwrap();
        // The server opens what a later client key sealed.
        opens(&sealing, &*server_second.remote, 1);
        assert!(sealing.is_derived() && !unused.is_derived());
        agree(
            &server_first.expect("the server had next keys during the handshake"),
            client_first.unwrap(),
            0,
        );
        agree(&server_second, client_next.next_packet_keys(), 1);
        for generation in 2..4u64 {
            let server_keys = server.next_1rtt_keys().unwrap();
            agree(&server_keys, client_next.next_packet_keys(), generation);
        }
    }

    #[test]
    fn a_client_and_a_server_session_agree_and_both_let_go() {
        let (server_config, client_tls) = crate::testing::tls_pair();
        let client_config = Arc::new(ClientTls::new(Arc::new(client_tls)).unwrap());
        // The server's parameters hold a 30 s idle timeout (id 0x01), so
        // that they differ from the defaults.
        let idle_timeout = [0x01, 0x04, 0x80, 0x00, 0x75, 0x30];
        let server_sent = TransportParameters::read(Side::Client, &mut &idle_timeout[..]).unwrap();
        let client_sent = TransportParameters::read(Side::Server, &mut &[][..]).unwrap();
        let mut server = server_config.session(1, &server_sent);
        let mut client = client_config.session(1, "localhost", &client_sent).unwrap();

        // Initial keys: the client seals, the server opens, and back.
        let cid = ConnectionId::new(&[7; 8]);
        let client_initial = client.initial_keys(&cid, Side::Client).packet;
        let server_initial = server.initial_keys(&cid, Side::Server).packet;
        agree_sessions(&server_initial, &client_initial, 0);

        let (mut client_first, mut server_first) = (None, None);
        let mut reported = (0, 0);
        for _ in 0..10 {
            reported.1 += pass(&mut client, &mut client_first, |piece| {
                server.read_handshake(piece).unwrap()
            });
            reported.0 += pass(&mut server, &mut server_first, |piece| {
                client.read_handshake(piece).unwrap()
            });
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        assert_eq!(
            reported,
            (1, 1),
            "handshake data reported once on each side"
        );
        let held = (client.holds_tls_connection(), server.holds_tls_connection());
        assert_eq!(held, (false, false), "client and server let go of rustls");

        // What quinn-proto asks for once the handshake is over.
        assert_eq!(client.transport_parameters().unwrap(), Some(server_sent));
        let data = client.handshake_data().unwrap();
        let data = data.downcast::<HandshakeData>().unwrap();
        assert_eq!(data.protocol.as_deref(), Some(crate::testing::TEST_ALPN));
        assert_eq!(data.server_name, None, "a client reports no server name");
        assert_eq!(client.early_data_accepted(), Some(false));
        // A client ignores CRYPTO data after the handshake (a server may
        // send tickets); a server refuses it.
        assert_eq!(client.read_handshake(&[4, 0, 0, 1, 0]), Ok(false));
        assert!(server.read_handshake(&[4, 0, 0, 1, 0]).is_err());

        // The next keys handed out during the handshake, then three key
        // updates.
        agree_sessions(&server_first.unwrap(), &client_first.unwrap(), 0);
        for generation in 1..4u64 {
            let server_keys = server.next_1rtt_keys().unwrap();
            let client_keys = client.next_1rtt_keys().unwrap();
            agree_sessions(&server_keys, &client_keys, generation);
        }
    }

    #[test]
    fn a_client_accepts_only_the_retry_tag_the_server_made() {
        let (server_config, _) = crate::testing::tls_pair();
        let original = ConnectionId::new(&[3; 8]);
        let packet = b"\xf0 a retry header, then its token".to_vec();
        let tag = crypto::ServerConfig::retry_tag(&*server_config, 1, &original, &packet);
        let (header, token) = packet.split_at(5);
        let valid = |version, cid: &ConnectionId, payload: &[u8]| {
            client::is_valid_retry(version, cid, header, payload)
        };
        let payload = [token, &tag[..]].concat();
        assert!(valid(1, &original, &payload));

        let mut changed = payload.clone();
        changed[0] ^= 1;
        assert!(!valid(1, &original, &changed));
        assert!(!valid(1, &ConnectionId::new(&[4; 8]), &payload));
        assert!(!valid(0xff00_001d, &original, &payload));
        assert!(!valid(1, &original, &payload[..10]));

        // Drafts 29-32 have a key and nonce of their own.
        let draft = 0xff00_001d;
        let tag = crypto::ServerConfig::retry_tag(&*server_config, draft, &original, &packet);
        let payload = [token, &tag[..]].concat();
        assert!(valid(draft, &original, &payload));
        assert!(!valid(1, &original, &payload));
    }

    /// Hands what `from` writes to `read`, one piece per encryption level;
    /// keeps the first next 1-RTT keys `from` gives out, which come while it
    /// still holds rustls. Returns how many pieces `read` reported handshake
    /// data for.
    fn pass(
        from: &mut TlsSession,
        first_next: &mut Option<KeyPair<Box<dyn crypto::PacketKey>>>,
        mut read: impl FnMut(&[u8]) -> bool,
    ) -> usize {
        let mut pieces = vec![Vec::new()];
        while from.write_handshake(pieces.last_mut().unwrap()).is_some() {
            if first_next.is_none() {
                *first_next = from.next_1rtt_keys();
                assert!(first_next.is_none() || from.holds_tls_connection());
            }
            pieces.push(Vec::new());
        }
        pieces.iter().filter(|p| !p.is_empty() && read(p)).count()
    }

    /// Seals a packet with `sealer` and checks that `opener` opens it.
    fn opens(sealer: &dyn crypto::PacketKey, opener: &dyn crypto::PacketKey, packet_number: u64) {
        let header = [0x40u8, 1, 2, 3];
        let payload = b"sealed by one side";
        let mut packet = [&header[..], payload, &vec![0; sealer.tag_len()]].concat();
        sealer.encrypt(packet_number, &mut packet, header.len());
        let mut sealed = bytes::BytesMut::from(&packet[header.len()..]);
        let opened = opener.decrypt(packet_number, &header, &mut sealed);
        opened.expect("the other side opens");
        assert_eq!(&sealed[..], payload, "{packet_number}");
    }

    /// Seals with each side's local key and opens with the other's remote
    /// key, both ways.
    fn agree_sessions(
        server: &KeyPair<Box<dyn crypto::PacketKey>>,
        client: &KeyPair<Box<dyn crypto::PacketKey>>,
        packet_number: u64,
    ) {
        opens(&*server.local, &*client.remote, packet_number);
        opens(&*client.local, &*server.remote, packet_number);
    }

    /// [`agree_sessions`] with a rustls client's keys.
    fn agree(
        server: &KeyPair<Box<dyn crypto::PacketKey>>,
        client: rustls::quic::PacketKeySet,
        packet_number: u64,
    ) {
        opens(&*server.local, &client.remote, packet_number);
        opens(&client.local, &*server.remote, packet_number);
    }
}
