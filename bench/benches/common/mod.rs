//! The bench harness shared by the core benchmarks: shards plus a pump that
//! forwards between them exactly like the shell, counting transmitted frames.
#![allow(dead_code)]

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use criterion::black_box;
use switchboard_core::placement::shard_of;
use switchboard_core::{
    CoreLimits, DeviceId, Now, Output, RateLimits, SessionId, Shard, ShardId, ShardInput, UserId,
};
use switchboard_proto::v1::{client_frame, ClientFrame, CreateRoom, JoinRoom, Send};

/// A Send of `payload` to user `to` or to `room`.
pub(crate) fn send(to: &str, room: &str, payload: &Bytes) -> client_frame::Body {
    client_frame::Body::Send(Send {
        to: to.into(),
        room: room.into(),
        payload: payload.clone(),
        ..Send::default()
    })
}

/// A client frame with `body` from `session`, as its shard's input.
pub(crate) fn frame_input(session: SessionId, body: client_frame::Body) -> ShardInput {
    ShardInput::Frame {
        session,
        frame: ClientFrame {
            r#ref: 1,
            body: Some(body),
        },
        received_at: Instant::now(),
    }
}

/// Shards plus a pump that forwards between them; counts transmitted frames.
pub(crate) struct Cluster {
    pub(crate) shards: Vec<Shard>,
}

impl Cluster {
    /// `count` shards under `limits`, without rate limits: the benches
    /// send far faster than any client may, to measure routing, not
    /// refusals.
    pub(crate) fn new(count: u32, limits: CoreLimits) -> Self {
        let limits = CoreLimits {
            rates: RateLimits::unlimited(),
            ..limits
        };
        Self {
            shards: (0..count)
                .map(|i| Shard::new(ShardId(i), count, limits.clone(), Instant::now()))
                .collect(),
        }
    }

    pub(crate) fn shard(&self, user: &str) -> usize {
        shard_of(&UserId::parse(user).unwrap(), self.shards.len() as u32).0 as usize
    }

    /// Delivers `input` and pumps to quiescence; returns frames transmitted.
    pub(crate) fn deliver(&mut self, shard: usize, input: ShardInput) -> usize {
        // FIFO, like the shell's channels: per-source order matters.
        let mut queue = std::collections::VecDeque::from([(shard, input)]);
        let mut transmitted = 0;
        let now = Now {
            instant: Instant::now(),
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
        };
        while let Some((shard, input)) = queue.pop_front() {
            self.shards[shard].handle(now, input);
            while let Some(output) = self.shards[shard].poll_output() {
                match output {
                    Output::Transmit { frame, .. } => {
                        black_box(frame);
                        transmitted += 1;
                    }
                    Output::Close { .. }
                    | Output::ApiReply { .. }
                    | Output::StoredForOffline { .. } => {}
                    Output::Forward { shard, input } => queue.push_back((shard.0 as usize, input)),
                    Output::Engine { .. } => unreachable!("in-memory inboxes ask no engine"),
                }
            }
        }
        transmitted
    }

    pub(crate) fn open(&mut self, session: u64, user: &str) {
        self.deliver(
            self.shard(user),
            ShardInput::Open {
                session: SessionId(session),
                user: UserId::parse(user).unwrap(),
                device: DeviceId::parse("d").unwrap(),
                initial_status: None,
                resume: None,
            },
        );
    }

    pub(crate) fn close(&mut self, session: u64, user: &str) {
        self.deliver(
            self.shard(user),
            ShardInput::Closed {
                session: SessionId(session),
            },
        );
    }

    pub(crate) fn frame(&mut self, session: u64, user: &str, body: client_frame::Body) -> usize {
        self.deliver(self.shard(user), frame_input(SessionId(session), body))
    }

    /// Opens session `i + 1` of the `i`th of `users` and puts it in the open
    /// room "town", which the first creates and the others join.
    pub(crate) fn town(&mut self, users: &[String]) {
        for (i, user) in users.iter().enumerate() {
            let session = i as u64 + 1;
            self.open(session, user);
            let body = if i == 0 {
                client_frame::Body::CreateRoom(CreateRoom {
                    room: "town".into(),
                    open: true,
                })
            } else {
                client_frame::Body::JoinRoom(JoinRoom {
                    room: "town".into(),
                    user: String::new(),
                })
            };
            self.frame(session, user, body);
        }
    }
}
