//! Behaviour tests: a real server on 127.0.0.1:0 and real TCP clients, the
//! same scenario on both engines.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::Shutdown;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, TestServer, assert_per_sender_order, connect_all, wait_for};
use ringcast::EngineChoice;

on_both_engines!(
    exact_bytes_reach_every_client_including_the_sender,
    per_sender_order_holds_with_concurrent_senders,
    a_burst_from_ten_clients_loses_nothing,
    a_stalled_client_never_holds_back_fast_ones,
    connected_gauge_follows_churn_and_resets,
    a_partial_line_from_a_departing_client_is_discarded,
    an_overlong_line_disconnects_only_its_sender,
    lines_just_before_an_overlong_line_reach_every_client,
    shutdown_flushes_queued_output_then_closes,
);

fn exact_bytes_reach_every_client_including_the_sender(engine: EngineChoice) {
    let server = TestServer::start(engine);
    let mut clients = connect_all(&server, 3);
    let payload: &[u8] = b"hello\n\r\0\xff\xfe\x80 not utf-8\r\n\n\ttab\n";
    clients[1].send(payload);
    for c in &mut clients {
        let got: Vec<u8> = c.read_lines(4).concat();
        assert_eq!(got, payload);
    }
    let t = server.wait_totals("counters settle", |t| t.sent == 12);
    assert_eq!((t.received, t.bytes_received), (4, payload.len() as u64));
    assert_eq!(t.bytes_sent, 3 * payload.len() as u64);
    assert_eq!(t.dropped, 0);
}

fn per_sender_order_holds_with_concurrent_senders(engine: EngineChoice) {
    const SENDERS: usize = 4;
    const LINES: usize = 500;
    let server = TestServer::start(engine);
    // Senders on both cores, so that lines cross between them: connect
    // until each core has two of the four (tokio has no cores to tell apart).
    let mut by_core: [Vec<Client>; 2] = [Vec::new(), Vec::new()];
    let mut spare = Vec::new();
    wait_for("two senders on each core", PATIENCE, || {
        let c = Client::connect(server.addr);
        let core = match (engine, server.client_info(&c).core) {
            (EngineChoice::Tokio, _) => by_core[0].len() / 2,
            (_, core) => core,
        };
        if by_core[core].len() < 2 {
            by_core[core].push(c);
        } else {
            spare.push(c);
        }
        by_core.iter().all(|c| c.len() == 2).then_some(())
    });
    let [a, b] = by_core;
    let mut clients: Vec<Client> = a.into_iter().chain(b).collect();
    clients.extend(spare.into_iter().take(4));
    clients.extend(connect_all(&server, 8 - clients.len()));
    let barrier = Arc::new(Barrier::new(clients.len()));
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                if i < SENDERS {
                    let mut writer = c.stream.try_clone().unwrap();
                    std::thread::spawn(move || {
                        // Several writes of uneven size, so lines straddle reads.
                        let all: Vec<u8> = (0..LINES)
                            .flat_map(|n| format!("s{i} {n} payload\n").into_bytes())
                            .collect();
                        for chunk in all.chunks(777) {
                            std::io::Write::write_all(&mut writer, chunk).unwrap();
                        }
                    });
                }
                c.read_lines(SENDERS * LINES)
            })
        })
        .collect();
    for h in handles {
        assert_per_sender_order(&h.join().unwrap(), SENDERS, LINES);
    }
    assert_eq!(server.totals().dropped, 0);
}

fn a_burst_from_ten_clients_loses_nothing(engine: EngineChoice) {
    const CLIENTS: usize = 10;
    const LINES: usize = 100;
    let server = TestServer::start(engine);
    let clients = connect_all(&server, CLIENTS);
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let burst: Vec<u8> = (0..LINES)
                    .flat_map(|n| format!("s{i} {n}\n").into_bytes())
                    .collect();
                barrier.wait();
                c.send(&burst); // all 100 lines in a single write
                c.read_lines(CLIENTS * LINES)
            })
        })
        .collect();
    for h in handles {
        assert_per_sender_order(&h.join().unwrap(), CLIENTS, LINES);
    }
    assert_eq!(
        server.totals().dropped,
        0,
        "a client that keeps reading lost messages"
    );
}

fn a_stalled_client_never_holds_back_fast_ones(engine: EngineChoice) {
    const LINES: usize = 4000;
    const FAST: usize = 3;
    let server = TestServer::start(engine);
    let mut stalled = Client::connect_small_rcvbuf(server.addr);
    server.wait_connected(1);
    let fast = connect_all(&server, FAST);
    let mut publisher = Client::connect(server.addr);
    server.wait_connected(FAST as u64 + 2);
    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut c| std::thread::spawn(move || c.read_lines(LINES)))
        .collect();
    // The publisher reads its own echo too, so it is a fast client as well.
    let mut echo = publisher.try_clone();
    let echo_reader = std::thread::spawn(move || echo.read_lines(LINES));
    let pad = "x".repeat(480);
    let flood: Vec<u8> = (0..LINES)
        .flat_map(|n| format!("s0 {n} {pad}\n").into_bytes())
        .collect();
    publisher.send(&flood);
    for r in readers {
        assert_per_sender_order(&r.join().unwrap(), 1, LINES);
    }
    assert_per_sender_order(&echo_reader.join().unwrap(), 1, LINES);
    let t = server.wait_totals("drops for the stalled client", |t| t.dropped > 0);
    // Every delivery is sent, dropped, or still queued for the stalled
    // client: its queue plus the write it has in flight.
    let in_flight = (t.received * (FAST as u64 + 2)).checked_sub(t.sent + t.dropped);
    assert!(
        in_flight.is_some_and(|n| n <= 100 + 65536 / 480 + 1),
        "counters do not add up: {t:?}"
    );
    // Resumed, the stalled client gets what was queued for it, in order.
    let got = stalled.read_lines(100);
    let mut last = None;
    for line in &got {
        let seq: usize = std::str::from_utf8(line)
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            last.is_none_or(|l| seq > l),
            "stalled client saw {seq} after {last:?}"
        );
        last = Some(seq);
    }
}

fn connected_gauge_follows_churn_and_resets(engine: EngineChoice) {
    let server = TestServer::start(engine);
    let reflects = |n: u64, what: &str| {
        let start = Instant::now();
        server.wait_connected(n);
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(100),
            "gauge took {took:?} to reflect {what}"
        );
    };
    let mut clients = Vec::new();
    for _ in 0..5 {
        for _ in 0..10 {
            clients.push(Client::connect(server.addr));
        }
        reflects(clients.len() as u64, "connects");
        // Four leave: two close cleanly, two reset (SO_LINGER 0 sends RST).
        for i in 0..4 {
            let c = clients.pop().unwrap();
            if i % 2 == 0 {
                c.stream.shutdown(Shutdown::Both).unwrap();
            } else {
                socket2::SockRef::from(&c.stream)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            }
            drop(c);
        }
        reflects(clients.len() as u64, "disconnects and resets");
    }
    // Resets while the server is writing to them.
    let mut talker = Client::connect(server.addr);
    let resetters: Vec<Client> = (0..5)
        .map(|_| Client::connect_small_rcvbuf(server.addr))
        .collect();
    server.wait_connected(clients.len() as u64 + 6);
    talker.send("y".repeat(1000).as_bytes());
    talker.send(b"\n");
    for _ in 0..200 {
        talker.send(format!("{}\n", "z".repeat(1000)).as_bytes());
    }
    for c in resetters {
        socket2::SockRef::from(&c.stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    server.wait_connected(clients.len() as u64 + 1);
    drop(talker);
    drop(clients);
    server.wait_connected(0);
}

fn a_partial_line_from_a_departing_client_is_discarded(engine: EngineChoice) {
    let server = TestServer::start(engine);
    let mut clients = connect_all(&server, 3);
    let mut leaver = clients.pop().unwrap();
    leaver.send(b"complete\npartial with no newline");
    for c in &mut clients {
        assert_eq!(c.read_lines(1), vec![b"complete\n".to_vec()]);
    }
    drop(leaver);
    server.wait_connected(2);
    clients[1].send(b"after\n");
    // Had the partial line gone out, it would prefix "after" here.
    for c in &mut clients {
        assert_eq!(c.read_lines(1), vec![b"after\n".to_vec()]);
    }
    assert_eq!(server.totals().received, 2);
}

fn an_overlong_line_disconnects_only_its_sender(engine: EngineChoice) {
    let server = TestServer::start_with(engine, |c| c.max_line = 1024);
    let mut clients = connect_all(&server, 3);
    let mut offender = clients.pop().unwrap();
    // Exactly at the limit is fine.
    let mut ok_line = vec![b'a'; 1024];
    ok_line.push(b'\n');
    offender.send(&ok_line);
    assert_eq!(clients[0].read_lines(1), vec![ok_line.clone()]);
    offender.send(&vec![b'b'; 2000]);
    assert!(
        offender.wait_closed_by_server(),
        "offender should be disconnected"
    );
    let t = server.wait_totals("the offender is counted and gone", |t| {
        t.lines_too_long == 1 && t.connected == 2
    });
    assert_eq!(t.received, 1);
    clients[1].send(b"still here\n");
    assert_eq!(clients[0].read_lines(1), vec![b"still here\n".to_vec()]);
    assert_eq!(
        clients[1].read_lines(2),
        vec![ok_line, b"still here\n".to_vec()]
    );
}

/// The complete lines that share a read with an overlong one still reach
/// every client, on every core. With nothing else sent afterwards, nothing
/// but the departing reader can hand them on to the other cores.
fn lines_just_before_an_overlong_line_reach_every_client(engine: EngineChoice) {
    // Enough clients that some land on each core: SO_REUSEPORT spreads
    // them by hash, so all 16 on the offender's core has odds of 2^-16.
    const READERS: usize = 16;
    let server = TestServer::start_with(engine, |c| c.max_line = 1024);
    let mut readers = connect_all(&server, READERS + 1);
    let mut offender = readers.pop().unwrap();
    let mut last_words = b"last words 1\nlast words 2\n".to_vec();
    last_words.extend(vec![b'x'; 2000]);
    offender.send(&last_words);
    assert!(
        offender.wait_closed_by_server(),
        "offender not disconnected"
    );
    for (i, reader) in readers.iter_mut().enumerate() {
        assert_eq!(
            reader.read_lines(2),
            vec![b"last words 1\n".to_vec(), b"last words 2\n".to_vec()],
            "reader {i}"
        );
    }
    let t = server.wait_totals("the offender is counted", |t| t.lines_too_long == 1);
    assert_eq!(t.received, 2);
}

fn shutdown_flushes_queued_output_then_closes(engine: EngineChoice) {
    const LINES: usize = 1000;
    let mut server = TestServer::start_with(engine, |c| {
        c.sndbuf = 4096;
        // Room for every line: the client is behind, never dropping.
        c.queue = LINES;
        c.drain_timeout = Duration::from_secs(10);
    });
    // One client publishes and does not read, so its queue fills up.
    let mut client = Client::connect_small_rcvbuf(server.addr);
    server.wait_connected(1);
    let pad = "q".repeat(200);
    client.send(
        &(0..LINES)
            .flat_map(|n| format!("s0 {n} {pad}\n").into_bytes())
            .collect::<Vec<u8>>(),
    );
    let before = server.wait_totals("every line read and most of them queued", |t| {
        t.received == LINES as u64 && t.sent < LINES as u64 / 2
    });
    let stopping = server.begin_stop();
    // Reading now, the client gets every line, including what sat in its
    // queue when shutdown began, then EOF.
    let got = client.read_to_end();
    let lines: Vec<&[u8]> = got.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), LINES);
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("s0 {n} {pad}\n").as_bytes(), "line {n}");
    }
    stopping.join().unwrap().expect("server exits cleanly");
    let after = server.totals();
    assert!(
        after.sent > before.sent,
        "the queue was flushed after shutdown began"
    );
    assert_eq!((after.sent, after.dropped), (LINES as u64, 0));
    assert_eq!(after.connected, 0);
}

/// Probing io_uring on the caller's thread left it a task_work signal from
/// the ring's teardown: a blocking read with a timeout there (a test's
/// client, say) failed with EINTR.
#[test]
fn binding_a_uring_server_leaves_the_callers_blocking_reads_alone() {
    for _ in 0..20 {
        let server = ringcast::Server::bind(ringcast::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            engine: ringcast::EngineChoice::Uring,
            threads: Some(1),
            ..ringcast::Config::default()
        })
        .expect("bind");
        let (quiet, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        quiet
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let err = std::io::Read::read(&mut &quiet, &mut [0u8; 1]).unwrap_err();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::WouldBlock,
            "a read on the thread that bound the server: {err}"
        );
        drop(server);
    }
}
