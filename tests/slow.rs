//! Slow readers never hold anyone back, on both engines: a client that
//! reads, but slower than the flow, loses messages for itself alone and
//! never paces the publisher or the other readers; it gets runs of whole
//! lines in order; its episodes show in the metrics and the client list;
//! it catches up and is a normal reader again; `--slow-disconnect` ends it.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    Client, PATIENCE, ServerProcess, TestServer, assert_per_sender_order, connect_all, wait_for,
};
use ringcast::EngineChoice;

on_both_engines!(
    a_reader_slower_than_the_flow_never_paces_the_others,
    a_pausing_reader_gets_whole_lines_in_order_and_the_others_get_everything,
    a_client_that_caught_up_loses_nothing_in_the_next_burst,
    slow_episodes_show_in_the_metrics_and_the_client_list,
    slow_disconnect_closes_a_client_that_keeps_dropping,
    a_flood_from_another_core_never_starves_a_core_of_stalled_clients,
    one_line_says_a_client_started_dropping_and_one_that_it_caught_up,
    slow_clients_cost_the_core_a_bounded_wait,
    a_held_line_never_delays_the_rest_of_its_read_for_the_others,
    a_client_whose_last_queued_message_went_out_takes_lines_again,
    a_client_with_big_lines_and_a_small_sndbuf_recovers_once_it_reads,
    readers_that_keep_reading_lose_nothing_beside_a_stalled_client_in_a_flood,
    readers_that_keep_reading_lose_nothing_beside_a_stalled_client_on_one_core,
    a_held_line_never_delays_the_other_cores,
);

/// A connection with an 8 KiB receive buffer, as a slow mobile client has.
fn small_window(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(8192).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

/// A client that reads `chunk` bytes every `every` until told to stop and
/// it holds at least `min_lines` lines; returns what it read.
fn slow_reader(
    addr: std::net::SocketAddr,
    chunk: usize,
    every: Duration,
    min_lines: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<u8>> {
    let mut stream = small_window(addr);
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + PATIENCE;
        let mut got = Vec::new();
        let mut buf = vec![0u8; chunk];
        let lines = |got: &[u8]| got.iter().filter(|&&b| b == b'\n').count();
        while Instant::now() < deadline
            && !(stop.load(Ordering::Relaxed) && lines(&got) >= min_lines)
        {
            if let Ok(n) = stream.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            std::thread::sleep(every);
        }
        got
    })
}

/// Reads and throws away what `stream` gets until `stop` is set.
fn discard_until(
    mut stream: std::net::TcpStream,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(0) = stream.read(&mut buf) {
                return;
            }
        }
    })
}

/// Sends `bytes` over and over until `stop` is set or the server goes.
fn send_until(
    mut stream: std::net::TcpStream,
    bytes: Vec<u8>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if std::io::Write::write_all(&mut stream, &bytes).is_err() {
                return;
            }
        }
    })
}

/// Reads from `stream` until `needle` has arrived.
fn read_until_seen(stream: &mut std::net::TcpStream, needle: &[u8]) {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    wait_for("the line to arrive", PATIENCE, || {
        if let Ok(n) = stream.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        let found = seen.windows(needle.len()).any(|w| w == needle);
        // Keep only what could still hold the start of it.
        let keep = seen.len().saturating_sub(needle.len());
        seen.drain(..keep);
        found.then_some(())
    });
}

/// `lines` numbered lines of about `size` bytes from sender `s`.
fn numbered(s: usize, lines: usize, size: usize) -> Vec<u8> {
    let pad = "x".repeat(size.saturating_sub(16));
    (0..lines)
        .flat_map(|n| format!("s{s} {n} {pad}\n").into_bytes())
        .collect()
}

/// Asserts that `got` holds whole lines of sender 0 in increasing order,
/// gaps allowed; returns how many.
fn assert_whole_lines_in_order(got: &[u8]) -> usize {
    let mut last = None;
    let mut count = 0;
    // The last line may still be on its way.
    let complete = got.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    for line in got[..complete].split_inclusive(|&b| b == b'\n') {
        let text = std::str::from_utf8(line).expect("whole lines only");
        let mut fields = text.split(' ');
        assert_eq!(fields.next(), Some("s0"), "a cut line: {text:?}");
        let seq: usize = fields.next().unwrap().parse().unwrap();
        assert!(last.is_none_or(|l| seq > l), "{seq} after {last:?}");
        last = Some(seq);
        count += 1;
    }
    count
}

fn a_reader_slower_than_the_flow_never_paces_the_others(engine: EngineChoice) {
    const LINES: usize = 4000;
    let server = TestServer::start(engine);
    let stop = Arc::new(AtomicBool::new(false));
    // 4 KiB every 30 ms: about 136 KB/s. Paced by it, the 2 MB below would
    // take some 15 s to publish.
    let slow = slow_reader(
        server.addr,
        4096,
        Duration::from_millis(30),
        100,
        Arc::clone(&stop),
    );
    server.wait_connected(1);
    let fast = connect_all(&server, 3);
    let mut publisher = Client::connect(server.addr);
    server.wait_connected(5);
    let mut echo = publisher.try_clone();
    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut c| std::thread::spawn(move || c.read_lines(LINES)))
        .chain([std::thread::spawn(move || echo.read_lines(LINES))])
        .collect();
    let start = Instant::now();
    publisher.send(&numbered(0, LINES, 500));
    for r in readers {
        assert_per_sender_order(&r.join().unwrap(), 1, LINES);
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the slow reader paced the others: {took:?} for what it would take 15 s to read"
    );
    let t = server.wait_totals("drops for the slow reader", |t| t.dropped > 0);
    assert!(t.slow_episodes >= 1, "{t:?}");
    stop.store(true, Ordering::Relaxed);
    let got = slow.join().unwrap();
    assert!(
        assert_whole_lines_in_order(&got) >= 100,
        "it got what its allowance held"
    );
}

fn a_pausing_reader_gets_whole_lines_in_order_and_the_others_get_everything(engine: EngineChoice) {
    // 100 lines of 200 B every 10 ms for 2 s: 2 MB/s.
    const BATCHES: usize = 200;
    const PER_BATCH: usize = 100;
    const LINES: usize = BATCHES * PER_BATCH;
    let server = TestServer::start(engine);
    // Reads fully, but stops for 200 ms every 300 ms, through a small
    // window: a pause outlasts its allowance.
    let pausing = {
        let mut c = Client::from_stream(small_window(server.addr));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(4);
            let mut got = Vec::new();
            while Instant::now() < deadline {
                let reading = Instant::now() + Duration::from_millis(100);
                while Instant::now() < reading {
                    got.extend(c.read_available(Duration::from_millis(5)));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            got.extend(c.read_available(Duration::from_millis(300)));
            got
        })
    };
    server.wait_connected(1);
    let fast = connect_all(&server, 3);
    let mut publisher = Client::connect(server.addr);
    server.wait_connected(5);
    let mut echo = publisher.try_clone();
    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut c| std::thread::spawn(move || c.read_lines(LINES)))
        .chain([std::thread::spawn(move || echo.read_lines(LINES))])
        .collect();
    let all = numbered(0, LINES, 200);
    let batch_len = all.len() / BATCHES;
    let start = Instant::now();
    for (i, batch) in all.chunks(batch_len).enumerate() {
        publisher.send(batch);
        let due = start + Duration::from_millis(10 * (i as u64 + 1));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    for r in readers {
        assert_per_sender_order(&r.join().unwrap(), 1, LINES);
    }
    let got = pausing.join().unwrap();
    let lines = assert_whole_lines_in_order(&got);
    let t = server.totals();
    assert!(
        lines < LINES && t.dropped > 0,
        "a 200 ms pause at 2 MB/s is past its allowance: got {lines}, {t:?}"
    );
    assert!(lines >= 100, "it got what its allowance held: {lines}");
}

fn a_client_that_caught_up_loses_nothing_in_the_next_burst(engine: EngineChoice) {
    const FLOOD: usize = 3000;
    let server = TestServer::start(engine);
    // Stalls while a flood goes by, so it starts dropping.
    let mut late = Client::connect_small_rcvbuf(server.addr);
    server.wait_connected(1);
    let mut publisher = Client::connect(server.addr);
    server.wait_connected(2);
    let mut echo = publisher.try_clone();
    let echo_reader = std::thread::spawn(move || echo.read_lines(FLOOD));
    publisher.send(&numbered(0, FLOOD, 500));
    assert_per_sender_order(&echo_reader.join().unwrap(), 1, FLOOD);
    server.wait_totals("the late client to drop", |t| t.slow_clients == 1);
    // It reads everything that is there: once the kernel has taken its
    // queue, it has caught up.
    let got = late.read_available(Duration::from_millis(300));
    assert!(assert_whole_lines_in_order(&got) >= 100);
    server.wait_totals("it caught up", |t| t.slow_clients == 0);
    let dropped = server.totals().dropped;
    // Now a burst from ten clients while it reads at full speed: a reader
    // that keeps up loses nothing, whatever it did before.
    let senders = connect_all(&server, 10);
    let handles: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            std::thread::spawn(move || {
                c.send(&numbered(i, 100, 20));
                c.read_lines(1000)
            })
        })
        .collect();
    let burst = late.read_lines(1000);
    assert_per_sender_order(&burst, 10, 100);
    for h in handles {
        assert_per_sender_order(&h.join().unwrap(), 10, 100);
    }
    assert_eq!(server.totals().dropped, dropped, "nothing more was dropped");
}

fn slow_episodes_show_in_the_metrics_and_the_client_list(engine: EngineChoice) {
    const FLOOD: usize = 3000;
    let server = TestServer::start(engine);
    let mut stalled = Client::connect_small_rcvbuf(server.addr);
    server.wait_connected(1);
    let mut publisher = Client::connect(server.addr);
    server.wait_connected(2);
    let mut echo = publisher.try_clone();
    let echo_reader = std::thread::spawn(move || echo.read_lines(FLOOD));
    publisher.send(&numbered(0, FLOOD, 500));
    echo_reader.join().unwrap();
    let t = server.wait_totals("one slow client", |t| t.slow_clients == 1);
    assert_eq!(t.slow_episodes, 1, "{t:?}");
    let me = server.client_info(&stalled);
    assert!(me.slow && me.dropped > 0 && me.queued > 0, "{me:?}");
    let other = server.client_info(&publisher);
    assert!(!other.slow && other.dropped == 0, "{other:?}");
    assert_eq!(other.sent, FLOOD as u64);
    assert_eq!(
        me.dropped + me.sent + me.queued as u64,
        FLOOD as u64,
        "{me:?}"
    );
    // It reads: the episode ends, and it is a normal client again.
    stalled.read_available(Duration::from_millis(300));
    let t = server.wait_totals("it caught up", |t| t.slow_clients == 0);
    assert_eq!(t.slow_episodes, 1);
    let me = server.client_info(&stalled);
    assert!(!me.slow && me.queued == 0, "{me:?}");
}

fn slow_disconnect_closes_a_client_that_keeps_dropping(engine: EngineChoice) {
    let server = TestServer::start_with(engine, |c| {
        c.slow_disconnect = Some(Duration::from_millis(300));
    });
    let mut stalled = Client::connect_small_rcvbuf(server.addr);
    server.wait_connected(1);
    let mut publisher = Client::connect(server.addr);
    server.wait_connected(2);
    let stop = Arc::new(AtomicBool::new(false));
    let echo_reader = discard_until(publisher.stream.try_clone().unwrap(), Arc::clone(&stop));
    // Keep publishing until the server gives up on the stalled client.
    let line = numbered(0, 20, 500);
    let t = wait_for("the slow client's disconnect", PATIENCE, || {
        publisher.send(&line);
        let t = server.totals();
        // The disconnect is counted when it is decided; the connection
        // leaves the gauge once its tasks have ended.
        (t.slow_disconnects == 1 && t.connected < 2).then_some(t)
    });
    assert_eq!(t.connected, 1, "only the stalled client went: {t:?}");
    // It reads what the kernel still holds for it, then EOF.
    assert!(stalled.wait_closed_by_server(), "the server closed it");
    assert_eq!(server.totals().connected, 1, "the publisher stays");
    // Its one slow episode ended with it, counted once, and it is no longer
    // counted as slow.
    let t = server.wait_totals("the slow gauge back at 0", |t| t.slow_clients == 0);
    assert_eq!((t.slow_episodes, t.slow_disconnects), (1, 1), "{t:?}");
    stop.store(true, Ordering::Relaxed);
    echo_reader.join().unwrap();
}

fn a_flood_from_another_core_never_starves_a_core_of_stalled_clients(engine: EngineChoice) {
    let mut server = TestServer::start_with(engine, |c| {
        c.drain_timeout = Duration::from_secs(2);
    });
    // Clients until the publisher's core has one and the other core
    // `STALLED`, which never read, so every line the drainer delivers there
    // is dropped. (On tokio every client counts as core 0.)
    const STALLED: usize = 40;
    let on_other_core = |core: usize| engine == EngineChoice::Tokio || core == 1;
    let mut publisher = None;
    let mut stalled = Vec::new();
    wait_for("clients on both cores", PATIENCE, || {
        let c = Client::connect_small_rcvbuf(server.addr);
        let core = server.client_info(&c).core;
        if on_other_core(core) && stalled.len() < STALLED {
            stalled.push(c);
        } else if core == 0 && publisher.is_none() {
            publisher = Some(c);
        }
        (publisher.is_some() && stalled.len() == STALLED).then_some(())
    });
    let publisher: Client = publisher.unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let echo = discard_until(publisher.stream.try_clone().unwrap(), Arc::clone(&done));
    let flood = send_until(
        publisher.stream.try_clone().unwrap(),
        numbered(0, 200, 500),
        Arc::clone(&done),
    );
    server.wait_totals("every stalled client dropping", |t| {
        t.slow_clients >= STALLED as u64
    });
    // A newcomer on the stalled clients' core is served during the flood:
    // it is accepted, and it gets its own line back.
    let mut newcomer = wait_for("a newcomer on the stalled core", PATIENCE, || {
        let c = Client::connect(server.addr);
        on_other_core(server.client_info(&c).core).then_some(c)
    });
    newcomer.send(b"s9 0 newcomer\n");
    read_until_seen(&mut newcomer.stream, b"s9 0 newcomer\n");
    // And shutdown ends within the drain timeout, flood or not.
    let start = Instant::now();
    server.begin_stop().join().unwrap().expect("stops cleanly");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "shutdown took {:?} with a 2 s drain timeout",
        start.elapsed()
    );
    done.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    echo.join().unwrap();
    drop((stalled, newcomer));
}

fn one_line_says_a_client_started_dropping_and_one_that_it_caught_up(engine: EngineChoice) {
    const FLOOD: usize = 3000;
    let engine = match engine {
        EngineChoice::Tokio => "tokio",
        _ => "uring",
    };
    let server = ServerProcess::start(&["--engine", engine, "--grace", "50ms"]);
    let mut stalled = Client::connect_small_rcvbuf(server.addr);
    let mut publisher = Client::connect(server.addr);
    wait_for("both clients registered", PATIENCE, || {
        let m = server.scrape();
        m.lines()
            .any(|l| l == "ringcast_connected_clients 2")
            .then_some(())
    });
    let mut echo = publisher.try_clone();
    let echo_reader = std::thread::spawn(move || echo.read_lines(FLOOD));
    publisher.send(&numbered(0, FLOOD, 500));
    echo_reader.join().unwrap();
    let port = stalled.stream.local_addr().unwrap().port();
    let logged = |what: &str| {
        let log = server.log.lock().unwrap();
        log.iter()
            .filter(|(_, l)| l.contains(what) && l.contains(&format!(":{port}")))
            .map(|(_, l)| l.clone())
            .collect::<Vec<_>>()
    };
    let started = wait_for("the slow-client warning", PATIENCE, || {
        let lines = logged("slow client: its queue and socket buffer are full");
        (!lines.is_empty()).then_some(lines)
    });
    assert_eq!(started.len(), 1, "{started:?}");
    assert!(
        started[0].contains("WARN") && started[0].contains("conn=") && started[0].contains("core="),
        "{started:?}"
    );
    stalled.read_available(Duration::from_millis(300));
    let caught_up = wait_for("the caught-up line", PATIENCE, || {
        let lines = logged("slow client caught up");
        (!lines.is_empty()).then_some(lines)
    });
    assert_eq!(caught_up.len(), 1, "{caught_up:?}");
    assert!(
        caught_up[0].contains("INFO") && caught_up[0].contains("lost="),
        "{caught_up:?}"
    );
    let metrics = server.scrape();
    for line in [
        "ringcast_slow_clients 0",
        "ringcast_slow_client_episodes_total 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
}

fn slow_clients_cost_the_core_a_bounded_wait(engine: EngineChoice) {
    // Clients behind one after another are held only as long as their
    // core's patience allows (each thread's share, on tokio): four graces
    // (50 ms each here) plus one per half second for first waits, one
    // grace plus one per half second for clients that used a grace up
    // before.
    const STALLED: u64 = 30;
    let server = TestServer::start(engine);
    let publisher = Client::connect(server.addr);
    server.wait_connected(1);
    let stop = Arc::new(AtomicBool::new(false));
    let echo = discard_until(publisher.stream.try_clone().unwrap(), Arc::clone(&stop));
    let mut writer = publisher.try_clone();
    let flood = numbered(0, 20, 500);
    // Whether the client at `peer` is slow, as `/clients` says. Each wait
    // looks at the one client it is about: on a loaded machine the
    // publisher can fall behind for a moment too, which would throw off
    // a count over all clients.
    let is_slow =
        |peer: std::net::SocketAddr| server.clients().iter().any(|c| c.peer == peer && c.slow);
    let mut flood_until_slow = |peer: std::net::SocketAddr| {
        wait_for("the next client to drop", PATIENCE, || {
            writer.send(&flood);
            is_slow(peer).then_some(())
        });
    };
    // The test servers run two threads, each with a patience of its own.
    let grace = common::TEST_GRACE * 2;
    // What `graces` to start, one grace per 500 ms since, and a timer's
    // overshoot (about a millisecond) per wait allow in `elapsed`.
    let bound = |graces: u32, elapsed: Duration| {
        grace * graces
            + grace.mul_f64(elapsed.as_secs_f64() / 0.5)
            + Duration::from_millis(5) * STALLED as u32
    };
    let measure = |what: &str, graces: u32, run: &mut dyn FnMut()| {
        let before = server.totals().held_nanos;
        let start = Instant::now();
        run();
        let elapsed = start.elapsed();
        let held = Duration::from_nanos(server.totals().held_nanos - before);
        eprintln!("{engine:?}, {what}: {held:?} of waiting in {elapsed:?}");
        let bound = bound(graces, elapsed);
        assert!(
            held <= bound,
            "{STALLED} clients {what} cost {held:?} of waiting in {elapsed:?}, more than {bound:?}"
        );
    };
    // One by one, each stalled client falls behind for the first time.
    let mut stalled = Vec::new();
    measure("falling behind for the first time", 4, &mut || {
        for n in 1..=STALLED {
            let client = Client::connect_small_rcvbuf(server.addr);
            let peer = client.stream.local_addr().unwrap();
            stalled.push(client);
            server.wait_connected(n + 1);
            flood_until_slow(peer);
        }
    });
    // Their first cooldown (a second) passes: they get a grace again.
    std::thread::sleep(Duration::from_millis(1100));
    // One by one, each catches up and falls behind again.
    measure("falling behind again", 1, &mut || {
        for client in &mut stalled {
            let peer = client.stream.local_addr().unwrap();
            // It reads until the server sees it caught up: on a loaded
            // machine one quiet gap of 20 ms can come before its queue is
            // empty, and a client that then stops reading never catches up.
            wait_for("it caught up", PATIENCE, || {
                client.read_available(Duration::from_millis(20));
                (!is_slow(peer)).then_some(())
            });
            flood_until_slow(peer);
        }
    });
    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();
}

fn a_held_line_never_delays_the_rest_of_its_read_for_the_others(engine: EngineChoice) {
    // While a deliverer waits for a client that holds a line, the other
    // clients already have every line of the same read: the wait delays
    // the publisher's next read, never the rest of this one.
    let grace = Duration::from_secs(1);
    let server = TestServer::start_with(engine, |c| {
        // One core, so the held client and the reader share a deliverer.
        c.threads = Some(1);
        c.queue = 1;
        c.max_line = 2 << 20;
        c.grace = grace;
    });
    let _stalled = Client::connect_small_rcvbuf(server.addr);
    let mut reader = Client::connect(server.addr);
    let mut publisher = Client::connect(server.addr);
    server.wait_connected(3);
    // A line far bigger than the stalled client's socket buffers fills its
    // queue of one for good.
    let mut big = vec![b'x'; 1 << 20];
    big.push(b'\n');
    publisher.send(&big);
    reader.read_lines(1);
    publisher.read_lines(1);
    // Twenty short lines in one write, so in one read: the first finds the
    // stalled client full and is held for up to its grace.
    let lines = numbered(0, 20, 40);
    let start = Instant::now();
    publisher.send(&lines);
    let got = reader.read_lines(20);
    let took = start.elapsed();
    // The wait is still on: the stalled client has not started dropping.
    let episodes = server.totals().slow_episodes;
    assert_eq!(got.concat(), lines);
    assert_eq!(
        episodes, 0,
        "the reader got the read's lines only after the held client's grace ran out"
    );
    assert!(
        took < grace / 2,
        "the reader got the read's lines after {took:?}: the wait for the held line delayed them"
    );
}

/// Floods `lines` lines of `size` bytes past `late`, a client that does not
/// read, until it is dropping; then `late` reads everything there is, and
/// it must catch up and take the lines sent after.
fn falls_behind_then_catches_up(server: &TestServer, lines: usize, size: usize) {
    let mut late = Client::connect_small_rcvbuf(server.addr);
    server.wait_connected(1);
    let mut publisher = Client::connect(server.addr);
    server.wait_connected(2);
    let stop = Arc::new(AtomicBool::new(false));
    let echo = discard_until(publisher.stream.try_clone().unwrap(), Arc::clone(&stop));
    let flood = numbered(0, lines, size);
    let mut sent = 0;
    wait_for("the late client to drop", PATIENCE, || {
        publisher.send(&flood);
        sent += lines as u64;
        (server.totals().slow_clients == 1).then_some(())
    });
    // The flood is over once the server has read all of it.
    server.wait_totals("the whole flood to arrive", |t| t.received == sent);
    // It reads everything the server has for it, 4 KiB at a time with a
    // pause between reads, so that the server waits for its socket before
    // every write: once the kernel has taken its queue, it has caught up.
    let reading = Arc::new(AtomicBool::new(false));
    let drain = {
        let mut stream = late.stream.try_clone().unwrap();
        let reading = Arc::clone(&reading);
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !reading.load(Ordering::Relaxed) {
                let _ = stream.read(&mut buf);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    server.wait_totals("it caught up", |t| t.slow_clients == 0);
    let me = server.client_info(&late);
    assert!(!me.slow && me.queued == 0, "{me:?}");
    reading.store(true, Ordering::Relaxed);
    drain.join().unwrap();
    // A line sent now reaches it.
    publisher.send(b"s1 0 after\n");
    read_until_seen(&mut late.stream, b"s1 0 after\n");
    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();
}

fn a_client_whose_last_queued_message_went_out_takes_lines_again(engine: EngineChoice) {
    // A queue of one: when the kernel refuses, the one message left is the
    // last one, and the write that finishes it must end the slow episode.
    let server = TestServer::start_with(engine, |c| c.queue = 1);
    falls_behind_then_catches_up(&server, 200, 500);
}

fn a_client_with_big_lines_and_a_small_sndbuf_recovers_once_it_reads(engine: EngineChoice) {
    // 32 KiB lines through a 4 KiB send buffer: every line takes several
    // writes, so the last queued one is most often finished by a write
    // that waited for the socket.
    let server = TestServer::start_with(engine, |c| c.sndbuf = 4096);
    falls_behind_then_catches_up(&server, 40, 32 * 1024);
}

/// Reads lines on a thread of its own with blocking reads of 64 KiB,
/// counting newlines with memchr: no work per read that grows with what it
/// has read, so it keeps up with anything the server sends. Returns how
/// many lines arrived before `want` did or the server went quiet for 2 s.
fn counting_reader(stream: std::net::TcpStream, want: usize) -> std::thread::JoinHandle<usize> {
    let mut stream = stream;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut lines = 0;
        while lines < want {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => lines += memchr::memchr_iter(b'\n', &buf[..n]).count(),
            }
        }
        lines
    })
}

/// A server in a process of its own; two readers that read as fast as
/// they can; a client with a 4 KiB receive buffer that never reads; one
/// publisher that sends 20,000 lines of 500 B as fast as it can, a write
/// each. The
/// readers must get every line: the stalled client costs them nothing.
fn stalled_client_beside_a_flood(engine: EngineChoice, threads: &str) {
    const LINES: usize = 20_000;
    let engine = match engine {
        EngineChoice::Tokio => "tokio",
        _ => "uring",
    };
    let server = ServerProcess::start(&[
        "--engine",
        engine,
        "--threads",
        threads,
        // Long enough for a reader thread of this busy test process to be
        // scheduled: what is tested is that the server keeps its promise
        // to readers that read, not how fast this machine schedules them.
        "--grace",
        "200ms",
    ]);
    let stalled = Client::connect_small_rcvbuf(server.addr);
    let [a, b, mut publisher] = [(); 3].map(|()| Client::connect(server.addr));
    wait_for("every client registered", PATIENCE, || {
        let m = server.scrape();
        m.lines()
            .any(|l| l == "ringcast_connected_clients 4")
            .then_some(())
    });
    let readers = [a, b].map(|c| counting_reader(c.stream, LINES));
    let echo = counting_reader(publisher.stream.try_clone().unwrap(), LINES);
    // One write per line, as a chatty publisher sends: many small reads.
    for line in numbered(0, LINES, 500).split_inclusive(|&b| b == b'\n') {
        publisher.send(line);
    }
    let got = readers.map(|r| r.join().unwrap());
    let echoed = echo.join().unwrap();
    let metrics = server.scrape();
    assert_eq!(
        (got, echoed),
        ([LINES, LINES], LINES),
        "readers that keep reading lost lines beside a stalled client\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("ringcast_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(stalled);
}

fn readers_that_keep_reading_lose_nothing_beside_a_stalled_client_in_a_flood(engine: EngineChoice) {
    stalled_client_beside_a_flood(engine, "2");
}

fn readers_that_keep_reading_lose_nothing_beside_a_stalled_client_on_one_core(
    engine: EngineChoice,
) {
    stalled_client_beside_a_flood(engine, "1");
}

fn a_held_line_never_delays_the_other_cores(engine: EngineChoice) {
    // While a deliverer waits for a held client, the lines it already
    // read reach the other cores: a reader there gets them at once, not
    // after the wait.
    let grace = Duration::from_secs(1);
    let server = TestServer::start_with(engine, |c| {
        c.threads = Some(2);
        c.queue = 1;
        c.max_line = 2 << 20;
        c.grace = grace;
    });
    // The publisher and the stalled client on one core, a reader on the
    // other. (On tokio every client counts as core 0, and any will do.)
    let core = |c: &Client| server.client_info(c).core;
    let mut publisher = Client::connect(server.addr);
    let home = core(&publisher);
    let elsewhere = |c: usize| engine == EngineChoice::Tokio || c != home;
    let mut kept = Vec::new();
    let mut stalled = None;
    let mut reader = None;
    wait_for("clients on both cores", PATIENCE, || {
        let c = Client::connect_small_rcvbuf(server.addr);
        let at = core(&c);
        if at == home && stalled.is_none() {
            stalled = Some(c);
        } else if elsewhere(at) && reader.is_none() {
            reader = Some(c);
        } else {
            kept.push(c);
        }
        (stalled.is_some() && reader.is_some()).then_some(())
    });
    let mut reader = reader.unwrap();
    reader.stream.set_nodelay(true).unwrap();
    let mut others: Vec<_> = kept.iter().map(Client::try_clone).collect();
    // A line far bigger than the stalled client's socket buffers fills its
    // queue of one for good.
    let mut big = vec![b'x'; 1 << 20];
    big.push(b'\n');
    publisher.send(&big);
    reader.read_lines(1);
    publisher.read_lines(1);
    for c in &mut others {
        c.read_lines(1);
    }
    let lines = numbered(0, 20, 40);
    let start = Instant::now();
    publisher.send(&lines);
    let got = reader.read_lines(20);
    let took = start.elapsed();
    let episodes = server.totals().slow_episodes;
    assert_eq!(got.concat(), lines);
    assert_eq!(
        episodes, 0,
        "the reader got the lines only after the held client's grace ran out"
    );
    assert!(
        took < grace / 2,
        "the reader on the other core got the lines after {took:?}: the wait for a held client delayed them"
    );
    drop(stalled);
}
