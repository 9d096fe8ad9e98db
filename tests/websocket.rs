//! WebSocket clients (`--ws`) in the same broadcast, on both engines, at
//! the protocol level: lines to messages and back, the handshake's errors,
//! the page, ping and pong, close, and the close codes of protocol errors.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, ServerProcess, TestServer, wait_for};
use ringcast::EngineChoice;
use ringcast::ops::clients::Transport;
use tungstenite::{Message, WebSocket};

on_both_engines!(
    lines_reach_websocket_clients_and_their_messages_reach_everyone,
    websocket_clients_are_counted_and_listed,
    the_ws_address_serves_the_page_and_answers_bad_handshakes,
    ping_gets_pong_and_close_gets_close,
    protocol_errors_close_with_their_code,
    the_servers_own_frames_are_not_delivered_messages,
    a_client_that_pings_and_never_reads_costs_the_server_one_pong,
    the_close_code_reaches_a_client_that_keeps_sending,
    half_handshakes_time_out_and_take_no_client_slot,
    a_page_from_another_origin_gets_403_and_is_counted,
    ws_origin_star_or_a_list_lets_those_pages_in,
);

fn start(engine: EngineChoice) -> (TestServer, SocketAddr) {
    let server = TestServer::start_with(engine, |c| {
        c.ws = Some("127.0.0.1:0".parse().unwrap());
    });
    let ws = server.ws_addr.expect("a --ws address");
    (server, ws)
}

fn ws_client(addr: SocketAddr) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let (ws, response) = tungstenite::client::client(format!("ws://{addr}/"), stream).unwrap();
    assert_eq!(response.status(), 101);
    ws
}

/// The next data message, skipping none.
fn next(ws: &mut WebSocket<TcpStream>) -> Message {
    loop {
        match ws.read().unwrap() {
            Message::Ping(_) | Message::Pong(_) => {}
            other => return other,
        }
    }
}

fn lines_reach_websocket_clients_and_their_messages_reach_everyone(engine: EngineChoice) {
    let (server, ws_addr) = start(engine);
    let mut ws = ws_client(ws_addr);
    let mut tcp = Client::connect(server.addr);
    server.wait_connected(2);
    tcp.send(b"hello\n\xff\xfe\n\n");
    assert_eq!(next(&mut ws), Message::text("hello"));
    assert_eq!(next(&mut ws), Message::binary(vec![0xff, 0xfe]));
    assert_eq!(next(&mut ws), Message::text(""), "an empty line");
    ws.send(Message::text("hi there")).unwrap();
    ws.send(Message::binary(b"a\nb".to_vec())).unwrap();
    let expected: Vec<Vec<u8>> = [
        &b"hello\n"[..],
        b"\xff\xfe\n",
        b"\n",
        b"hi there\n",
        b"a\n",
        b"b\n",
    ]
    .iter()
    .map(|l| l.to_vec())
    .collect();
    assert_eq!(tcp.read_lines(6), expected);
    // The sender gets its own lines back, as every client does.
    assert_eq!(next(&mut ws), Message::text("hi there"));
    assert_eq!(next(&mut ws), Message::text("a"));
    assert_eq!(next(&mut ws), Message::text("b"));
}

fn websocket_clients_are_counted_and_listed(engine: EngineChoice) {
    let (server, ws_addr) = start(engine);
    let mut ws = ws_client(ws_addr);
    let mut tcp = Client::connect(server.addr);
    server.wait_connected(2);
    let me = ws.get_ref().local_addr().unwrap();
    let info = wait_for("the ws client listed", PATIENCE, || {
        server.clients().into_iter().find(|c| c.peer == me)
    });
    assert_eq!(info.transport, Transport::Websocket);
    // Its message counts as the line it becomes; what it is sent, as the
    // frame it gets (2 bytes of header, no mask).
    ws.send(Message::text("hi")).unwrap();
    assert_eq!(tcp.read_lines(1), vec![b"hi\n".to_vec()]);
    assert_eq!(next(&mut ws), Message::text("hi"));
    let info = wait_for("the ws client's counters", PATIENCE, || {
        server
            .clients()
            .into_iter()
            .find(|c| c.peer == me && c.bytes_out > 0)
    });
    assert_eq!(
        (info.msgs_in, info.bytes_in, info.sent, info.bytes_out),
        (1, 3, 1, 4),
        "{info:?}"
    );
    drop(ws);
    server.wait_connected(1);
}

/// One HTTP request on a fresh connection; the whole response.
fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn the_ws_address_serves_the_page_and_answers_bad_handshakes(engine: EngineChoice) {
    let (server, ws_addr) = start(engine);
    let page = raw_request(ws_addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("<title>ringcast chat</title>") && page.contains("new WebSocket"));
    let missing = raw_request(ws_addr, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let no_key = raw_request(
        ws_addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    assert!(no_key.starts_with("HTTP/1.1 400"), "{no_key}");
    let old = raw_request(
        ws_addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5aw==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    );
    assert!(old.starts_with("HTTP/1.1 426") && old.contains("Sec-WebSocket-Version: 13"));
    let garbage = raw_request(ws_addr, b"\x16\x03\x01\x02\x00 a TLS hello?\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    // Answered and closed: nobody is left connected.
    server.wait_connected(0);
}

fn ping_gets_pong_and_close_gets_close(engine: EngineChoice) {
    let (server, ws_addr) = start(engine);
    let mut ws = ws_client(ws_addr);
    server.wait_connected(1);
    ws.send(Message::Ping(b"beat".to_vec().into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"beat".to_vec().into()));
    ws.close(None).unwrap();
    // The server answers the close and closes the connection.
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => {}
            Ok(other) => panic!("after close: {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    server.wait_connected(0);
}

/// A masked client frame.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1, 2, 3, 4];
    let mut out = vec![first];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Sends `bytes` after a handshake, and returns the close code the server
/// answers with before it closes.
fn close_code_for(ws_addr: SocketAddr, bytes: &[u8]) -> u16 {
    let mut ws = ws_client(ws_addr);
    ws.get_mut().write_all(bytes).unwrap();
    let mut got = Vec::new();
    ws.get_mut().read_to_end(&mut got).unwrap();
    // The close frame: 0x88, its length, then the code.
    let at = got
        .windows(2)
        .rposition(|w| w == [0x88, 0x02])
        .unwrap_or_else(|| panic!("no close frame in {got:?}"));
    u16::from_be_bytes([got[at + 2], got[at + 3]])
}

fn protocol_errors_close_with_their_code(engine: EngineChoice) {
    let (server, ws_addr) = start(engine);
    // Test servers accept lines of up to 64 KiB; a message over that is too big.
    let big = vec![b'x'; 70_000];
    let mut fragmented_big = frame(0x01, &big[..40_000]);
    fragmented_big.extend(frame(0x80, &big[40_000..]));
    assert_eq!(close_code_for(ws_addr, &fragmented_big), 1009);
    assert_eq!(close_code_for(ws_addr, &frame(0x81, b"\xff\xfe")), 1007);
    assert_eq!(close_code_for(ws_addr, b"\x81\x02hi"), 1002, "unmasked");
    assert_eq!(
        close_code_for(ws_addr, &frame(0x83, b"?")),
        1002,
        "reserved opcode"
    );
    assert_eq!(
        close_code_for(ws_addr, &frame(0x80, b"?")),
        1002,
        "nothing to continue"
    );
    server.wait_connected(0);
    assert_eq!(server.totals().received, 0, "nothing broken was published");
}

/// A WebSocket client on a raw socket with a small receive buffer, past
/// its handshake: for clients that misbehave.
fn raw_ws_client(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        got.push(byte[0]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101 "), "{got:?}");
    s
}

/// Reads server frames, after those that start `buf`, until a close frame
/// and returns its code, or what came first instead: an end of file or an
/// error.
fn read_until_close(s: &mut TcpStream, mut buf: Vec<u8>) -> Result<u16, String> {
    let mut chunk = [0u8; 65536];
    let mut frames = 0;
    loop {
        while buf.len() >= 2 {
            let (header, len) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (4, usize::from(u16::from_be_bytes([buf[2], buf[3]]))),
                127 if buf.len() >= 10 => (
                    10,
                    u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                ),
                126 | 127 => break,
                n => (2, usize::from(n)),
            };
            if buf.len() < header + len {
                break;
            }
            if buf[0] & 0x0f == 0x8 {
                return Ok(u16::from_be_bytes([buf[header], buf[header + 1]]));
            }
            frames += 1;
            buf.drain(..header + len);
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(format!("end of file after {frames} frames")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("{e} after {frames} frames")),
        }
    }
}

/// Reads and drops everything `stream` receives, in a thread.
fn drain(stream: &TcpStream) {
    let mut stream = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    });
}

fn the_servers_own_frames_are_not_delivered_messages(engine: EngineChoice) {
    let (server, ws_addr) = start(engine);
    let mut ws = ws_client(ws_addr);
    server.wait_connected(1);
    let me = ws.get_ref().local_addr().unwrap();
    for i in 0..10u8 {
        ws.send(Message::Ping(vec![i].into())).unwrap();
        assert_eq!(ws.read().unwrap(), Message::Pong(vec![i].into()));
    }
    let page = raw_request(ws_addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    let info = wait_for("the ws client listed", PATIENCE, || {
        server.clients().into_iter().find(|c| c.peer == me)
    });
    assert_eq!(info.sent, 0, "a pong is not a delivered message");
    // Once it is gone, everything it was sent has been counted.
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    server.wait_connected(0);
    let t = server.totals();
    assert_eq!(
        (t.sent, t.bytes_sent, t.batches),
        (0, 0, 0),
        "no line was sent: handshakes, pongs, the page and closes are not messages"
    );
    // They have a counter of their own: at least ten pongs and the page.
    assert!(t.own_bytes_sent > 10 * 3 + 2000, "{t:?}");
}

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn a_client_that_pings_and_never_reads_costs_the_server_one_pong(engine: EngineChoice) {
    let name = match engine {
        EngineChoice::Uring => "uring",
        _ => "tokio",
    };
    let server = ServerProcess::start(&["--ws", "127.0.0.1:0", "--engine", name, "--threads", "2"]);
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&server.ready_file).unwrap()).unwrap();
    let ws_addr: SocketAddr = ready["ws"].as_str().unwrap().parse().unwrap();
    let mut tcp = server.connect(1).pop().unwrap();
    // It reads nothing, ever.
    let mut pinger = raw_ws_client(ws_addr);
    let ping = frame(0x89, b"beat");
    // Every ping before a message is answered before it is published.
    let mut flood = |pings: usize, then: &str| {
        pinger.write_all(&ping.repeat(pings)).unwrap();
        pinger.write_all(&frame(0x81, then.as_bytes())).unwrap();
        assert_eq!(tcp.read_lines(1), [format!("{then}\n").into_bytes()]);
    };
    // Buffers and the allocator's pools reach their size.
    flood(20_000, "warm");
    let before = rss_kib(server.child.id());
    flood(300_000, "done");
    let after = rss_kib(server.child.id());
    // One queued pong per ping would be some 100 bytes each: 30 MB.
    assert!(
        after < before + 4 * 1024,
        "300,000 unanswered pings grew the server from {before} KiB to {after} KiB"
    );
}

fn the_close_code_reaches_a_client_that_keeps_sending(engine: EngineChoice) {
    let server = TestServer::start_with(engine, |c| {
        c.ws = Some("127.0.0.1:0".parse().unwrap());
        c.sndbuf = 4096;
        c.queue = 4;
    });
    let mut ws = raw_ws_client(server.ws_addr.unwrap());
    let me = ws.local_addr().unwrap();
    let mut tcp = Client::connect(server.addr);
    drain(&tcp.stream);
    server.wait_connected(2);
    // The WebSocket client reads nothing until its queue and socket are
    // full: the close frame will wait behind them.
    let line = [vec![b'x'; 200], b"\n".to_vec()].concat().repeat(50);
    wait_for("the ws client to be slow", PATIENCE, || {
        tcp.send(&line);
        server
            .clients()
            .into_iter()
            .any(|c| c.peer == me && c.slow)
            .then_some(())
    });
    // An unmasked frame: 1002. Then it goes on sending.
    ws.write_all(b"\x81\x02hi").unwrap();
    server.wait_totals("the protocol error", |t| t.protocol_errors == 1);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = std::thread::spawn({
        let (stop, mut ws) = (Arc::clone(&stop), ws.try_clone().unwrap());
        ws.set_write_timeout(Some(PATIENCE)).unwrap();
        let junk = frame(0x81, b"more").repeat(100);
        move || {
            while !stop.load(Ordering::Relaxed) && ws.write_all(&junk).is_ok() {}
        }
    });
    // It reads a little at a time until its queue and the close frame
    // have gone to the kernel, where they wait for it to read on.
    let mut got = Vec::new();
    wait_for("its queue to go to the kernel", PATIENCE, || {
        let mut chunk = [0u8; 512];
        let n = ws.read(&mut chunk).unwrap();
        got.extend_from_slice(&chunk[..n]);
        let listed = server.clients().into_iter().find(|c| c.peer == me);
        listed.is_none_or(|c| c.queued == 0).then_some(())
    });
    let code = read_until_close(&mut ws, got);
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    assert_eq!(code, Ok(1002), "the close frame with its code");
    let _ = ws.shutdown(Shutdown::Write);
    server.wait_connected(1);
}

fn half_handshakes_time_out_and_take_no_client_slot(engine: EngineChoice) {
    let timeout = Duration::from_millis(500);
    let server = TestServer::start_with(engine, |c| {
        c.ws = Some("127.0.0.1:0".parse().unwrap());
        c.max_clients = 3;
        c.handshake_timeout = timeout;
    });
    let ws_addr = server.ws_addr.unwrap();
    let start = Instant::now();
    let mut half: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(ws_addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    server.wait_totals("50 pending handshakes", |t| t.pending_handshakes == 50);
    // Line clients get every --max-clients slot meanwhile.
    let mut tcp: Vec<Client> = (0..3).map(|_| Client::connect(server.addr)).collect();
    server.wait_connected(3);
    tcp[0].send(b"hi\n");
    for c in &mut tcp {
        assert_eq!(c.read_lines(1), [b"hi\n".to_vec()]);
    }
    // A handshake that completes while they are all taken is answered.
    let full = raw_request(
        ws_addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert!(full.starts_with("HTTP/1.1 503 "), "{full}");
    // The half-handshakes are closed once their time is up.
    for s in &mut half {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "nothing is answered: {rest:?}");
    }
    assert!(start.elapsed() >= timeout, "closed before their time");
    let t = server.wait_totals(
        "50 handshake timeouts, and no WebSocket connection left",
        |t| t.handshake_timeouts == 50 && t.pending_handshakes == 0 && t.connected == 3,
    );
    assert_eq!(t.rejected, 1, "the handshake that found every slot taken");
}

/// Sends a WebSocket handshake to `addr` (its `Host`) with `origin`, if
/// any, and returns the status of the answer and the connection: open on
/// 101, closing otherwise.
fn handshake_from(addr: SocketAddr, origin: Option<&str>) -> (u16, String, TcpStream) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\n{origin}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "closed mid-answer: {answer:?}"
        );
        answer.push(byte[0]);
    }
    let answer = String::from_utf8(answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    (status, answer, s)
}

/// A 403's body, and the server's end of file after it.
fn forbidden_body(mut s: TcpStream) -> String {
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// By default only the server's own pages may open a WebSocket: a page
/// from elsewhere gets 403 (counted, and closed like any HTTP answer);
/// the same origin, and a client with no Origin, get 101.
fn a_page_from_another_origin_gets_403_and_is_counted(engine: EngineChoice) {
    let (server, ws_addr) = start(engine);
    for evil in ["http://evil.example", "null", &format!("https://{ws_addr}")] {
        let (status, head, s) = handshake_from(ws_addr, Some(evil));
        assert_eq!(status, 403, "{evil}: {head}");
        assert!(forbidden_body(s).contains("--ws-origin"), "{evil}");
    }
    server.wait_totals("three refusals counted, nobody connected", |t| {
        t.origin_rejected == 3 && t.connected == 0 && t.pending_handshakes == 0
    });
    let (status, _, _same) = handshake_from(ws_addr, Some(&format!("http://{ws_addr}")));
    assert_eq!(status, 101, "the server's own origin");
    let (status, _, _plain) = handshake_from(ws_addr, None);
    assert_eq!(status, 101, "no Origin: not a browser");
    let mut ws = ws_client(ws_addr);
    let t = server.wait_totals("three clients", |t| t.connected == 3);
    assert_eq!(t.origin_rejected, 3);
    ws.send(Message::text("still served")).unwrap();
    assert_eq!(next(&mut ws), Message::text("still served"));
}

/// `--ws-origin '*'` lets any page in; a list, only its own.
fn ws_origin_star_or_a_list_lets_those_pages_in(engine: EngineChoice) {
    let with = |origins: &str| {
        let server = TestServer::start_with(engine, |c| {
            c.ws = Some("127.0.0.1:0".parse().unwrap());
            c.ws_origin = ringcast::config::WsOrigins::from_list(origins);
        });
        let ws = server.ws_addr.unwrap();
        (server, ws)
    };
    let (any, ws_addr) = with("*");
    let mut open = Vec::new();
    for origin in ["http://evil.example", "null"] {
        let (status, head, s) = handshake_from(ws_addr, Some(origin));
        assert_eq!(status, 101, "{origin}: {head}");
        open.push(s);
    }
    any.wait_connected(2);
    drop(any);
    let (listed, ws_addr) = with("https://chat.example, http://localhost:8080");
    for origin in ["https://chat.example", "HTTP://LOCALHOST:8080"] {
        let (status, head, s) = handshake_from(ws_addr, Some(origin));
        assert_eq!(status, 101, "{origin}: {head}");
        open.push(s);
    }
    listed.wait_connected(2);
    let own = format!("http://{ws_addr}");
    for origin in ["http://chat.example", "http://localhost:8081", &own] {
        let (status, head, s) = handshake_from(ws_addr, Some(origin));
        assert_eq!(status, 403, "{origin}: {head}");
        drop(forbidden_body(s));
    }
    let t = listed.wait_totals("three refusals", |t| t.origin_rejected == 3);
    assert_eq!(t.connected, 2, "{t:?}");
}
