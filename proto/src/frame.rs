//! Length-prefixed framing: each frame is a 4-byte big-endian length `n`
//! followed by `n` bytes of one protobuf message.
//!
//! [`FrameDecoder`] tells "need more bytes" (`Ok(None)`) from "invalid"
//! (`Err`), and checks the length against its cap before buffering the body.
//! [`encode`] writes one frame into a fresh [`Bytes`], so a frame fanned out to
//! many sessions is encoded once and shared. [`encode_deliver`] goes further
//! for messages: each recipient's `Deliver` differs only in its sequence
//! number, so it is an [`OutFrame`] of a few head bytes per recipient followed
//! by the `Message` bytes every recipient shares.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

/// Size of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Why a byte stream could not be decoded into frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix announces a frame larger than the decoder's cap.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced frame length.
        len: usize,
        /// The decoder's cap.
        max: usize,
    },
    /// The frame body is not a valid protobuf message of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Encodes `message` as one length-prefixed frame.
pub fn encode<M: Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(LENGTH_PREFIX_BYTES + len);
    // A message larger than u32::MAX cannot be built from our capped inputs.
    buf.put_u32(u32::try_from(len).expect("frame larger than 4 GiB"));
    message
        .encode(&mut buf)
        .expect("BytesMut grows to fit the message");
    buf.freeze()
}

/// A frame to write as two parts back to back: `head`, then `shared`.
/// `shared` is empty for ordinary frames; for a `Deliver` it is the encoded
/// `Message` that every recipient's frame shares without copying.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutFrame {
    /// The length prefix and whatever is specific to this frame.
    pub head: Bytes,
    /// Bytes shared with other frames (may be empty).
    pub shared: Bytes,
}

impl OutFrame {
    /// Total bytes on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.shared.len()
    }

    /// True when nothing is left to write.
    pub fn is_empty(&self) -> bool {
        self.head.is_empty() && self.shared.is_empty()
    }
}

impl From<Bytes> for OutFrame {
    fn from(head: Bytes) -> Self {
        Self {
            head,
            shared: Bytes::new(),
        }
    }
}

/// Field 3 (`ServerFrame.deliver`), length-delimited.
const SERVER_FRAME_DELIVER_TAG: u8 = (3 << 3) | 2;
/// Field 1 (`Deliver.seq`), varint.
const DELIVER_SEQ_TAG: u8 = 1 << 3;
/// Field 2 (`Deliver.message`), length-delimited.
const DELIVER_MESSAGE_TAG: u8 = (2 << 3) | 2;

/// The `ServerFrame{deliver: Deliver{seq, message}}` frame whose `message` is
/// the already encoded `Message` in `message`: only the head (at most 31
/// bytes) is written here, the message bytes are shared. Decodes exactly like
/// [`encode`] of the same frame. `seq` must be non-zero (proto3 omits zero).
pub fn encode_deliver(seq: u64, message: &Bytes) -> OutFrame {
    use prost::encoding::{encode_varint, encoded_len_varint};
    debug_assert!(seq != 0, "inbox sequence numbers start at 1");
    let message_len = message.len() as u64;
    let deliver_len =
        1 + encoded_len_varint(seq) + 1 + encoded_len_varint(message_len) + message.len();
    let frame_len = 1 + encoded_len_varint(deliver_len as u64) + deliver_len;
    let mut head = BytesMut::with_capacity(LENGTH_PREFIX_BYTES + frame_len - message.len());
    head.put_u32(u32::try_from(frame_len).expect("frame larger than 4 GiB"));
    head.put_u8(SERVER_FRAME_DELIVER_TAG);
    encode_varint(deliver_len as u64, &mut head);
    head.put_u8(DELIVER_SEQ_TAG);
    encode_varint(seq, &mut head);
    head.put_u8(DELIVER_MESSAGE_TAG);
    encode_varint(message_len, &mut head);
    OutFrame {
        head: head.freeze(),
        shared: message.clone(),
    }
}

/// Incremental decoder of frames of type `M` from a byte stream.
///
/// Feed bytes with [`FrameDecoder::extend`], then call
/// [`FrameDecoder::decode`] until it returns `Ok(None)`.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_bytes: usize,
}

impl FrameDecoder {
    /// A decoder that rejects frames longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_frame_bytes,
        }
    }

    /// Changes the cap, e.g. from a small pre-authentication cap to the
    /// session's cap once the peer is authenticated.
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.max_frame_bytes = max_frame_bytes;
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether a complete frame (or an error) is ready to be decoded.
    pub fn has_frame(&self) -> bool {
        match self.check() {
            Ok(Some(len)) => self.buf.len() >= LENGTH_PREFIX_BYTES + len,
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The length of the next frame's body, once its prefix has arrived and
    /// passed the cap. Lets a caller reject an oversize frame early.
    pub fn check(&self) -> Result<Option<usize>, DecodeError> {
        if self.buf.len() < LENGTH_PREFIX_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.max_frame_bytes {
            return Err(DecodeError::TooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        Ok(Some(len))
    }

    /// Decodes the next complete frame, `Ok(None)` if more bytes are needed.
    /// After an error the stream is unusable and must be closed.
    pub fn decode<M: Message + Default>(&mut self) -> Result<Option<M>, DecodeError> {
        let Some(len) = self.check()? else {
            return Ok(None);
        };
        if self.buf.len() < LENGTH_PREFIX_BYTES + len {
            // No reservation for the announced length: memory grows only as
            // bytes actually arrive.
            return Ok(None);
        }
        self.buf.advance(LENGTH_PREFIX_BYTES);
        let body = self.buf.split_to(len).freeze();
        if self.buf.is_empty() {
            // Drained: let go of the buffer rather than keep what is left of
            // its allocation for a session that may be idle for hours (the
            // decoded frame still shares the part it needs).
            self.buf = BytesMut::new();
        }
        M::decode(body)
            .map(Some)
            .map_err(|e| DecodeError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{client_frame::Body, ClientFrame, Send};
    use proptest::prelude::*;

    fn send_frame(to: &str, payload: Vec<u8>) -> ClientFrame {
        ClientFrame {
            r#ref: 7,
            body: Some(Body::Send(Send {
                to: to.into(),
                payload: payload.into(),
                ..Send::default()
            })),
        }
    }

    #[test]
    fn split_deliver_is_byte_identical_to_a_whole_encoding() {
        for payload_len in [0usize, 1, 100, 127, 128, 300, 20_000] {
            for seq in [1u64, 127, 128, 1 << 40] {
                let message = crate::v1::Message {
                    message_id: 42,
                    from_user: "alice".into(),
                    from_device: "phone".into(),
                    to_user: "bob".into(),
                    payload: vec![7u8; payload_len].into(),
                    sent_at_ms: 1_700_000_000_000,
                    client_msg_id: "c-1".into(),
                    ..crate::v1::Message::default()
                };
                let whole = encode(&crate::v1::ServerFrame {
                    body: Some(crate::v1::server_frame::Body::Deliver(crate::v1::Deliver {
                        seq,
                        message: Some(message.clone()),
                    })),
                });
                let split = encode_deliver(seq, &Bytes::from(message.encode_to_vec()));
                let mut joined = split.head.to_vec();
                joined.extend_from_slice(&split.shared);
                assert_eq!(joined, whole.to_vec(), "payload {payload_len}, seq {seq}");
                assert_eq!(split.len(), whole.len());
            }
        }
    }

    #[test]
    fn round_trips_one_frame() {
        let frame = send_frame("bob", b"hi".to_vec());
        let mut decoder = FrameDecoder::new(1024);
        decoder.extend(&encode(&frame));
        assert_eq!(decoder.decode::<ClientFrame>(), Ok(Some(frame)));
        assert_eq!(decoder.decode::<ClientFrame>(), Ok(None));
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn a_drained_decoder_holds_no_buffer_and_a_partial_frame_stays() {
        let first = encode(&send_frame("bob", vec![1; 100]));
        let second = encode(&send_frame("carol", vec![2; 100]));
        let mut decoder = FrameDecoder::new(1024);
        decoder.extend(&first);
        decoder.extend(&second[..10]);
        assert!(decoder.decode::<ClientFrame>().unwrap().is_some());
        assert_eq!(decoder.buffered(), 10, "the start of the next frame stays");
        assert!(decoder.buf.capacity() >= 10);
        decoder.extend(&second[10..]);
        assert!(decoder.decode::<ClientFrame>().unwrap().is_some());
        assert_eq!(decoder.buf.capacity(), 0, "an idle session keeps no buffer");
        decoder.extend(&first);
        assert!(decoder.decode::<ClientFrame>().unwrap().is_some());
    }

    #[test]
    fn partial_prefix_and_body_need_more_bytes() {
        let bytes = encode(&send_frame("bob", vec![1; 100]));
        let mut decoder = FrameDecoder::new(1024);
        decoder.extend(&bytes[..2]);
        assert_eq!(decoder.decode::<ClientFrame>(), Ok(None));
        decoder.extend(&bytes[2..50]);
        assert_eq!(decoder.decode::<ClientFrame>(), Ok(None));
        decoder.extend(&bytes[50..]);
        assert!(decoder.decode::<ClientFrame>().unwrap().is_some());
    }

    #[test]
    fn oversize_prefix_is_rejected_before_the_body_arrives() {
        let mut decoder = FrameDecoder::new(16);
        decoder.extend(&1_000_000u32.to_be_bytes());
        assert_eq!(
            decoder.decode::<ClientFrame>(),
            Err(DecodeError::TooLarge {
                len: 1_000_000,
                max: 16
            })
        );
    }

    #[test]
    fn garbage_body_is_malformed() {
        let mut decoder = FrameDecoder::new(16);
        decoder.extend(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decoder.decode::<ClientFrame>(),
            Err(DecodeError::Malformed(_))
        ));
    }

    proptest! {
        /// Any frame sequence, split at any points, decodes to the same frames.
        #[test]
        fn split_streams_decode_identically(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8),
            cuts in proptest::collection::vec(0usize..4000, 0..10),
        ) {
            let frames: Vec<ClientFrame> = payloads.into_iter().map(|p| send_frame("bob", p)).collect();
            let stream: Vec<u8> = frames.iter().flat_map(|f| encode(f).to_vec()).collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.push(stream.len());
            cuts.sort_unstable();
            let mut decoder = FrameDecoder::new(4096);
            let mut decoded = Vec::new();
            let mut start = 0;
            for cut in cuts {
                decoder.extend(&stream[start..cut]);
                start = cut;
                while let Some(frame) = decoder.decode::<ClientFrame>().unwrap() {
                    decoded.push(frame);
                }
            }
            prop_assert_eq!(decoded, frames);
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut decoder = FrameDecoder::new(256);
            decoder.extend(&bytes);
            while let Ok(Some(_)) = decoder.decode::<ClientFrame>() {}
        }
    }
}
