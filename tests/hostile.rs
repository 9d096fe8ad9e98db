//! Hostile and careless clients on both engines: random binary garbage,
//! overlong lines, resets while the server is writing, half-closed sockets.
//! Known lines must get through intact and in order, the server must not
//! panic, and every socket and client slot must be given back.
//!
//! The tests list this process's sockets and measure its RSS, and the
//! server runs in this process, so they take turns (`serial`) rather than
//! run in parallel.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{
    Client, PATIENCE, TestServer, connect_all, sockets, wait_for, wait_for_quietly,
    wait_sockets_closed,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use ringcast::EngineChoice;

on_both_engines!(
    garbage_never_corrupts_known_lines,
    clients_that_vanish_mid_stream_leave_nothing_behind,
);

static SERIAL: Mutex<()> = Mutex::new(());

/// One test at a time in this binary: RSS is per process.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The server's log (every test's), captured so a test can wait for
/// "serving" and read the warnings.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured log from byte `from` on.
fn log_since(from: usize) -> String {
    let log = LOG.lock().unwrap_or_else(|p| p.into_inner());
    String::from_utf8_lossy(&log[from.min(log.len())..]).into_owned()
}

fn log_len() -> usize {
    LOG.lock().unwrap_or_else(|p| p.into_inner()).len()
}

/// Starts a server and waits until it logs "serving": only then are all of
/// its runtimes (and their descriptors) up. (A core can accept before the
/// other core's runtime exists.)
fn start_serving(
    engine: EngineChoice,
    tweak: impl FnOnce(&mut ringcast::Config),
) -> (TestServer, usize) {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("ringcast=info")
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init();
    });
    let from = log_len();
    let server = TestServer::start_with(engine, tweak);
    wait_for("the server to log serving", PATIENCE, || {
        log_since(from).contains(" serving ").then_some(())
    });
    (server, from)
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Reads and discards everything on `stream` until EOF or an error.
fn drain(stream: &TcpStream) -> JoinHandle<()> {
    let mut stream = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    })
}

/// Writes `bytes` in random-sized pieces; stops quietly at the first error
/// (the server may have disconnected us) and says whether all went out.
fn send_in_chunks(stream: &mut TcpStream, bytes: &[u8], rng: &mut StdRng, max: usize) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + rng.random_range(1..=max)).min(bytes.len());
        if stream.write_all(&bytes[at..end]).is_err() {
            return false;
        }
        at = end;
    }
    true
}

/// Random bytes, any value but `\n`.
fn noise(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    for b in &mut v {
        if *b == b'\n' {
            *b = b'\r';
        }
    }
    v
}

/// The `n`th line of the well-behaved publisher: numbered, of varying
/// length, with a body that depends on `n`, so a cut, a splice or a stray
/// byte shows.
fn known_line(n: usize) -> Vec<u8> {
    let body: String = (0..n % 300)
        .map(|i| char::from(b'a' + ((n * 7 + i) % 26) as u8))
        .collect();
    format!("KNOWN {n:06} {body} END\n").into_bytes()
}

#[derive(Clone, Copy, Debug)]
enum Garbage {
    /// Random lines of up to 600 bytes, a random partial line at the end.
    Lines,
    /// Random bytes with no newline at all, past `--max-line`.
    Overlong,
    /// A few random lines, then an overlong one.
    LinesThenOverlong,
}

/// What a garbage client sends, and how many complete lines (and bytes of
/// them) the server should take from it.
fn garbage(kind: Garbage, rng: &mut StdRng, max_line: usize) -> (Vec<u8>, u64, u64) {
    let mut out = Vec::new();
    let mut lines = 0;
    let line_count = match kind {
        Garbage::Lines => 400,
        Garbage::LinesThenOverlong => 40,
        Garbage::Overlong => 0,
    };
    for _ in 0..line_count {
        let len = rng.random_range(0..600);
        out.extend(noise(rng, len));
        out.push(b'\n');
        lines += 1;
    }
    let complete_bytes = out.len() as u64;
    match kind {
        Garbage::Lines => {
            let len = rng.random_range(0..100);
            out.extend(noise(rng, len));
        }
        Garbage::Overlong | Garbage::LinesThenOverlong => {
            let len = max_line + 1 + rng.random_range(0..4 * max_line);
            out.extend(noise(rng, len));
        }
    }
    (out, lines, complete_bytes)
}

fn garbage_never_corrupts_known_lines(engine: EngineChoice) {
    const MAX_LINE: usize = 4096;
    const KNOWN: usize = 1500;
    const KINDS: [Garbage; 6] = [
        Garbage::Lines,
        Garbage::Lines,
        Garbage::Lines,
        Garbage::Overlong,
        Garbage::Overlong,
        Garbage::LinesThenOverlong,
    ];
    let _turn = serial();
    let (mut server, log_from) = start_serving(engine, |c| {
        c.max_line = MAX_LINE;
    });
    // The reader stays to the end: its sockets are part of the baseline.
    let mut reader = connect_all(&server, 1).remove(0);
    let sockets_before = sockets();
    let rss_before = rss_kib();

    let seed = 0x5eed_0000 + engine as u64;
    let mut rng = StdRng::seed_from_u64(seed);
    let plans: Vec<(Garbage, Vec<u8>, u64, u64, u64)> = KINDS
        .iter()
        .map(|&kind| {
            let (bytes, lines, line_bytes) = garbage(kind, &mut rng, MAX_LINE);
            (kind, bytes, lines, line_bytes, rng.random())
        })
        .collect();
    let known: Vec<Vec<u8>> = (0..KNOWN).map(known_line).collect();
    let garbage_lines: u64 = plans.iter().map(|p| p.2).sum();
    let expected_lines = KNOWN as u64 + garbage_lines;
    let expected_bytes =
        known.iter().map(|l| l.len() as u64).sum::<u64>() + plans.iter().map(|p| p.3).sum::<u64>();

    let mut garbage_clients = connect_all(&server, 1 + KINDS.len());
    let mut publisher = garbage_clients.remove(0);
    let start = Arc::new(Barrier::new(1 + KINDS.len() + 1));

    let reading = std::thread::spawn(move || {
        let lines = reader.read_lines(expected_lines as usize);
        let mut next = 0;
        for line in &lines {
            if line.starts_with(b"KNOWN ") {
                assert!(next < KNOWN, "more known lines than were sent");
                assert_eq!(
                    String::from_utf8_lossy(line),
                    String::from_utf8_lossy(&known_line(next)),
                    "known line {next} corrupted or out of order"
                );
                next += 1;
            }
        }
        assert_eq!(next, KNOWN, "known lines missing");
        reader
    });

    let publishing = {
        let start = Arc::clone(&start);
        let mut rng = StdRng::seed_from_u64(seed ^ 0xff);
        let all = known.concat();
        std::thread::spawn(move || {
            let echo = drain(&publisher.stream);
            start.wait();
            assert!(send_in_chunks(&mut publisher.stream, &all, &mut rng, 3000));
            (publisher, echo)
        })
    };

    let vandals: Vec<_> = garbage_clients
        .into_iter()
        .zip(plans)
        .map(|(mut c, (kind, bytes, _, _, seed))| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed);
                match kind {
                    Garbage::Lines => {
                        let echo = drain(&c.stream);
                        start.wait();
                        assert!(
                            send_in_chunks(&mut c.stream, &bytes, &mut rng, 2000),
                            "a client sending short lines was cut off"
                        );
                        // Leave with a partial line pending; it must vanish.
                        // Only the write side: closing with unread data
                        // would send RST, which discards what the server
                        // has not read yet.
                        c.stream.shutdown(Shutdown::Write).unwrap();
                        echo.join().unwrap();
                        None
                    }
                    Garbage::Overlong | Garbage::LinesThenOverlong => {
                        let me = c.stream.local_addr().unwrap();
                        start.wait();
                        send_in_chunks(&mut c.stream, &bytes, &mut rng, 2000);
                        assert!(
                            c.wait_closed_by_server(),
                            "{kind:?} client not disconnected"
                        );
                        Some(me)
                    }
                }
            })
        })
        .collect();

    start.wait();
    let offenders: Vec<SocketAddr> = vandals
        .into_iter()
        .filter_map(|v| v.join().unwrap())
        .collect();
    let (publisher, echo) = publishing.join().unwrap();
    let mut t = server.totals();
    let settled = wait_for_quietly(|| {
        t = server.totals();
        t.received == expected_lines && t.connected == 2
    });
    assert!(
        settled,
        "want {expected_lines} lines received and 2 clients left, have {t:?}"
    );
    let reader = reading
        .join()
        .unwrap_or_else(|_| panic!("the reader did not get every line; the server has {t:?}"));
    assert_eq!(t.lines_too_long, 3, "overlong clients counted: {t:?}");
    assert_eq!(t.bytes_received, expected_bytes, "{t:?}");
    assert_eq!(t.accepted, 2 + KINDS.len() as u64);
    // Each overlong client is logged at warn, with its address.
    let log = log_since(log_from);
    for peer in offenders {
        assert!(
            log.lines().any(|l| l.contains("WARN")
                && l.contains("--max-line")
                && l.contains(&format!("peer={peer}"))),
            "no warning for overlong client {peer} in:\n{log}"
        );
    }

    publisher.stream.shutdown(Shutdown::Both).unwrap();
    echo.join().unwrap();
    drop(publisher);
    server.wait_connected(1);
    wait_sockets_closed(&sockets_before);
    let grown_kib = rss_kib().saturating_sub(rss_before);
    assert!(
        grown_kib < 64 * 1024,
        "RSS grew by {grown_kib} KiB after garbage"
    );
    drop(reader);
    server.wait_connected(0);
    let result = server.begin_stop().join().expect("server thread panicked");
    result.expect("server run returned an error");
}

/// Sets SO_LINGER 0 and drops the socket: the kernel sends RST, not FIN.
fn reset(c: Client) {
    socket2::SockRef::from(&c.stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
}

/// Reads until EOF or reset from the server, discarding data.
fn expect_closed(c: &mut Client, what: &str) {
    c.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match c.stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: waiting for the server to close: {e}"),
        }
    }
}

fn connect_small(addr: SocketAddr, n: usize) -> Vec<Client> {
    (0..n).map(|_| Client::connect_small_rcvbuf(addr)).collect()
}

fn clients_that_vanish_mid_stream_leave_nothing_behind(engine: EngineChoice) {
    const LINES: usize = 2000;
    const RESETTERS: usize = 6;
    let _turn = serial();
    let (mut server, _) = start_serving(engine, |_| {});
    // The reader stays to the end: its sockets are part of the baseline.
    let mut reader = connect_all(&server, 1).remove(0);
    let sockets_before = sockets();
    let mut talker = connect_all(&server, 1).remove(0);

    // Half-open: each shuts its write side. The server reads EOF and
    // removes it; what it sent in full still goes out, a partial line not.
    let mut half = connect_all(&server, 3);
    half[0].send(b"bye\n");
    half[1].send(b"partial, never finished");
    for c in &half {
        c.stream.shutdown(Shutdown::Write).unwrap();
    }
    for (i, c) in half.iter_mut().enumerate() {
        expect_closed(c, &format!("half-closed client {i}"));
    }
    drop(half);
    server.wait_connected(2);
    assert_eq!(reader.read_lines(1), vec![b"bye\n".to_vec()]);
    assert_eq!(talker.read_lines(1), vec![b"bye\n".to_vec()]);

    // Resets while the server is writing a large stream to them: none of
    // them reads (half of them after taking a few lines), so their queues
    // and socket buffers are full when the RST comes.
    let resetters = connect_small(server.addr, RESETTERS);
    server.wait_connected(2 + RESETTERS as u64);
    let pad = "z".repeat(1000);
    let stream: Vec<u8> = (0..LINES)
        .flat_map(|n| format!("t {n} {pad}\n").into_bytes())
        .collect();
    let echo = drain(&talker.stream);
    let mut writer = talker.stream.try_clone().unwrap();
    let talking = std::thread::spawn(move || {
        for chunk in stream.chunks(4000) {
            writer.write_all(chunk).unwrap();
        }
    });
    let reading = std::thread::spawn(move || {
        let lines = reader.read_lines(LINES);
        for (n, line) in lines.iter().enumerate() {
            assert_eq!(
                line.as_slice(),
                format!("t {n} {}\n", "z".repeat(1000)).as_bytes(),
                "line {n} from the talker"
            );
        }
        reader
    });
    let mut resetters = resetters;
    for c in resetters.iter_mut().step_by(2) {
        assert_eq!(c.read_lines(3).len(), 3);
    }
    // Their buffers are full once the server has had to drop for them.
    server.wait_totals("the resetters to stall", |t| {
        t.dropped >= RESETTERS as u64 && t.received > 300
    });
    for c in resetters {
        reset(c);
    }
    server.wait_connected(2);
    talking.join().unwrap();
    let reader = reading.join().unwrap();

    let t = server.totals();
    assert_eq!(t.received, LINES as u64 + 1, "the partial line was dropped");
    assert_eq!(t.accepted, 2 + 3 + RESETTERS as u64);

    talker.stream.shutdown(Shutdown::Both).unwrap();
    echo.join().unwrap();
    drop(talker);
    server.wait_connected(1);
    wait_sockets_closed(&sockets_before);
    drop(reader);
    server.wait_connected(0);
    let result = server.begin_stop().join().expect("server thread panicked");
    result.expect("server run returned an error");
}
