//! The per-connection outgoing queue and its drop policy.
//!
//! Each connection holds at most `capacity` messages that have not yet been
//! handed to the kernel. What happens to a message that finds the queue full
//! depends on whether the client is draining:
//!
//! - A queue that has been full for less than the stall timeout belongs to a
//!   client that may just be slower than the burst for a moment. The
//!   publisher waits for room ([`Admission::Wait`]), which stops the server
//!   reading from the publisher: TCP backpressure, and nothing is lost.
//! - A queue that has stayed full for the whole stall timeout, with the
//!   writer unable to hand anything more to the kernel, belongs to a client
//!   that is not draining. It is marked stalled and new messages are dropped
//!   for it alone ([`Admission::Dropped`], drop-newest) without waiting.
//! - A stalled client is forgiven once its writer catches up: a write
//!   completes and the queue is empty.
//!
//! The timers of all stalled clients run side by side, so a wave of clients
//! that stop reading together costs publishers one stall timeout, not one
//! per client.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// What happened to a message offered to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Queued for writing.
    Queued,
    /// Dropped for this connection: its queue is full and it is stalled.
    Dropped,
    /// The queue is full but the client may still drain: wait for room until
    /// the given instant, then offer again.
    Wait(Instant),
}

/// A bounded FIFO of messages waiting to be written to one socket, with the
/// client's stall state.
#[derive(Debug)]
pub struct OutQueue {
    items: VecDeque<Bytes>,
    /// Total length of `items`.
    bytes: usize,
    capacity: usize,
    stall_timeout: Duration,
    /// When the queue last became full with no batch taken since.
    full_since: Option<Instant>,
    /// Not draining: drop without waiting until the writer catches up.
    stalled: bool,
}

impl OutQueue {
    /// An empty queue holding at most `capacity` messages (at least one).
    /// Storage grows on demand, so an idle connection costs almost nothing.
    pub fn new(capacity: usize, stall_timeout: Duration) -> Self {
        Self {
            items: VecDeque::new(),
            bytes: 0,
            capacity: capacity.max(1),
            stall_timeout,
            full_since: None,
            stalled: false,
        }
    }

    /// Offers `msg`; see [`Admission`]. `now` is called only when the queue
    /// is or becomes full, keeping the clock off the common path.
    pub fn offer(&mut self, msg: &Bytes, now: impl FnOnce() -> Instant) -> Admission {
        if self.items.len() < self.capacity {
            self.items.push_back(msg.clone());
            self.bytes += msg.len();
            if self.items.len() == self.capacity && self.full_since.is_none() {
                self.full_since = Some(now());
            }
            return Admission::Queued;
        }
        if self.stalled {
            return Admission::Dropped;
        }
        let now = now();
        let deadline = *self.full_since.get_or_insert(now) + self.stall_timeout;
        if now >= deadline {
            self.stalled = true;
            Admission::Dropped
        } else {
            Admission::Wait(deadline)
        }
    }

    /// True when a waiting publisher should offer again: there is room, or
    /// the client has been marked stalled.
    pub fn ready_for_retry(&self) -> bool {
        self.items.len() < self.capacity || self.stalled
    }

    /// The writer takes queued messages into `out`, oldest first, until the
    /// queue is empty or `out` holds at least `max_bytes` (at least one
    /// message always moves). Returns how many messages moved.
    pub fn take_batch(&mut self, out: &mut Vec<u8>, max_bytes: usize) -> usize {
        let mut moved = 0;
        while let Some(msg) = self.items.front() {
            if moved > 0 && out.len() + msg.len() > max_bytes {
                break;
            }
            out.extend_from_slice(msg);
            self.bytes -= msg.len();
            self.items.pop_front();
            moved += 1;
        }
        if moved > 0 {
            self.full_since = None;
        }
        moved
    }

    /// The writer finished a write. If nothing is queued, the client has
    /// caught up and is no longer stalled.
    pub fn write_done(&mut self) {
        if self.items.is_empty() {
            self.stalled = false;
        }
    }

    /// True while the client is marked stalled.
    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Total bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Most messages the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Drops everything queued (the connection is going away).
    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_millis(50);

    fn msg(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn drain(q: &mut OutQueue) -> Vec<u8> {
        let mut out = Vec::new();
        q.take_batch(&mut out, usize::MAX);
        out
    }

    #[test]
    fn a_full_queue_waits_until_the_stall_timeout_then_drops() {
        let t0 = Instant::now();
        let mut q = OutQueue::new(2, GRACE);
        assert_eq!(q.offer(&msg("a\n"), || t0), Admission::Queued);
        assert_eq!(q.offer(&msg("b\n"), || t0), Admission::Queued);
        let deadline = t0 + GRACE;
        assert_eq!(
            q.offer(&msg("c\n"), || t0 + GRACE / 2),
            Admission::Wait(deadline)
        );
        assert!(!q.ready_for_retry());
        assert_eq!(q.offer(&msg("c\n"), || deadline), Admission::Dropped);
        assert!(q.is_stalled() && q.ready_for_retry());
        // Once stalled, no more waiting.
        assert_eq!(q.offer(&msg("d\n"), || unreachable!()), Admission::Dropped);
        assert_eq!(drain(&mut q), b"a\nb\n", "drop-newest keeps the oldest");
    }

    #[test]
    fn taking_a_batch_restarts_the_clock() {
        let t0 = Instant::now();
        let mut q = OutQueue::new(1, GRACE);
        q.offer(&msg("a\n"), || t0);
        assert_eq!(
            q.offer(&msg("b\n"), || t0 + GRACE / 2),
            Admission::Wait(t0 + GRACE)
        );
        drain(&mut q);
        assert!(q.ready_for_retry());
        let t1 = t0 + GRACE;
        assert_eq!(q.offer(&msg("b\n"), || t1), Admission::Queued);
        assert_eq!(q.offer(&msg("c\n"), || t1), Admission::Wait(t1 + GRACE));
    }

    #[test]
    fn a_stalled_client_is_forgiven_only_when_it_catches_up() {
        let t0 = Instant::now();
        let mut q = OutQueue::new(2, GRACE);
        q.offer(&msg("a\n"), || t0);
        q.offer(&msg("b\n"), || t0);
        assert_eq!(q.offer(&msg("c\n"), || t0 + GRACE), Admission::Dropped);
        let mut out = Vec::new();
        assert_eq!(q.take_batch(&mut out, 2), 1);
        q.write_done();
        assert!(q.is_stalled(), "still behind: one message left");
        q.offer(&msg("d\n"), || t0);
        assert_eq!(q.offer(&msg("e\n"), || unreachable!()), Admission::Dropped);
        drain(&mut q);
        q.write_done();
        assert!(!q.is_stalled());
    }

    #[test]
    fn batches_respect_the_byte_budget_but_always_move_one() {
        let t0 = Instant::now();
        let mut q = OutQueue::new(10, GRACE);
        for m in ["0123456789\n", "ab\n", "cd\n"] {
            q.offer(&msg(m), || t0);
        }
        assert_eq!(q.bytes(), 17);
        let mut out = Vec::new();
        assert_eq!(
            q.take_batch(&mut out, 4),
            1,
            "one message even if over budget"
        );
        assert_eq!(out, b"0123456789\n");
        out.clear();
        assert_eq!(q.take_batch(&mut out, 6), 2);
        assert_eq!(out, b"ab\ncd\n");
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn zero_capacity_is_raised_to_one() {
        let t0 = Instant::now();
        let mut q = OutQueue::new(0, Duration::ZERO);
        assert_eq!(q.offer(&msg("a\n"), || t0), Admission::Queued);
        assert_eq!(q.offer(&msg("b\n"), || t0), Admission::Dropped);
        assert_eq!(q.len(), 1);
    }
}
