//! Unit tests of the counters and their Prometheus text.

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
            !name.contains("bytes") || name.ends_with("_bytes_total") || name.ends_with("_bytes"),
            "{name} names bytes without the unit last"
        );
    }
}
