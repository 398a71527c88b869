//! QUIC application close codes: why the server (or client) closed a
//! connection. [`CloseCode`] maps each to the number on the wire.

use std::fmt;

/// Why a connection was closed, sent as the QUIC `CONNECTION_CLOSE`
/// application error code (the reason phrase carries human-readable detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 0x00: normal close, nothing went wrong (client logging out).
    Normal,
    /// 0x01: the server is shutting down. Open sessions get a GoAway frame
    /// first; connections still authenticating may not.
    GoingAway,
    /// 0x02: this node holds as many sessions as it may (after a valid
    /// Hello, before Welcome); connect to another node, or retry later.
    ServerFull,
    /// 0x10: no valid Hello arrived within the server's auth timeout.
    AuthTimeout,
    /// 0x11: the token is missing, malformed, signed with another key or
    /// algorithm, or its `sub` is not a valid user id.
    TokenInvalid,
    /// 0x12: the token's `exp` has passed.
    TokenExpired,
    /// 0x20: a frame broke the session rules (a frame before Hello, a second
    /// Hello, an invalid or reserved device id).
    ProtocolViolation,
    /// 0x21: a frame's bytes are not a valid protobuf `ClientFrame`.
    MalformedFrame,
    /// 0x22: a frame's length prefix is larger than the server's maximum.
    FrameTooLarge,
    /// 0x30: another session of the same user and device id opened.
    SessionReplaced,
    /// 0x31: the session could not keep up with what was sent to it.
    SlowConsumer,
    /// 0x32: the app's backend ended this session through the server API
    /// (for example on log-out or a ban elsewhere).
    Disconnected,
    /// 0x33: the user already has the server's most sessions open
    /// (`Welcome` came first); close another device's session, or retry
    /// later.
    TooManySessions,
    /// 0x34: this device opened sessions more often than the server allows
    /// in a minute; the reason phrase is `retry_after_ms=<n>`: wait that
    /// long before the next attempt.
    ReconnectingTooFast,
}

impl CloseCode {
    /// Every close code, in wire order.
    pub const ALL: [CloseCode; 14] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ServerFull,
        CloseCode::AuthTimeout,
        CloseCode::TokenInvalid,
        CloseCode::TokenExpired,
        CloseCode::ProtocolViolation,
        CloseCode::MalformedFrame,
        CloseCode::FrameTooLarge,
        CloseCode::SessionReplaced,
        CloseCode::SlowConsumer,
        CloseCode::Disconnected,
        CloseCode::TooManySessions,
        CloseCode::ReconnectingTooFast,
    ];

    /// The code on the wire.
    pub const fn to_code(self) -> u32 {
        match self {
            CloseCode::Normal => 0x00,
            CloseCode::GoingAway => 0x01,
            CloseCode::ServerFull => 0x02,
            CloseCode::AuthTimeout => 0x10,
            CloseCode::TokenInvalid => 0x11,
            CloseCode::TokenExpired => 0x12,
            CloseCode::ProtocolViolation => 0x20,
            CloseCode::MalformedFrame => 0x21,
            CloseCode::FrameTooLarge => 0x22,
            CloseCode::SessionReplaced => 0x30,
            CloseCode::SlowConsumer => 0x31,
            CloseCode::Disconnected => 0x32,
            CloseCode::TooManySessions => 0x33,
            CloseCode::ReconnectingTooFast => 0x34,
        }
    }

    /// The close code for a wire number, if it is one of ours.
    pub fn from_code(code: u64) -> Option<CloseCode> {
        CloseCode::ALL
            .into_iter()
            .find(|c| u64::from(c.to_code()) == code)
    }

    /// The stable `snake_case` name used in metrics labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going_away",
            CloseCode::ServerFull => "server_full",
            CloseCode::AuthTimeout => "auth_timeout",
            CloseCode::TokenInvalid => "token_invalid",
            CloseCode::TokenExpired => "token_expired",
            CloseCode::ProtocolViolation => "protocol_violation",
            CloseCode::MalformedFrame => "malformed_frame",
            CloseCode::FrameTooLarge => "frame_too_large",
            CloseCode::SessionReplaced => "session_replaced",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::Disconnected => "disconnected",
            CloseCode::TooManySessions => "too_many_sessions",
            CloseCode::ReconnectingTooFast => "reconnecting_too_fast",
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02x})", self.as_str(), self.to_code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        for code in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(code.to_code().into()), Some(code));
        }
        let mut wire: Vec<u32> = CloseCode::ALL.iter().map(|c| c.to_code()).collect();
        wire.sort_unstable();
        wire.dedup();
        assert_eq!(wire.len(), CloseCode::ALL.len());
        assert_eq!(CloseCode::from_code(0xff), None);
    }
}
