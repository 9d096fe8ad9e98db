//! What a connection does with the messages it is offered: its queue, what
//! it hands the kernel, and when it drops. No I/O: an engine asks what to
//! send ([`Outbound::fill`]), sends it however it sends, and reports what
//! the kernel took ([`Outbound::sent`]), so every decision here is
//! unit-tested without a socket, and every byte the kernel takes goes
//! through one place.
//!
//! # The allowance
//!
//! A client may hold at most `capacity` messages (`--queue`) that the
//! kernel has not taken, plus what its kernel send buffer holds
//! (`--sndbuf`). A message offered while both are full is dropped for that
//! client alone: drop-newest, so the client keeps the oldest.
//!
//! Messages arrive in runs (see [`crate::policy::run`]): a run is one
//! queue entry, counted as the messages it holds, and is cut at a message
//! boundary when only part of it fits.
//!
//! # The socket decides
//!
//! "Full" is never a guess. When a run finds the queue full and the kernel
//! has not refused since the last send, [`Step::SendNow`] asks the engine to
//! hand the queue to the kernel at once and offer the rest again. Only if
//! the kernel refuses (it takes nothing, or only part) is the allowance
//! full. So a client that keeps reading loses nothing to a burst: its queue
//! goes to the kernel as fast as it fills.
//!
//! # One short wait, then drop
//!
//! A reader that keeps up can still be behind for a moment (its thread was
//! not scheduled, say). So the first time its allowance is full, the
//! message is held ([`Step::Hold`]): the deliverer offers it to everyone
//! else first, then waits for this client until it has room, at most the
//! `grace` (`--grace`, a few milliseconds) for the whole episode.
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
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::policy::run::Kind;

mod outcome;
mod send;

pub use outcome::{Change, Episode, Outcome, Sent, Step};
pub use send::SendBuf;

/// Most bytes of the server's own (handshake answers, pongs, closes) a
/// connection may have queued: past it, the client is closed. A client
/// that sends pings and never reads has one pong queued at a time (see
/// [`Outbound::push_pong`]), so only a misbehaving client gets near it.
pub(crate) const OWN_BACKLOG: usize = 64 * 1024;

/// How long a client that used its grace up gets none, the first time.
pub(crate) const COOLDOWN: Duration = Duration::from_secs(1);
/// The longest cooldown, for a client that keeps using its grace up.
pub(crate) const MAX_COOLDOWN: Duration = Duration::from_secs(64);

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

/// One queued piece: a run of messages, or bytes of the server's own.
#[derive(Debug)]
struct Entry {
    bytes: Bytes,
    /// Messages it holds; 0 for the server's own bytes.
    messages: u32,
    kind: Kind,
}

/// Where the kernel stands in the front entry.
#[derive(Debug, Default)]
struct Front {
    /// Bytes it took.
    sent: usize,
    /// Messages whose last byte it took.
    done: u32,
    /// Where message `done` ends, once a send stopped inside the entry.
    mark: usize,
}

/// One connection's outgoing side. See the module documentation.
#[derive(Debug)]
pub struct Outbound {
    /// What the kernel has not fully taken, oldest first.
    queue: VecDeque<Entry>,
    front: Front,
    /// Messages in `queue` the kernel has not fully taken.
    messages: usize,
    /// Bytes in `queue` the kernel has not taken, the server's own included.
    bytes: usize,
    /// Of those, bytes of the server's own.
    own_bytes: usize,
    /// Entries ever taken off the front of `queue`: an entry's place
    /// counted from the first ever queued is this plus its index.
    popped: u64,
    /// The place of the last pong queued, if the kernel has taken none of
    /// it: a newer pong replaces it.
    pong: Option<u64>,
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
            front: Front::default(),
            messages: 0,
            bytes: 0,
            own_bytes: 0,
            popped: 0,
            pong: None,
            capacity: capacity.max(1),
            blocked: false,
            pace: Pace::Keeping,
            grace,
            strikes: 0,
            no_grace_until: None,
        }
    }

    /// Offers the `messages` messages of `run`, told apart by `kind`. `now`
    /// is read only when the allowance is full. Never touches a socket: see
    /// [`Step::SendNow`].
    #[inline]
    pub fn offer(
        &mut self,
        run: &Bytes,
        messages: u32,
        kind: Kind,
        now: impl FnOnce() -> Instant,
    ) -> Outcome {
        if messages == 0 {
            return Outcome::default();
        }
        if let Pace::Slow(episode) = &mut self.pace {
            episode.dropped += u64::from(messages);
            return Outcome {
                dropped: messages,
                ..Outcome::default()
            };
        }
        let room = u32::try_from(self.capacity.saturating_sub(self.messages)).unwrap_or(u32::MAX);
        if room >= messages {
            let was_empty = self.queue.is_empty();
            self.push(run.clone(), messages, kind);
            let wake = !self.blocked && self.push_wakes_writer(was_empty, run.len());
            return Outcome {
                took: messages,
                next: if wake { Step::Wake } else { Step::Idle },
                ..Outcome::default()
            };
        }
        let took = room;
        if took > 0 {
            let cut = kind.offset_of(run, took);
            self.push(run.slice(..cut), took, kind);
        }
        if !self.blocked {
            return Outcome {
                took,
                next: Step::SendNow,
                ..Outcome::default()
            };
        }
        self.refused(took, messages - took, now())
    }

    /// The allowance is full and the kernel refused what is queued: hold
    /// the `dropped` messages of a run whose first `took` were queued, if
    /// the client has grace left, or drop them. Kept out of
    /// [`offer`](Self::offer) so that its common path stays small.
    #[cold]
    fn refused(&mut self, took: u32, dropped: u32, now: Instant) -> Outcome {
        let next = match self.pace {
            Pace::Behind { until } if now < until => Some(Step::Hold { until }),
            Pace::Behind { .. } => {
                // It used its grace up.
                self.strikes += 1;
                let cooldown = COOLDOWN
                    .saturating_mul(1 << (self.strikes - 1).min(16))
                    .min(MAX_COOLDOWN);
                self.no_grace_until = Some(now + cooldown);
                None
            }
            _ if !self.grace.is_zero() && self.no_grace_until.is_none_or(|t| now >= t) => {
                let until = now + self.grace;
                self.pace = Pace::Behind { until };
                Some(Step::Hold { until })
            }
            _ => None,
        };
        if let Some(next) = next {
            return Outcome {
                took,
                next,
                ..Outcome::default()
            };
        }
        self.pace = Pace::Slow(Episode {
            since: now,
            dropped: u64::from(dropped),
        });
        Outcome {
            took,
            dropped,
            episode: Some(Change::Started),
            ..Outcome::default()
        }
    }

    fn push(&mut self, bytes: Bytes, messages: u32, kind: Kind) {
        self.messages += messages as usize;
        self.bytes += bytes.len();
        self.queue.push_back(Entry {
            bytes,
            messages,
            kind,
        });
    }

    /// Queues bytes the server sends of its own (a handshake answer, a
    /// close): beyond the allowance of messages, never dropped. Past
    /// [`OWN_BACKLOG`] of them, [`Step::OwnBacklog`] says to close the
    /// client.
    pub fn push_own(&mut self, bytes: Bytes) -> Outcome {
        let was_empty = self.queue.is_empty();
        self.own_bytes += bytes.len();
        self.push(bytes, 0, Kind::Lines);
        self.own_queued(was_empty)
    }

    fn own_queued(&self, was_empty: bool) -> Outcome {
        Outcome::step(if self.own_bytes > OWN_BACKLOG {
            Step::OwnBacklog
        } else if was_empty && !self.blocked {
            Step::Wake
        } else {
            Step::Idle
        })
    }

    /// Queues a pong, as [`push_own`](Self::push_own) does, unless a pong
    /// the kernel has taken nothing of is still queued: that one is
    /// replaced, so only the latest ping is answered (RFC 6455, 5.5.3). A
    /// client that pings and never reads so costs one pong, not one per
    /// ping.
    pub fn push_pong(&mut self, bytes: Bytes) -> Outcome {
        let queued = self.pong.and_then(|at| {
            let i = usize::try_from(at.checked_sub(self.popped)?).ok()?;
            // The kernel took part of the front entry: it stays as it is.
            (i > 0 || self.front.sent == 0).then_some(i)
        });
        if let Some(entry) = queued.and_then(|i| self.queue.get_mut(i)) {
            self.bytes = self.bytes - entry.bytes.len() + bytes.len();
            self.own_bytes = self.own_bytes - entry.bytes.len() + bytes.len();
            entry.bytes = bytes;
            return self.own_queued(false);
        }
        self.pong = Some(self.popped + self.queue.len() as u64);
        self.push_own(bytes)
    }

    /// True when a held message can be offered again: there is room in the
    /// queue.
    pub fn has_room(&self) -> bool {
        self.messages < self.capacity
    }

    /// The deliverers cannot wait for this client any longer (see
    /// [`crate::policy::send::patience`]): its grace ends now, so the next offer
    /// drops as if it had run out.
    pub fn end_grace(&mut self, now: Instant) {
        if let Pace::Behind { until } = &mut self.pace {
            *until = now.min(*until);
        }
    }

    /// True if it used a grace up and has not caught up within one since:
    /// the host's patience limits its next grace (see
    /// [`crate::policy::send::patience`]).
    pub fn ran_out_before(&self) -> bool {
        self.strikes > 0
    }

    /// True while a deliverer may be waiting for room.
    pub fn is_behind(&self) -> bool {
        matches!(self.pace, Pace::Behind { .. })
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

    /// The running slow episode, if the client is dropping now.
    pub fn episode(&self) -> Option<&Episode> {
        match &self.pace {
            Pace::Slow(episode) => Some(episode),
            _ => None,
        }
    }

    /// Drops everything queued (the connection is going away); the
    /// episode that was running, if any, ends with it.
    pub fn clear(&mut self) -> Outcome {
        self.popped += self.queue.len() as u64;
        self.pong = None;
        self.queue.clear();
        self.front = Front::default();
        self.messages = 0;
        self.bytes = 0;
        self.own_bytes = 0;
        let episode = match std::mem::replace(&mut self.pace, Pace::Keeping) {
            Pace::Slow(episode) => Some(Change::Cleared(episode)),
            _ => None,
        };
        Outcome {
            episode,
            ..Outcome::default()
        }
    }

    fn push_wakes_writer(&self, was_empty: bool, added: usize) -> bool {
        was_empty || wakes_writer(self.messages, self.bytes, added, self.capacity)
    }

    /// Messages the kernel has not fully taken.
    pub fn len(&self) -> usize {
        self.messages
    }

    /// True when the kernel has taken everything, the server's own bytes
    /// included.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes the kernel has not taken, the server's own included.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of the server's own the kernel has not taken.
    #[cfg(test)]
    pub fn own_bytes(&self) -> usize {
        self.own_bytes
    }

    /// Most messages the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// A queue holding at least this many bytes is written at once.
pub(crate) const FLUSH_BYTES: usize = 16 * 1024;

/// Queue length from which a queue is written without waiting: a quarter
/// of its capacity, at least one message.
pub(crate) fn flush_mark(capacity: usize) -> usize {
    (capacity / 4).max(1)
}

/// Whether a message of `added` bytes just queued, making `messages`
/// queued in `bytes`, must wake the queue's writer: the queue was empty, or
/// has just reached a flush mark, so a writer waiting for a flush may go at
/// once.
pub(crate) fn wakes_writer(messages: usize, bytes: usize, added: usize, capacity: usize) -> bool {
    messages == 1
        || messages == flush_mark(capacity)
        || (bytes >= FLUSH_BYTES && bytes - added < FLUSH_BYTES)
}

#[cfg(test)]
mod tests;
