//! The server's transport settings for connections that carry one session
//! stream each ([`session_transport`]).

use quinn_proto::{TransportConfig, VarInt};

/// Datagram bytes queued per connection each way: room for a few signals.
const DATAGRAM_BUFFER_BYTES: usize = 8 * 1024;

/// Transport settings sized for one client-opened session stream per
/// connection whose frames are at most `max_frame_bytes`: no other streams,
/// flow-control windows of a few frames instead of quinn-proto's
/// bulk-transfer defaults, small datagram buffers (signals only) and no MTU
/// discovery. Each saves per-connection state, which a million sessions
/// multiply. The caller sets the idle timeout.
pub fn session_transport(max_frame_bytes: usize) -> TransportConfig {
    let window = u32::try_from((max_frame_bytes * 4).max(64 * 1024)).unwrap_or(u32::MAX);
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(window))
        .receive_window(VarInt::from_u32(window))
        .send_window(u64::from(window) * 2)
        // Limits, not buffers allocated up front.
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER_BYTES))
        .datagram_send_buffer_size(DATAGRAM_BUFFER_BYTES)
        .mtu_discovery_config(None);
    transport
}
