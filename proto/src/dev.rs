//! Where the embedded dev default keeps its files on this machine: the
//! self-signed certificate, its key, the token secret and the server API
//! token. `switchboard serve` creates them on first start; the CLI and the
//! load generator read the same ones, so on one machine they work together
//! with no flags. Nothing here reads or writes a file.

use std::path::PathBuf;

/// The dev certificate (PEM), inside [`default_dir`].
pub const CERT_FILE: &str = "cert.pem";
/// The dev certificate's private key (PEM).
pub const KEY_FILE: &str = "key.pem";
/// The dev token secret: 64 hex characters, which are the HMAC key as text
/// (PROTOCOL.md, "Tokens").
pub const SECRET_FILE: &str = "token-secret";
/// The dev server API token.
pub const API_TOKEN_FILE: &str = "api-token";

/// The dev directory: `$XDG_STATE_HOME/switchboard/dev`, else
/// `~/.local/state/switchboard/dev`, else `.switchboard/dev` (no home).
pub fn default_dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(state).join("switchboard/dev");
    }
    match std::env::var_os("HOME").filter(|s| !s.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/switchboard/dev"),
        None => PathBuf::from(".switchboard/dev"),
    }
}
