//! Limits shared by both engines: how many clients may connect, how accept
//! backs off when the process runs out of descriptors, and warnings that
//! cannot flood the log.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::ops::metrics::Shard;

/// Caps the number of connected clients across all cores.
#[derive(Debug)]
pub(crate) struct ClientLimit {
    max: usize,
    live: AtomicUsize,
}

impl ClientLimit {
    /// At most `max` clients at once.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            live: AtomicUsize::new(0),
        }
    }

    /// Takes a slot for a new client; false when all `max` are taken.
    pub(crate) fn try_admit(&self) -> bool {
        if self.live.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives a client's slot back.
    pub(crate) fn release(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }

    /// The configured maximum.
    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

/// Most WebSocket connections waiting for their handshake at once, across
/// all cores; more are accepted and closed at once. Each waits at most
/// `--handshake-timeout`.
pub(crate) const PENDING_HANDSHAKES: usize = 1024;

/// Lets one event through per second, and counts the rest.
#[derive(Debug)]
pub(crate) struct Throttle {
    origin: Instant,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl Throttle {
    /// `Some(n)` if this event may be logged, `n` being how many were
    /// suppressed since the last one; `None` if one was logged less than a
    /// second ago.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(1000),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Bounded exponential backoff for `accept` when the process or the system
/// is out of descriptors or memory.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    delay: Option<Duration>,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

impl AcceptBackoff {
    /// How long to wait before accepting again after `error`: `Some` for
    /// resource exhaustion (EMFILE, ENFILE, ENOBUFS, ENOMEM), doubling up to
    /// half a second; `None` for errors about one connection, which need no
    /// pause.
    pub(crate) fn on_error(&mut self, error: &io::Error) -> Option<Duration> {
        let exhausted = matches!(
            error.raw_os_error(),
            Some(
                libc_errno::EMFILE | libc_errno::ENFILE | libc_errno::ENOBUFS | libc_errno::ENOMEM
            )
        );
        if !exhausted {
            return None;
        }
        let delay = self
            .delay
            .map_or(BACKOFF_FIRST, |d| (d * 2).min(BACKOFF_MAX));
        self.delay = Some(delay);
        Some(delay)
    }

    /// An accept succeeded: the next failure starts from the shortest pause.
    pub(crate) fn on_success(&mut self) {
        self.delay = None;
    }
}

/// Where both engines decide whether to serve a new connection, and report
/// what they did about the ones they could not.
#[derive(Debug)]
pub(crate) struct Gate {
    limit: ClientLimit,
    /// It bounds pending WebSocket handshakes, not clients.
    handshakes: bool,
    /// Rung when a client or a pending handshake leaves, so that accept
    /// loops paused for want of descriptors try again at once. Shared by
    /// a server's two gates: a descriptor freed by either serves both.
    freed: std::sync::Arc<tokio::sync::Notify>,
    rejections: Throttle,
    accept_errors: Throttle,
}

impl Gate {
    /// A gate letting in at most `max_clients` at once.
    pub(crate) fn new(max_clients: usize) -> Self {
        Self::with(max_clients, false, std::sync::Arc::default())
    }

    /// A gate letting at most [`PENDING_HANDSHAKES`] WebSocket connections
    /// wait for their handshake at once. They take no `--max-clients`
    /// slot until it completes. A slot freed at either gate wakes the
    /// accept loops of both.
    pub(crate) fn for_handshakes(clients: &Gate) -> Self {
        Self::with(
            PENDING_HANDSHAKES,
            true,
            std::sync::Arc::clone(&clients.freed),
        )
    }

    fn with(max: usize, handshakes: bool, freed: std::sync::Arc<tokio::sync::Notify>) -> Self {
        Self {
            limit: ClientLimit::new(max),
            handshakes,
            freed,
            rejections: Throttle::default(),
            accept_errors: Throttle::default(),
        }
    }

    /// Takes a slot for a client from `peer`. When all are taken, counts the
    /// rejection, warns (at most once a second) and returns false: the
    /// caller closes the connection at once.
    pub(crate) fn admit(&self, peer: SocketAddr, shard: &Shard) -> bool {
        self.admit_or("closed the new connection at once", peer, shard)
    }

    /// As [`admit`](Self::admit), for a WebSocket client whose handshake
    /// just completed: when all slots are taken, it is answered 503.
    pub(crate) fn admit_handshaken(&self, peer: SocketAddr, shard: &Shard) -> bool {
        self.admit_or(
            "answered a completed WebSocket handshake with 503",
            peer,
            shard,
        )
    }

    fn admit_or(&self, refused: &'static str, peer: SocketAddr, shard: &Shard) -> bool {
        if self.limit.try_admit() {
            return true;
        }
        shard.rejected();
        let Some(suppressed) = self.rejections.allow() else {
            return false;
        };
        if self.handshakes {
            tracing::warn!(
                %peer,
                pending = self.limit.max(),
                also_rejected_since_last_warning = suppressed,
                "too many WebSocket handshakes pending: closed the new connection at once; connected clients are unaffected"
            );
        } else {
            tracing::warn!(
                %peer,
                max_clients = self.limit.max(),
                also_rejected_since_last_warning = suppressed,
                "--max-clients reached: {refused}; connected clients are unaffected"
            );
        }
        false
    }

    /// Gives back the slot of a client that has gone, and wakes accept
    /// loops paused for want of descriptors: one is free now.
    pub(crate) fn release(&self) {
        self.limit.release();
        self.freed.notify_waiters();
    }

    /// Resolves at the next [`release`](Self::release).
    pub(crate) fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    /// Reports a failed accept and says how long to pause before the next.
    pub(crate) fn accept_failed(
        &self,
        core: usize,
        backoff: &mut AcceptBackoff,
        error: &io::Error,
    ) -> Option<Duration> {
        let pause = backoff.on_error(error);
        match pause {
            Some(pause) => {
                if let Some(suppressed) = self.accept_errors.allow() {
                    tracing::warn!(
                        core,
                        %error,
                        retry_in = ?pause,
                        also_failed_since_last_warning = suppressed,
                        "accept failed: out of descriptors or memory; connected clients are still served, new ones wait in the backlog"
                    );
                }
            }
            None => tracing::debug!(core, %error, "accept failed for one connection; carrying on"),
        }
        pause
    }
}

/// The errno values we classify, from nix so no `libc` dependency is needed.
mod libc_errno {
    use nix::errno::Errno;
    pub(super) const EMFILE: i32 = Errno::EMFILE as i32;
    pub(super) const ENFILE: i32 = Errno::ENFILE as i32;
    pub(super) const ENOBUFS: i32 = Errno::ENOBUFS as i32;
    pub(super) const ENOMEM: i32 = Errno::ENOMEM as i32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_admits_up_to_max_and_frees_on_release() {
        let limit = ClientLimit::new(2);
        assert!(limit.try_admit() && limit.try_admit());
        assert!(!limit.try_admit());
        limit.release();
        assert!(limit.try_admit());
    }

    #[test]
    fn a_slot_freed_at_either_gate_wakes_the_accept_loops_of_both() {
        fn woken(freed: tokio::sync::futures::Notified<'_>) -> bool {
            let mut freed = std::pin::pin!(freed);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            freed.as_mut().poll(&mut cx).is_ready()
        }
        use std::future::Future as _;
        let clients = Gate::new(1);
        let handshakes = Gate::for_handshakes(&clients);
        assert!(clients.limit.try_admit() && handshakes.limit.try_admit());
        let waiting = clients.freed();
        handshakes.release();
        assert!(woken(waiting), "a handshake's slot freed a descriptor");
        let waiting = handshakes.freed();
        clients.release();
        assert!(woken(waiting), "a client's slot freed a descriptor");
    }

    #[test]
    fn the_throttle_lets_one_through_per_second() {
        let t = Throttle::default();
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        t.next_ms.store(0, Ordering::Relaxed); // as if a second passed
        assert_eq!(t.allow(), Some(2));
    }

    #[test]
    fn backoff_doubles_to_a_bound_and_resets() {
        let mut b = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(libc_errno::EMFILE);
        let delays: Vec<_> = (0..10).filter_map(|_| b.on_error(&emfile)).collect();
        assert_eq!(delays[0], BACKOFF_FIRST);
        assert_eq!(delays[1], BACKOFF_FIRST * 2);
        assert_eq!(*delays.last().unwrap_or(&Duration::ZERO), BACKOFF_MAX);
        b.on_success();
        assert_eq!(b.on_error(&emfile), Some(BACKOFF_FIRST));
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(b.on_error(&aborted), None);
    }
}
