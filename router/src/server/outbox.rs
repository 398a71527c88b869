//! [`Outbox`]: a session's bounded outbound queue in three priority lanes:
//! control (replies, InboxOpened, Welcome, GoAway) before messages (Deliver
//! and Gap, in inbox order) before ephemeral frames (presence and signals
//! sent on the stream).
//!
//! An ephemeral frame replaces a queued one with the same coalescing key
//! (the latest presence of a user, the latest typing state), and when the
//! queue is full the oldest ephemeral frame is dropped to make room. Only
//! when the queue is full of control frames and messages does a push fail:
//! the caller then closes the session with SLOW_CONSUMER. (Messages are
//! bounded by the delivery window, so that takes a client that keeps
//! sending requests while not reading the replies.) A frame partly written
//! to the stream stays at the front until it is finished, whatever arrives
//! meanwhile.

use std::collections::VecDeque;

use crate::metrics;
use switchboard_core::FrameClass;

use super::directory::QueuedFrame;

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
        FrameClass::Presence { key } | FrameClass::Ephemeral { key } => Some(key),
        _ => None,
    }
}

/// The queue is full of frames that may not be dropped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full;

type Lanes = [VecDeque<QueuedFrame>; 3];

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
            .map_or(0, |lanes| lanes.iter().map(VecDeque::len).sum())
    }

    /// Queues `frame` in its lane, holding at most `limit` frames.
    pub(crate) fn push(&mut self, frame: QueuedFrame, limit: usize) -> Result<(), Full> {
        let lane = lane_of(frame.class);
        let full = self.len() >= limit;
        let writing = self.writing;
        let lanes = self.lanes.get_or_insert_with(Box::default);
        if let Some(key) = key_of(frame.class) {
            let skip = usize::from(writing == Some(EPHEMERAL));
            if let Some(queued) = lanes[EPHEMERAL]
                .iter_mut()
                .skip(skip)
                .find(|q| key_of(q.class) == Some(key))
            {
                *queued = frame;
                metrics::outbox_ephemeral("coalesced");
                return Ok(());
            }
        }
        if full && !drop_oldest_ephemeral(lanes, writing) {
            if lane == EPHEMERAL {
                metrics::outbox_ephemeral("dropped");
                return Ok(());
            }
            return Err(Full);
        }
        lanes[lane].push_back(frame);
        Ok(())
    }

    /// Puts a control frame first (Welcome), ahead of everything not yet
    /// started.
    pub(crate) fn push_first(&mut self, frame: QueuedFrame) {
        let writing = self.writing;
        let control = &mut self.lanes.get_or_insert_with(Box::default)[CONTROL];
        if writing == Some(CONTROL) {
            control.insert(1, frame);
        } else {
            control.push_front(frame);
        }
    }

    /// The frame to write next.
    pub(crate) fn front_mut(&mut self) -> Option<&mut QueuedFrame> {
        let lane = self.current()?;
        self.lanes.as_mut()?[lane].front_mut()
    }

    /// The front frame was partly written: it stays first until finished.
    pub(crate) fn started_front(&mut self) {
        self.writing = self.current();
    }

    /// Removes the front frame (written in full).
    pub(crate) fn pop_front(&mut self) -> Option<QueuedFrame> {
        let lane = self.current()?;
        self.writing = None;
        let lanes = self.lanes.as_mut()?;
        let frame = lanes[lane].pop_front();
        if lanes.iter().all(VecDeque::is_empty) {
            self.lanes = None;
        }
        frame
    }

    /// Empties the queue; returns how many messages were in it.
    pub(crate) fn clear(&mut self) -> usize {
        self.writing = None;
        self.lanes.take().map_or(0, |lanes| {
            lanes[MESSAGES]
                .iter()
                .filter(|q| matches!(q.class, FrameClass::Message { .. }))
                .count()
        })
    }

    fn current(&self) -> Option<usize> {
        let lanes = self.lanes.as_ref()?;
        self.writing
            .or_else(|| (0..lanes.len()).find(|&l| !lanes[l].is_empty()))
    }
}

/// Drops the oldest ephemeral frame not being written; false if none.
fn drop_oldest_ephemeral(lanes: &mut Lanes, writing: Option<usize>) -> bool {
    let at = usize::from(writing == Some(EPHEMERAL));
    let dropped = lanes[EPHEMERAL].remove(at).is_some();
    if dropped {
        metrics::outbox_ephemeral("dropped");
    }
    dropped
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
        frame(FrameClass::Presence { key }, tag)
    }

    fn drain(outbox: &mut Outbox) -> Vec<Bytes> {
        std::iter::from_fn(|| outbox.pop_front().map(|q| q.frame.head)).collect()
    }

    #[test]
    fn lanes_go_control_then_messages_then_ephemeral() {
        let mut outbox = Outbox::default();
        outbox.push(presence(1, "p"), 10).unwrap();
        outbox.push(message("m1"), 10).unwrap();
        outbox.push(frame(FrameClass::Gap, "gap"), 10).unwrap();
        outbox.push(frame(FrameClass::Reply, "r"), 10).unwrap();
        outbox.push(message("m2"), 10).unwrap();
        outbox.push_first(frame(FrameClass::Control, "welcome"));
        assert_eq!(drain(&mut outbox), ["welcome", "r", "m1", "gap", "m2", "p"]);
    }

    #[test]
    fn the_latest_presence_of_a_user_replaces_the_queued_one() {
        let mut outbox = Outbox::default();
        outbox.push(presence(1, "alice away"), 10).unwrap();
        outbox.push(presence(2, "bob online"), 10).unwrap();
        outbox.push(presence(1, "alice busy"), 10).unwrap();
        assert_eq!(drain(&mut outbox), ["alice busy", "bob online"]);
    }

    #[test]
    fn a_full_queue_drops_ephemeral_frames_first_then_refuses() {
        let mut outbox = Outbox::default();
        outbox.push(presence(1, "p1"), 2).unwrap();
        outbox.push(message("m1"), 2).unwrap();
        outbox.push(message("m2"), 2).unwrap(); // p1 makes room
        outbox.push(presence(2, "p2"), 2).unwrap(); // dropped: no room
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox.push(message("m3"), 2), Err(Full));
        assert_eq!(drain(&mut outbox), ["m1", "m2"]);
    }

    #[test]
    fn a_partly_written_frame_stays_first() {
        let mut outbox = Outbox::default();
        outbox.push(message("m1"), 10).unwrap();
        outbox.started_front();
        outbox.push(frame(FrameClass::Reply, "r"), 10).unwrap();
        outbox.push_first(frame(FrameClass::Control, "welcome"));
        assert_eq!(drain(&mut outbox), ["m1", "welcome", "r"]);
        outbox.push(presence(1, "p1"), 10).unwrap();
        outbox.started_front();
        outbox.push(presence(1, "p1 newer"), 10).unwrap();
        assert_eq!(
            drain(&mut outbox),
            ["p1", "p1 newer"],
            "not replaced mid-write"
        );
        assert_eq!(outbox.clear(), 0);
        assert_eq!(outbox.len(), 0);
    }
}
