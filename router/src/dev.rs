//! The embedded dev default: a random token secret and a random server API
//! token kept in the dev directory next to the dev certificate, so
//! `switchboard token` on the same machine signs tokens the running dev
//! server accepts, and a local backend can read the API token.

use std::io::Write;
use std::path::Path;

use switchboard_proto::dev::{API_TOKEN_FILE, SECRET_FILE};

/// Writes `bytes` to `path`, readable by the owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// Reads the dev secret in `dev_dir`, creating 32 random bytes (hex) first if
/// there is none.
pub fn load_or_create_dev_secret(dev_dir: &Path) -> std::io::Result<Vec<u8>> {
    load_or_create_random(dev_dir, SECRET_FILE)
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
pub fn token_secret(
    config: &crate::config::Config,
) -> Result<(Vec<u8>, SecretSource), crate::auth::SecretError> {
    match &config.auth.secret_file {
        Some(path) => Ok((crate::auth::read_secret_file(path)?, SecretSource::File)),
        None => load_or_create_dev_secret(&config.dev_dir)
            .map(|secret| (secret, SecretSource::Dev))
            .map_err(|source| crate::auth::SecretError::Read {
                path: config.dev_dir.join(SECRET_FILE).display().to_string(),
                source,
            }),
    }
}

/// The server API token for `config`: its `api.token_file`, or the dev
/// token.
pub fn api_token(
    config: &crate::config::Config,
) -> Result<(Vec<u8>, SecretSource), crate::auth::SecretError> {
    match &config.api.token_file {
        Some(path) => Ok((crate::auth::read_secret_file(path)?, SecretSource::File)),
        None => load_or_create_random(&config.dev_dir, API_TOKEN_FILE)
            .map(|token| (token, SecretSource::Dev))
            .map_err(|source| crate::auth::SecretError::Read {
                path: config.dev_dir.join(API_TOKEN_FILE).display().to_string(),
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
        let first = load_or_create_dev_secret(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create_dev_secret(dir.path()).unwrap(), first);
    }

    #[test]
    fn dev_cert_is_created_once_and_keeps_its_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let first = crate::tls::load_or_create_dev_cert(dir.path())
            .unwrap()
            .fingerprint();
        assert_eq!(first.len(), 64);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        let again = crate::tls::load_or_create_dev_cert(dir.path())
            .unwrap()
            .fingerprint();
        assert_eq!(first, again);
    }
}
