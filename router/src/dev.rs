//! The embedded dev default: a random token secret and a random server API
//! token kept in the dev directory next to the dev certificate, so
//! `switchboard token` on the same machine signs tokens the running dev
//! server accepts, and a local backend can read the API token.

use std::io::Write;
use std::path::Path;

use switchboard_proto::dev::{API_TOKEN_FILE, SECRET_FILE};

use crate::auth::SecretError;
use crate::config::Config;

/// Writes `bytes` to `path`, readable by the owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// Reads `file` in `dev_dir`, creating it with 32 random bytes (hex) first
/// if it is missing or empty.
fn load_or_create_random(dev_dir: &Path, file: &str) -> std::io::Result<Vec<u8>> {
    let path = dev_dir.join(file);
    if let Ok(existing) = std::fs::read(&path) {
        let trimmed = existing.trim_ascii();
        if !trimmed.is_empty() {
            return Ok(trimmed.to_vec());
        }
    }
    std::fs::create_dir_all(dev_dir)?;
    let mut random = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| std::io::Error::other("system random source failed"))?;
    let secret = hex::encode(random);
    write_private(&path, secret.as_bytes())?;
    Ok(secret.into_bytes())
}

/// The token secret for `config`: its secret file, or the dev secret.
pub fn token_secret(config: &Config) -> Result<(Vec<u8>, SecretSource), SecretError> {
    file_or_dev(config, config.auth.secret_file.as_deref(), SECRET_FILE)
}

/// The server API token for `config`: its `api.token_file`, or the dev
/// token.
pub fn api_token(config: &Config) -> Result<(Vec<u8>, SecretSource), SecretError> {
    file_or_dev(config, config.api.token_file.as_deref(), API_TOKEN_FILE)
}

/// The secret in `file`, or else the random one in `dev_file` of the
/// configured dev directory.
fn file_or_dev(
    config: &Config,
    file: Option<&Path>,
    dev_file: &str,
) -> Result<(Vec<u8>, SecretSource), SecretError> {
    let dev_dir = &config.dev_dir;
    match file {
        Some(path) => Ok((crate::auth::read_secret_file(path)?, SecretSource::File)),
        None => load_or_create_random(dev_dir, dev_file)
            .map(|secret| (secret, SecretSource::Dev))
            .map_err(|source| SecretError::Read {
                path: dev_dir.join(dev_file).display().to_string(),
                source,
            }),
    }
}

/// Where the token secret (or API token) came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    /// The configured file (`auth.secret_file`, `api.token_file`).
    File,
    /// Generated in the dev directory: not for production.
    Dev,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_secret_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = || load_or_create_random(dir.path(), SECRET_FILE).unwrap();
        let first = secret();
        assert_eq!(first.len(), 64);
        assert_eq!(secret(), first);
    }

    #[test]
    fn dev_cert_is_created_once_and_keeps_its_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let fingerprint = || {
            let cert = crate::tls::load_or_create_dev_cert(dir.path()).unwrap();
            cert.fingerprint()
        };
        let first = fingerprint();
        assert_eq!(first.len(), 64);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(first, fingerprint());
    }
}
