//! The per-connection outgoing queue and its drop policy.
//!
//! Each connection holds at most `capacity` messages that have not yet been
//! handed to the kernel. When the queue is full the engine decides, from the
//! state of the socket, whether to wait for room (the socket is draining) or
//! to drop the message for this connection alone (it is not): see
//! [`Admission`]. The queue itself never allocates once it has reached its
//! working size.

use std::collections::VecDeque;

use bytes::Bytes;

/// What happened to a message offered to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Queued for writing.
    Queued,
    /// Dropped for this connection: its queue is full and its socket is not
    /// draining.
    Dropped,
    /// The queue is full but the socket is draining: the publisher waits for
    /// room instead of losing the message.
    Wait,
}

/// A bounded FIFO of messages waiting to be written to one socket.
#[derive(Debug)]
pub struct OutQueue {
    items: VecDeque<Bytes>,
    capacity: usize,
}

impl OutQueue {
    /// An empty queue holding at most `capacity` messages (at least one).
    /// Storage grows on demand, so an idle connection costs almost nothing.
    pub fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Offers `msg`, given whether the socket is known to be stalled.
    ///
    /// `socket_stalled` is only consulted when the queue is full, so callers can
    /// pass a closure that makes a syscall.
    pub fn offer(&mut self, msg: &Bytes, socket_stalled: impl FnOnce() -> bool) -> Admission {
        if self.items.len() < self.capacity {
            self.items.push_back(msg.clone());
            Admission::Queued
        } else if socket_stalled() {
            Admission::Dropped
        } else {
            Admission::Wait
        }
    }

    /// Moves queued messages into `out`, oldest first, until the queue is
    /// empty or `out` holds at least `max_bytes` (at least one message always
    /// moves). Returns how many messages moved.
    pub fn drain_into(&mut self, out: &mut Vec<u8>, max_bytes: usize) -> usize {
        let mut moved = 0;
        while let Some(msg) = self.items.front() {
            if moved > 0 && out.len() + msg.len() > max_bytes {
                break;
            }
            out.extend_from_slice(msg);
            self.items.pop_front();
            moved += 1;
        }
        moved
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// True when another message would not fit.
    pub fn is_full(&self) -> bool {
        self.items.len() >= self.capacity
    }

    /// Drops everything queued (the connection is going away).
    pub fn clear(&mut self) {
        self.items.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn queues_up_to_capacity_then_asks_the_socket() {
        let mut q = OutQueue::new(2);
        assert_eq!(q.offer(&msg("a\n"), || unreachable!()), Admission::Queued);
        assert_eq!(q.offer(&msg("b\n"), || unreachable!()), Admission::Queued);
        assert!(q.is_full());
        assert_eq!(q.offer(&msg("c\n"), || true), Admission::Dropped);
        assert_eq!(q.offer(&msg("c\n"), || false), Admission::Wait);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn drops_the_newest_and_keeps_the_oldest() {
        let mut q = OutQueue::new(2);
        for m in ["1\n", "2\n", "3\n", "4\n"] {
            q.offer(&msg(m), || true);
        }
        let mut out = Vec::new();
        assert_eq!(q.drain_into(&mut out, usize::MAX), 2);
        assert_eq!(out, b"1\n2\n");
        assert!(q.is_empty());
    }

    #[test]
    fn drain_respects_the_byte_budget_but_always_moves_one() {
        let mut q = OutQueue::new(10);
        q.offer(&msg("0123456789\n"), || false);
        q.offer(&msg("ab\n"), || false);
        q.offer(&msg("cd\n"), || false);
        let mut out = Vec::new();
        assert_eq!(
            q.drain_into(&mut out, 4),
            1,
            "one message even if over budget"
        );
        assert_eq!(out, b"0123456789\n");
        out.clear();
        assert_eq!(q.drain_into(&mut out, 6), 2);
        assert_eq!(out, b"ab\ncd\n");
    }

    #[test]
    fn room_frees_after_a_drain() {
        let mut q = OutQueue::new(1);
        q.offer(&msg("a\n"), || false);
        assert_eq!(q.offer(&msg("b\n"), || false), Admission::Wait);
        q.drain_into(&mut Vec::new(), usize::MAX);
        assert_eq!(q.offer(&msg("b\n"), || false), Admission::Queued);
    }

    #[test]
    fn zero_capacity_is_raised_to_one() {
        let mut q = OutQueue::new(0);
        assert_eq!(q.offer(&msg("a\n"), || true), Admission::Queued);
        assert_eq!(q.offer(&msg("b\n"), || true), Admission::Dropped);
    }
}
