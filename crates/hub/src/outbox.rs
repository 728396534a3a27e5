//! One connection's bounded outbound queue.
//!
//! Publishers push encoded frames with [`Outbox::push`], which never waits: when the queue is full
//! the [`OverflowPolicy`] decides (close the connection as a slow consumer, or drop the oldest
//! frames). The connection's writer takes *everything* queued with [`Outbox::take_all`] and writes it
//! in one vectored write, so frames coalesce by themselves under load and a lone frame goes out at
//! once. An idle outbox owns no heap memory.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use std::task::{Context, Poll};

use crate::config::OverflowPolicy;

/// A frame ready for the socket, shared by every subscriber of one publish.
#[derive(Debug, Clone)]
pub struct OutFrame {
    /// The complete WebSocket frame (header and payload).
    pub bytes: Bytes,
    /// When the hub accepted the publish; the writer measures publish-to-write latency from it.
    pub published_at: Instant,
}

/// One publication ready for every kind of connection: the plain frame, and the compressed twin
/// for connections that negotiated permessage-deflate (when compressing it paid off). Both are
/// built once per publish; each connection gets a clone of the one that suits it.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The uncompressed frame, for everybody.
    pub plain: OutFrame,
    /// The same message compressed (RSV1 set), for connections with permessage-deflate.
    pub deflated: Option<OutFrame>,
}

impl Prepared {
    /// A frame that goes out uncompressed to every connection.
    pub fn plain(frame: OutFrame) -> Prepared {
        Prepared { plain: frame, deflated: None }
    }

    /// The frame for a connection that did (`deflate`) or did not negotiate permessage-deflate.
    pub fn for_conn(&self, deflate: bool) -> &OutFrame {
        match &self.deflated {
            Some(d) if deflate => d,
            _ => &self.plain,
        }
    }
}

/// What [`Outbox::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The frame is queued.
    Queued,
    /// The frame is queued after dropping this many older frames (drop-oldest policy).
    DroppedOldest(usize),
    /// The queue overflowed and the connection is now closing as a slow consumer.
    Overflowed,
    /// The connection is already closing; the frame was discarded.
    Closed,
}

/// Why an outbox stopped accepting frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The queue overflowed under [`OverflowPolicy::Close`].
    SlowConsumer,
    /// The session ended for another reason.
    Finished,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<OutFrame>,
    bytes: usize,
    closed: Option<Closed>,
}

/// A bounded queue of frames for one connection.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<Queue>,
    /// The writer's waker. An atomic slot rather than a waiter list: one writer per outbox, and
    /// registering costs no lock on the fan-out hot path.
    waker: AtomicWaker,
    max_messages: usize,
    max_bytes: usize,
    policy: OverflowPolicy,
}

impl Outbox {
    /// An empty outbox with the given bounds.
    pub fn new(max_messages: usize, max_bytes: usize, policy: OverflowPolicy) -> Outbox {
        Outbox { queue: Mutex::new(Queue::default()), waker: AtomicWaker::new(), max_messages, max_bytes, policy }
    }

    /// Queues `frame` without waiting. Wakes the writer only when the queue was empty: a writer
    /// that is already awake will find the frame when it takes the queue.
    pub fn push(&self, frame: OutFrame) -> Pushed {
        let mut q = self.lock();
        if q.closed.is_some() {
            return Pushed::Closed;
        }
        let len = frame.bytes.len();
        let mut dropped = 0;
        while !q.frames.is_empty() && (q.frames.len() >= self.max_messages || q.bytes + len > self.max_bytes) {
            match self.policy {
                OverflowPolicy::Close => {
                    q.closed = Some(Closed::SlowConsumer);
                    q.frames = VecDeque::new();
                    q.bytes = 0;
                    drop(q);
                    self.waker.wake();
                    return Pushed::Overflowed;
                }
                OverflowPolicy::DropOldest => {
                    if let Some(old) = q.frames.pop_front() {
                        q.bytes -= old.bytes.len();
                        dropped += 1;
                    }
                }
            }
        }
        q.bytes += len;
        q.frames.push_back(frame);
        let wake = q.frames.len() == 1;
        drop(q);
        if wake {
            self.waker.wake();
        }
        if dropped > 0 { Pushed::DroppedOldest(dropped) } else { Pushed::Queued }
    }

    /// Queues a recovery replay frame regardless of the bounds: a replay is already bounded by
    /// `max_recovery`, and overflowing on it would close the client before it ever caught up (it
    /// would then reconnect with the same position, and fail the same way, forever).
    pub fn push_replay(&self, frame: OutFrame) -> Pushed {
        let mut q = self.lock();
        if q.closed.is_some() {
            return Pushed::Closed;
        }
        q.bytes += frame.bytes.len();
        q.frames.push_back(frame);
        let wake = q.frames.len() == 1;
        drop(q);
        if wake {
            self.waker.wake();
        }
        Pushed::Queued
    }

    /// Moves every queued frame into `into` (which the caller keeps between calls so its capacity
    /// is reused), or returns why the outbox is closed.
    pub fn take_all(&self, into: &mut VecDeque<OutFrame>) -> Result<(), Closed> {
        let mut q = self.lock();
        if let Some(reason) = q.closed {
            return Err(reason);
        }
        if into.is_empty() {
            std::mem::swap(&mut q.frames, into);
        } else {
            into.extend(q.frames.drain(..));
        }
        q.bytes = 0;
        Ok(())
    }

    /// Ready when a frame is queued or the outbox is closed; otherwise the task is woken when the
    /// next frame arrives. Only one task (the connection's writer) may poll this.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Register before looking, so a push between the look and the return still wakes us.
        self.waker.register(cx.waker());
        let q = self.lock();
        if !q.frames.is_empty() || q.closed.is_some() { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Waits until a frame is queued or the outbox is closed.
    pub async fn ready(&self) {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }

    /// Stops accepting frames; the writer sees `reason` on its next [`Outbox::take_all`].
    pub fn close(&self, reason: Closed) {
        let mut q = self.lock();
        if q.closed.is_none() {
            q.closed = Some(reason);
        }
        q.frames = VecDeque::new();
        q.bytes = 0;
        drop(q);
        self.waker.wake();
    }

    /// Why the outbox stopped accepting frames, if it has.
    pub fn closed(&self) -> Option<Closed> {
        self.lock().closed
    }

    /// The most frames this outbox queues.
    pub fn max_messages(&self) -> usize {
        self.max_messages
    }

    /// How many frames wait to be written.
    pub fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// Whether no frame waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue inconsistent (every update is a
        // single push/pop/swap), so a poisoned lock is still safe to use.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> OutFrame {
        OutFrame { bytes: Bytes::from(vec![0u8; n]), published_at: Instant::now() }
    }

    #[test]
    fn close_policy_closes_on_overflow_by_count_and_bytes() {
        let o = Outbox::new(2, 1000, OverflowPolicy::Close);
        assert_eq!(o.push(frame(1)), Pushed::Queued);
        assert_eq!(o.push(frame(1)), Pushed::Queued);
        assert_eq!(o.push(frame(1)), Pushed::Overflowed);
        assert_eq!(o.push(frame(1)), Pushed::Closed);
        assert_eq!(o.take_all(&mut VecDeque::new()), Err(Closed::SlowConsumer));
        let o = Outbox::new(100, 10, OverflowPolicy::Close);
        assert_eq!(o.push(frame(6)), Pushed::Queued);
        assert_eq!(o.push(frame(6)), Pushed::Overflowed);
    }

    #[test]
    fn drop_oldest_keeps_newest() {
        let o = Outbox::new(2, 1000, OverflowPolicy::DropOldest);
        for n in 1..=3 {
            o.push(frame(n));
        }
        let mut got = VecDeque::new();
        o.take_all(&mut got).unwrap();
        assert_eq!(got.iter().map(|f| f.bytes.len()).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn a_single_oversized_frame_is_still_delivered() {
        // A frame bigger than the byte bound on an empty queue goes through: refusing it would
        // close every client on one large publish, which the publisher can't see or fix.
        let o = Outbox::new(10, 10, OverflowPolicy::Close);
        assert_eq!(o.push(frame(50)), Pushed::Queued);
    }
}
