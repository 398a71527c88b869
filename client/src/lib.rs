//! The Switchboard Rust client SDK.
//!
//! [`Client::connect`] opens a QUIC connection, sends Hello and waits for
//! Welcome; it returns the [`Client`] (send direct and room messages, manage
//! rooms, set status, watch users, ack, ping) and an [`Events`] stream of what the server pushes ([`Event`]:
//! messages, presence, errors, GoAway, close) that also tracks the device's
//! inbox position for resuming and acks what the application took.
//! [`tls::Trust`] says how the
//! server certificate is checked: a CA file or a pinned SHA-256 fingerprint.
//! The `switchboard-cli` binary (src/cli/) is built on this.
#![forbid(unsafe_code)]

mod client;
pub mod tls;

pub use client::{
    bind_endpoint, quic_config, session_transport_config, Client, ClientError, CloseInfo,
    ConnectOptions, Event, Events,
};
pub use switchboard_proto::close::CloseCode;
pub use switchboard_proto::v1::{
    Deliver, ErrorCode, Gap, GoAway, InboxOpened, Message, Presence, Receipt, ReceiptKind, Resume,
    RoomMembers, RoomResult, Send, SendResult, SignalEvent, SignalKind, Status, Welcome,
};
pub use tls::Trust;
