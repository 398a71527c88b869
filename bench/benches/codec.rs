//! Frame codec: encoding a Deliver frame whole and as a per-recipient head
//! over shared message bytes, and decoding a stream of client Send frames.
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use prost::Message as _;
use switchboard_proto::frame::{encode, encode_deliver, FrameDecoder};
use switchboard_proto::v1::{
    client_frame, server_frame, ClientFrame, Deliver, Message, Send, ServerFrame,
};

fn message(payload: usize) -> Message {
    Message {
        message_id: 123_456_789,
        from_user: "alice@example.com".into(),
        from_device: "phone-1".into(),
        to_user: "bob@example.com".into(),
        payload: Bytes::from(vec![7u8; payload]),
        sent_at_ms: 1_790_000_000_000,
        ..Message::default()
    }
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    let frame = ServerFrame {
        body: Some(server_frame::Body::Deliver(Deliver {
            seq: 4_242,
            message: Some(message(80)),
        })),
    };
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_deliver_80B", |b| {
        b.iter(|| encode(black_box(&frame)))
    });
    // What each further recipient of an already encoded message costs.
    let shared = Bytes::from(message(80).encode_to_vec());
    group.bench_function("encode_deliver_head_80B", |b| {
        b.iter(|| encode_deliver(black_box(4_242), black_box(&shared)))
    });

    let send = ClientFrame {
        r#ref: 42,
        body: Some(client_frame::Body::Send(Send {
            to: "bob@example.com".into(),
            payload: Bytes::from(vec![7u8; 80]),
            ..Send::default()
        })),
    };
    let one = encode(&send);
    let stream: Vec<u8> = (0..64).flat_map(|_| one.to_vec()).collect();
    group.throughput(Throughput::Elements(64));
    group.bench_function("decode_64_send_frames_80B", |b| {
        b.iter(|| {
            let mut decoder = FrameDecoder::new(1 << 20);
            decoder.extend(black_box(&stream));
            let mut n = 0;
            while let Ok(Some(frame)) = decoder.decode::<ClientFrame>() {
                black_box(frame);
                n += 1;
            }
            assert_eq!(n, 64);
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
