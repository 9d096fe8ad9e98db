//! WebSocket clients (`--ws`) in the same broadcast, on both engines, at
//! the protocol level: lines to messages and back, the handshake's errors,
//! the page, ping and pong, close, and the close codes of protocol errors.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};

use common::{Client, PATIENCE, TestServer, wait_for};
use ringcast::EngineChoice;
use ringcast::ops::clients::Transport;
use tungstenite::{Message, WebSocket};

on_both_engines!(
    lines_reach_websocket_clients_and_their_messages_reach_everyone,
    websocket_clients_are_counted_and_listed,
    the_ws_address_serves_the_page_and_answers_bad_handshakes,
    ping_gets_pong_and_close_gets_close,
    protocol_errors_close_with_their_code,
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
    let ws = ws_client(ws_addr);
    let _tcp = Client::connect(server.addr);
    server.wait_connected(2);
    let me = ws.get_ref().local_addr().unwrap();
    let info = wait_for("the ws client listed", PATIENCE, || {
        server.clients().into_iter().find(|c| c.peer == me)
    });
    assert_eq!(info.transport, Transport::Websocket);
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
