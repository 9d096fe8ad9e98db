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
//! has not refused since the last send, [`Offer::Full`] asks the engine to
//! hand the queue to the kernel at once and offer the rest again. Only if
//! the kernel refuses (it takes nothing, or only part) is the allowance
//! full. So a client that keeps reading loses nothing to a burst: its queue
//! goes to the kernel as fast as it fills.
//!
//! # One short wait, then drop
//!
//! A reader that keeps up can still be behind for a moment (its thread was
//! not scheduled, say). So the first time its allowance is full, the
//! message is held ([`Offer::Hold`]): the deliverer offers it to everyone
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
use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::policy::run::Kind;

/// Most queue entries one send hands to the kernel (well under `IOV_MAX`).
pub(crate) const SEND_IOVECS: usize = 64;
/// Entries smaller than this on average are copied into one buffer and
/// sent as one piece, rather than as an iovec entry each: for small pieces
/// the copy costs less than the kernel's work per entry
/// (docs/decisions/0022).
pub(crate) const GATHER_BELOW: usize = 512;
/// Most bytes one gathered send carries.
pub(crate) const GATHER_BYTES: usize = 64 * 1024;
/// Most bytes of the server's own (handshake answers, pongs, closes) a
/// connection may have queued: past it, the client is closed. A client
/// that sends pings and never reads has one pong queued at a time (see
/// [`Outbound::push_pong`]), so only a misbehaving client gets near it.
pub(crate) const OWN_BACKLOG: usize = 64 * 1024;

/// How long a client that used its grace up gets none, the first time.
pub(crate) const COOLDOWN: Duration = Duration::from_secs(1);
/// The longest cooldown, for a client that keeps using its grace up.
pub(crate) const MAX_COOLDOWN: Duration = Duration::from_secs(64);

/// What became of an offered run. `took` counts its first messages, which
/// were queued; the rest is what the variant says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// All of it was queued. `wake`: the writer should look at the queue
    /// (it was empty, or reached a mark where a writer waiting to coalesce
    /// should go).
    Queued {
        /// The writer should be woken.
        wake: bool,
    },
    /// The queue is full and the kernel has not been asked since: hand
    /// the queue to the kernel now, then offer the rest again.
    Full {
        /// Messages of the run that were queued.
        took: u32,
    },
    /// The allowance is full but the client may only be behind for a
    /// moment: offer the rest to everyone else, then wait until this
    /// client has room ([`Outbound::has_room`]) or `until` passes, and
    /// offer the rest again.
    Hold {
        /// The end of the client's grace.
        until: Instant,
        /// Messages of the run that were queued.
        took: u32,
    },
    /// The rest was dropped for this client. `started`: this drop began a
    /// slow episode.
    Dropped {
        /// A slow episode began with this run.
        started: bool,
        /// Messages of the run that were queued.
        took: u32,
        /// Messages of the run that were dropped.
        dropped: u32,
    },
}

/// What the kernel's answer to a send came to.
#[derive(Debug)]
pub enum Flushed {
    /// The kernel took everything queued. `caught_up`: the slow episode
    /// this ends, if one was running.
    Drained {
        /// The episode that ended, if any.
        caught_up: Option<Episode>,
    },
    /// The kernel took everything offered, and more is queued: send again.
    More,
    /// The kernel refused the rest: wait until the socket is writable, then
    /// call [`Outbound::unblock`].
    Blocked,
    /// The socket failed.
    Failed(io::Error),
}

/// What the kernel took, and in how many sends.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Messages whose last byte went to the kernel.
    pub messages: usize,
    /// Bytes of messages that went to the kernel.
    pub bytes: usize,
    /// Bytes of the server's own (handshake answers, pongs, closes).
    pub own_bytes: usize,
    /// Sends that took bytes of messages.
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

/// A place for what one send hands the kernel: pieces to copy into one
/// buffer, or queued handles to refer to. An engine that sends at once can
/// borrow the handles; one that sends later keeps clones.
pub trait SendBuf<'a> {
    /// Appends `part` to the one buffer of a gathered send.
    fn copy(&mut self, part: &[u8]);
    /// Adds `bytes[start..]` as the next piece of a vectored send.
    fn refer(&mut self, bytes: &'a Bytes, start: usize);
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
    /// [`Offer::Full`].
    pub fn offer(
        &mut self,
        run: &Bytes,
        messages: u32,
        kind: Kind,
        now: impl FnOnce() -> Instant,
    ) -> Offer {
        if messages == 0 {
            return Offer::Queued { wake: false };
        }
        if let Pace::Slow(episode) = &mut self.pace {
            episode.dropped += u64::from(messages);
            return Offer::Dropped {
                started: false,
                took: 0,
                dropped: messages,
            };
        }
        let room = u32::try_from(self.capacity.saturating_sub(self.messages)).unwrap_or(u32::MAX);
        if room >= messages {
            let was_empty = self.queue.is_empty();
            self.push(run.clone(), messages, kind);
            return Offer::Queued {
                wake: !self.blocked && self.push_wakes_writer(was_empty, run.len()),
            };
        }
        let took = room;
        if took > 0 {
            let cut = kind.offset_of(run, took);
            self.push(run.slice(..cut), took, kind);
        }
        if !self.blocked {
            return Offer::Full { took };
        }
        // Full, and the kernel refused what is queued.
        let dropped = messages - took;
        let now = now();
        match self.pace {
            Pace::Behind { until } if now < until => return Offer::Hold { until, took },
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
                return Offer::Hold { until, took };
            }
            _ => {}
        }
        self.pace = Pace::Slow(Episode {
            since: now,
            dropped: u64::from(dropped),
        });
        Offer::Dropped {
            started: true,
            took,
            dropped,
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
    /// close): beyond the allowance of messages, never dropped. Returns
    /// false if the server's own bytes queued now pass [`OWN_BACKLOG`]: the
    /// client should be closed.
    pub fn push_own(&mut self, bytes: Bytes) -> bool {
        self.own_bytes += bytes.len();
        self.push(bytes, 0, Kind::Lines);
        self.own_bytes <= OWN_BACKLOG
    }

    /// Queues a pong, as [`push_own`](Self::push_own) does, unless a pong
    /// the kernel has taken nothing of is still queued: that one is
    /// replaced, so only the latest ping is answered (RFC 6455, 5.5.3). A
    /// client that pings and never reads so costs one pong, not one per
    /// ping.
    pub fn push_pong(&mut self, bytes: Bytes) -> bool {
        let queued = self.pong.and_then(|at| {
            let i = usize::try_from(at.checked_sub(self.popped)?).ok()?;
            // The kernel took part of the front entry: it stays as it is.
            (i > 0 || self.front.sent == 0).then_some(i)
        });
        if let Some(entry) = queued.and_then(|i| self.queue.get_mut(i)) {
            self.bytes = self.bytes - entry.bytes.len() + bytes.len();
            self.own_bytes = self.own_bytes - entry.bytes.len() + bytes.len();
            entry.bytes = bytes;
            return self.own_bytes <= OWN_BACKLOG;
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

    /// Puts what the next send should hand the kernel into `out` and
    /// returns how many bytes that is (0 if nothing is queued): the unsent
    /// rest of up to [`SEND_IOVECS`] entries, or, when entries are small,
    /// up to [`GATHER_BYTES`] of them copied into one piece. Report the
    /// kernel's answer with [`sent`](Self::sent).
    pub fn fill<'a>(&'a self, out: &mut impl SendBuf<'a>) -> usize {
        let Some(len) = std::num::NonZeroUsize::new(self.queue.len()) else {
            return 0;
        };
        let mut offered = 0;
        if self.bytes / len < GATHER_BELOW {
            for (bytes, start) in self.pending() {
                let part = &bytes[start..];
                if offered > 0 && offered + part.len() > GATHER_BYTES {
                    break;
                }
                out.copy(part);
                offered += part.len();
            }
        } else {
            for (bytes, start) in self.pending().take(SEND_IOVECS) {
                out.refer(bytes, start);
                offered += bytes.len() - start;
            }
        }
        offered
    }

    /// Each queued entry and where its unsent part starts, oldest first.
    fn pending(&self) -> impl Iterator<Item = (&Bytes, usize)> {
        self.queue
            .iter()
            .enumerate()
            .map(|(i, e)| (&e.bytes, if i == 0 { self.front.sent } else { 0 }))
    }

    /// The kernel's answer to a send of the `offered` bytes
    /// [`fill`](Self::fill) gave: what it took, or why it took nothing.
    pub fn sent(&mut self, result: io::Result<usize>, offered: usize, sent: &mut Sent) -> Flushed {
        match result {
            Ok(n) => {
                self.advance(n, sent);
                if n < offered {
                    // The kernel took only part: its buffer is full.
                    self.blocked = true;
                    Flushed::Blocked
                } else if self.queue.is_empty() {
                    Flushed::Drained {
                        caught_up: self.caught_up(),
                    }
                } else {
                    Flushed::More
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.blocked = true;
                Flushed::Blocked
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Flushed::More,
            Err(e) => Flushed::Failed(e),
        }
    }

    /// Takes `n` bytes off the front of the queue, as a send the kernel
    /// took would, but ends nothing: for a TLS client, whose queue is
    /// sealed into a record before the kernel takes it (see
    /// [`crate::policy::send::tls`]). Once the kernel has taken the record,
    /// [`drained`](Self::drained) says whether the client caught up.
    pub fn take(&mut self, n: usize, sent: &mut Sent) {
        self.advance(n, sent);
    }

    /// If nothing is queued: the client has caught up, and the slow
    /// episode this ends, if one was running, is returned.
    pub fn drained(&mut self) -> Option<Episode> {
        if self.queue.is_empty() {
            self.caught_up()
        } else {
            None
        }
    }

    /// Hands everything queued to the kernel through `send`, a
    /// non-blocking vectored send, until the queue is empty or the kernel
    /// refuses. The copy of small entries goes through one buffer per
    /// thread, since the send completes before this returns.
    pub fn flush(
        &mut self,
        mut send: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
        sent: &mut Sent,
    ) -> Flushed {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        if self.blocked {
            return Flushed::Blocked;
        }
        loop {
            if self.queue.is_empty() {
                return Flushed::Drained {
                    caught_up: self.caught_up(),
                };
            }
            let (result, offered) = SCRATCH.with_borrow_mut(|scratch| {
                scratch.clear();
                let mut buf = Borrowed {
                    scratch,
                    slices: [IoSlice::new(&[]); SEND_IOVECS],
                    count: 0,
                };
                let offered = self.fill(&mut buf);
                let result = if buf.count == 0 {
                    send(&[IoSlice::new(buf.scratch)])
                } else {
                    send(&buf.slices[..buf.count])
                };
                (result, offered)
            });
            match self.sent(result, offered, sent) {
                Flushed::More => {}
                other => return other,
            }
        }
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
        let (own_before, bytes_before) = (self.own_bytes, sent.bytes);
        self.bytes -= n.min(self.bytes);
        while let Some(front) = self.queue.front() {
            let left = front.bytes.len() - self.front.sent;
            if n < left {
                self.front.sent += n;
                if front.messages == 0 {
                    self.own_bytes -= n;
                } else {
                    sent.bytes += n;
                    let done = self.count_done();
                    self.messages -= done;
                    sent.messages += done;
                }
                break;
            }
            n -= left;
            if front.messages == 0 {
                self.own_bytes -= left;
            } else {
                sent.bytes += left;
                let rest = (front.messages - self.front.done) as usize;
                self.messages -= rest;
                sent.messages += rest;
            }
            self.front = Front::default();
            self.queue.pop_front();
            self.popped += 1;
        }
        sent.own_bytes += own_before - self.own_bytes;
        if sent.bytes > bytes_before {
            sent.sends += 1;
        }
    }

    /// After a send that stopped inside the front entry: counts the
    /// messages of it that are now whole in the kernel.
    fn count_done(&mut self) -> usize {
        let Some(front) = self.queue.front() else {
            return 0;
        };
        let before = self.front.done;
        let bytes = &front.bytes[..];
        if self.front.mark == 0 {
            self.front.mark = front.kind.message_len(bytes);
        }
        while self.front.done < front.messages && self.front.mark <= self.front.sent {
            self.front.done += 1;
            if self.front.done < front.messages {
                self.front.mark += front.kind.message_len(&bytes[self.front.mark..]);
            }
        }
        (self.front.done - before) as usize
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
        self.popped += self.queue.len() as u64;
        self.pong = None;
        self.queue.clear();
        self.front = Front::default();
        self.messages = 0;
        self.bytes = 0;
        self.own_bytes = 0;
        match std::mem::replace(&mut self.pace, Pace::Keeping) {
            Pace::Slow(episode) => Some(episode),
            _ => None,
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

/// A [`SendBuf`] for a send that completes before the queue changes: it
/// borrows the queued handles, and copies into a buffer it is lent.
struct Borrowed<'a, 's> {
    scratch: &'s mut Vec<u8>,
    slices: [IoSlice<'a>; SEND_IOVECS],
    count: usize,
}

impl<'a> SendBuf<'a> for Borrowed<'a, '_> {
    fn copy(&mut self, part: &[u8]) {
        self.scratch.extend_from_slice(part);
    }

    fn refer(&mut self, bytes: &'a Bytes, start: usize) {
        // `fill` refers to at most SEND_IOVECS pieces.
        if let Some(slot) = self.slices.get_mut(self.count) {
            *slot = IoSlice::new(&bytes[start..]);
            self.count += 1;
        }
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
