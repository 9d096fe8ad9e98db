//! Limits shared by both engines: how many clients may connect, in all
//! and from one address, how accept backs off when the process runs out
//! of descriptors, and warnings that cannot flood the log.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where a [`Gate`] counts the connections it turns away: the metrics
/// shard of the core that accepted them (`ops::metrics::Shard`), so that
/// this module needs nothing from `ops/`.
pub(crate) trait Rejections {
    /// All slots were taken (`--max-clients`, or the pending handshakes).
    fn rejected(&self);
    /// Its address had `--max-clients-per-ip` connected.
    fn rejected_per_ip(&self);
}

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

/// Caps the connections from one IP address across all cores
/// (`--max-clients-per-ip`): `SO_REUSEPORT` spreads one address's
/// connections over them. An address is in the map only while it has a
/// connection, so the map holds at most as many as are connected.
#[derive(Debug)]
pub(crate) struct PerAddress {
    /// Zero: no limit, and nothing is counted.
    max: usize,
    /// Sharded by address, so cores accepting from different addresses
    /// seldom meet on one lock.
    counts: Box<[Mutex<HashMap<IpAddr, usize>>]>,
    hasher: std::collections::hash_map::RandomState,
    rejections: Throttle,
}

const ADDRESS_SHARDS: usize = 16;

impl PerAddress {
    /// At most `max` connections from one address at once; `0` is none.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            counts: (0..ADDRESS_SHARDS).map(|_| Mutex::default()).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            rejections: Throttle::default(),
        }
    }

    fn shard(&self, ip: &IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        let i = self.hasher.hash_one(ip) as usize % self.counts.len();
        // A panic while holding the lock leaves the map whole.
        self.counts[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a connection from `ip`; false when `max` are connected from it.
    pub(crate) fn try_admit(&self, ip: IpAddr) -> bool {
        if self.max == 0 {
            return true;
        }
        // An IPv4 client of a dual-stack listener is the same address.
        let ip = ip.to_canonical();
        let mut counts = self.shard(&ip);
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max {
            return false;
        }
        *count += 1;
        true
    }

    /// A connection from `ip` has gone.
    pub(crate) fn release(&self, ip: IpAddr) {
        if self.max == 0 {
            return;
        }
        let ip = ip.to_canonical();
        let mut counts = self.shard(&ip);
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }

    /// Addresses with a connection now.
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.counts
            .iter()
            .map(|c| c.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
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
    /// It bounds pending TLS and WebSocket handshakes, not clients.
    handshakes: bool,
    /// Rung when a client or a pending handshake leaves, so that accept
    /// loops paused for want of descriptors try again at once. Shared by
    /// a server's two gates: a descriptor freed by either serves both.
    freed: std::sync::Arc<tokio::sync::Notify>,
    /// `--max-clients-per-ip`, shared by a server's two gates: a
    /// connection counts from its accept to its close, whichever slot it
    /// holds.
    per_ip: Arc<PerAddress>,
    rejections: Throttle,
    accept_errors: Throttle,
}

impl Gate {
    /// A gate letting in at most `max_clients` at once, and at most
    /// `max_per_ip` from one address (`0`: no limit).
    pub(crate) fn new(max_clients: usize, max_per_ip: usize) -> Self {
        Self::with(
            max_clients,
            false,
            std::sync::Arc::default(),
            Arc::new(PerAddress::new(max_per_ip)),
        )
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
            Arc::clone(&clients.per_ip),
        )
    }

    fn with(
        max: usize,
        handshakes: bool,
        freed: std::sync::Arc<tokio::sync::Notify>,
        per_ip: Arc<PerAddress>,
    ) -> Self {
        Self {
            limit: ClientLimit::new(max),
            handshakes,
            freed,
            per_ip,
            rejections: Throttle::default(),
            accept_errors: Throttle::default(),
        }
    }

    /// Takes a slot for a new connection from `peer`, and counts it for
    /// its address. When its address has `--max-clients-per-ip`, or all
    /// slots are taken, counts the rejection, warns (at most once a second)
    /// and returns false: the caller closes the connection at once.
    pub(crate) fn admit(&self, peer: SocketAddr, shard: &impl Rejections) -> bool {
        if !self.per_ip.try_admit(peer.ip()) {
            shard.rejected_per_ip();
            if let Some(suppressed) = self.per_ip.rejections.allow() {
                tracing::warn!(
                    %peer,
                    max_clients_per_ip = self.per_ip.max,
                    also_rejected_since_last_warning = suppressed,
                    "--max-clients-per-ip reached for this address: closed the new connection at once; connected clients are unaffected"
                );
            }
            return false;
        }
        if self.admit_or("closed the new connection at once", peer, shard) {
            return true;
        }
        self.per_ip.release(peer.ip());
        false
    }

    /// As [`admit`](Self::admit), for a WebSocket client whose handshake
    /// just completed: when all slots are taken, it is answered 503.
    pub(crate) fn admit_handshaken(&self, peer: SocketAddr, shard: &impl Rejections) -> bool {
        self.admit_or(
            "a completed TLS or WebSocket handshake found every slot taken: closed it (a WebSocket client gets 503)",
            peer,
            shard,
        )
    }

    fn admit_or(&self, refused: &'static str, peer: SocketAddr, shard: &impl Rejections) -> bool {
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
                "too many TLS and WebSocket handshakes pending: closed the new connection at once; connected clients are unaffected"
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

    /// Gives back the slot of a connection from `peer` that has gone, and
    /// its count for its address, and wakes accept loops paused for want of
    /// descriptors: one is free now.
    pub(crate) fn release(&self, peer: SocketAddr) {
        self.per_ip.release(peer.ip());
        self.limit.release();
        self.freed.notify_waiters();
    }

    /// Gives back the handshake slot of a WebSocket connection that has
    /// become a client: its count for its address goes with it.
    pub(crate) fn hand_over(&self) {
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
        let clients = Gate::new(1, 0);
        let handshakes = Gate::for_handshakes(&clients);
        let peer: SocketAddr = "127.0.0.1:1".parse().expect("an address");
        assert!(clients.limit.try_admit() && handshakes.limit.try_admit());
        let waiting = clients.freed();
        handshakes.release(peer);
        assert!(woken(waiting), "a handshake's slot freed a descriptor");
        let waiting = handshakes.freed();
        clients.release(peer);
        assert!(woken(waiting), "a client's slot freed a descriptor");
    }

    #[test]
    fn one_address_gets_its_share_and_others_are_unaffected() {
        let per_ip = PerAddress::new(2);
        let a: IpAddr = "127.0.0.1".parse().expect("an address");
        let b: IpAddr = "127.0.0.2".parse().expect("an address");
        assert!(per_ip.try_admit(a) && per_ip.try_admit(a));
        assert!(!per_ip.try_admit(a), "a third from one address");
        // The same address, from a dual-stack listener.
        assert!(!per_ip.try_admit("::ffff:127.0.0.1".parse().expect("v6")));
        assert!(per_ip.try_admit(b), "another address");
        per_ip.release(a);
        assert!(per_ip.try_admit(a), "one left: room for another");
        for ip in [a, a, b] {
            per_ip.release(ip);
        }
        assert_eq!(per_ip.addresses(), 0, "gone addresses are forgotten");
        let unlimited = PerAddress::new(0);
        assert!((0..10_000).all(|_| unlimited.try_admit(a)));
        assert_eq!(unlimited.addresses(), 0, "no limit counts nothing");
    }

    #[test]
    fn a_gate_counts_a_connection_per_address_from_accept_to_close() {
        /// Counts rejections as (all slots taken, per address).
        #[derive(Default)]
        struct Counts(std::cell::Cell<(u32, u32)>);
        impl Rejections for Counts {
            fn rejected(&self) {
                let (all, per_ip) = self.0.get();
                self.0.set((all + 1, per_ip));
            }
            fn rejected_per_ip(&self) {
                let (all, per_ip) = self.0.get();
                self.0.set((all, per_ip + 1));
            }
        }
        let counts = Counts::default();
        let shard = &counts;
        let clients = Gate::new(3, 2);
        let handshakes = Gate::for_handshakes(&clients);
        let a: SocketAddr = "10.0.0.1:1".parse().expect("an address");
        let b: SocketAddr = "10.0.0.2:1".parse().expect("an address");
        // A line client and a pending handshake: both count for `a`.
        assert!(clients.admit(a, shard) && handshakes.admit(a, shard));
        assert!(!clients.admit(a, shard) && !handshakes.admit(a, shard));
        assert_eq!(counts.0.get(), (0, 2));
        // The handshake becomes a client: still two from `a`.
        assert!(clients.admit_handshaken(a, shard));
        handshakes.hand_over();
        assert!(!clients.admit(a, shard));
        // --max-clients turns `b`'s second away: it counts for `b` no more.
        assert!(clients.admit(b, shard));
        assert!(!clients.admit(b, shard));
        assert_eq!(counts.0.get().0, 1);
        clients.release(b);
        assert_eq!(clients.per_ip.addresses(), 1);
        clients.release(a);
        assert!(clients.admit(a, shard), "one of `a`'s left");
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
