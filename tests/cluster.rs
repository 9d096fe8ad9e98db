//! Nodes sharing lines through a real nats-server (Debian's `nats-server`
//! package; `.ci/run` installs it). Each test starts its own on a free
//! loopback port.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{Client, PATIENCE, TestServer, assert_per_sender_order, wait_for};
use ringcast::ClusterConfig;
use ringcast::EngineChoice;

/// A nats-server child on 127.0.0.1, killed on drop.
struct Nats {
    child: Child,
    port: u16,
}

impl Nats {
    /// Starts on `port`, or on a port of the kernel's choosing for 0.
    fn start(port: u16) -> Self {
        let port_arg = if port == 0 {
            "-1".to_string()
        } else {
            port.to_string()
        };
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port_arg])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server must be installed: apt-get install -y nats-server");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let port = loop {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "nats-server exited early"
            );
            if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                break rest.trim().rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Self { child, port }
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

on_both_engines!(a_held_line_never_delays_the_other_nodes);

fn a_held_line_never_delays_the_other_nodes(engine: EngineChoice) {
    // Node A holds a line for a client whose queue is full, for up to a
    // second; the lines it already read go to the other node first.
    let grace = Duration::from_secs(1);
    let nats = Nats::start(0);
    let a = node_with(engine, &nats, "node-a", |c| {
        c.threads = Some(1);
        c.queue = 1;
        c.max_line = 2 << 20;
        c.stall_timeout = grace;
    });
    let b = node(engine, &nats, "node-b");
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
