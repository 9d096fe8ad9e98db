//! What an operator meets, on the binary: signals, lame duck, readiness,
//! JSON logs, configuration from the environment and systemd's readiness
//! protocol.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, Read as _};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{
    Client, PATIENCE, ServerProcess, TestServer, connect_all, http_get, scratch_path, wait_for,
};
use nix::sys::signal::Signal;
use ringcast::EngineChoice;
use ringcast::ops::clients::SortBy;

on_both_engines!(clients_answers_at_once_with_thousands_connected);

#[test]
fn sighup_is_logged_and_the_server_carries_on() {
    let server = ServerProcess::start(&[]);
    let mut clients = server.connect(2);
    server.signal(Signal::SIGHUP);
    wait_for("the SIGHUP line", PATIENCE, || {
        let log = server.log.lock().unwrap();
        log.iter()
            .any(|(_, l)| l.contains("SIGHUP received") && l.contains("still serving"))
            .then_some(())
    });
    clients[0].send(b"after hup\n");
    for c in &mut clients {
        assert_eq!(c.read_lines(1), vec![b"after hup\n".to_vec()]);
    }
    assert!(http_get(&server.metrics, "/readyz").starts_with("HTTP/1.0 200"));
}

#[test]
fn lame_duck_turns_unready_stops_accepting_and_spreads_the_closes() {
    const CLIENTS: usize = 8;
    let lame_duck = Duration::from_millis(1600);
    for engine in ["uring", "tokio"] {
        let mut server = ServerProcess::start(&["--engine", engine, "--lame-duck", "1600ms"]);
        let clients = server.connect(CLIENTS);
        let waiting: Vec<_> = clients
            .into_iter()
            .map(|mut c| std::thread::spawn(move || c.wait_closed_by_server().then(Instant::now)))
            .collect();
        let signalled = Instant::now();
        server.signal(Signal::SIGTERM);
        wait_for("/readyz to turn 503", PATIENCE, || {
            http_get(&server.metrics, "/readyz")
                .starts_with("HTTP/1.0 503")
                .then_some(())
        });
        // Not accepting: a connect now is refused.
        wait_for("connects refused", PATIENCE, || {
            std::net::TcpStream::connect(server.addr)
                .is_err()
                .then_some(())
        });
        let closed: Vec<Duration> = waiting
            .into_iter()
            .map(|w| w.join().unwrap().expect("closed by the server") - signalled)
            .collect();
        assert!(server.wait_exit().success());
        let (first, last) = (*closed.iter().min().unwrap(), *closed.iter().max().unwrap());
        // Spread over the lame duck time, not all at once: one close every
        // 200 ms, the first after 200 ms, the last by 1.6 s.
        assert!(
            first >= lame_duck / CLIENTS as u32 / 2 && last - first >= lame_duck / 2,
            "{engine}: closed from {first:?} to {last:?} after SIGTERM"
        );
        assert!(
            last < lame_duck + Duration::from_secs(1),
            "{engine}: {last:?}"
        );
    }
}

#[test]
fn json_logs_are_one_object_per_line_and_the_log_counts_its_drops() {
    let mut cmd = ServerProcess::command(&[], &["--log-format", "json"]);
    let ready = ServerProcess::ready_file(&cmd);
    let mut child = cmd.spawn().unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut serving = None;
    for line in stderr.lines().map_while(Result::ok) {
        let object: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            object["level"].is_string() && object["timestamp"].is_string(),
            "{line}"
        );
        if object["message"] == "serving" {
            serving = Some(object);
            break;
        }
    }
    let serving = serving.expect("a serving line");
    assert!(
        serving["engine"].is_string() && serving["addr"].is_string(),
        "{serving}"
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    let scrape = http_get(metrics["metrics"].as_str().unwrap(), "/metrics");
    assert!(
        scrape
            .lines()
            .any(|l| l == "ringcast_log_lines_dropped_total 0"),
        "{scrape}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(ready);
}

#[test]
fn every_option_can_come_from_the_environment() {
    let mut cmd = ServerProcess::command(&[], &[]);
    cmd.env("RINGCAST_QUEUE", "7")
        .env("RINGCAST_MAX_CLIENTS", "1");
    let server = ServerProcess::spawn(cmd);
    let _first = server.connect(1);
    let mut second = Client::connect(server.addr);
    assert!(
        second.wait_closed_by_server(),
        "RINGCAST_MAX_CLIENTS=1 closes the second client"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["serve"])
        .env("RINGCAST_QUEUE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--queue must be at least 1"), "{stderr}");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[env: RINGCAST_LISTEN=]"), "{help}");
}

#[test]
fn systemd_is_told_when_the_server_is_ready_and_when_it_stops() {
    let path = scratch_path("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut cmd = ServerProcess::command(&[], &[]);
    cmd.env("NOTIFY_SOCKET", &path);
    let mut server = ServerProcess::spawn(cmd);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a notification");
    assert_eq!(&buf[..n], b"READY=1\n");
    // Ready means served: a client is answered.
    let mut c = server.connect(1).pop().unwrap();
    c.send(b"up\n");
    assert_eq!(c.read_lines(1), vec![b"up\n".to_vec()]);
    server.signal(Signal::SIGTERM);
    let n = socket.recv(&mut buf).expect("a notification");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    assert!(server.wait_exit().success());
    let mut rest = Vec::new();
    c.stream.read_to_end(&mut rest).unwrap();
    let _ = std::fs::remove_file(path);
}

/// Kills the child however the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` (a [`ServerProcess::command`]) and returns it with the
/// address of its HTTP endpoints once it logs them; its later log is read
/// and dropped.
fn spawn_until_endpoints(mut cmd: std::process::Command, engine: &str) -> (Killed, String) {
    let mut child = Killed(cmd.spawn().unwrap());
    let mut stderr = std::io::BufReader::new(child.0.stderr.take().unwrap());
    let metrics = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{engine}: exited");
        if let Some(at) = line.split("metrics at http://").nth(1) {
            break at.split('/').next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, metrics)
}

#[test]
fn ready_means_every_core_accepts() {
    for engine in ["uring", "tokio"] {
        let path = scratch_path("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        let mut cmd = ServerProcess::command(&[], &["--engine", engine, "--threads", "2"]);
        // Every accept loop starts 3 s late.
        cmd.env("NOTIFY_SOCKET", &path)
            .env("RINGCAST_FAILPOINT", "accept-late");
        let ready_file = ServerProcess::ready_file(&cmd);
        // The endpoints are up before the engine starts.
        let (_child, metrics) = spawn_until_endpoints(cmd, engine);
        let mut unready = 0;
        wait_for("/readyz to turn 200", PATIENCE, || {
            let answer = http_get(&metrics, "/readyz");
            if answer.starts_with("HTTP/1.0 200") {
                return Some(());
            }
            assert!(answer.starts_with("HTTP/1.0 503"), "{engine}: {answer}");
            unready += 1;
            std::thread::sleep(Duration::from_millis(10));
            None
        });
        let ready_at = Instant::now();
        assert!(unready > 0, "{engine}: ready before the cores accept");
        // systemd was told first, and the ready file written.
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("READY=1 before /readyz");
        assert_eq!(&buf[..n], b"READY=1\n", "{engine}");
        let ready: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&ready_file).unwrap()).unwrap();
        let addr: std::net::SocketAddr = ready["listen"].as_str().unwrap().parse().unwrap();
        // Ready means served at once, on every core: accepted, registered
        // and sent a line.
        let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(addr)).collect();
        wait_for("the clients to be registered", PATIENCE, || {
            http_get(&metrics, "/metrics")
                .lines()
                .any(|l| l == "ringcast_connected_clients 4")
                .then_some(())
        });
        clients[0].send(b"up\n");
        for c in &mut clients {
            assert_eq!(c.read_lines(1), vec![b"up\n".to_vec()], "{engine}");
        }
        let took = ready_at.elapsed();
        assert!(
            took < Duration::from_millis(1500),
            "{engine}: a line went through {took:?} after ready"
        );
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&ready_file);
    }
}

#[test]
fn ready_waits_for_the_last_accept_loop() {
    for engine in ["uring", "tokio"] {
        let mut cmd = ServerProcess::command(
            &[],
            &["--engine", engine, "--threads", "2", "--ws", "127.0.0.1:0"],
        );
        // One accept loop (TCP or WebSocket, on any core) starts 3 s late;
        // the others at once.
        cmd.env("RINGCAST_FAILPOINT", "accept-late-one");
        let (_child, metrics) = spawn_until_endpoints(cmd, engine);
        let up = Instant::now();
        wait_for("/readyz to turn 200", PATIENCE, || {
            let answer = http_get(&metrics, "/readyz");
            if answer.starts_with("HTTP/1.0 200") {
                return Some(());
            }
            assert!(answer.starts_with("HTTP/1.0 503"), "{engine}: {answer}");
            std::thread::sleep(Duration::from_millis(10));
            None
        });
        let waited = up.elapsed();
        assert!(
            waited > Duration::from_millis(2500),
            "{engine}: ready {waited:?} after start, before the late accept loop ran"
        );
    }
}

/// Every core walks its clients a chunk at a time and sends only `limit`.
fn clients_answers_at_once_with_thousands_connected(engine: EngineChoice) {
    const CLIENTS: usize = 3_000;
    let server = TestServer::start_with(engine, |c| c.max_clients_per_ip = 0);
    let _clients = connect_all(&server, CLIENTS);
    let start = Instant::now();
    let all = server.clients();
    assert_eq!(all.len(), CLIENTS);
    let mut ids: Vec<u64> = all.iter().map(|c| c.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), CLIENTS, "each client once");
    let oldest = server.query(SortBy::ConnectedSecs, Some(3));
    assert_eq!(oldest.len(), 3);
    assert!(
        oldest
            .windows(2)
            .all(|w| w[0].connected_secs >= w[1].connected_secs),
        "{oldest:?}"
    );
    let first = server.query(SortBy::Id, Some(5));
    assert_eq!(
        first.iter().map(|c| c.id).collect::<Vec<_>>(),
        ids[..5].to_vec()
    );
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
}
