//! Shutdown on both engines: readers stop however much clients still send,
//! a connect during the drain is refused (or closed at once), nothing the
//! server opened is left open once it has stopped, no HTTP client can hold
//! shutdown up, and a second signal ends the process at once.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    Client, PATIENCE, ServerProcess, TestServer, connect_all, http_get, sockets, wait_for,
    wait_sockets_closed,
};
use nix::sys::signal::Signal;
use ringcast::EngineChoice;

on_both_engines!(
    shutdown_stops_reading_clients_that_keep_sending,
    a_connect_during_the_drain_is_refused_or_closed_at_once,
    a_half_sent_http_request_does_not_hold_up_shutdown,
    an_http_client_that_does_not_finish_its_header_is_closed,
    a_second_sigterm_ends_the_process_at_once,
    a_second_sigterm_while_the_endpoints_stop_ends_the_process_at_once,
);

/// How long the HTTP endpoints wait for a request header.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);

fn engine_flag(engine: EngineChoice) -> &'static str {
    match engine {
        EngineChoice::Uring => "uring",
        EngineChoice::Tokio => "tokio",
        EngineChoice::Auto => "auto",
    }
}

/// The tests count this process's sockets: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn shutdown_stops_reading_clients_that_keep_sending(engine: EngineChoice) {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut server = TestServer::start_with(engine, |c| {
        c.drain_timeout = Duration::from_secs(5);
    });
    let clients = connect_all(&server, 5);
    let done = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut readers = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        if i < 2 {
            // Floods, and never reads.
            let mut stream = client.stream;
            let done = Arc::clone(&done);
            threads.push(std::thread::spawn(move || {
                let mut next = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let chunk: Vec<u8> = (next..next + 500)
                        .flat_map(|n| format!("s{i} {n:060}\n").into_bytes())
                        .collect();
                    next += 500;
                    if stream.write_all(&chunk).is_err() {
                        break;
                    }
                }
            }));
        } else {
            let mut stream = client.stream;
            readers.push(std::thread::spawn(move || {
                let mut got = Vec::new();
                stream.set_read_timeout(Some(PATIENCE)).unwrap();
                let mut buf = vec![0u8; 1 << 16];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                got
            }));
        }
    }
    server.wait_totals("the flood flowing", |t| t.received > 10_000);
    let start = Instant::now();
    server.begin_stop().join().unwrap().expect("stops cleanly");
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "shutdown took {took:?} of its 5 s: it kept reading from the flooders"
    );
    // The readers got whole lines, each sender's in order, then EOF. A
    // reader the machine left unscheduled for longer than its short wait
    // is dropped for, like any slow reader: gaps are fine, disorder is not.
    for r in readers {
        let got = r.join().unwrap();
        assert!(got.is_empty() || got.ends_with(b"\n"), "a cut line at EOF");
        let mut last = [None, None];
        for line in got.split_inclusive(|&b| b == b'\n') {
            let text = std::str::from_utf8(line).unwrap();
            let sender: usize = text[1..2].parse().unwrap();
            let seq: u64 = text[3..63].parse().unwrap();
            if let Some(prev) = last[sender] {
                assert!(seq > prev, "sender {sender}: {seq} after {prev}");
            }
            last[sender] = Some(seq);
        }
    }
    done.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}

fn a_connect_during_the_drain_is_refused_or_closed_at_once(engine: EngineChoice) {
    const LINES: usize = 1000;
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut server = TestServer::start_with(engine, |c| {
        c.sndbuf = 4096;
        c.queue = LINES;
        c.drain_timeout = Duration::from_secs(20);
    });
    let before = sockets();
    // A client behind, not dropping: the drain waits for it.
    let mut behind = Client::connect_small_rcvbuf(server.addr);
    server.wait_connected(1);
    let pad = "q".repeat(200);
    behind.send(
        &(0..LINES)
            .flat_map(|n| format!("s0 {n} {pad}\n").into_bytes())
            .collect::<Vec<u8>>(),
    );
    server.wait_totals("lines queued for the client", |t| {
        t.received == LINES as u64 && t.sent < LINES as u64 / 2
    });
    let stopping = server.begin_stop();
    // Until the listeners are shut, a connect may still be accepted, and is
    // then closed with the rest. Once they are, it is refused. Either way,
    // no connect hangs.
    wait_for("a connect to be refused", PATIENCE, || {
        match TcpStream::connect(server.addr) {
            Err(_) => Some(()),
            Ok(mut late) => {
                // A handshake that straddles a listener's shutdown can leave
                // the connect half-open in the kernel: the client counts it
                // established, the server has no socket for it at all (seen
                // with `ss`, 3 runs in 150 under CPU load), and no reset
                // comes until the client sends. So it sends a byte, not a
                // line: the kernel answers a connection nobody holds with a
                // reset, and one the server holds is closed with the rest.
                let _ = late.write_all(b"x");
                // One the server accepted is a client like any other: the
                // lines read before it came but still on their way (in
                // another core's ring, or in the batch a reader is
                // delivering) reach it too. Then it is closed.
                let (got, end) = read_until_closed(&mut late, Duration::from_secs(2));
                if let Err(e) = &end {
                    assert_eq!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset,
                        "a connect during the drain was neither refused nor closed: {e}, after {} bytes",
                        got.len()
                    );
                }
                let mut last = None;
                let whole = got.split_inclusive(|&b| b == b'\n');
                for line in whole.filter(|l| l.ends_with(b"\n")) {
                    let text = std::str::from_utf8(line).unwrap();
                    let mut parts = text.split(' ');
                    assert_eq!(parts.next(), Some("s0"), "{text:?}");
                    let seq: usize = parts.next().unwrap().parse().unwrap();
                    assert_eq!(parts.next(), Some(format!("{pad}\n").as_str()));
                    assert!(
                        last.is_none_or(|l| seq > l) && seq < LINES,
                        "{seq} after {last:?}"
                    );
                    last = Some(seq);
                }
                // A cut line only if the server's close was a reset.
                assert!(got.is_empty() || got.ends_with(b"\n") || end.is_err());
                None
            }
        }
    });
    // The client reads now: it gets every line, and the drain ends.
    let got = behind.read_to_end();
    assert_eq!(got.iter().filter(|&&b| b == b'\n').count(), LINES);
    stopping.join().unwrap().expect("stops cleanly");
    drop(behind);
    drop(server);
    wait_sockets_closed(&before);
}

/// Reads until the peer closes (`Ok`) or resets (`Err`), or `limit`
/// passes (`Err` too); returns what arrived.
fn read_until_closed(conn: &mut TcpStream, limit: Duration) -> (Vec<u8>, std::io::Result<()>) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, Err(std::io::ErrorKind::TimedOut.into()));
        }
        conn.set_read_timeout(Some(left)).unwrap();
        match conn.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (got, Err(e)),
        }
    }
}

/// An HTTP request to `server`'s endpoints with its header cut short,
/// once the endpoints have served another request after it.
fn half_sent_request(server: &ServerProcess) -> TcpStream {
    let mut half = TcpStream::connect(&server.metrics).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert_eq!(http_get(&server.metrics, "/healthz").status, 200);
    half
}

fn a_half_sent_http_request_does_not_hold_up_shutdown(engine: EngineChoice) {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut server = ServerProcess::start(&["--engine", engine_flag(engine)]);
    let half = half_sent_request(&server);
    let start = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit_within(Duration::from_secs(5));
    let took = start.elapsed();
    assert!(status.success(), "{status:?}");
    // The requests in flight get a second; the half-sent one is then closed.
    assert!(
        took < Duration::from_millis(2500),
        "took {took:?} to stop with a half-sent request open"
    );
    drop(half);
}

fn an_http_client_that_does_not_finish_its_header_is_closed(engine: EngineChoice) {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let server = ServerProcess::start(&["--engine", engine_flag(engine)]);
    let start = Instant::now();
    let mut half = TcpStream::connect(&server.metrics).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let silent = TcpStream::connect(&server.metrics).unwrap();
    let limit = HEADER_READ_TIMEOUT + Duration::from_secs(3);
    for (what, mut conn) in [("half-sent", half), ("silent", silent)] {
        conn.set_read_timeout(Some(limit)).unwrap();
        let mut got = Vec::new();
        match conn.read_to_end(&mut got) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("{what}: still open after {:?}: {e}", start.elapsed()),
        }
        let took = start.elapsed();
        assert!(
            took >= HEADER_READ_TIMEOUT - Duration::from_millis(500),
            "{what}: closed after {took:?}, before the header timeout"
        );
        assert!(took < limit, "{what}: closed after {took:?}");
        assert!(!got.starts_with(b"HTTP/1.1 200"), "{what}: answered");
    }
    // The endpoints still serve.
    assert_eq!(http_get(&server.metrics, "/healthz").status, 200);
}

fn a_second_sigterm_ends_the_process_at_once(engine: EngineChoice) {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Lame duck makes the first SIGTERM's stop last 30 s.
    let mut server = ServerProcess::start(&["--engine", engine_flag(engine), "--lame-duck", "30s"]);
    server.signal(Signal::SIGTERM);
    wait_for("lame duck to begin", PATIENCE, || {
        let log = server.log.lock().unwrap();
        log.iter()
            .any(|(_, l)| l.contains("lame duck: not accepting"))
            .then_some(())
    });
    let start = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit_within(Duration::from_secs(5));
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(status.code(), Some(1), "{status:?}");
    let said = wait_for("the log line", PATIENCE, || {
        let log = server.log.lock().unwrap();
        let said: Vec<String> = log
            .iter()
            .map(|(_, l)| l.clone())
            .filter(|l| l.contains("received again"))
            .collect();
        (!said.is_empty()).then_some(said)
    });
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("SIGTERM received again while stopping: exiting at once"),
        "{said:?}"
    );
}

fn a_second_sigterm_while_the_endpoints_stop_ends_the_process_at_once(engine: EngineChoice) {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut server = ServerProcess::start(&["--engine", engine_flag(engine)]);
    // A half-sent request keeps the endpoints stopping for their whole
    // grace (a second), after the drain (nothing to flush).
    let half = half_sent_request(&server);
    server.signal(Signal::SIGTERM);
    wait_for("shutdown to begin", PATIENCE, || {
        let log = server.log.lock().unwrap();
        log.iter()
            .any(|(_, l)| l.contains("shutting down"))
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit_within(Duration::from_secs(5));
    let took = start.elapsed();
    assert_eq!(status.code(), Some(1), "{status:?} after {took:?}");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    drop(half);
}

/// Established connections from the server's `port` to the client's
/// `peer_port`, as `ss` sees them.
fn established(port: &str, peer_port: u16) -> usize {
    let out = std::process::Command::new("ss")
        .args(["-Htn", "state", "established"])
        .arg(format!("( sport = :{port} and dport = :{peer_port} )"))
        .output()
        .expect("ss (iproute2) runs");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn an_http_client_that_never_reads_its_answers_is_closed_after_the_lifetime() {
    require_tool!("ss", "iproute2");
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // 2000 clients from 127.0.0.1.
    let mut cmd = ServerProcess::command(&[], &["--max-clients-per-ip", "0"]);
    // The connection lifetime is 1 s instead of 30.
    cmd.env("RINGCAST_FAILPOINT", "http-lifetime-1s");
    let server = ServerProcess::spawn(cmd);
    let port = server.metrics.rsplit(':').next().unwrap().to_owned();
    // Enough clients that each `/clients` answer is big.
    let clients: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    wait_for("the clients to be served", PATIENCE, || {
        http_get(&server.metrics, "/metrics")
            .body
            .contains("ringcast_connected_clients 2000")
            .then_some(())
    });
    let addr: std::net::SocketAddr = server.metrics.parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut conn: TcpStream = socket.into();
    let peer_port = conn.local_addr().unwrap().port();
    // Far more answer than the socket buffers hold: the server is stuck
    // writing, which the header timeout does not cover.
    let requests = b"GET /clients HTTP/1.1\r\nHost: x\r\n\r\n".repeat(20);
    conn.write_all(&requests).unwrap();
    assert_eq!(established(&port, peer_port), 1, "ss sees the connection");
    // The lifetime, and time to spare; the header timeout never applies.
    wait_for("the server to close it", Duration::from_secs(8), || {
        (established(&port, peer_port) == 0).then_some(())
    });
    drop(conn);
    drop(clients);
}

#[test]
fn a_server_stopped_before_it_was_ready_skips_the_lame_duck() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut cmd = ServerProcess::command(&[], &["--lame-duck", "30s"]);
    // Every accept loop starts 3 s late: the server is not ready before.
    cmd.env("RINGCAST_FAILPOINT", "accept-late");
    let mut child = cmd.spawn().unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    // Its signal handlers are installed before it binds, and it logs the
    // endpoints' address once bound, before the engine starts.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    loop {
        let mut line = String::new();
        assert!(
            std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0,
            "exited before it was bound"
        );
        if line.contains("metrics at http://") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("still running 10 s after SIGTERM: in the lame duck of a server never ready");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
