//! The queue's kernel side: what the next send hands the kernel
//! ([`Outbound::fill`]), and what the kernel's answer comes to
//! ([`Outbound::sent`]); [`Outbound::flush`] does both for an engine that
//! sends at once. Every byte the kernel takes is counted here, in
//! [`advance`](Outbound::advance).

// Public for the benches and the fuzz target (the `internals` feature).
#![cfg_attr(not(feature = "internals"), allow(unreachable_pub))]

use std::io::{self, IoSlice};

use bytes::Bytes;

use super::{Change, Front, Outbound, Outcome, Sent, Step};

/// Most queue entries one send hands to the kernel (well under `IOV_MAX`).
pub(crate) const SEND_IOVECS: usize = 64;
/// Entries smaller than this on average are copied into one buffer and
/// sent as one piece, rather than as an iovec entry each: for small pieces
/// the copy costs less than the kernel's work per entry
/// (docs/decisions/0022).
pub(crate) const GATHER_BELOW: usize = 512;
/// Most bytes one gathered send carries.
pub(crate) const GATHER_BYTES: usize = 64 * 1024;

/// A place for what one send hands the kernel: pieces to copy into one
/// buffer, or queued handles to refer to. An engine that sends at once can
/// borrow the handles; one that sends later keeps clones.
pub trait SendBuf<'a> {
    /// Appends `part` to the one buffer of a gathered send.
    fn copy(&mut self, part: &[u8]);
    /// Adds `bytes[start..]` as the next piece of a vectored send.
    fn refer(&mut self, bytes: &'a Bytes, start: usize);
}

impl Outbound {
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
    pub fn sent(&mut self, result: io::Result<usize>, offered: usize) -> Outcome {
        match result {
            Ok(n) => {
                let sent = self.advance(n);
                if n < offered {
                    // The kernel took only part: its buffer is full.
                    self.blocked = true;
                    Outcome {
                        sent,
                        ..Outcome::step(Step::Blocked)
                    }
                } else if self.queue.is_empty() {
                    Outcome {
                        sent,
                        ..self.drained()
                    }
                } else {
                    Outcome {
                        sent,
                        ..Outcome::step(Step::More)
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.blocked = true;
                Outcome::step(Step::Blocked)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Outcome::step(Step::More),
            Err(e) => Outcome::step(Step::Failed {
                kind: e.kind(),
                os: e.raw_os_error(),
            }),
        }
    }

    /// Takes `n` bytes off the front of the queue, as a send the kernel
    /// took would, but ends nothing: for a TLS client, whose queue is
    /// sealed into a record before the kernel takes it (see
    /// [`crate::policy::send::tls`]). Once the kernel has taken the record,
    /// [`drained`](Self::drained) says whether the client caught up.
    pub fn take(&mut self, n: usize) -> Outcome {
        Outcome {
            sent: self.advance(n),
            ..Outcome::default()
        }
    }

    /// The kernel has taken everything it was handed. If nothing is queued,
    /// the client has caught up: the slow episode this ends, if one was
    /// running, is in the answer, and there is nothing to do. If more was
    /// queued meanwhile, the answer is [`More`](Step::More): send again.
    pub fn drained(&mut self) -> Outcome {
        if !self.queue.is_empty() {
            return Outcome::step(Step::More);
        }
        Outcome {
            episode: self.caught_up().map(Change::CaughtUp),
            ..Outcome::default()
        }
    }

    /// Hands everything queued to the kernel through `send`, a
    /// non-blocking vectored send, until the queue is empty or the kernel
    /// refuses. The copy of small entries goes through one buffer per
    /// thread, since the send completes before this returns.
    pub fn flush(&mut self, mut send: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>) -> Outcome {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        if self.blocked {
            return Outcome::step(Step::Blocked);
        }
        let mut sent = Sent::default();
        loop {
            if self.queue.is_empty() {
                return Outcome {
                    sent,
                    ..self.drained()
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
            let outcome = self.sent(result, offered);
            sent += outcome.sent;
            if !matches!(outcome.next, Step::More) {
                return Outcome { sent, ..outcome };
            }
        }
    }

    /// The kernel took `n` more bytes from the front of the queue: what
    /// that counts for.
    fn advance(&mut self, mut n: usize) -> Sent {
        let mut sent = Sent::default();
        let own_before = self.own_bytes;
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
        sent.own_bytes = own_before - self.own_bytes;
        sent.sends = usize::from(sent.bytes > 0);
        sent
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

#[cfg(test)]
mod tests;
