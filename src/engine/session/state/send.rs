//! A session's sending side: what its writer does next, handing its queue
//! to the kernel (a TLS client's a record at a time), and settling the
//! kernel's answer. A child of `state`, so it sees the session's fields.

use std::io::{self, IoSlice};
use std::time::Instant;

use bytes::Bytes;

use super::{Linger, Session};
use crate::engine::session::{CloseReason, Cx, Next, Turn};
use crate::policy::send::outbound::{Outbound, Outcome, SendBuf, Step};

impl Session {
    /// What the writer should do next. `draining`: since when the server
    /// has been shutting down with nothing more to offer. `coalesce` says
    /// whether a short queue should wait for the core's next flush.
    pub(crate) fn next(
        &self,
        draining: Option<Instant>,
        cx: &Cx<'_>,
        coalesce: impl FnOnce(&Outbound) -> bool,
    ) -> Next {
        if self.closed || self.linger == Linger::WriteShut {
            return Next::Exit;
        }
        if self.out.is_blocked() {
            let Some(began) = draining else {
                return Next::Writable { give_up: None };
            };
            // A client that is dropping anyway does not hold up shutdown,
            // nor does one whose socket takes nothing for a while.
            if self.out.episode().is_some() {
                return Next::Close(CloseReason::Shutdown);
            }
            let since = self.stalled_since.map_or(began, |s| s.max(began));
            let give_up = since + cx.settings.drain_stall;
            if Instant::now() >= give_up {
                return Next::Close(CloseReason::Shutdown);
            }
            return Next::Writable {
                give_up: Some(give_up),
            };
        }
        if !self.has_output() {
            return match (self.closing, draining) {
                (Some(reason), _) => Next::Close(reason),
                (None, Some(_)) => Next::Close(CloseReason::Shutdown),
                (None, None) => Next::Sleep,
            };
        }
        if coalesce(&self.out) {
            Next::Coalesce
        } else {
            Next::Send
        }
    }

    /// Hands the queue to the kernel through `send`, a non-blocking
    /// vectored send that completes at once.
    pub(crate) fn flush(
        &mut self,
        mut send: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
        cx: &Cx<'_>,
    ) -> Turn {
        if self.tls.is_none() {
            let behind = self.out.is_behind();
            let outcome = self.out.flush(send);
            return self.settle(outcome, None, behind, cx);
        }
        // TLS: one record at a time, until nothing is left or the kernel
        // refuses.
        let mut room = false;
        loop {
            let mut wire = Wire::default();
            let offered = self.fill(&mut wire);
            let Some(wire) = wire.0.filter(|_| offered > 0) else {
                return Turn { close: None, room };
            };
            let turn = self.sent(send(&[IoSlice::new(&wire)]), offered, cx);
            room |= turn.room;
            if turn.close.is_some() || self.out.is_blocked() {
                return Turn { room, ..turn };
            }
        }
    }

    /// Puts what the next send hands the kernel into `out`; returns how
    /// many bytes that is. Report the kernel's answer with
    /// [`sent`](Self::sent). For a TLS client, this is where the queue is
    /// sealed, a record at a time.
    pub(crate) fn fill<'a>(&'a mut self, out: &mut impl SendBuf<'a>) -> usize {
        if self.closed || self.out.is_blocked() {
            return 0;
        }
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.seal(&mut self.out);
        }
        let this: &'a Session = self;
        match this.tls.as_deref() {
            Some(tls) => tls.fill(out),
            None => this.out.fill(out),
        }
    }

    /// The kernel's answer to a send of the `offered` bytes
    /// [`fill`](Self::fill) gave.
    pub(crate) fn sent(&mut self, result: io::Result<usize>, offered: usize, cx: &Cx<'_>) -> Turn {
        let behind = self.out.is_behind();
        let Some(tls) = self.tls.as_deref_mut() else {
            let outcome = self.out.sent(result, offered);
            return self.settle(outcome, None, behind, cx);
        };
        // Sealing took messages off the queue: room for a held line.
        let room = behind && tls.sealed_since();
        let (outcome, took) = match result {
            Ok(n) => match tls.took(n) {
                // The kernel took only part of the record: its buffer is
                // full.
                None => {
                    let refused = Err(io::ErrorKind::WouldBlock.into());
                    (self.out.sent(refused, 0), n > 0)
                }
                Some(carried) => {
                    let outcome = if tls.has_output() || !self.out.is_empty() {
                        Outcome::step(Step::More)
                    } else {
                        tls.rest();
                        // The kernel has taken everything: caught up.
                        self.out.drained()
                    };
                    let sent = carried.sent;
                    (Outcome { sent, ..outcome }, true)
                }
            },
            Err(e) => (self.out.sent(Err(e), 0), false),
        };
        let turn = self.settle(outcome, Some(took), behind, cx);
        Turn {
            room: turn.room || room,
            ..turn
        }
    }

    /// Accounts for the kernel's answer to a send, and keeps
    /// `stalled_since`. `record_took`: for a TLS client, whether the kernel
    /// took bytes of the record, which count for nothing until its last
    /// byte; `None` for a plain client, where `outcome.sent` says it.
    fn settle(
        &mut self,
        outcome: Outcome,
        record_took: Option<bool>,
        behind: bool,
        cx: &Cx<'_>,
    ) -> Turn {
        let sent = outcome.sent;
        let took = record_took.unwrap_or(sent.bytes + sent.own_bytes > 0);
        let close = match self.account(outcome, cx) {
            Ok(Step::Blocked) => {
                if took || self.stalled_since.is_none() {
                    self.stalled_since = Some(Instant::now());
                }
                None
            }
            Ok(_) => {
                self.stalled_since = None;
                None
            }
            Err(reason) => Some(reason),
        };
        Turn {
            close,
            room: behind && sent.messages > 0,
        }
    }

    /// The socket is writable again: the queue may go to the kernel.
    pub(crate) fn writable(&mut self) {
        self.out.unblock();
    }

    /// True while the kernel refuses and the engine waits for the socket.
    pub(crate) fn is_blocked(&self) -> bool {
        self.out.is_blocked()
    }
}

/// A [`SendBuf`] that keeps a handle to the one piece a TLS client's
/// [`Session::fill`] gives.
#[derive(Default)]
pub(super) struct Wire(pub(super) Option<Bytes>);

impl SendBuf<'_> for Wire {
    fn copy(&mut self, part: &[u8]) {
        self.0 = Some(Bytes::copy_from_slice(part));
    }

    fn refer(&mut self, bytes: &Bytes, start: usize) {
        self.0 = Some(bytes.slice(start..));
    }
}
