//! How the client trusts the server: a CA certificate file, or a pinned
//! SHA-256 fingerprint of the server's leaf certificate (for self-signed dev
//! certificates). [`client_config`] turns a [`Trust`] into a QUIC client
//! configuration offering ALPN `switchboard/1`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use switchboard_proto::ALPN;

use crate::ClientError;

/// What the client trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Certificates in this PEM file are trust anchors (a CA, or the server's
    /// own self-signed certificate).
    CaFile(PathBuf),
    /// Accept exactly the leaf certificate whose DER has this SHA-256.
    Fingerprint([u8; 32]),
}

impl Trust {
    /// Parses 64 hex digits (colons allowed) into a fingerprint pin.
    pub fn fingerprint_hex(hex_digits: &str) -> Result<Trust, ClientError> {
        let cleaned: String = hex_digits.chars().filter(|c| *c != ':').collect();
        let mut pin = [0; 32];
        hex::decode_to_slice(cleaned.trim(), &mut pin)
            .map_err(|_| ClientError::Config("--cert-sha256 must be 64 hex digits".into()))?;
        Ok(Trust::Fingerprint(pin))
    }
}

/// The QUIC client configuration for `trust`.
pub fn client_config(trust: &Trust) -> Result<quinn::ClientConfig, ClientError> {
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(rustls_client_config(trust)?)
        .map_err(|e| ClientError::Config(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// The TLS configuration [`client_config`] wraps, for a QUIC crypto
/// configuration of one's own (the load generator's driver sessions).
pub fn rustls_client_config(trust: &Trust) -> Result<rustls::ClientConfig, ClientError> {
    // TLS_AES_128_GCM_SHA256 first: its key schedule runs on hardware
    // SHA-256, where the default first choice (AES-256/SHA-384) runs SHA-512
    // in software, a large share of a handshake-heavy load's CPU.
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    });
    let algorithms = provider.signature_verification_algorithms;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let mut tls = match trust {
        Trust::CaFile(path) => {
            let roots = ca_roots(path)
                .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?;
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                pin: *pin,
                algorithms,
            }))
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    Ok(tls)
}

/// The certificates of the PEM file at `path`, at least one.
fn ca_roots(path: &Path) -> Result<RootCertStore, Box<dyn std::error::Error>> {
    let pem = std::fs::read(path)?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert?)?;
    }
    if roots.is_empty() {
        return Err("no certificate found".into());
    }
    Ok(roots)
}

/// Accepts exactly one leaf certificate (by SHA-256), still verifying the
/// handshake signature made with its key.
#[derive(Debug)]
struct PinnedCertificate {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity);
        if digest.as_ref() == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "server certificate does not match the pinned SHA-256".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
