//! Counters, kept per core and summed when scraped; their Prometheus text
//! is in `text`.
//!
//! Every counter lives in a shard that one thread writes (a core on the
//! `uring` engine, a worker thread on `tokio`), padded to its own cache line,
//! so the per-message path never touches a line another core writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::policy::admission::limits::Rejections;
use crossbeam_utils::CachePadded;

/// One core's counters.
#[derive(Debug, Default)]
pub(crate) struct Shard {
    /// The one thread that writes this shard, checked in debug builds.
    #[cfg(debug_assertions)]
    writer: std::sync::OnceLock<std::thread::ThreadId>,
    accepted: AtomicU64,
    closed: AtomicU64,
    received: AtomicU64,
    bytes_received: AtomicU64,
    sent: AtomicU64,
    bytes_sent: AtomicU64,
    batches: AtomicU64,
    own_bytes_sent: AtomicU64,
    dropped: AtomicU64,
    slow_started: AtomicU64,
    slow_ended: AtomicU64,
    slow_disconnected: AtomicU64,
    held_nanos: AtomicU64,
    too_long: AtomicU64,
    rejected: AtomicU64,
    rejected_per_ip: AtomicU64,
    origin_rejected: AtomicU64,
    handshakes_begun: AtomicU64,
    handshakes_ended: AtomicU64,
    handshake_timeouts: AtomicU64,
    protocol_errors: AtomicU64,
    tls_errors: AtomicU64,
    cluster_published: AtomicU64,
    cluster_received: AtomicU64,
    cluster_dropped: AtomicU64,
    cluster_inbound_dropped: AtomicU64,
    cluster_too_long: AtomicU64,
    cluster_inbound_too_long: AtomicU64,
}

// Each shard has one writer, so a relaxed load and store is enough and
// cheaper than a locked read-modify-write; readers on scrape may see a value
// a moment old, never a torn one.
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

impl Shard {
    /// Debug builds check the invariant `bump` relies on: a second writer
    /// thread would lose increments.
    #[cfg(debug_assertions)]
    fn check_writer(&self) {
        let me = std::thread::current().id();
        let writer = *self.writer.get_or_init(|| me);
        assert_eq!(writer, me, "a metrics shard written from two threads");
    }

    #[cfg(not(debug_assertions))]
    fn check_writer(&self) {}

    /// A connection was accepted.
    pub(crate) fn accepted(&self) {
        self.check_writer();
        bump(&self.accepted, 1);
    }
    /// A WebSocket connection was accepted: its handshake is pending.
    pub(crate) fn handshake_begun(&self) {
        self.check_writer();
        bump(&self.handshakes_begun, 1);
    }
    /// A pending handshake completed, or its connection closed.
    pub(crate) fn handshake_ended(&self) {
        self.check_writer();
        bump(&self.handshakes_ended, 1);
    }
    /// A handshake did not complete within `--handshake-timeout`.
    pub(crate) fn handshake_timed_out(&self) {
        self.check_writer();
        bump(&self.handshake_timeouts, 1);
    }
    /// A WebSocket client broke the protocol and was closed with its code.
    pub(crate) fn protocol_error(&self) {
        self.check_writer();
        bump(&self.protocol_errors, 1);
    }
    /// A TLS client's session failed (its handshake, or a record).
    pub(crate) fn tls_error(&self) {
        self.check_writer();
        bump(&self.tls_errors, 1);
    }
    /// A connection was closed (for any reason).
    pub(crate) fn closed(&self) {
        self.check_writer();
        bump(&self.closed, 1);
    }
    /// `messages` complete messages, `bytes` bytes in all, arrived from a
    /// client.
    pub(crate) fn received(&self, messages: u32, bytes: usize) {
        self.check_writer();
        bump(&self.received, u64::from(messages));
        bump(&self.bytes_received, bytes as u64);
    }
    /// `sends` sends handed one client's socket `bytes` bytes, completing
    /// `messages` messages.
    pub(crate) fn sent(&self, messages: usize, bytes: usize, sends: usize) {
        self.check_writer();
        bump(&self.sent, messages as u64);
        bump(&self.bytes_sent, bytes as u64);
        bump(&self.batches, sends as u64);
    }
    /// `bytes` bytes of the server's own (handshake answers, pongs,
    /// closes, HTTP answers) went to one client's socket.
    pub(crate) fn own_sent(&self, bytes: usize) {
        self.check_writer();
        bump(&self.own_bytes_sent, bytes as u64);
    }
    /// `n` messages were dropped for one slow client.
    pub(crate) fn dropped(&self, n: u32) {
        self.check_writer();
        bump(&self.dropped, u64::from(n));
    }
    /// A client started dropping messages (a slow episode began).
    pub(crate) fn slow_started(&self) {
        self.check_writer();
        bump(&self.slow_started, 1);
    }
    /// A slow client caught up, or left while slow.
    pub(crate) fn slow_ended(&self) {
        self.check_writer();
        bump(&self.slow_ended, 1);
    }
    /// A client was disconnected for `--slow-disconnect`.
    pub(crate) fn slow_disconnected(&self) {
        self.check_writer();
        bump(&self.slow_disconnected, 1);
    }
    /// A deliverer waited `waited` for a client that held a message.
    pub(crate) fn held(&self, waited: std::time::Duration) {
        self.check_writer();
        bump(
            &self.held_nanos,
            u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX),
        );
    }
    /// A client was disconnected for an overlong line.
    pub(crate) fn too_long(&self) {
        self.check_writer();
        bump(&self.too_long, 1);
    }
    /// `n` local lines were published to the cluster.
    pub(crate) fn cluster_published(&self, n: usize) {
        self.check_writer();
        bump(&self.cluster_published, n as u64);
    }
    /// `n` lines from other nodes were delivered here.
    pub(crate) fn cluster_received(&self, n: usize) {
        self.check_writer();
        bump(&self.cluster_received, n as u64);
    }
    /// `n` lines from other nodes were dropped: local delivery was slower
    /// than the cluster.
    pub(crate) fn cluster_inbound_dropped(&self, n: usize) {
        self.check_writer();
        bump(&self.cluster_inbound_dropped, n as u64);
    }
    /// `n` local lines could not be forwarded to the cluster.
    pub(crate) fn cluster_dropped(&self, n: usize) {
        self.check_writer();
        bump(&self.cluster_dropped, n as u64);
    }
    /// A local line was not forwarded: it is longer than NATS's
    /// `max_payload`.
    pub(crate) fn cluster_too_long(&self, n: usize) {
        self.check_writer();
        bump(&self.cluster_too_long, n as u64);
    }
    /// `n` lines from other nodes were dropped: each is longer than
    /// `--max-line`.
    pub(crate) fn cluster_inbound_too_long(&self, n: usize) {
        self.check_writer();
        bump(&self.cluster_inbound_too_long, n as u64);
    }
    /// A WebSocket handshake was refused (403) for its `Origin`.
    pub(crate) fn origin_rejected(&self) {
        self.check_writer();
        bump(&self.origin_rejected, 1);
    }
}

/// The gate counts the connections it turns away on the accepting core's
/// shard.
impl Rejections for Shard {
    fn rejected(&self) {
        self.check_writer();
        bump(&self.rejected, 1);
    }
    fn rejected_per_ip(&self) {
        self.check_writer();
        bump(&self.rejected_per_ip, 1);
    }
}

/// Totals across all shards at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Clients connected now, WebSocket clients once their handshake
    /// completed.
    pub connected: u64,
    /// WebSocket connections whose handshake is pending (or that were
    /// answered with plain HTTP and are closing).
    pub pending_handshakes: u64,
    /// WebSocket connections closed for not completing their handshake
    /// within `--handshake-timeout`.
    pub handshake_timeouts: u64,
    /// WebSocket clients closed for breaking the protocol.
    pub protocol_errors: u64,
    /// TLS clients closed because their TLS session failed.
    pub tls_errors: u64,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Complete messages received from clients.
    pub received: u64,
    /// Bytes of complete messages received.
    pub bytes_received: u64,
    /// Messages handed to the kernel, counted once per receiver.
    pub sent: u64,
    /// Bytes handed to the kernel.
    pub bytes_sent: u64,
    /// Sends that handed something to the kernel: `sent / batches` is how
    /// many messages a send carried on average.
    pub batches: u64,
    /// Bytes of the server's own handed to the kernel: WebSocket
    /// handshake answers, pongs and closes, and HTTP answers on `--ws`.
    pub own_bytes_sent: u64,
    /// Messages dropped for slow receivers, once per receiver.
    pub dropped: u64,
    /// Clients dropping messages now.
    pub slow_clients: u64,
    /// Times a client started dropping messages.
    pub slow_episodes: u64,
    /// Clients disconnected for `--slow-disconnect`.
    pub slow_disconnects: u64,
    /// Nanoseconds deliverers spent waiting for clients that held a
    /// message (were behind for a moment).
    pub held_nanos: u64,
    /// Clients disconnected for overlong lines.
    pub lines_too_long: u64,
    /// Connections closed at once because `--max-clients` were connected.
    pub rejected: u64,
    /// Connections closed at once because `--max-clients-per-ip` from
    /// their address were connected.
    pub rejected_per_ip: u64,
    /// WebSocket handshakes refused (403) for their `Origin`.
    pub origin_rejected: u64,
    /// Local lines published to the cluster.
    pub cluster_published: u64,
    /// Lines from other nodes delivered here.
    pub cluster_received: u64,
    /// Local lines that could not be forwarded to the cluster.
    pub cluster_dropped: u64,
    /// Lines from other nodes dropped because local delivery was slower.
    pub cluster_inbound_dropped: u64,
    /// Local lines not forwarded because they are longer than NATS's
    /// `max_payload`.
    pub cluster_too_long: u64,
    /// Lines from other nodes dropped because they are longer than
    /// `--max-line`.
    pub cluster_inbound_too_long: u64,
    /// Whether the cluster bridge is connected (`None`: no cluster).
    pub cluster_connected: Option<bool>,
}

/// All shards of one server.
pub struct Metrics {
    shards: Box<[CachePadded<Shard>]>,
    /// The engine running, for `ringcast_engine_info`.
    engine: std::sync::OnceLock<&'static str>,
    /// Log lines the non-blocking writer dropped, if the binary says.
    log_drops: std::sync::OnceLock<Box<dyn Fn() -> u64 + Send + Sync>>,
    cluster: std::sync::OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("totals", &self.totals())
            .finish()
    }
}

impl Metrics {
    /// Metrics with `shards` independent shards (at least one).
    pub(crate) fn new(shards: usize) -> Arc<Self> {
        Arc::new(Self {
            shards: (0..shards.max(1)).map(|_| CachePadded::default()).collect(),
            engine: std::sync::OnceLock::new(),
            log_drops: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// The shard that thread `index` writes. An index out of range is a
    /// bug: it fails loudly in debug builds, and wraps in release ones.
    pub(crate) fn shard(&self, index: usize) -> &Shard {
        debug_assert!(
            index < self.shards.len(),
            "metrics shard {index} of {}",
            self.shards.len()
        );
        &self.shards[index % self.shards.len()]
    }

    /// Reports, as `ringcast_log_lines_dropped_total`, the log lines that
    /// `dropped` says were lost because the log could not keep up.
    pub fn count_log_drops(&self, dropped: impl Fn() -> u64 + Send + Sync + 'static) {
        let _ = self.log_drops.set(Box::new(dropped));
    }

    /// Names the engine in `ringcast_engine_info`.
    pub(crate) fn set_engine(&self, engine: &'static str) {
        let _ = self.engine.set(engine);
    }

    /// Reports the cluster bridge's connection state, as `connected` reads
    /// it, from now on.
    pub(crate) fn set_cluster(&self, connected: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.cluster.set(Box::new(connected));
    }

    /// Sums every shard.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        let mut closed = 0;
        let mut slow_ended = 0;
        let (mut begun, mut ended) = (0, 0);
        for s in self.shards.iter() {
            begun += s.handshakes_begun.load(Relaxed);
            ended += s.handshakes_ended.load(Relaxed);
            t.handshake_timeouts += s.handshake_timeouts.load(Relaxed);
            t.protocol_errors += s.protocol_errors.load(Relaxed);
            t.tls_errors += s.tls_errors.load(Relaxed);
            t.slow_episodes += s.slow_started.load(Relaxed);
            slow_ended += s.slow_ended.load(Relaxed);
            t.slow_disconnects += s.slow_disconnected.load(Relaxed);
            t.held_nanos += s.held_nanos.load(Relaxed);
            t.accepted += s.accepted.load(Relaxed);
            closed += s.closed.load(Relaxed);
            t.received += s.received.load(Relaxed);
            t.bytes_received += s.bytes_received.load(Relaxed);
            t.sent += s.sent.load(Relaxed);
            t.bytes_sent += s.bytes_sent.load(Relaxed);
            t.batches += s.batches.load(Relaxed);
            t.own_bytes_sent += s.own_bytes_sent.load(Relaxed);
            t.dropped += s.dropped.load(Relaxed);
            t.lines_too_long += s.too_long.load(Relaxed);
            t.rejected += s.rejected.load(Relaxed);
            t.rejected_per_ip += s.rejected_per_ip.load(Relaxed);
            t.origin_rejected += s.origin_rejected.load(Relaxed);
            t.cluster_published += s.cluster_published.load(Relaxed);
            t.cluster_received += s.cluster_received.load(Relaxed);
            t.cluster_dropped += s.cluster_dropped.load(Relaxed);
            t.cluster_inbound_dropped += s.cluster_inbound_dropped.load(Relaxed);
            t.cluster_too_long += s.cluster_too_long.load(Relaxed);
            t.cluster_inbound_too_long += s.cluster_inbound_too_long.load(Relaxed);
        }
        t.pending_handshakes = begun.saturating_sub(ended);
        t.connected = t
            .accepted
            .saturating_sub(closed)
            .saturating_sub(t.pending_handshakes);
        t.slow_clients = t.slow_episodes.saturating_sub(slow_ended);
        t.cluster_connected = self.cluster.get().map(|connected| connected());
        t
    }
}

mod text;

#[cfg(test)]
mod tests;
