//! Token authentication: HS256 JWTs whose `sub` is the user id and whose
//! `exp` is required ([`switchboard_proto::token`], which also signs them).
//! [`TokenVerifier`] pins the algorithm, honours `nbf`, refuses critical
//! header extensions and tokens that outlive `auth.max_token_lifetime`, and
//! maps each failure to its [`AuthError`], close code and reason phrase.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use switchboard_proto::close::CloseCode;
use switchboard_proto::token::{Claims, MIN_SECRET_BYTES};

use switchboard_core::UserId;

/// Why a token was refused. It displays as [`AuthError::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Hello carried no token.
    Missing,
    /// The token is not a well-formed JWT, or lacks `sub` or `exp`.
    Malformed,
    /// The signature does not verify with our secret, or the algorithm is
    /// not HS256.
    BadSignature,
    /// The header names critical extensions (`crit`); this server
    /// understands none, so it may not ignore them (RFC 7515 §4.1.11).
    UnknownCritical,
    /// The token's `nbf` has not come yet.
    NotYetValid,
    /// The token's `exp` has passed.
    Expired,
    /// The token's `exp` is further away than `auth.max_token_lifetime`: a
    /// token that never expires is refused.
    LifetimeTooLong,
    /// `sub` is not a valid user id.
    InvalidSubject,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for AuthError {}

impl AuthError {
    /// Every failure, for metrics that list their label values.
    pub const ALL: [AuthError; 8] = [
        AuthError::Missing,
        AuthError::Malformed,
        AuthError::BadSignature,
        AuthError::UnknownCritical,
        AuthError::NotYetValid,
        AuthError::Expired,
        AuthError::LifetimeTooLong,
        AuthError::InvalidSubject,
    ];

    /// The QUIC close code sent for this failure.
    pub fn close_code(self) -> CloseCode {
        match self {
            AuthError::Expired => CloseCode::TokenExpired,
            _ => CloseCode::TokenInvalid,
        }
    }

    /// The reason phrase of the close (PROTOCOL.md §5).
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "token missing",
            AuthError::Malformed => "token malformed",
            AuthError::BadSignature => "token signature invalid",
            AuthError::UnknownCritical => "token has critical header extensions",
            AuthError::NotYetValid => "token not yet valid",
            AuthError::Expired => "token expired",
            AuthError::LifetimeTooLong => "token lifetime exceeds the server's maximum",
            AuthError::InvalidSubject => "token subject is not a valid user id",
        }
    }

    /// Label value for the auth-failure metric.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::UnknownCritical => "unknown_critical",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Expired => "expired",
            AuthError::LifetimeTooLong => "lifetime_too_long",
            AuthError::InvalidSubject => "invalid_subject",
        }
    }
}

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The secret is shorter than [`MIN_SECRET_BYTES`].
    #[error("{path} holds {len} bytes; a secret needs at least {MIN_SECRET_BYTES}")]
    TooShort {
        /// The file.
        path: String,
        /// Its trimmed length.
        len: usize,
    },
}

/// Reads a secret file: its content without surrounding whitespace.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, SecretError> {
    let text = std::fs::read(path).map_err(|source| SecretError::Read {
        path: path.display().to_string(),
        source,
    })?;
    switchboard_proto::token::secret_from_file(&text).map_err(|short| SecretError::TooShort {
        path: path.display().to_string(),
        len: short.len,
    })
}

/// Verifies tokens signed with one HS256 secret.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    max_lifetime: Duration,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenVerifier { .. }") // never print the key
    }
}

impl TokenVerifier {
    /// A verifier for `secret`, tolerating `leeway` of clock skew on `exp`
    /// and `nbf`, refusing an `exp` more than `max_lifetime` away.
    pub fn new(secret: &[u8], leeway: Duration, max_lifetime: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Tokens from identity providers often carry `aud`; Switchboard does
        // not check it (the shared secret is what binds a token to us).
        validation.validate_aud = false;
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
            max_lifetime,
        }
    }

    /// The user a token authenticates, or why it does not.
    pub fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if has_critical_extensions(token)? {
            return Err(AuthError::UnknownCritical);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName => AuthError::BadSignature,
                _ => AuthError::Malformed,
            },
        )?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let latest = now.saturating_add((self.max_lifetime + self.validation_leeway()).as_secs());
        if data.claims.exp > latest {
            return Err(AuthError::LifetimeTooLong);
        }
        UserId::parse(&data.claims.sub).ok_or(AuthError::InvalidSubject)
    }

    fn validation_leeway(&self) -> Duration {
        Duration::from_secs(self.validation.leeway)
    }
}

/// Whether the token's header names a `crit` member. A header that is not
/// base64url JSON is malformed.
fn has_critical_extensions(token: &str) -> Result<bool, AuthError> {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap_or_default();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    Ok(header.contains_key("crit"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde::Serialize;
    use switchboard_proto::token::{mint as mint_token, mint_expiring as mint_token_expiring};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(SECRET, Duration::from_secs(5), DAY)
    }

    /// A token of `claims` signed with `SECRET` by `algorithm`.
    fn encode(algorithm: Algorithm, claims: &impl Serialize) -> String {
        let key = EncodingKey::from_secret(SECRET);
        jsonwebtoken::encode(&Header::new(algorithm), claims, &key).unwrap()
    }

    #[test]
    fn valid_token_yields_its_subject() {
        let token = mint_token(SECRET, "alice", Duration::from_secs(60));
        assert_eq!(verifier().verify(&token).unwrap().as_str(), "alice");
    }

    #[test]
    fn each_bad_token_has_its_reason() {
        let v = verifier();
        let minute = Duration::from_secs(60);
        assert_eq!(v.verify(""), Err(AuthError::Missing));
        assert_eq!(v.verify("not.a.jwt"), Err(AuthError::Malformed));
        let forged = mint_token(b"another secret of thirty-two bytes!", "alice", minute);
        assert_eq!(v.verify(&forged), Err(AuthError::BadSignature));
        let expired = mint_token_expiring(SECRET, "alice", 1_000, None);
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        let bad_sub = mint_token(SECRET, "not a user", minute);
        assert_eq!(v.verify(&bad_sub), Err(AuthError::InvalidSubject));
        // alg=none and HS512 are refused: the algorithm is pinned.
        let claims = Claims {
            sub: "alice".into(),
            exp: now() + 60,
            iat: None,
        };
        let hs512 = encode(Algorithm::HS512, &claims);
        assert_eq!(v.verify(&hs512), Err(AuthError::BadSignature));
        assert_eq!(AuthError::Expired.close_code(), CloseCode::TokenExpired);
        assert_eq!(
            AuthError::BadSignature.close_code(),
            CloseCode::TokenInvalid
        );
    }

    #[test]
    fn a_hex_secret_file_is_a_key_of_its_characters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        std::fs::write(&path, format!("{hex}\n")).unwrap();
        let key = read_secret_file(&path).unwrap();
        let verifier = TokenVerifier::new(&key, Duration::from_secs(5), DAY);
        let as_text = mint_token(hex.as_bytes(), "alice", Duration::from_secs(60));
        assert_eq!(verifier.verify(&as_text).unwrap().as_str(), "alice");
        let decoded = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>();
        let as_bytes = mint_token(&decoded, "alice", Duration::from_secs(60));
        assert_eq!(verifier.verify(&as_bytes), Err(AuthError::BadSignature));
    }

    #[test]
    fn audience_claim_is_ignored() {
        #[derive(Serialize)]
        struct WithAud {
            sub: String,
            exp: u64,
            aud: String,
        }
        let token = encode(
            Algorithm::HS256,
            &WithAud {
                sub: "alice".into(),
                exp: now() + 60,
                aud: "chat-app".into(),
            },
        );
        assert_eq!(verifier().verify(&token).unwrap().as_str(), "alice");
    }

    #[test]
    fn token_without_exp_is_malformed() {
        #[derive(Serialize)]
        struct NoExp {
            sub: String,
        }
        let token = encode(
            Algorithm::HS256,
            &NoExp {
                sub: "alice".into(),
            },
        );
        assert_eq!(verifier().verify(&token), Err(AuthError::Malformed));
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// T-2 and T-4 of the hardening issue: a token that never expires, and
    /// one with a critical extension, were accepted.
    #[test]
    fn endless_not_yet_valid_and_critical_tokens_are_refused() {
        let v = verifier();
        let endless = mint_token_expiring(SECRET, "alice", u64::MAX, None);
        assert_eq!(v.verify(&endless), Err(AuthError::LifetimeTooLong));
        let longer = mint_token(SECRET, "alice", DAY + Duration::from_secs(60));
        assert_eq!(v.verify(&longer), Err(AuthError::LifetimeTooLong));
        let within = mint_token(SECRET, "alice", DAY);
        assert!(v.verify(&within).is_ok(), "the maximum itself is allowed");

        #[derive(Serialize)]
        struct WithNbf {
            sub: String,
            exp: u64,
            nbf: u64,
        }
        let claims = |nbf| WithNbf {
            sub: "alice".into(),
            exp: now() + 600,
            nbf,
        };
        let early = encode(Algorithm::HS256, &claims(now() + 300));
        assert_eq!(v.verify(&early), Err(AuthError::NotYetValid));
        let due = encode(Algorithm::HS256, &claims(now() - 1));
        assert!(v.verify(&due).is_ok());

        let mut header = Header::new(Algorithm::HS256);
        header.typ = None;
        let key = EncodingKey::from_secret(SECRET);
        let plain = jsonwebtoken::encode(&header, &claims(now() - 1), &key).unwrap();
        // The same token with `crit` in its header (re-signed).
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let crit_header = b64.encode(br#"{"alg":"HS256","crit":["exp-ext"],"exp-ext":1}"#);
        let body = plain.split('.').nth(1).unwrap();
        let signing_input = format!("{crit_header}.{body}");
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET),
            signing_input.as_bytes(),
        );
        let critical = format!("{signing_input}.{}", b64.encode(tag.as_ref()));
        assert_eq!(v.verify(&critical), Err(AuthError::UnknownCritical));
    }
}
