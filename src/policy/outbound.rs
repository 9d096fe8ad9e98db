//! What a connection does with the messages it is offered: its queue, its
//! sends, and when it drops. No I/O: the caller passes the socket's
//! non-blocking send in, so every decision here is unit-tested without a
//! socket.
//!
//! # The allowance
//!
//! A client may hold at most `capacity` messages (`--queue`) that the
//! kernel has not taken, plus what its kernel send buffer holds
//! (`--sndbuf`). A message offered while both are full is dropped for that
//! client alone: drop-newest, so the client keeps the oldest.
//!
//! # The socket decides
//!
//! "Full" is never a guess. When a message finds the queue full and
//! nothing is waiting on the socket, the queue is offered to the kernel at
//! once with a non-blocking send. Only if the kernel refuses (it takes
//! nothing, or only part) is the allowance full. So a client that keeps
//! reading loses nothing to a burst: its queue goes to the kernel as fast
//! as it fills.
//!
//! # One short wait, then drop
//!
//! A reader that keeps up can still be behind for a moment (its thread was
//! not scheduled, say). So the first time its allowance is full, the
//! message is held ([`Offer::Hold`]): the deliverer offers it to everyone
//! else first, then waits for this client until it has room, at most the
//! `grace` (`--stall-timeout`, a few milliseconds) for the whole episode.
//! Progress never renews the grace; only catching up does, that is, the
//! kernel taking everything queued.
//!
//! A client that uses its grace up is *slow*: every message for it is
//! dropped until it has caught up (a *slow episode*), and it gets no grace
//! for [`COOLDOWN`], doubling each time it uses a grace up again, up to
//! [`MAX_COOLDOWN`]. A reader that is steadily slower than the flow so
//! costs the others one short wait now and then, ever more rarely, and
//! gets runs of whole messages with gaps between them, never a sprinkling
//! of single lines. Each slow episode is one event an operator can see.

// Public for the benches and the fuzz target (the `internals` feature).
#![cfg_attr(not(feature = "internals"), allow(unreachable_pub))]

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Most messages one send hands to the kernel (well under `IOV_MAX`).
pub(crate) const SEND_IOVECS: usize = 64;
/// Messages smaller than this on average are copied into one buffer and
/// sent as one piece, rather than as an iovec entry each.
pub(crate) const GATHER_BELOW: usize = 512;
/// Most bytes one gathered send carries.
pub(crate) const GATHER_BYTES: usize = 64 * 1024;

thread_local! {
    /// Each thread's buffer for gathered sends: a send completes at once,
    /// so one buffer per thread serves every connection.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How long a client that used its grace up gets none, the first time.
pub(crate) const COOLDOWN: Duration = Duration::from_secs(1);
/// The longest cooldown, for a client that keeps using its grace up.
pub(crate) const MAX_COOLDOWN: Duration = Duration::from_secs(64);

/// What became of an offered message.
#[derive(Debug)]
pub enum Offer {
    /// Queued. `wake`: the writer should look at the queue (it was empty,
    /// or reached a mark where a writer waiting to coalesce should go).
    Queued {
        /// The writer should be woken.
        wake: bool,
    },
    /// Dropped for this client. `started`: this drop began a slow episode,
    /// and the writer should be woken to wait for the socket.
    Dropped {
        /// A slow episode began with this message.
        started: bool,
    },
    /// The allowance is full but the client may only be behind for a
    /// moment: offer the message to everyone else, then wait until this
    /// client has room ([`Outbound::has_room`]) or `until` passes, and
    /// offer it again.
    Hold {
        /// The end of the client's grace.
        until: Instant,
    },
    /// The socket failed while the queue was being offered to it.
    Failed(io::Error),
}

/// The outcome of offering the queue to the kernel.
#[derive(Debug)]
pub enum Flushed {
    /// The kernel took everything queued. `caught_up`: the slow episode
    /// this ends, if one was running.
    Drained {
        /// The episode that ended, if any.
        caught_up: Option<Episode>,
    },
    /// The kernel refused the rest: wait until the socket is writable, then
    /// call [`Outbound::unblock`].
    Blocked,
    /// The socket failed.
    Failed(io::Error),
}

/// Messages and bytes the kernel took in one call, and in how many sends.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Messages whose last byte went to the kernel.
    pub messages: usize,
    /// Bytes that went to the kernel.
    pub bytes: usize,
    /// Send calls that took something.
    pub sends: usize,
}

/// A slow episode: since when the client has been dropping, and how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Episode {
    /// When the first message was dropped.
    pub since: Instant,
    /// Messages dropped so far.
    pub dropped: u64,
}

/// Where a client stands with its allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// Keeping up.
    Keeping,
    /// Its allowance was full: deliverers may wait for it until `until`.
    Behind { until: Instant },
    /// Dropping everything until it has caught up.
    Slow(Episode),
}

/// One connection's outgoing side. See the module documentation.
#[derive(Debug)]
pub struct Outbound {
    /// Messages the kernel has not fully taken, oldest first.
    queue: VecDeque<Bytes>,
    /// Bytes of the front message the kernel already took.
    front_sent: usize,
    /// Bytes in `queue` the kernel has not taken.
    bytes: usize,
    capacity: usize,
    /// The kernel refused the last send and the engine waits for the
    /// socket: no send until [`unblock`](Self::unblock).
    blocked: bool,
    pace: Pace,
    /// How long a deliverer may wait for this client per episode.
    grace: Duration,
    /// Graces used up in a row, for the cooldown.
    strikes: u32,
    /// No grace before this.
    no_grace_until: Option<Instant>,
}

impl Outbound {
    /// An empty allowance of `capacity` messages (at least one), with
    /// `grace` to catch up when it is full. Storage grows on demand, so an
    /// idle connection costs almost nothing.
    pub fn new(capacity: usize, grace: Duration) -> Self {
        Self {
            queue: VecDeque::new(),
            front_sent: 0,
            bytes: 0,
            capacity: capacity.max(1),
            blocked: false,
            pace: Pace::Keeping,
            grace,
            strikes: 0,
            no_grace_until: None,
        }
    }

    /// Offers `msg`. A full queue is first offered to the kernel through
    /// `send` (a non-blocking vectored send), unless the engine is already
    /// waiting on the socket. `now` is read only when the allowance is full.
    pub fn offer(
        &mut self,
        msg: &Bytes,
        send: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
        now: impl FnOnce() -> Instant,
        sent: &mut Sent,
    ) -> Offer {
        if let Pace::Slow(episode) = &mut self.pace {
            episode.dropped += 1;
            return Offer::Dropped { started: false };
        }
        if self.queue.len() >= self.capacity
            && !self.blocked
            && let Flushed::Failed(e) = self.send_queued(send, sent)
        {
            return Offer::Failed(e);
        }
        if self.queue.len() < self.capacity {
            self.queue.push_back(msg.clone());
            self.bytes += msg.len();
            return Offer::Queued {
                wake: !self.blocked && self.push_wakes_writer(msg.len()),
            };
        }
        // Full, and the kernel refused what is queued.
        let now = now();
        match self.pace {
            Pace::Behind { until } if now < until => return Offer::Hold { until },
            Pace::Behind { .. } => {
                // It used its grace up.
                self.strikes += 1;
                let cooldown = COOLDOWN
                    .saturating_mul(1 << (self.strikes - 1).min(16))
                    .min(MAX_COOLDOWN);
                self.no_grace_until = Some(now + cooldown);
            }
            _ if !self.grace.is_zero() && self.no_grace_until.is_none_or(|t| now >= t) => {
                let until = now + self.grace;
                self.pace = Pace::Behind { until };
                return Offer::Hold { until };
            }
            _ => {}
        }
        self.pace = Pace::Slow(Episode {
            since: now,
            dropped: 1,
        });
        Offer::Dropped { started: true }
    }

    /// Queues bytes the server sends of its own (a handshake answer, a
    /// pong, a close): beyond the allowance, never dropped.
    pub fn push_own(&mut self, bytes: Bytes) {
        self.bytes += bytes.len();
        self.queue.push_back(bytes);
    }

    /// True when a held message can be offered again: there is room in the
    /// queue.
    pub fn has_room(&self) -> bool {
        self.queue.len() < self.capacity
    }

    /// The deliverers cannot wait for this client any longer (see
    /// [`crate::policy::patience`]): its grace ends now, so the next offer
    /// drops as if it had run out.
    pub fn end_grace(&mut self, now: Instant) {
        if let Pace::Behind { until } = &mut self.pace {
            *until = now.min(*until);
        }
    }

    /// True if it used a grace up and has not caught up within one since:
    /// the host's patience limits its next grace (see
    /// [`crate::policy::patience`]).
    pub fn ran_out_before(&self) -> bool {
        self.strikes > 0
    }

    /// True while a deliverer may be waiting for room.
    pub fn is_behind(&self) -> bool {
        matches!(self.pace, Pace::Behind { .. })
    }

    /// Offers everything queued to the kernel through `send`, until the
    /// queue is empty or the kernel refuses.
    pub fn flush(
        &mut self,
        send: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
        sent: &mut Sent,
    ) -> Flushed {
        if self.blocked {
            return Flushed::Blocked;
        }
        self.send_queued(send, sent)
    }

    fn send_queued(
        &mut self,
        mut send: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
        sent: &mut Sent,
    ) -> Flushed {
        while !self.queue.is_empty() {
            let (result, offered) = if self.bytes / self.queue.len() < GATHER_BELOW {
                self.send_gathered(&mut send)
            } else {
                self.send_vectored(&mut send)
            };
            match result {
                Ok(n) => {
                    self.advance(n, sent);
                    if n < offered {
                        // The kernel took only part: its buffer is full.
                        self.blocked = true;
                        return Flushed::Blocked;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    return Flushed::Blocked;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Flushed::Failed(e),
            }
        }
        Flushed::Drained {
            caught_up: self.caught_up(),
        }
    }

    /// One send of the queue's front messages, each its own iovec entry.
    fn send_vectored(
        &self,
        send: &mut impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> (io::Result<usize>, usize) {
        let mut slices = [IoSlice::new(&[]); SEND_IOVECS];
        let mut count = 0;
        let mut offered = 0;
        for (i, part) in self.parts().take(SEND_IOVECS).enumerate() {
            slices[i] = IoSlice::new(part);
            offered += part.len();
            count += 1;
        }
        (send(&slices[..count]), offered)
    }

    /// One send of the queue's front messages copied into this thread's
    /// scratch buffer: for small messages a copy costs less than the
    /// kernel's work per iovec entry (docs/decisions/0022).
    fn send_gathered(
        &self,
        send: &mut impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> (io::Result<usize>, usize) {
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            for part in self.parts() {
                if !scratch.is_empty() && scratch.len() + part.len() > GATHER_BYTES {
                    break;
                }
                scratch.extend_from_slice(part);
            }
            (send(&[IoSlice::new(scratch)]), scratch.len())
        })
    }

    /// What is left to send of each queued message, oldest first.
    fn parts(&self) -> impl Iterator<Item = &[u8]> {
        self.queue.iter().enumerate().map(|(i, msg)| {
            if i == 0 {
                &msg[self.front_sent..]
            } else {
                &msg[..]
            }
        })
    }

    /// Everything queued has gone to the kernel: the client keeps up again.
    fn caught_up(&mut self) -> Option<Episode> {
        match std::mem::replace(&mut self.pace, Pace::Keeping) {
            Pace::Keeping => None,
            Pace::Behind { .. } => {
                // It caught up within its grace: forgiven.
                self.strikes = 0;
                None
            }
            Pace::Slow(episode) => Some(episode),
        }
    }

    /// The kernel took `n` more bytes from the front of the queue.
    fn advance(&mut self, mut n: usize, sent: &mut Sent) {
        if n > 0 {
            sent.sends += 1;
        }
        sent.bytes += n;
        self.bytes -= n.min(self.bytes);
        while let Some(front) = self.queue.front() {
            let left = front.len() - self.front_sent;
            if n < left {
                self.front_sent += n;
                return;
            }
            n -= left;
            self.front_sent = 0;
            self.queue.pop_front();
            sent.messages += 1;
        }
    }

    /// The unsent rest of the front message, for an engine that hands it to
    /// the kernel asynchronously while [`is_blocked`](Self::is_blocked).
    pub fn front(&self) -> Option<Bytes> {
        self.queue.front().map(|m| m.slice(self.front_sent..))
    }

    /// The engine's asynchronous send of [`front`](Self::front) took `n`
    /// bytes.
    pub fn sent_async(&mut self, n: usize, sent: &mut Sent) {
        self.advance(n, sent);
    }

    /// The socket is writable again: sends may go.
    pub fn unblock(&mut self) {
        self.blocked = false;
    }

    /// True while the kernel refused the last send and nothing more may be
    /// sent until [`unblock`](Self::unblock).
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// The running slow episode, if the client is dropping now.
    pub fn episode(&self) -> Option<&Episode> {
        match &self.pace {
            Pace::Slow(episode) => Some(episode),
            _ => None,
        }
    }

    /// Drops everything queued (the connection is going away) and returns
    /// the episode that was running, if any.
    pub fn clear(&mut self) -> Option<Episode> {
        self.queue.clear();
        self.front_sent = 0;
        self.bytes = 0;
        match std::mem::replace(&mut self.pace, Pace::Keeping) {
            Pace::Slow(episode) => Some(episode),
            _ => None,
        }
    }

    fn push_wakes_writer(&self, added: usize) -> bool {
        crate::policy::coalesce::wakes_writer(self.queue.len(), self.bytes, added, self.capacity)
    }

    /// Messages the kernel has not fully taken.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when the kernel has taken everything.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes the kernel has not taken.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Most messages the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests;
