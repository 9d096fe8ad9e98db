//! Nodes sharing lines through a real nats-server (Debian's `nats-server`
//! package; `.ci/run` installs it). Each test starts its own on a free
//! loopback port.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{
    Client, PATIENCE, ServerProcess, TestServer, assert_per_sender_order, scratch_path, wait_for,
};
use ringcast::ClusterConfig;
use ringcast::EngineChoice;

/// Where a nats-server listens for clients.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listen {
    /// On 127.0.0.1 only (`-a 127.0.0.1`): its `INFO` names that address.
    Loopback,
    /// On every address, as by default: its `INFO` says `0.0.0.0`, and
    /// its `connect_urls` list the machine's other addresses.
    Any,
}

/// A nats-server child, reached on 127.0.0.1, killed on drop.
struct Nats {
    child: Child,
    port: u16,
    /// Its port for routes from other servers of a NATS cluster.
    route_port: Option<u16>,
}

impl Nats {
    /// Starts on `port`, or on a port of the kernel's choosing for 0.
    fn start(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// As [`Nats::start`], with more arguments for nats-server.
    fn start_with(port: u16, args: &[&str]) -> Self {
        Self::start_on(Listen::Loopback, port, args)
    }

    /// As [`Nats::start_with`], listening where `listen` says.
    fn start_on(listen: Listen, port: u16, args: &[&str]) -> Self {
        let port_arg = if port == 0 {
            "-1".to_string()
        } else {
            port.to_string()
        };
        let address: &[&str] = match listen {
            Listen::Loopback => &["-a", "127.0.0.1"],
            Listen::Any => &[],
        };
        let mut child = Command::new("nats-server")
            .args(address)
            .args(["-p", &port_arg])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server must be installed: apt-get install -y nats-server");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let routes = args.contains(&"--cluster");
        let (mut port, mut route_port) = (None, None);
        let after = |line: &str, what: &str| -> Option<u16> {
            let rest = line.split(what).nth(1)?;
            rest.trim().rsplit(':').next()?.parse().ok()
        };
        while port.is_none() || (routes && route_port.is_none()) {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "nats-server exited early"
            );
            port = port.or(after(&line, "Listening for client connections on "));
            route_port = route_port.or(after(&line, "Listening for route connections on "));
        }
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Self {
            child,
            port: port.unwrap(),
            route_port,
        }
    }

    /// Two nats-servers routed into one NATS cluster, each knowing of the
    /// other, so that a client of one learns the other's address.
    fn pair(listen: Listen) -> (Self, Self) {
        let cluster = [
            "--cluster",
            "nats://127.0.0.1:-1",
            "--cluster_name",
            "ringcast-test",
        ];
        let first = Self::start_on(listen, 0, &cluster);
        let route = format!("nats://127.0.0.1:{}", first.route_port.unwrap());
        let mut args = cluster.to_vec();
        args.extend(["--routes", &route]);
        let second = Self::start_on(listen, 0, &args);
        // A client of the first is told of the second once the route is
        // up and the servers have swapped their client addresses.
        wait_for("the NATS servers to route to each other", PATIENCE, || {
            (!first.urls_of(&second).is_empty()).then_some(())
        });
        (first, second)
    }

    /// The URLs this server's `INFO` gives clients for reaching `other`
    /// (its `connect_urls` on `other`'s port).
    fn urls_of(&self, other: &Nats) -> Vec<String> {
        let info = self.info();
        let info: serde_json::Value =
            serde_json::from_str(info.trim().strip_prefix("INFO ").unwrap()).unwrap();
        let port = format!(":{}", other.port);
        info["connect_urls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str())
            .filter(|u| u.ends_with(&port))
            .map(|u| format!("nats://{u}"))
            .collect()
    }

    /// The `INFO` line a client of this server gets first.
    fn info(&self) -> String {
        let stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        line
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(engine: EngineChoice, nats: &Nats, id: &str) -> TestServer {
    node_with(engine, nats, id, |_| {})
}

fn node_with(
    engine: EngineChoice,
    nats: &Nats,
    id: &str,
    tweak: impl FnOnce(&mut ringcast::Config),
) -> TestServer {
    let url = nats.url();
    let server = TestServer::start_with(engine, |c| {
        c.cluster = Some(ClusterConfig {
            url,
            subject: "test.lines".into(),
            node_id: Some(id.into()),
        });
        tweak(c);
    });
    server.wait_totals("the node to join the cluster", |t| {
        t.cluster_connected == Some(true)
    });
    server
}

/// Sends `probe` from `from` until `to` receives it, so both nodes are
/// subscribed; then both read up to a final marker so the streams are clean.
fn link(from: &mut Client, to: &mut Client, others: &mut [&mut Client]) {
    to.stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    wait_for("a line to cross the cluster", PATIENCE, || {
        from.send(b"probe\n");
        let mut buf = [0u8; 4096];
        matches!(std::io::Read::read(&mut to.stream, &mut buf), Ok(n) if n > 0).then_some(())
    });
    from.send(b"synced\n");
    for c in std::iter::once(from)
        .chain(std::iter::once(to))
        .chain(others.iter_mut().map(|c| &mut **c))
    {
        while c.read_lines(1) != vec![b"synced\n".to_vec()] {}
    }
}

on_both_engines!(
    a_held_line_never_delays_the_other_nodes,
    lines_from_other_nodes_obey_max_line,
    a_batch_over_max_payload_is_split_and_only_a_line_over_it_is_dropped,
    a_line_that_just_fits_max_payload_goes_and_one_byte_more_is_dropped,
);

fn engine_name(engine: EngineChoice) -> &'static str {
    match engine {
        EngineChoice::Uring => "uring",
        _ => "tokio",
    }
}

/// A node with a smaller --max-line drops, counts and logs the longer
/// lines of other nodes, and delivers the rest in order.
fn lines_from_other_nodes_obey_max_line(engine: EngineChoice) {
    require_tool!("nats-server", "nats-server");
    const MAX: usize = 100;
    let nats = Nats::start(0);
    let a = node(engine, &nats, "node-a");
    let b = node_with(engine, &nats, "node-b", |c| c.max_line = MAX);
    let mut publisher = Client::connect(a.addr);
    let mut reader = Client::connect(b.addr);
    a.wait_connected(1);
    b.wait_connected(1);
    link(&mut publisher, &mut reader, &mut []);
    let line = |byte: u8, len: usize| [vec![byte; len], b"\n".to_vec()].concat();
    let sent = [
        line(b'a', MAX),
        line(b'b', MAX + 1),
        line(b'c', 1),
        line(b'd', 5 * MAX),
        line(b'e', MAX),
    ];
    publisher.send(&sent.concat());
    publisher.send(b"end\n");
    // Only the lines within node B's --max-line, in order.
    assert_eq!(
        reader.read_lines(4),
        vec![
            sent[0].clone(),
            sent[2].clone(),
            sent[4].clone(),
            b"end\n".to_vec()
        ]
    );
    b.wait_totals("the long lines to be counted", |t| {
        t.cluster_inbound_too_long == 2
    });
    // Node A's own clients got them all.
    assert_eq!(publisher.read_lines(5), sent.to_vec());
}

/// With a NATS server whose max_payload is 1 KiB, a batch of 3 KiB
/// reaches the other node whole, in several messages; a line longer than
/// max_payload alone is dropped, counted and logged, and the lines around
/// it still go.
fn a_batch_over_max_payload_is_split_and_only_a_line_over_it_is_dropped(engine: EngineChoice) {
    require_tool!("nats-server", "nats-server");
    let config = scratch_path("nats.conf");
    std::fs::write(&config, "max_payload: 1024\n").unwrap();
    let nats = Nats::start_with(0, &["-c", config.to_str().unwrap()]);
    assert!(
        nats.info().contains("\"max_payload\":1024"),
        "{}",
        nats.info()
    );
    let a = ServerProcess::start(&[
        "--engine",
        engine_name(engine),
        "--cluster",
        &nats.url(),
        "--cluster-subject",
        "test.lines",
        "--node-id",
        "node-a",
    ]);
    let b = node(engine, &nats, "node-b");
    let mut publisher = a.connect(1).remove(0);
    let mut reader = Client::connect(b.addr);
    b.wait_connected(1);
    link(&mut publisher, &mut reader, &mut []);
    let short: Vec<Vec<u8>> = (0..30)
        .map(|n| format!("s0 {n} {}\n", "x".repeat(90)).into_bytes())
        .collect();
    let mut sent = short[..20].concat();
    sent.extend(vec![b'L'; 2000]);
    sent.push(b'\n');
    sent.extend(short[20..].concat());
    publisher.send(&sent);
    assert_eq!(reader.read_lines(30), short);
    wait_for("the long line to be counted", PATIENCE, || {
        a.scrape()
            .lines()
            .any(|l| l == "ringcast_cluster_too_long_total 1")
            .then_some(())
    });
    let metrics = a.scrape();
    assert!(
        metrics
            .lines()
            .any(|l| l == "ringcast_cluster_dropped_total 0"),
        "{metrics}"
    );
    wait_for("a warning about the long line", PATIENCE, || {
        let log = a.log.lock().unwrap();
        log.iter()
            .any(|(_, l)| l.contains("WARN") && l.contains("max_payload=1024"))
            .then_some(())
    });
    let _ = std::fs::remove_file(config);
}

/// NATS counts a message's headers against `max_payload`; the node leaves
/// room for exactly what async-nats sends, so the limit holds to the byte:
/// a line of exactly the room left reaches the other node, one a byte
/// longer is dropped for the other nodes and counted, and no publish fails.
fn a_line_that_just_fits_max_payload_goes_and_one_byte_more_is_dropped(engine: EngineChoice) {
    require_tool!("nats-server", "nats-server");
    const MAX_PAYLOAD: usize = 1024;
    let config = scratch_path("nats.conf");
    std::fs::write(&config, format!("max_payload: {MAX_PAYLOAD}\n")).unwrap();
    let nats = Nats::start_with(0, &["-c", config.to_str().unwrap()]);
    let _ = std::fs::remove_file(config);
    let a = node(engine, &nats, "node-a");
    let b = node(engine, &nats, "node-b");
    let mut publisher = Client::connect(a.addr);
    let mut reader = Client::connect(b.addr);
    a.wait_connected(1);
    b.wait_connected(1);
    link(&mut publisher, &mut reader, &mut []);
    // The header block as it goes on the wire (async-nats's HPUB), with
    // the 16 hex digits of the process's nonce.
    let headers =
        "NATS/1.0\r\nRingcast-Node: node-a\r\nRingcast-Instance: 0123456789abcdef\r\n\r\n";
    let room = MAX_PAYLOAD - headers.len();
    let line = |byte: u8, with_newline: usize| {
        let mut line = vec![byte; with_newline - 1];
        line.push(b'\n');
        line
    };
    let before = a.totals();
    // Alone, so that it is a batch of its own, exactly the room.
    let fits = line(b'f', room);
    publisher.send(&fits);
    let left = a.wait_totals("the line to leave for NATS", |t| {
        t.cluster_published + t.cluster_too_long + t.cluster_dropped
            > before.cluster_published + before.cluster_too_long + before.cluster_dropped
    });
    assert_eq!(
        (left.cluster_too_long, left.cluster_dropped),
        (before.cluster_too_long, before.cluster_dropped),
        "a line of exactly the room left was not published"
    );
    assert_eq!(reader.read_lines(1), vec![fits.clone()]);
    // In a batch with a line on either side, so that the batch is split.
    let over = line(b'o', room + 1);
    publisher.send(&[b"before\n".as_slice(), &over, b"after\n"].concat());
    assert_eq!(
        reader.read_lines(2),
        vec![b"before\n".to_vec(), b"after\n".to_vec()]
    );
    let after = a.wait_totals("the long line to be counted", |t| {
        t.cluster_too_long + t.cluster_dropped > before.cluster_too_long + before.cluster_dropped
    });
    assert_eq!(
        (after.cluster_too_long, after.cluster_dropped),
        (before.cluster_too_long + 1, before.cluster_dropped),
        "the line a byte too long went to NATS, and the publish failed"
    );
    // Node A's own clients got every line.
    assert_eq!(
        publisher.read_lines(4),
        vec![fits, b"before\n".to_vec(), over, b"after\n".to_vec()]
    );
}

/// After a failover to another server of a NATS cluster, the log names the
/// server the node is now connected to, not the one that died.
#[test]
fn after_a_failover_the_log_names_the_server_connected_to() {
    failover_is_logged(Listen::Loopback);
}

/// As above, with nats-servers listening on every address, as they do by
/// default: their `INFO` then says `0.0.0.0`, which names none of them.
/// The log names the URL the node reached the server at instead.
#[test]
fn after_a_failover_between_servers_on_every_address_the_log_names_a_url_of_the_live_one() {
    failover_is_logged(Listen::Any);
}

fn failover_is_logged(listen: Listen) {
    require_tool!("nats-server", "nats-server");
    let (first, second) = Nats::pair(listen);
    // The node is told the first's URL; it learns the second's from the
    // first's INFO, and can reach it only at one of those.
    let first_url = first.url();
    let second_urls = first.urls_of(&second);
    let node = ServerProcess::start(&["--cluster", &first_url]);
    let connected = || -> Vec<String> {
        let log = node.log.lock().unwrap();
        node.startup
            .iter()
            .cloned()
            .chain(log.iter().map(|(_, l)| l.clone()))
            .filter(|l| l.contains("cluster: connected to NATS"))
            .collect()
    };
    let lines = wait_for("the node to connect", PATIENCE, || {
        Some(connected()).filter(|l| !l.is_empty())
    });
    assert!(
        lines[0].contains(&format!("server={first_url} ")),
        "{lines:?}"
    );
    // One connected line a second at most: the next one may come now.
    std::thread::sleep(Duration::from_millis(1100));
    drop(first);
    let line = wait_for("a connected line after the failover", PATIENCE, || {
        connected().get(lines.len()).cloned()
    });
    assert!(
        second_urls
            .iter()
            .any(|url| line.contains(&format!("server={url} "))),
        "after failing over to one of {second_urls:?}, the log says: {line}"
    );
    assert!(
        !line.contains(&first_url) && !line.contains("0.0.0.0"),
        "{line}"
    );
}

fn a_held_line_never_delays_the_other_nodes(engine: EngineChoice) {
    require_tool!("nats-server", "nats-server");
    // Node A holds a line for a client whose queue is full, for up to a
    // second; the lines it already read go to the other node first.
    let grace = Duration::from_secs(1);
    let nats = Nats::start(0);
    let a = node_with(engine, &nats, "node-a", |c| {
        c.threads = Some(1);
        c.queue = 1;
        c.max_line = 2 << 20;
        c.grace = grace;
    });
    // Node B takes the big line too: lines over its --max-line are dropped.
    let b = node_with(engine, &nats, "node-b", |c| c.max_line = 2 << 20);
    let _stalled = Client::connect_small_rcvbuf(a.addr);
    let mut publisher = Client::connect(a.addr);
    let mut reader = Client::connect(b.addr);
    a.wait_connected(2);
    b.wait_connected(1);
    link(&mut publisher, &mut reader, &mut []);
    // A line far bigger than the stalled client's socket buffers fills its
    // queue of one for good (and within NATS's 1 MB max_payload).
    let mut big = vec![b'x'; 512 << 10];
    big.push(b'\n');
    publisher.send(&big);
    reader.read_lines(1);
    publisher.read_lines(1);
    let lines: Vec<u8> = (0..20)
        .flat_map(|n| format!("s0 {n} a short line\n").into_bytes())
        .collect();
    let start = std::time::Instant::now();
    publisher.send(&lines);
    let got = reader.read_lines(20);
    let took = start.elapsed();
    let episodes = a.totals().slow_episodes;
    assert_eq!(got.concat(), lines);
    assert_eq!(
        episodes, 0,
        "the other node got the lines only after the held client's grace ran out"
    );
    assert!(
        took < grace / 2,
        "the other node got the lines after {took:?}: the wait for a held client delayed them"
    );
}

#[test]
fn a_line_reaches_every_client_on_both_nodes_exactly_once() {
    require_tool!("nats-server", "nats-server");
    let nats = Nats::start(0);
    let a = node(EngineChoice::Uring, &nats, "node-a");
    let b = node(EngineChoice::Tokio, &nats, "node-b");
    let mut a1 = Client::connect(a.addr);
    let mut a2 = Client::connect(a.addr);
    let mut b1 = Client::connect(b.addr);
    a.wait_connected(2);
    b.wait_connected(1);
    link(&mut a1, &mut b1, &mut [&mut a2]);
    let payload: &[u8] = b"across \r\0\xff nodes\n";
    a1.send(payload);
    b1.send(b"and back\n");
    for c in [&mut a1, &mut a2, &mut b1] {
        let mut got = c.read_lines(2);
        got.sort();
        assert_eq!(
            got,
            vec![b"across \r\0\xff nodes\n".to_vec(), b"and back\n".to_vec()]
        );
        assert!(
            c.read_available(Duration::from_millis(300)).is_empty(),
            "a line arrived twice"
        );
    }
}

#[test]
fn two_nodes_given_one_id_still_hear_each_other_exactly_once() {
    require_tool!("nats-server", "nats-server");
    // Cloned machines share a hostname, so the default ids can clash.
    let nats = Nats::start(0);
    let a = node(EngineChoice::Uring, &nats, "twin");
    let b = node(EngineChoice::Tokio, &nats, "twin");
    let mut a1 = Client::connect(a.addr);
    let mut b1 = Client::connect(b.addr);
    a.wait_connected(1);
    b.wait_connected(1);
    link(&mut a1, &mut b1, &mut []);
    a1.send(b"from a\n");
    b1.send(b"from b\n");
    for c in [&mut a1, &mut b1] {
        let mut got = c.read_lines(2);
        got.sort();
        assert_eq!(got, vec![b"from a\n".to_vec(), b"from b\n".to_vec()]);
        assert!(
            c.read_available(Duration::from_millis(300)).is_empty(),
            "a line arrived twice"
        );
    }
}

#[test]
fn every_client_on_both_nodes_gets_every_line_in_order() {
    require_tool!("nats-server", "nats-server");
    const LINES: usize = 2000;
    let nats = Nats::start(0);
    let a = node(EngineChoice::Uring, &nats, "node-a");
    let b = node(EngineChoice::Uring, &nats, "node-b");
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(a.addr)).collect();
    clients.extend((0..3).map(|_| Client::connect(b.addr)));
    a.wait_connected(3);
    b.wait_connected(3);
    {
        let (left, right) = clients.split_at_mut(3);
        let (a0, a_rest) = left.split_first_mut().unwrap();
        let (b0, b_rest) = right.split_first_mut().unwrap();
        let mut others: Vec<&mut Client> = a_rest.iter_mut().chain(b_rest.iter_mut()).collect();
        link(a0, b0, &mut others);
    }
    // Publishers 0 and 1 on node A, 2 and 3 on node B.
    let barrier = Arc::new(Barrier::new(clients.len()));
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let barrier = Arc::clone(&barrier);
            let sender = match i {
                0 | 1 => Some(i),
                3 | 4 => Some(i - 1),
                _ => None,
            };
            std::thread::spawn(move || {
                barrier.wait();
                if let Some(s) = sender {
                    let mut writer = c.try_clone();
                    std::thread::spawn(move || {
                        let all: Vec<u8> = (0..LINES)
                            .flat_map(|n| format!("s{s} {n}\n").into_bytes())
                            .collect();
                        writer.send(&all);
                    });
                }
                let lines = c.read_lines(4 * LINES);
                assert!(
                    c.read_available(Duration::from_millis(300)).is_empty(),
                    "extra lines"
                );
                lines
            })
        })
        .collect();
    for h in handles {
        assert_per_sender_order(&h.join().unwrap(), 4, LINES);
    }
    assert_eq!(a.totals().cluster_dropped + b.totals().cluster_dropped, 0);
}

#[test]
fn local_delivery_survives_a_nats_restart_and_cross_node_delivery_resumes() {
    require_tool!("nats-server", "nats-server");
    let nats = Nats::start(0);
    let port = nats.port;
    let a = node(EngineChoice::Uring, &nats, "node-a");
    let b = node(EngineChoice::Tokio, &nats, "node-b");
    let mut a1 = Client::connect(a.addr);
    let mut a2 = Client::connect(a.addr);
    let mut b1 = Client::connect(b.addr);
    a.wait_connected(2);
    b.wait_connected(1);
    link(&mut a1, &mut b1, &mut [&mut a2]);
    drop(nats);
    a.wait_totals("node A to notice", |t| t.cluster_connected == Some(false));
    b.wait_totals("node B to notice", |t| t.cluster_connected == Some(false));
    // Local broadcast goes on; what could not be forwarded is counted.
    a1.send(b"while nats is down\n");
    assert_eq!(a2.read_lines(1), vec![b"while nats is down\n".to_vec()]);
    assert_eq!(a1.read_lines(1), vec![b"while nats is down\n".to_vec()]);
    a.wait_totals("the unforwarded line to be counted", |t| {
        t.cluster_dropped >= 1
    });
    // Back on the same port: both nodes reconnect by themselves.
    let _nats = Nats::start(port);
    a.wait_totals("node A to reconnect", |t| t.cluster_connected == Some(true));
    b.wait_totals("node B to reconnect", |t| t.cluster_connected == Some(true));
    link(&mut a1, &mut b1, &mut [&mut a2]);
    b1.send(b"after the restart\n");
    for c in [&mut a1, &mut a2, &mut b1] {
        assert_eq!(c.read_lines(1), vec![b"after the restart\n".to_vec()]);
    }
}
