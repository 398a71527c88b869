//! [`Outbox`]: a session's bounded outbound queue in three priority lanes:
//! control (replies, InboxOpened, Welcome, GoAway) before messages (Deliver
//! and Gap, in inbox order) before ephemeral frames (presence and signals
//! sent on the stream).
//!
//! The queue is bounded in frames and in bytes ([`QueueLimits`]). An
//! ephemeral frame replaces a queued one with the same coalescing key (the
//! latest presence of a user, the latest typing state), and when the queue
//! is full the oldest ephemeral frames are dropped to make room. Only when
//! the queue is full of control frames and messages does a push fail: the
//! caller then closes the session with SLOW_CONSUMER. (Messages are bounded
//! by the delivery window, so that takes a client that does not read: one
//! that keeps sending requests, or acks what it never read.) A frame partly
//! written to the stream stays at the front until it is finished, whatever
//! arrives meanwhile.

use std::collections::VecDeque;

use crate::metrics;
use switchboard_core::FrameClass;

use super::directory::QueuedFrame;
use switchboard_proto::frame::OutFrame;

const CONTROL: usize = 0;
const MESSAGES: usize = 1;
const EPHEMERAL: usize = 2;

fn lane_of(class: FrameClass) -> usize {
    match class {
        FrameClass::Reply | FrameClass::Control => CONTROL,
        FrameClass::Message { .. } | FrameClass::Gap => MESSAGES,
        FrameClass::Presence { .. } | FrameClass::Ephemeral { .. } => EPHEMERAL,
    }
}

fn key_of(class: FrameClass) -> Option<u64> {
    match class {
        FrameClass::Presence { key, .. } | FrameClass::Ephemeral { key } => Some(key),
        _ => None,
    }
}

/// The queue is full of frames that may not be dropped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full;

/// How much one session's queue may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    /// Frames (`limits.session_queue_frames`).
    pub(crate) frames: usize,
    /// Bytes on the wire (`limits.session_queue_bytes`).
    pub(crate) bytes: usize,
}

impl QueueLimits {
    /// No limit: for control frames that must go (GoAway).
    pub(crate) const NONE: QueueLimits = QueueLimits {
        frames: usize::MAX,
        bytes: usize::MAX,
    };
}

/// The lanes, and the bytes they hold.
#[derive(Debug, Default)]
struct Lanes {
    lanes: [VecDeque<QueuedFrame>; 3],
    bytes: usize,
}

impl Lanes {
    fn is_full(&self, limits: QueueLimits, adding: usize) -> bool {
        self.lanes.iter().map(VecDeque::len).sum::<usize>() >= limits.frames
            || self.bytes + adding > limits.bytes
    }
}

/// A session's outbound queue; see the module docs. The lanes exist only
/// while something is queued: an idle session (most of a million) keeps a
/// null pointer, not three empty queues.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    lanes: Option<Box<Lanes>>,
    /// The lane whose front frame is partly written.
    writing: Option<usize>,
}

impl Outbox {
    /// Frames queued.
    pub(crate) fn len(&self) -> usize {
        self.lanes
            .as_ref()
            .map_or(0, |q| q.lanes.iter().map(VecDeque::len).sum())
    }

    /// Bytes queued (what is left of a partly written frame included).
    pub(crate) fn bytes(&self) -> usize {
        self.lanes.as_ref().map_or(0, |q| q.bytes)
    }

    /// Queues `frame` in its lane, within `limits`.
    pub(crate) fn push(&mut self, frame: QueuedFrame, limits: QueueLimits) -> Result<(), Full> {
        let lane = lane_of(frame.class);
        let size = frame.frame.len();
        let writing = self.writing;
        let queue = self.lanes.get_or_insert_with(Box::default);
        if let Some(key) = key_of(frame.class) {
            let skip = usize::from(writing == Some(EPHEMERAL));
            if let Some(queued) = queue.lanes[EPHEMERAL]
                .iter_mut()
                .skip(skip)
                .find(|q| key_of(q.class) == Some(key))
            {
                queue.bytes = queue.bytes - queued.frame.len() + size;
                *queued = frame;
                metrics::outbox_ephemeral("coalesced");
                return Ok(());
            }
        }
        while queue.is_full(limits, size) {
            if !drop_oldest_ephemeral(queue, writing) {
                if lane == EPHEMERAL {
                    metrics::outbox_ephemeral("dropped");
                    return Ok(());
                }
                return Err(Full);
            }
        }
        queue.bytes += size;
        queue.lanes[lane].push_back(frame);
        Ok(())
    }

    /// Puts a control frame first (Welcome), ahead of everything not yet
    /// started.
    pub(crate) fn push_first(&mut self, frame: QueuedFrame) {
        let writing = self.writing;
        let queue = self.lanes.get_or_insert_with(Box::default);
        queue.bytes += frame.frame.len();
        let control = &mut queue.lanes[CONTROL];
        if writing == Some(CONTROL) {
            control.insert(1, frame);
        } else {
            control.push_front(frame);
        }
    }

    /// The frame to write next.
    pub(crate) fn front(&self) -> Option<&QueuedFrame> {
        let lane = self.current()?;
        self.lanes.as_ref()?.lanes[lane].front()
    }

    /// The front frame was partly written and `rest` is what is left of
    /// it: it stays first until finished.
    pub(crate) fn wrote_part_of_front(&mut self, rest: OutFrame) {
        let Some(lane) = self.current() else { return };
        let Some(queue) = self.lanes.as_mut() else {
            return;
        };
        let front = queue.lanes[lane]
            .front_mut()
            .expect("the current lane has a front");
        queue.bytes -= front.frame.len() - rest.len();
        front.frame = rest;
        self.writing = Some(lane);
    }

    /// Removes the front frame (written in full).
    pub(crate) fn pop_front(&mut self) -> Option<QueuedFrame> {
        let lane = self.current()?;
        self.writing = None;
        let queue = self.lanes.as_mut()?;
        let frame = queue.lanes[lane].pop_front()?;
        queue.bytes -= frame.frame.len();
        if queue.lanes.iter().all(VecDeque::is_empty) {
            self.lanes = None;
        }
        Some(frame)
    }

    /// Empties the queue; returns how many messages were in it.
    pub(crate) fn clear(&mut self) -> usize {
        self.writing = None;
        self.lanes.take().map_or(0, |queue| {
            queue.lanes[MESSAGES]
                .iter()
                .filter(|q| matches!(q.class, FrameClass::Message { .. }))
                .count()
        })
    }

    fn current(&self) -> Option<usize> {
        let lanes = &self.lanes.as_ref()?.lanes;
        self.writing
            .or_else(|| (0..lanes.len()).find(|&l| !lanes[l].is_empty()))
    }
}

/// Drops the oldest ephemeral frame not being written; false if none.
fn drop_oldest_ephemeral(queue: &mut Lanes, writing: Option<usize>) -> bool {
    let at = usize::from(writing == Some(EPHEMERAL));
    let Some(dropped) = queue.lanes[EPHEMERAL].remove(at) else {
        return false;
    };
    queue.bytes -= dropped.frame.len();
    metrics::outbox_ephemeral("dropped");
    true
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;

    fn frame(class: FrameClass, tag: &'static str) -> QueuedFrame {
        QueuedFrame {
            frame: Bytes::from_static(tag.as_bytes()).into(),
            class,
        }
    }

    fn message(tag: &'static str) -> QueuedFrame {
        let accepted_at = Instant::now();
        frame(FrameClass::Message { accepted_at }, tag)
    }

    fn presence(key: u64, tag: &'static str) -> QueuedFrame {
        frame(
            FrameClass::Presence {
                key,
                changed_at: Instant::now(),
            },
            tag,
        )
    }

    /// At most `n` frames, any number of bytes.
    fn frames(n: usize) -> QueueLimits {
        QueueLimits {
            frames: n,
            bytes: usize::MAX,
        }
    }

    fn drain(outbox: &mut Outbox) -> Vec<Bytes> {
        std::iter::from_fn(|| outbox.pop_front().map(|q| q.frame.head)).collect()
    }

    #[test]
    fn lanes_go_control_then_messages_then_ephemeral() {
        let mut outbox = Outbox::default();
        outbox.push(presence(1, "p"), frames(10)).unwrap();
        outbox.push(message("m1"), frames(10)).unwrap();
        outbox
            .push(frame(FrameClass::Gap, "gap"), frames(10))
            .unwrap();
        outbox
            .push(frame(FrameClass::Reply, "r"), frames(10))
            .unwrap();
        outbox.push(message("m2"), frames(10)).unwrap();
        outbox.push_first(frame(FrameClass::Control, "welcome"));
        assert_eq!(drain(&mut outbox), ["welcome", "r", "m1", "gap", "m2", "p"]);
    }

    #[test]
    fn the_latest_presence_of_a_user_replaces_the_queued_one() {
        let mut outbox = Outbox::default();
        outbox.push(presence(1, "alice away"), frames(10)).unwrap();
        outbox.push(presence(2, "bob online"), frames(10)).unwrap();
        outbox.push(presence(1, "alice busy"), frames(10)).unwrap();
        assert_eq!(drain(&mut outbox), ["alice busy", "bob online"]);
    }

    #[test]
    fn a_full_queue_drops_ephemeral_frames_first_then_refuses() {
        let mut outbox = Outbox::default();
        outbox.push(presence(1, "p1"), frames(2)).unwrap();
        outbox.push(message("m1"), frames(2)).unwrap();
        outbox.push(message("m2"), frames(2)).unwrap(); // p1 makes room
        outbox.push(presence(2, "p2"), frames(2)).unwrap(); // dropped: no room
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox.push(message("m3"), frames(2)), Err(Full));
        assert_eq!(drain(&mut outbox), ["m1", "m2"]);
    }

    #[test]
    fn a_partly_written_frame_stays_first() {
        let mut outbox = Outbox::default();
        outbox.push(message("m1"), frames(10)).unwrap();
        outbox.wrote_part_of_front(Bytes::from_static(b"1").into());
        outbox
            .push(frame(FrameClass::Reply, "r"), frames(10))
            .unwrap();
        outbox.push_first(frame(FrameClass::Control, "welcome"));
        assert_eq!(drain(&mut outbox), ["1", "welcome", "r"]);
        outbox.push(presence(1, "p1"), frames(10)).unwrap();
        outbox.wrote_part_of_front(Bytes::from_static(b"p1").into());
        outbox.push(presence(1, "p1 newer"), frames(10)).unwrap();
        assert_eq!(
            drain(&mut outbox),
            ["p1", "p1 newer"],
            "not replaced mid-write"
        );
        assert_eq!(outbox.clear(), 0);
        assert_eq!(outbox.len(), 0);
    }

    /// S-1 of the hardening issue: a client that never read but acked
    /// blindly pinned 60 MiB in its queue. Bytes are bounded as frames are:
    /// ephemeral frames make room first, then a push fails.
    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let limits = QueueLimits {
            frames: 100,
            bytes: 10,
        };
        let mut outbox = Outbox::default();
        outbox.push(presence(1, "pppp"), limits).unwrap();
        outbox.push(message("mmmm"), limits).unwrap();
        assert_eq!(outbox.bytes(), 8);
        outbox.push(message("nnnn"), limits).unwrap(); // the presence makes room
        assert_eq!(outbox.bytes(), 8);
        assert_eq!(outbox.push(message("o"), limits), Ok(()));
        assert_eq!(outbox.push(message("xx"), limits), Err(Full));
        // What is written leaves the count, a part of a frame included.
        outbox.wrote_part_of_front(Bytes::from_static(b"mm").into());
        assert_eq!(outbox.bytes(), 7);
        assert_eq!(drain(&mut outbox), ["mm", "nnnn", "o"]);
        assert_eq!(outbox.bytes(), 0);
    }
}
