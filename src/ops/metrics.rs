//! Counters, kept per core and summed when scraped, and the Prometheus endpoint.
//!
//! Every counter lives in a shard that one thread writes (a core on the
//! `uring` engine, a worker thread on `tokio`), padded to its own cache line,
//! so the per-message path never touches a line another core writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::policy::admission::limits::Rejections;
use crossbeam_utils::CachePadded;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

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

    /// The Prometheus text exposition of the current totals.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Collect(Arc::clone(self))));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

#[derive(Debug)]
struct Collect(Arc<Metrics>);

impl Collector for Collect {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = self.0.totals();
        let info = ConstGauge::new(1i64);
        let labels = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("revision", crate::COMMIT),
        ];
        let mut family = encoder.encode_descriptor(
            "ringcast_build_info",
            "The running build (revision: its git commit); always 1",
            None,
            info.metric_type(),
        )?;
        info.encode(family.encode_family(&labels)?)?;
        let engine = [("engine", self.0.engine.get().copied().unwrap_or("none"))];
        let mut family = encoder.encode_descriptor(
            "ringcast_engine_info",
            "The engine running (uring or tokio); always 1",
            None,
            info.metric_type(),
        )?;
        info.encode(family.encode_family(&engine)?)?;
        if let Some(p) = crate::ops::process::read() {
            encode_process(&mut encoder, &p)?;
        }
        let gauges = [
            (
                "ringcast_connected_clients",
                "Clients connected now (WebSocket clients once their handshake completed)",
                t.connected,
            ),
            (
                "ringcast_pending_handshakes",
                "WebSocket connections whose handshake is pending",
                t.pending_handshakes,
            ),
            (
                "ringcast_slow_clients",
                "Clients dropping messages now: their queue and socket buffer are full",
                t.slow_clients,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        // The text encoder appends `_total` to counter names.
        let counters = [
            (
                "ringcast_connections_accepted",
                "Connections accepted",
                t.accepted,
            ),
            (
                "ringcast_messages_received",
                "Complete messages received from clients",
                t.received,
            ),
            (
                "ringcast_messages_sent",
                "Messages handed to the kernel, once per receiver",
                t.sent,
            ),
            (
                "ringcast_messages_dropped",
                "Messages dropped for slow receivers, once per receiver",
                t.dropped,
            ),
            (
                "ringcast_slow_client_episodes",
                "Times a client started dropping messages",
                t.slow_episodes,
            ),
            (
                "ringcast_slow_disconnects",
                "Clients disconnected for dropping messages for --slow-disconnect",
                t.slow_disconnects,
            ),
            (
                "ringcast_write_batches",
                "Sends that handed queued messages to a client's socket",
                t.batches,
            ),
            (
                "ringcast_lines_too_long",
                "Clients disconnected for a line over --max-line",
                t.lines_too_long,
            ),
            (
                "ringcast_log_lines_dropped",
                "Log lines dropped because the log could not keep up (a full stderr pipe)",
                self.0.log_drops.get().map_or(0, |dropped| dropped()),
            ),
            (
                "ringcast_connections_rejected",
                "Connections closed at once because --max-clients were connected, or as many handshakes were pending",
                t.rejected,
            ),
            (
                "ringcast_connections_rejected_per_ip",
                "Connections closed at once because --max-clients-per-ip from their address were connected",
                t.rejected_per_ip,
            ),
            (
                "ringcast_ws_origin_rejected",
                "WebSocket handshakes answered 403 because --ws-origin does not allow their Origin",
                t.origin_rejected,
            ),
            (
                "ringcast_handshake_timeouts",
                "TLS and WebSocket connections closed for not completing their handshake within --handshake-timeout",
                t.handshake_timeouts,
            ),
            (
                "ringcast_websocket_protocol_errors",
                "WebSocket clients closed for breaking the protocol (close code 1002, 1007 or 1009)",
                t.protocol_errors,
            ),
            (
                "ringcast_tls_errors",
                "TLS clients closed because their TLS session failed: a failed handshake (a client that does not trust the certificate, or does not speak TLS), a bad record",
                t.tls_errors,
            ),
        ];
        let cluster = [
            (
                "ringcast_cluster_published",
                "Local lines published to the cluster",
                t.cluster_published,
            ),
            (
                "ringcast_cluster_received",
                "Lines from other nodes delivered here",
                t.cluster_received,
            ),
            (
                "ringcast_cluster_dropped",
                "Local lines not forwarded to the cluster (NATS unreachable or slow)",
                t.cluster_dropped,
            ),
            (
                "ringcast_cluster_inbound_dropped",
                "Lines from other nodes dropped because local delivery was slower than the cluster",
                t.cluster_inbound_dropped,
            ),
            (
                "ringcast_cluster_too_long",
                "Local lines not forwarded to the cluster because they are longer than NATS's max_payload",
                t.cluster_too_long,
            ),
            (
                "ringcast_cluster_inbound_too_long",
                "Lines from other nodes dropped because they are longer than --max-line",
                t.cluster_inbound_too_long,
            ),
        ];
        if let Some(connected) = t.cluster_connected {
            let gauge = ConstGauge::new(i64::from(connected));
            gauge.encode(encoder.encode_descriptor(
                "ringcast_cluster_connected",
                "1 while the cluster bridge is connected to NATS",
                None,
                gauge.metric_type(),
            )?)?;
        }
        // An f64 holds whole nanoseconds exactly up to 104 days of waiting.
        let held = ConstCounter::new(t.held_nanos as f64 / 1e9);
        held.encode(encoder.encode_descriptor(
            "ringcast_hold_wait",
            "Time deliverers spent waiting for clients that were behind (see --grace)",
            Some(&Unit::Seconds),
            held.metric_type(),
        )?)?;
        // With their unit: `ringcast_received_bytes_total`.
        let bytes = [
            (
                "ringcast_received",
                "Bytes of complete messages received",
                t.bytes_received,
            ),
            (
                "ringcast_sent",
                "Bytes of messages handed to the kernel",
                t.bytes_sent,
            ),
            (
                "ringcast_own_sent",
                "Bytes the server sent of its own: WebSocket handshake answers, pongs and closes, and HTTP answers on --ws",
                t.own_bytes_sent,
            ),
        ];
        for (name, help, value) in bytes {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Bytes),
                counter.metric_type(),
            )?)?;
        }
        let cluster_on = t.cluster_connected.is_some();
        for (name, help, value) in counters
            .into_iter()
            .chain(cluster.into_iter().filter(|_| cluster_on))
        {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// The standard process metrics, as Prometheus's client libraries name
/// them.
fn encode_process(
    encoder: &mut DescriptorEncoder,
    p: &crate::ops::process::Process,
) -> Result<(), std::fmt::Error> {
    let gauges = [
        (
            "process_resident_memory",
            "Resident memory size",
            Some(Unit::Bytes),
            p.resident_bytes,
        ),
        (
            "process_virtual_memory",
            "Virtual memory size",
            Some(Unit::Bytes),
            p.virtual_bytes,
        ),
        (
            "process_open_fds",
            "Open file descriptors",
            None,
            p.open_fds,
        ),
        (
            "process_max_fds",
            "Most open file descriptors allowed (the soft RLIMIT_NOFILE)",
            None,
            p.max_fds,
        ),
    ];
    for (name, help, unit, value) in gauges {
        let gauge = ConstGauge::new(value);
        gauge.encode(encoder.encode_descriptor(
            name,
            help,
            unit.as_ref(),
            gauge.metric_type(),
        )?)?;
    }
    let start = ConstGauge::new(p.start_time_seconds);
    start.encode(encoder.encode_descriptor(
        "process_start_time",
        "Start time of the process since the Unix epoch",
        Some(&Unit::Seconds),
        start.metric_type(),
    )?)?;
    let cpu = ConstCounter::new(p.cpu_seconds);
    cpu.encode(encoder.encode_descriptor(
        "process_cpu",
        "User and system CPU time spent",
        Some(&Unit::Seconds),
        cpu.metric_type(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_across_shards() {
        let m = Metrics::new(3);
        m.shard(0).accepted();
        m.shard(1).accepted();
        m.shard(2).accepted();
        m.shard(1).closed();
        m.shard(0).received(1, 10);
        m.shard(2).sent(3, 30, 1);
        m.shard(0).sent(1, 10, 1);
        m.shard(1).dropped(1);
        m.shard(0).slow_started();
        m.shard(1).slow_started();
        m.shard(1).slow_ended();
        m.shard(2).too_long();
        // A WebSocket connection pending its handshake is not a client.
        m.shard(0).accepted();
        m.shard(0).handshake_begun();
        assert_eq!(
            (m.totals().connected, m.totals().pending_handshakes),
            (2, 1)
        );
        m.shard(1).handshake_ended();
        m.shard(1).handshake_timed_out();
        m.shard(1).closed();
        let t = m.totals();
        assert_eq!(t.handshake_timeouts, 1);
        assert_eq!(t.connected, 2);
        assert_eq!(t.accepted, 4);
        assert_eq!((t.received, t.bytes_received), (1, 10));
        assert_eq!((t.sent, t.bytes_sent, t.batches), (4, 40, 2));
        assert_eq!((t.dropped, t.lines_too_long), (1, 1));
        assert_eq!((t.slow_clients, t.slow_episodes), (1, 2));
    }

    #[test]
    fn renders_the_documented_names() {
        let m = Metrics::new(1);
        m.set_engine("uring");
        m.shard(0).accepted();
        m.shard(0).received(2, 20);
        m.shard(0).sent(4, 40, 1);
        m.shard(0).own_sent(5);
        let text = m.render();
        for line in [
            "ringcast_connected_clients 1",
            "ringcast_connections_accepted_total 1",
            "ringcast_messages_received_total 2",
            "ringcast_messages_sent_total 4",
            "ringcast_messages_dropped_total 0",
            "ringcast_received_bytes_total 20",
            "ringcast_sent_bytes_total 40",
            "ringcast_write_batches_total 1",
            "ringcast_lines_too_long_total 0",
            "ringcast_slow_clients 0",
            "ringcast_slow_client_episodes_total 0",
            "ringcast_slow_disconnects_total 0",
            "ringcast_connections_rejected_total 0",
            "ringcast_pending_handshakes 0",
            "ringcast_handshake_timeouts_total 0",
            "ringcast_connections_rejected_per_ip_total 0",
            "ringcast_ws_origin_rejected_total 0",
            "ringcast_websocket_protocol_errors_total 0",
            "ringcast_tls_errors_total 0",
            "ringcast_own_sent_bytes_total 5",
            "ringcast_engine_info{engine=\"uring\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Prometheus's own exporters' labels; the engine has its own metric.
        let build = text
            .lines()
            .find(|l| l.starts_with("ringcast_build_info{"))
            .expect("build info");
        assert!(
            build.contains("revision=\"") && build.contains("version=\""),
            "{build}"
        );
        assert!(
            !build.contains("commit=") && !build.contains("engine="),
            "{build}"
        );
        // Byte counters carry their unit: no name without it is left.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap_or_default();
            assert!(
                !name.contains("bytes")
                    || name.ends_with("_bytes_total")
                    || name.ends_with("_bytes"),
                "{name} names bytes without the unit last"
            );
        }
    }
}
