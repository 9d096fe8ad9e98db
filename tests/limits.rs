//! Limits and starvation: --max-line to the byte, --max-clients, running
//! out of descriptors, --idle-timeout, and a flooding publisher beside a
//! quiet one.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    Answer, Client, PATIENCE, ServerProcess, TestServer, connect_all, try_http_get, wait_for,
};
use ringcast::EngineChoice;

on_both_engines!(
    max_line_holds_to_the_byte_on_tcp_and_websocket,
    past_max_clients_new_connections_are_closed_and_counted,
    past_max_clients_per_ip_an_address_is_closed_and_counted,
    running_out_of_descriptors_keeps_serving_and_recovers,
    idle_timeout_disconnects_only_silent_clients,
    a_newcomer_gets_the_whole_idle_timeout,
    the_http_endpoints_answer_again_after_descriptors_run_out,
    a_flooding_publisher_does_not_starve_a_quiet_one,
    five_thousand_idle_clients_cost_no_cpu,
);

/// A line of exactly `--max-line` bytes (newline not counted) reaches
/// everyone; one byte more disconnects its sender and is counted, from a
/// TCP client and from a WebSocket client alike. No WebSocket frame header
/// stretches the TCP limit.
fn max_line_holds_to_the_byte_on_tcp_and_websocket(engine: EngineChoice) {
    const MAX: usize = 100;
    let server = TestServer::start_with(engine, |c| {
        c.max_line = MAX;
        c.ws = Some("127.0.0.1:0".parse().unwrap());
    });
    let mut clients = connect_all(&server, 2);
    let mut tcp = clients.pop().unwrap();
    let mut reader = clients.pop().unwrap();
    let line = |byte: u8, len: usize| [vec![byte; len], b"\n".to_vec()].concat();

    tcp.send(&line(b'a', MAX));
    assert_eq!(reader.read_lines(1), vec![line(b'a', MAX)]);
    // One byte over: refused, however few bytes a frame header would take.
    tcp.send(&line(b'b', MAX + 1));
    assert!(
        tcp.wait_closed_by_server(),
        "a line of --max-line + 1 bytes"
    );
    let t = server.wait_totals("the TCP offender to be counted and gone", |t| {
        t.lines_too_long == 1 && t.connected == 1
    });
    assert_eq!(t.received, 1, "the overlong line was published: {t:?}");

    let mut ws = ws_client(server.ws_addr.unwrap());
    server.wait_connected(2);
    ws.send(tungstenite::Message::binary(vec![b'c'; MAX]))
        .unwrap();
    assert_eq!(reader.read_lines(1), vec![line(b'c', MAX)]);
    ws.send(tungstenite::Message::binary(vec![b'd'; MAX + 1]))
        .unwrap();
    // The server closes (with 1009); whatever the client reads, it ends.
    wait_for("the WebSocket offender to be closed", PATIENCE, || {
        ws.read().is_err().then_some(())
    });
    let t = server.wait_totals("the WebSocket offender to be counted and gone", |t| {
        t.lines_too_long == 2 && t.connected == 1
    });
    assert_eq!(t.received, 2, "the overlong message was published: {t:?}");
    // Nothing overlong reached anyone.
    tcp_still_served(&mut reader);
}

/// The reader is still connected and gets nothing but its own probe.
fn tcp_still_served(reader: &mut Client) {
    reader.send(b"probe\n");
    assert_eq!(reader.read_lines(1), vec![b"probe\n".to_vec()]);
}

fn ws_client(addr: std::net::SocketAddr) -> tungstenite::WebSocket<std::net::TcpStream> {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let (ws, response) = tungstenite::client::client(format!("ws://{addr}/"), stream).unwrap();
    assert_eq!(response.status(), 101);
    ws
}

fn past_max_clients_new_connections_are_closed_and_counted(engine: EngineChoice) {
    let server = TestServer::start_with(engine, |c| c.max_clients = 3);
    let mut clients = connect_all(&server, 3);
    for _ in 0..2 {
        let mut extra = Client::connect(server.addr);
        assert!(
            extra.wait_closed_by_server(),
            "a client past --max-clients must be closed"
        );
    }
    let t = server.wait_totals("two rejections", |t| t.rejected == 2);
    assert_eq!((t.connected, t.accepted), (3, 3));
    clients[0].send(b"still served\n");
    for c in &mut clients {
        assert_eq!(c.read_lines(1), vec![b"still served\n".to_vec()]);
    }
    // A slot frees when a client leaves.
    drop(clients.pop());
    server.wait_connected(2);
    let _late = Client::connect(server.addr);
    server.wait_connected(3);
}

/// A client connecting from `ip` (any of 127/8 is loopback).
fn connect_from(ip: &str, addr: std::net::SocketAddr) -> Client {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: std::net::SocketAddr = format!("{ip}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    Client::from_stream(socket.into())
}

/// A line round trip: the client is connected and served.
fn served(client: &mut Client, line: &[u8]) {
    client.send(line);
    gets(client, line);
}

/// Reads lines (others' too: everyone gets everything) until `line`.
fn gets(client: &mut Client, line: &[u8]) {
    while client.read_lines(1)[0] != line {}
}

/// With --max-clients-per-ip 2, a third connection from 127.0.0.1 (line
/// or WebSocket) is closed at once and counted apart from --max-clients;
/// 127.0.0.2 is not held back; a slot frees when a client leaves; and a
/// WebSocket connection counts from its accept through its handshake.
fn past_max_clients_per_ip_an_address_is_closed_and_counted(engine: EngineChoice) {
    let server = TestServer::start_with(engine, |c| {
        c.max_clients_per_ip = 2;
        c.ws = Some("127.0.0.1:0".parse().unwrap());
    });
    let ws_addr = server.ws_addr.unwrap();
    let first = connect_from("127.0.0.1", server.addr);
    let mut second = connect_from("127.0.0.1", server.addr);
    server.wait_connected(2);
    let mut third = connect_from("127.0.0.1", server.addr);
    assert!(third.wait_closed_by_server(), "a third from 127.0.0.1");
    let mut pending = Client::from_stream(std::net::TcpStream::connect(ws_addr).unwrap());
    assert!(pending.wait_closed_by_server(), "a third, on --ws");
    let t = server.wait_totals("two refusals", |t| t.rejected_per_ip == 2);
    assert_eq!((t.rejected, t.connected, t.accepted), (0, 2, 2), "{t:?}");
    // Another address has its own count.
    let mut other = connect_from("127.0.0.2", server.addr);
    let mut other_too = connect_from("127.0.0.2", server.addr);
    server.wait_connected(4);
    served(&mut other, b"from .2\n");
    served(&mut other_too, b"from .2 too\n");
    // One leaves: room for one more.
    drop(first);
    server.wait_connected(3);
    let mut again = connect_from("127.0.0.1", server.addr);
    server.wait_connected(4);
    served(&mut again, b"back\n");
    served(&mut second, b"still\n");
    // A WebSocket client holds its address's count through its handshake.
    drop(second);
    server.wait_connected(3);
    let mut ws = ws_client(ws_addr);
    server.wait_connected(4);
    let mut over = connect_from("127.0.0.1", server.addr);
    assert!(
        over.wait_closed_by_server(),
        "a third, after a WebSocket client"
    );
    server.wait_totals("three refusals", |t| t.rejected_per_ip == 3);
    ws.send(tungstenite::Message::text("ws")).unwrap();
    gets(&mut again, b"ws\n");
}

/// Tests that load the machine (thousands of sockets, a flood) take turns,
/// so one's load does not distort another's timing.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

fn running_out_of_descriptors_keeps_serving_and_recovers(engine: EngineChoice) {
    require_tool!("prlimit", "util-linux");
    let _turn = heavy();
    let engine = match engine {
        EngineChoice::Uring => "uring",
        _ => "tokio",
    };
    // A server child with 40 descriptors: ~20 for itself, the rest for clients.
    let server = ServerProcess::start_via(&["prlimit", "--nofile=40:40"], &["--engine", engine]);
    let addr = server.addr;
    let warnings = || {
        let log = server.log.lock().unwrap();
        log.iter()
            .filter(|(_, l)| l.contains("accept failed"))
            .count()
    };
    let mut first = Client::connect(addr);
    first.send(b"hello\n");
    assert_eq!(first.read_lines(1), vec![b"hello\n".to_vec()]);
    // More clients than descriptors: the rest wait in the backlog.
    let mut others: Vec<Client> = (0..40).map(|_| Client::connect(addr)).collect();
    wait_for("an accept-failed warning", PATIENCE, || {
        (warnings() > 0).then_some(())
    });
    let started = Instant::now();
    // Connected clients are still served while accept keeps failing.
    for n in 0..5 {
        let line = format!("still {n}\n");
        first.send(line.as_bytes());
        assert_eq!(first.read_lines(1), vec![line.into_bytes()]);
    }
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(started.elapsed()));
    let logged = warnings();
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        (logged as f64) <= seconds + 2.0,
        "{logged} warnings in {seconds:.1}s: not rate limited"
    );
    // Free descriptors: the server recovers by itself and serves the
    // latecomer, which was stuck in the backlog.
    let mut latecomer = others.pop().unwrap();
    others.truncate(5);
    latecomer
        .stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    wait_for("the latecomer to be served", PATIENCE, || {
        first.send(b"ping\n");
        let mut buf = [0u8; 64];
        matches!(latecomer.stream.read(&mut buf), Ok(n) if n > 0).then_some(())
    });
}

fn idle_timeout_disconnects_only_silent_clients(engine: EngineChoice) {
    let timeout = Duration::from_millis(300);
    let server = TestServer::start_with(engine, |c| c.idle_timeout = Some(timeout));
    let started = Instant::now();
    let mut clients = connect_all(&server, 2);
    let mut silent = clients.pop().unwrap();
    let mut talker = clients.pop().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let chatter = std::thread::spawn({
        let stop = Arc::clone(&stop);
        let mut writer = talker.try_clone();
        move || {
            while !stop.load(Ordering::Relaxed) {
                writer.send(b"tick\n");
                std::thread::sleep(timeout / 6);
            }
        }
    });
    assert!(silent.wait_closed_by_server());
    let closed_after = started.elapsed();
    assert!(
        closed_after >= timeout,
        "closed after {closed_after:?}, before the timeout"
    );
    server.wait_connected(1);
    // The talker outlives several timeouts.
    while started.elapsed() < timeout * 4 {
        talker.read_lines(1);
    }
    assert_eq!(server.totals().connected, 1);
    stop.store(true, Ordering::Relaxed);
    chatter.join().unwrap();
}

fn a_newcomer_gets_the_whole_idle_timeout(engine: EngineChoice) {
    let timeout = Duration::from_millis(300);
    let server = TestServer::start_with(engine, |c| c.idle_timeout = Some(timeout));
    // A first silent client is closed: the sweeps have been running for
    // more than a timeout, their tick well past zero.
    let mut first = Client::connect(server.addr);
    assert!(first.wait_closed_by_server());
    let connected = Instant::now();
    let mut newcomer = Client::connect(server.addr);
    assert!(newcomer.wait_closed_by_server());
    let after = connected.elapsed();
    assert!(
        after >= timeout,
        "a newcomer was closed after {after:?}, before --idle-timeout {timeout:?}"
    );
}

fn the_http_endpoints_answer_again_after_descriptors_run_out(engine: EngineChoice) {
    require_tool!("prlimit", "util-linux");
    let _turn = heavy();
    let engine = match engine {
        EngineChoice::Uring => "uring",
        _ => "tokio",
    };
    let server = ServerProcess::start_via(&["prlimit", "--nofile=40:40"], &["--engine", engine]);
    let ok = |answer: &Option<Answer>| answer.as_ref().is_some_and(|a| a.status == 200);
    assert!(ok(&try_http_get(&server.metrics, "/healthz", PATIENCE)));
    // Every descriptor taken, and then some: clients wait in the backlog,
    // and so may the endpoints' own accepts.
    let clients: Vec<Client> = (0..60).map(|_| Client::connect(server.addr)).collect();
    wait_for("an accept-failed warning", PATIENCE, || {
        let log = server.log.lock().unwrap();
        log.iter()
            .any(|(_, l)| l.contains("accept failed"))
            .then_some(())
    });
    drop(try_http_get(
        &server.metrics,
        "/metrics",
        Duration::from_millis(300),
    ));
    drop(clients);
    // Descriptors free again: the endpoints come back by themselves.
    wait_for("/metrics to answer again", PATIENCE, || {
        let answer = try_http_get(&server.metrics, "/metrics", Duration::from_secs(2));
        (ok(&answer) && answer.is_some_and(|a| a.body.contains("ringcast_connected_clients")))
            .then_some(())
    });
}

fn a_flooding_publisher_does_not_starve_a_quiet_one(engine: EngineChoice) {
    let _turn = heavy();
    let server = TestServer::start(engine);
    let mut clients = connect_all(&server, 3);
    let mut reader = clients.pop().unwrap();
    let mut quiet = clients.pop().unwrap();
    let flooder = clients.pop().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = std::thread::spawn({
        let stop = Arc::clone(&stop);
        let mut writer = flooder.try_clone();
        move || {
            let chunk: Vec<u8> = (0..1000)
                .flat_map(|n| format!("flood {n:060}\n").into_bytes())
                .collect();
            while !stop.load(Ordering::Relaxed) {
                writer.send(&chunk);
            }
        }
    });
    // The flood is flowing before the quiet client speaks.
    assert!(
        reader
            .read_lines(20_000)
            .iter()
            .all(|l| l.starts_with(b"flood"))
    );
    let mut delays = Vec::new();
    for n in 0..5 {
        let probe = format!("quiet {n}\n").into_bytes();
        let sent = Instant::now();
        quiet.send(&probe);
        loop {
            let line = reader.read_lines(1).remove(0);
            if line == probe {
                break;
            }
            assert!(line.starts_with(b"flood"), "corrupted line {line:?}");
        }
        delays.push(sent.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    drop(flooder);
    drop(reader);
    flood.join().ok();
    // Starvation would delay every probe; the median shrugs off one unlucky
    // scheduling hiccup on a busy 2-core machine.
    delays.sort();
    assert!(
        delays[2] < Duration::from_millis(100),
        "a quiet client's lines took {delays:?} to arrive during a flood"
    );
}

/// CPU time (user + system, in clock ticks) the process `pid` has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn five_thousand_idle_clients_cost_no_cpu(engine: EngineChoice) {
    let _turn = heavy();
    const IDLE: usize = 5000;
    let engine = match engine {
        EngineChoice::Uring => "uring",
        _ => "tokio",
    };
    let server = ServerProcess::start(&["--engine", engine, "--max-clients-per-ip", "0"]);
    let _idle = server.connect(IDLE);
    let pid = server.child.id();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    // No timers or polling per client: an idle server sleeps. One tick is
    // 10 ms; allow a couple for the runtime's own housekeeping.
    assert!(
        used <= 2,
        "{IDLE} idle clients cost {used} CPU ticks in one second"
    );
}
