//! The Prometheus text exposition of [`Metrics`]: every counter and gauge
//! under its documented name, the build and engine info, and the standard
//! process metrics.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::Metrics;

impl Metrics {
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
