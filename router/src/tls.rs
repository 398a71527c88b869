//! TLS material for the QUIC listener: PEM files for production, or a
//! self-signed dev certificate kept in the dev directory. [`crate::server`]
//! makes the server configuration of it, offering ALPN `switchboard/1`.

use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use switchboard_proto::dev::{CERT_FILE, KEY_FILE};

/// Why TLS material could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("cannot use {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file held no certificate or no private key.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was missing.
        what: &'static str,
    },
    /// The dev certificate could not be generated.
    #[error("generating the dev certificate")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate and key.
    #[error("certificate and key do not form a usable TLS configuration")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct CertifiedKey {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl CertifiedKey {
    /// SHA-256 of the leaf certificate's DER, as 64 lowercase hex digits:
    /// what clients pin with `--cert-sha256`.
    pub fn fingerprint(&self) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &self.chain[0]).as_ref())
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Loads a PEM certificate chain and PEM private key.
pub fn load_pem_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(io_error(cert))?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error(cert))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_owned(),
            what: "no CERTIFICATE block found",
        });
    }
    let key_pem = std::fs::read(key).map_err(io_error(key))?;
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(io_error(key))?
        .ok_or_else(|| TlsError::Pem {
            path: key.to_owned(),
            what: "no PRIVATE KEY block found",
        })?;
    Ok(CertifiedKey {
        chain,
        key: key_der,
    })
}

/// Loads the dev certificate from `dev_dir`, creating it (valid for
/// `localhost`, `127.0.0.1` and `::1`) on first use so its fingerprint stays
/// the same across restarts.
pub fn load_or_create_dev_cert(dev_dir: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_path = dev_dir.join(CERT_FILE);
    let key_path = dev_dir.join(KEY_FILE);
    if !cert_path.exists() || !key_path.exists() {
        std::fs::create_dir_all(dev_dir).map_err(io_error(dev_dir))?;
        let generated = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])?;
        crate::dev::write_private(&key_path, generated.key_pair.serialize_pem().as_bytes())
            .map_err(io_error(&key_path))?;
        std::fs::write(&cert_path, generated.cert.pem()).map_err(io_error(&cert_path))?;
    }
    load_pem_pair(&cert_path, &key_path)
}
