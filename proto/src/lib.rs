//! The Switchboard wire protocol: the protobuf schema, the length-prefixed
//! framing, the QUIC close codes and the identifier rules. No I/O lives here.
//!
//! - [`v1`]: the prost types generated from `schema/switchboard.proto`
//!   ([`v1::ClientFrame`], [`v1::ServerFrame`] and their bodies).
//! - [`frame`]: [`frame::FrameDecoder`] and [`frame::encode`]: a 4-byte
//!   big-endian length prefix, capped before anything is allocated.
//! - [`close`]: [`close::CloseCode`], the QUIC application close codes.
//! - [`ident`]: what makes a valid user or device id.
//! - `token` (feature `token`): the HS256 token's claims, and signing.
//! - [`dev`]: where the embedded dev default keeps its certificate and
//!   secrets, which the server, the CLI and the load generator share.
//!
//! `PROTOCOL.md` beside this crate is the prose specification.
#![forbid(unsafe_code)]

pub mod close;
pub mod dev;
pub mod frame;
pub mod ident;
#[cfg(feature = "token")]
pub mod token;

/// Generated protobuf types of protocol version 1 (package `switchboard.v1`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/switchboard.v1.rs"));
}

/// The ALPN protocol id a client must offer; the server accepts no other.
pub const ALPN: &[u8] = b"switchboard/1";
