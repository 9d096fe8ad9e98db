//! What a call on an [`Outbound`](super::Outbound) answers: one
//! [`Outcome`], which says what was queued, dropped and sent, whether a
//! slow episode began or ended, and what the caller does next. The session
//! counts and logs from it alone.

// Public for the benches and the fuzz target (the `internals` feature).
#![cfg_attr(not(feature = "internals"), allow(unreachable_pub))]

use std::io;
use std::time::Instant;

/// What one call on an [`Outbound`](super::Outbound) came to. Every call
/// that changes the queue answers with one.
#[must_use]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Messages of an offered run that were queued: its first ones.
    pub took: u32,
    /// Messages of an offered run that were dropped: the rest.
    pub dropped: u32,
    /// What the kernel took.
    pub sent: Sent,
    /// A slow episode began or ended.
    pub episode: Option<Change>,
    /// What the caller does next.
    pub next: Step,
}

/// A slow episode's beginning or end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// This offer began one: the client used its grace up, or had none.
    Started,
    /// The kernel took everything queued: the client caught up.
    CaughtUp(Episode),
    /// The queue was dropped (the connection is going away) during one.
    Cleared(Episode),
}

/// What the caller of an [`Outbound`](super::Outbound) does next.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do: what was queued needs no wake (or was dropped), or
    /// the kernel took everything, or the call only took bytes off the
    /// queue or cleared it.
    #[default]
    Idle,
    /// Wake the writer: the queue was empty, or reached a mark where a
    /// writer waiting to coalesce should go.
    Wake,
    /// The queue is full and the kernel has not been asked since: hand
    /// the queue to the kernel now, then offer the rest (from `took` on)
    /// again.
    SendNow,
    /// The allowance is full but the client may only be behind for a
    /// moment: offer the rest to everyone else, then wait until this
    /// client has room ([`has_room`](super::Outbound::has_room)) or
    /// `until` passes, and offer the rest again.
    Hold {
        /// The end of the client's grace.
        until: Instant,
    },
    /// The kernel took everything offered, and more is queued: send again.
    More,
    /// The kernel refused the rest: wait until the socket is writable,
    /// then call [`unblock`](super::Outbound::unblock).
    Blocked,
    /// The socket failed: the error's kind, and its OS error number if
    /// it had one (kept apart so that an `Outcome` is plain data).
    Failed {
        /// What kind of error.
        kind: io::ErrorKind,
        /// The OS error number.
        os: Option<i32>,
    },
    /// The server's own bytes queued now pass `OWN_BACKLOG`: close the
    /// client.
    OwnBacklog,
}

impl Outcome {
    /// Nothing happened but what `next` says.
    pub fn step(next: Step) -> Self {
        Self {
            next,
            ..Self::default()
        }
    }
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

impl std::ops::AddAssign for Sent {
    fn add_assign(&mut self, more: Self) {
        self.messages += more.messages;
        self.bytes += more.bytes;
        self.own_bytes += more.own_bytes;
        self.sends += more.sends;
    }
}

/// A slow episode: since when the client has been dropping, and how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Episode {
    /// When the first message was dropped.
    pub since: Instant,
    /// Messages dropped so far.
    pub dropped: u64,
}
