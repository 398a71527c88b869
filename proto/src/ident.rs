//! Identifier rules shared by client and server: user ids (a token's `sub`,
//! a message recipient, a watched user) and device ids.

/// Longest user or device id, in bytes.
pub const MAX_ID_BYTES: usize = 64;

/// Whether `id` is a valid user or device id: 1 to 64 bytes of
/// `[A-Za-z0-9._@-]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids_and_rejects_the_rest() {
        assert!(is_valid_id("alice"));
        assert!(is_valid_id("bob.smith@example-1_x"));
        assert!(is_valid_id(&"a".repeat(64)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(!is_valid_id("al ice"));
        assert!(!is_valid_id("alice/1"));
        assert!(!is_valid_id("ålice"));
    }
}
