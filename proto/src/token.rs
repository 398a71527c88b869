//! Tokens (feature `token`): HS256 JWTs whose `sub` is the user id and
//! whose `exp` is required (PROTOCOL.md, "Tokens"). The server verifies them;
//! app backends, the CLI, the load generator and tests sign them with
//! [`mint`]. The key is the secret's bytes as given (a secret file's trimmed
//! text), never hex-decoded.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// Shortest secret accepted, bytes (HS256 wants 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// A secret file's text holds fewer than [`MIN_SECRET_BYTES`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the secret holds {len} bytes; it needs at least {MIN_SECRET_BYTES}")]
pub struct SecretTooShort {
    /// Bytes left after trimming.
    pub len: usize,
}

/// The HMAC key a secret file's `contents` hold: the text without
/// surrounding whitespace, used as is (a hex string is not decoded).
pub fn secret_from_file(contents: &[u8]) -> Result<Vec<u8>, SecretTooShort> {
    let secret = contents.trim_ascii();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(SecretTooShort { len: secret.len() });
    }
    Ok(secret.to_vec())
}

/// The claims Switchboard reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issued-at, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// Signs a token for `user` valid for `ttl` from now.
pub fn mint(secret: &[u8], user: &str, ttl: Duration) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    mint_expiring(secret, user, now.saturating_add(ttl.as_secs()), Some(now))
}

/// Signs a token for `user` with an explicit `exp` (Unix seconds) and
/// `iat`; tests use it for expired tokens.
pub fn mint_expiring(secret: &[u8], user: &str, exp: u64, iat: Option<u64>) -> String {
    let claims = Claims {
        sub: user.to_owned(),
        exp,
        iat,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 encoding of plain claims cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_the_trimmed_text_not_decoded() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let secret = secret_from_file(format!("  {hex}\n").as_bytes()).unwrap();
        assert_eq!(
            secret,
            hex.as_bytes(),
            "64 ASCII bytes, not 32 decoded ones"
        );
        assert_eq!(
            secret_from_file(b" short \n"),
            Err(SecretTooShort { len: 5 })
        );
    }

    #[test]
    fn a_minted_token_carries_its_claims() {
        let token = mint_expiring(b"0123456789abcdef0123456789abcdef", "alice", 99, Some(1));
        let payload = token.split('.').nth(1).unwrap();
        let claims: Claims = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            claims,
            Claims {
                sub: "alice".into(),
                exp: 99,
                iat: Some(1)
            }
        );
    }
}
