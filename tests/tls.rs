//! TLS on both engines: line clients and WebSocket clients over TLS in the
//! same broadcast as plain ones, with rustls, Python's `ssl` and `openssl
//! s_client` as clients; the slow-reader rules for a TLS client that does
//! not read; a handshake that stalls; certificates reloaded on SIGHUP.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tls::TestCert;
use common::{Client, PATIENCE, ServerProcess, TestServer, wait_for};
use ringcast::EngineChoice;

on_both_engines!(
    tls_and_plain_line_clients_share_the_broadcast,
    websocket_clients_over_tls_share_the_broadcast,
    a_tls_client_that_does_not_read_loses_only_its_own_messages,
    a_handshake_that_stalls_is_closed_after_the_handshake_timeout,
    a_client_that_is_not_tls_is_closed_and_takes_no_client_slot,
    pythons_ssl_client_gets_and_sends_lines,
    openssl_s_client_gets_and_sends_lines,
);

/// A server with TLS on its line address and plain line clients beside.
fn start(engine: EngineChoice, cert: &TestCert) -> (TestServer, SocketAddr) {
    let server = TestServer::start_with(engine, |c| {
        let mut tls = cert.config();
        tls.plain_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tls = Some(tls);
    });
    let plain = server.plain_addr.expect("a --plain-listen address");
    (server, plain)
}

fn tls_and_plain_line_clients_share_the_broadcast(engine: EngineChoice) {
    let cert = TestCert::new();
    let (server, plain) = start(engine, &cert);
    let mut secure = cert.connect(server.addr);
    let mut nc = Client::connect(plain);
    server.wait_connected(2);
    nc.send(b"from plain\n");
    secure.send(b"from tls\r\n");
    // Each sees both lines, byte for byte, each sender's in order.
    let mut got = secure.read_lines(2);
    got.sort();
    assert_eq!(
        got,
        vec![b"from plain\n".to_vec(), b"from tls\r\n".to_vec()]
    );
    let mut got = nc.read_lines(2);
    got.sort();
    assert_eq!(
        got,
        vec![b"from plain\n".to_vec(), b"from tls\r\n".to_vec()]
    );
    // Delivered messages count plaintext, as for plain clients.
    server.wait_totals("4 deliveries of 2 lines", |t| {
        t.received == 2 && t.sent == 4 && t.bytes_sent == 2 * (11 + 10)
    });
    // Many lines at once, across records.
    let lines: Vec<Vec<u8>> = (0..2000)
        .map(|i| format!("{i:0>100}\n").into_bytes())
        .collect();
    nc.send(&lines.concat());
    assert!(secure.read_lines(2000) == lines, "every line, in order");
}

fn websocket_clients_over_tls_share_the_broadcast(engine: EngineChoice) {
    let cert = TestCert::new();
    let server = TestServer::start_with(engine, |c| {
        let mut tls = cert.config();
        tls.plain_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tls = Some(tls);
        c.ws = Some("127.0.0.1:0".parse().unwrap());
    });
    let ws_addr = server.ws_addr.unwrap();
    // The page over https.
    let mut page = cert.connect(ws_addr);
    page.send(
        format!(
            "GET / HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
            ws_addr.port()
        )
        .as_bytes(),
    );
    let mut answer = String::new();
    let _ = page.stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.80}");
    assert!(
        answer.contains("wss://"),
        "the page speaks wss:// over https"
    );
    // A page served over https may open a WebSocket; the same page over
    // http is another origin.
    let upgrade = |origin: &str| {
        let mut c = cert.connect(ws_addr);
        c.send(
            format!(
                "GET / HTTP/1.1\r\nHost: localhost:{port}\r\nOrigin: {origin}\r\n\
                 Upgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                port = ws_addr.port()
            )
            .as_bytes(),
        );
        let mut status = [0u8; 12];
        c.stream.read_exact(&mut status).unwrap();
        String::from_utf8_lossy(&status).into_owned()
    };
    let port = ws_addr.port();
    assert_eq!(
        upgrade(&format!("https://localhost:{port}")),
        "HTTP/1.1 101"
    );
    assert_eq!(upgrade(&format!("http://localhost:{port}")), "HTTP/1.1 403");
    // A WebSocket client over TLS.
    let stream = cert.connect(ws_addr).stream;
    let url = format!("wss://localhost:{}/", ws_addr.port());
    let (mut ws, _) = tungstenite::client(url.as_str(), stream).expect("a wss handshake");
    let mut nc = Client::connect(server.plain_addr.unwrap());
    server.wait_connected(2);
    nc.send(b"to the browser\n");
    assert_eq!(
        ws.read().unwrap(),
        tungstenite::Message::text("to the browser")
    );
    ws.send(tungstenite::Message::text("from the browser"))
        .unwrap();
    let mut got = nc.read_lines(2);
    got.sort();
    assert_eq!(
        got,
        vec![b"from the browser\n".to_vec(), b"to the browser\n".to_vec()]
    );
}

fn a_tls_client_that_does_not_read_loses_only_its_own_messages(engine: EngineChoice) {
    let cert = TestCert::new();
    let server = TestServer::start_with(engine, |c| {
        let mut tls = cert.config();
        tls.plain_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tls = Some(tls);
        c.queue = 10;
        c.sndbuf = 4096;
    });
    let plain = server.plain_addr.unwrap();
    // Connected, and never reads; its kernel receive buffer is small.
    let stuck = cert.connect_small_rcvbuf(server.addr);
    let mut reader = cert.connect(server.addr);
    let mut publisher = Client::connect(plain);
    server.wait_connected(3);
    let [stuck_id, reader_id] = [&stuck, &reader].map(|c| {
        let me = c.stream.sock.local_addr().unwrap();
        wait_for("the client listed", PATIENCE, || {
            server.clients().into_iter().find(|i| i.peer == me)
        })
        .id
    });
    let line = [vec![b'x'; 999], b"\n".to_vec()].concat();
    let n = 2000;
    // The publisher is never held back by the client that does not read:
    // all its lines go out while that client is stuck.
    let started = Instant::now();
    for _ in 0..n {
        publisher.send(&line);
    }
    let reading = std::thread::spawn(move || {
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        reader
            .stream
            .sock
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        while let Ok(k) = reader.stream.read(&mut buf) {
            if k == 0 {
                break;
            }
            assert!(buf[..k].iter().all(|&b| b == b'x' || b == b'\n'));
            got += buf[..k].iter().filter(|&&b| b == b'\n').count();
        }
        // Still connected, to be listed.
        (got, reader)
    });
    let info = |id| server.clients().into_iter().find(|i| i.id == id).unwrap();
    let stuck_info = wait_for("the stuck client to drop", PATIENCE, || {
        let i = info(stuck_id);
        (i.dropped + i.sent + i.queued as u64 == n as u64).then_some(i)
    });
    // Its allowance: --queue messages (a record's worth of them on its way
    // count as queued), and what the kernel's buffers took.
    assert!(stuck_info.dropped > 0, "{stuck_info:?}");
    assert!(stuck_info.queued <= 10 + 17, "{stuck_info:?}");
    assert!(stuck_info.sent < 64, "{stuck_info:?}");
    assert!(stuck_info.tls, "listed as a TLS client");
    let (got, _reader) = reading.join().unwrap();
    let reader_info = info(reader_id);
    // Whatever the reader lost is counted as its own drops; nothing else.
    assert_eq!(
        got as u64 + reader_info.dropped,
        n as u64,
        "{reader_info:?}"
    );
    assert!(started.elapsed() < PATIENCE);
    drop(stuck);
}

fn a_handshake_that_stalls_is_closed_after_the_handshake_timeout(engine: EngineChoice) {
    let cert = TestCert::new();
    let server = TestServer::start_with(engine, |c| {
        c.tls = Some(cert.config());
        c.handshake_timeout = Duration::from_millis(500);
        c.max_clients = 1;
    });
    // Half a ClientHello: a record header promising more, then nothing.
    let mut stalled = TcpStream::connect(server.addr).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    // It takes no client slot: with --max-clients 1, a client completes
    // its handshake meanwhile and is served.
    let mut other = cert.connect(server.addr);
    server.wait_connected(1);
    other.send(b"still served\n");
    assert_eq!(other.read_lines(1), vec![b"still served\n".to_vec()]);
    // The stalled one is closed once its time is up.
    let started = Instant::now();
    stalled.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 64];
    let closed = matches!(stalled.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "the server closed the stalled handshake");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Counted, its pending slot given back, and the client still there.
    server.wait_totals("the timeout counted", |t| {
        t.handshake_timeouts == 1 && t.pending_handshakes == 0 && t.connected == 1
    });
}

fn a_client_that_is_not_tls_is_closed_and_takes_no_client_slot(engine: EngineChoice) {
    let cert = TestCert::new();
    let server = TestServer::start_with(engine, |c| {
        c.tls = Some(cert.config());
    });
    let mut plain = Client::connect(server.addr);
    plain.send(b"hello in the clear\n");
    assert!(plain.wait_closed_by_server(), "closed: not a TLS client");
    let mut secure = cert.connect(server.addr);
    server.wait_connected(1);
    secure.send(b"after\n");
    assert_eq!(secure.read_lines(1), vec![b"after\n".to_vec()]);
    let totals = server.wait_totals("the failed session counted", |t| t.tls_errors == 1);
    assert_eq!(totals.received, 1, "the cleartext line was not a message");
    assert_eq!(totals.pending_handshakes, 0, "{totals:?}");
}

/// Python's `ssl` module as a client, trusting the test certificate:
/// sends a line, then prints the lines it receives.
const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection((host, port), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        print("connected", flush=True)
        f = s.makefile("rwb")
        assert sys.stdin.readline() == "go\n"
        f.write(b"from python\n"); f.flush()
        for _ in range(2):
            sys.stdout.write(f.readline().decode()); sys.stdout.flush()
"#;

fn pythons_ssl_client_gets_and_sends_lines(engine: EngineChoice) {
    require_tool!("python3", "python3");
    let cert = TestCert::new();
    let (server, plain) = start(engine, &cert);
    let mut python = Command::new("python3")
        .args(["-c", PYTHON_CLIENT, "127.0.0.1"])
        .arg(server.addr.port().to_string())
        .arg(&cert.cert)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (apt-get install -y python3)");
    let mut out = std::io::BufReader::new(python.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "connected\n");
    let mut nc = Client::connect(plain);
    server.wait_connected(2);
    python.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(nc.read_lines(1), vec![b"from python\n".to_vec()]);
    nc.send(b"from nc\n");
    let mut got = String::new();
    out.read_to_string(&mut got).unwrap();
    assert_eq!(got, "from python\nfrom nc\n");
    assert!(python.wait().unwrap().success());
}

fn openssl_s_client_gets_and_sends_lines(engine: EngineChoice) {
    require_tool!("openssl", "openssl");
    let cert = TestCert::new();
    let (server, plain) = start(engine, &cert);
    let mut nc = Client::connect(plain);
    server.wait_connected(1);
    let mut openssl = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-connect"])
        .arg(server.addr.to_string())
        .args(["-servername", "localhost", "-CAfile"])
        .arg(&cert.cert)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl (apt-get install -y openssl)");
    // Connected once the server counts it as a client.
    server.wait_connected(2);
    let mut stdin = openssl.stdin.take().unwrap();
    stdin.write_all(b"from openssl\n").unwrap();
    assert_eq!(nc.read_lines(1), vec![b"from openssl\n".to_vec()]);
    nc.send(b"from nc\n");
    let mut out = std::io::BufReader::new(openssl.stdout.take().unwrap());
    let mut got = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        got.push(line);
    }
    assert_eq!(got, ["from openssl\n", "from nc\n"]);
    drop(stdin);
    let _ = openssl.kill();
    let _ = openssl.wait();
}

/// The whole binary: SIGHUP reads the files again; a bad file keeps the
/// old certificate and logs one error line.
#[test]
fn sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old() {
    let first = TestCert::new();
    let (cert, key) = (
        common::scratch_path("live-cert.pem"),
        common::scratch_path("live-key.pem"),
    );
    first.copy_to(&cert, &key);
    let server = ServerProcess::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    first.connect(server.addr).send(b"hi\n");
    let second = TestCert::new();
    assert!(
        second.try_connect(server.addr).is_err(),
        "not trusted before the reload"
    );
    second.copy_to(&cert, &key);
    server.signal(nix::sys::signal::Signal::SIGHUP);
    let logged = |what: &str| {
        let what = what.to_owned();
        let log = std::sync::Arc::clone(&server.log);
        move || {
            log.lock()
                .unwrap()
                .iter()
                .filter(|(_, l)| l.contains(&what))
                .count()
        }
    };
    let reloaded = logged("TLS certificate reloaded");
    wait_for("the reload logged", PATIENCE, || {
        (reloaded() == 1).then_some(())
    });
    second.connect(server.addr).send(b"hi\n");
    assert!(
        first.try_connect(server.addr).is_err(),
        "the old one is gone"
    );
    // A bad file: the second certificate stays.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    let failed = logged("cannot reload the TLS certificate");
    wait_for("the failure logged", PATIENCE, || {
        (failed() == 1).then_some(())
    });
    second.connect(server.addr).send(b"still\n");
    let _ = std::fs::remove_file(&cert);
    let _ = std::fs::remove_file(&key);
}

/// A configuration that cannot work exits 2 with one line naming it.
#[test]
fn a_bad_certificate_or_a_missing_key_is_a_configuration_error() {
    let cert = TestCert::new();
    let bin = env!("CARGO_BIN_EXE_ringcast");
    let run = |args: &[&str]| {
        let out = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--tls-cert", cert.cert.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-key"), "{err}");
    let (code, err) = run(&[
        "--tls-cert",
        cert.key.to_str().unwrap(),
        "--tls-key",
        cert.key.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no PEM certificate"), "{err}");
    let (code, err) = run(&["--plain-listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-cert"), "{err}");
}
