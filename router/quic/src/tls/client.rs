//! [`ClientTls`]: a QUIC client crypto configuration whose sessions
//! are [`TlsSession`]s on a `rustls::quic::ClientConnection`. The load
//! generator uses it to hold as many sessions as the router does.

use std::sync::Arc;

use quinn_proto::crypto::{self, Keys};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::{ConnectError, ConnectionId};
use ring::aead;
use rustls::pki_types::ServerName;
use rustls::quic::{ClientConnection, Connection, Suite};

use super::{boxed_keys, encode, rustls_version, Role, TlsSession};

/// Client crypto configuration whose sessions release rustls after the
/// handshake.
pub struct ClientTls {
    tls: Arc<rustls::ClientConfig>,
    /// The suite of the Initial keys (AES-128-GCM, as QUIC requires).
    initial: Suite,
}

impl ClientTls {
    /// Wraps `tls`, which must offer TLS 1.3 with AES-128-GCM-SHA256 (the
    /// suite of QUIC's Initial packets), send no early data and present no
    /// client certificate.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Result<ClientTls, rustls::Error> {
        if tls.enable_early_data {
            return Err(rustls::Error::General(
                "this TLS session offers no 0-RTT: enable_early_data must be false".into(),
            ));
        }
        let initial = tls
            .crypto_provider()
            .cipher_suites
            .iter()
            .find_map(|suite| match (suite.suite(), suite.tls13()) {
                (rustls::CipherSuite::TLS13_AES_128_GCM_SHA256, Some(tls13)) => tls13.quic_suite(),
                _ => None,
            })
            .ok_or_else(|| {
                rustls::Error::General(
                    "QUIC needs TLS13_AES_128_GCM_SHA256 for its Initial packets".into(),
                )
            })?;
        // Fails now, not on every connection, if rustls cannot run QUIC
        // with this configuration.
        let name = ServerName::try_from("localhost").expect("a valid name");
        ClientConnection::new(tls.clone(), rustls::quic::Version::V1, name, Vec::new())?;
        Ok(ClientTls { tls, initial })
    }

    /// A session for a connection to `server_name` in `version`, which
    /// sends `params`.
    pub(super) fn session(
        self: Arc<Self>,
        version: u32,
        server_name: &str,
        params: &TransportParameters,
    ) -> Result<TlsSession, ConnectError> {
        let tls_version = rustls_version(version)?;
        let name = ServerName::try_from(server_name)
            .map_err(|_| ConnectError::InvalidServerName(server_name.into()))?
            .to_owned();
        let connection = ClientConnection::new(self.tls.clone(), tls_version, name, encode(params))
            .expect("a TLS 1.3 configuration, checked in new");
        Ok(TlsSession::start(
            version,
            Role::Client(self),
            Connection::Client(connection),
        ))
    }

    /// The Initial keys of a connection to the server whose connection ID
    /// the client chose as `dst_cid`.
    pub(super) fn initial_keys_for(&self, version: u32, dst_cid: &ConnectionId) -> Keys {
        let version = rustls_version(version).expect("the session's own version");
        boxed_keys(self.initial.keys(dst_cid, rustls::Side::Client, version))
    }
}

impl crypto::ClientConfig for ClientTls {
    fn start_session(
        self: Arc<Self>,
        version: u32,
        server_name: &str,
        params: &TransportParameters,
    ) -> Result<Box<dyn crypto::Session>, ConnectError> {
        Ok(Box::new(self.session(version, server_name, params)?))
    }
}

/// Whether `payload` (a Retry packet's body, its 16-byte integrity tag
/// last) after `header` carries the tag RFC 9001 §5.8 defines for a client
/// whose first Initial went to `orig_dst_cid`.
pub(super) fn is_valid_retry(
    version: u32,
    orig_dst_cid: &ConnectionId,
    header: &[u8],
    payload: &[u8],
) -> bool {
    // The fixed key and nonce of RFC 9001 §5.8 (version 1) and of the
    // drafts 29-32 that quinn-proto also speaks.
    const V1: ([u8; 16], [u8; 12]) = (
        0xbe0c690b9f66575a1d766b54e368c84e_u128.to_be_bytes(),
        *b"\x46\x15\x99\xd3\x5d\x63\x2b\xf2\x23\x98\x25\xbb",
    );
    const DRAFT: ([u8; 16], [u8; 12]) = (
        0xccce187ed09a09d05728155a6cb96be1_u128.to_be_bytes(),
        *b"\xe5\x49\x30\xf9\x7f\x21\x36\xf0\x53\x0a\x8c\x1c",
    );
    let Ok(version) = rustls_version(version) else {
        return false;
    };
    let (key, nonce) = match version {
        rustls::quic::Version::V1Draft => DRAFT,
        _ => V1,
    };
    let Some(tag_start) = payload.len().checked_sub(aead::AES_128_GCM.tag_len()) else {
        return false;
    };
    // The pseudo-packet: the original destination connection ID, with its
    // length, then the Retry packet itself.
    let mut pseudo = Vec::with_capacity(1 + orig_dst_cid.len() + header.len() + payload.len());
    pseudo.push(orig_dst_cid.len() as u8);
    pseudo.extend_from_slice(orig_dst_cid);
    pseudo.extend_from_slice(header);
    let tag_start = pseudo.len() + tag_start;
    pseudo.extend_from_slice(payload);
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::AES_128_GCM, &key).expect("a 16-byte AES-128 key"),
    );
    let (aad, tag) = pseudo.split_at_mut(tag_start);
    key.open_in_place(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(&*aad),
        tag,
    )
    .is_ok()
}
