//! [`ServerTls`]: the router's QUIC crypto configuration, whose
//! sessions are [`TlsSession`]s on a `rustls::quic::ServerConnection`.

use std::sync::Arc;

use quinn_proto::crypto::rustls::QuicServerConfig;
use quinn_proto::crypto::{self, Keys, UnsupportedVersion};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::ConnectionId;
use rustls::quic::{Connection, ServerConnection, Version};

use super::{encode, rustls_version, Role, TlsSession};

/// Server crypto configuration whose sessions release rustls after the
/// handshake.
pub struct ServerTls {
    tls: Arc<rustls::ServerConfig>,
    /// quinn's own configuration, for Initial keys and Retry tags.
    quinn: QuicServerConfig,
}

impl ServerTls {
    /// Wraps `tls`, which must offer TLS 1.3, accept no early data and ask
    /// for no client certificates (which this session would not report).
    pub fn new(tls: Arc<rustls::ServerConfig>) -> Result<ServerTls, rustls::Error> {
        if tls.max_early_data_size != 0 {
            return Err(rustls::Error::General(
                "this TLS session offers no 0-RTT: max_early_data_size must be 0".into(),
            ));
        }
        // Fails now, not on every connection, if rustls cannot run QUIC
        // with this configuration.
        ServerConnection::new(tls.clone(), Version::V1, Vec::new())?;
        let quinn = QuicServerConfig::try_from(tls.clone())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(ServerTls { tls, quinn })
    }

    /// A session for a connection quinn-proto accepted in `version`, which
    /// sends `params`.
    pub(super) fn session(
        self: Arc<Self>,
        version: u32,
        params: &TransportParameters,
    ) -> TlsSession {
        let tls_version = rustls_version(version).expect("a version initial_keys accepted");
        let connection = ServerConnection::new(self.tls.clone(), tls_version, encode(params))
            .expect("a TLS 1.3 configuration, checked in new");
        TlsSession::start(version, Role::Server(self), Connection::Server(connection))
    }

    /// The Initial keys of a connection whose client chose `dst_cid`.
    pub(super) fn initial_keys_for(&self, version: u32, dst_cid: &ConnectionId) -> Keys {
        crypto::ServerConfig::initial_keys(self, version, dst_cid)
            .expect("the session's own version")
    }
}

impl crypto::ServerConfig for ServerTls {
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
        Box::new(self.session(version, params))
    }
}
