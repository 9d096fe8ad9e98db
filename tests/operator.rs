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

on_both_engines!(
    clients_answers_at_once_with_thousands_connected,
    clients_pages_in_an_envelope_with_counters_per_client,
    process_metrics_are_read_at_scrape,
);

fn engine_arg(engine: EngineChoice) -> &'static str {
    match engine {
        EngineChoice::Uring => "uring",
        EngineChoice::Tokio => "tokio",
        EngineChoice::Auto => "auto",
    }
}

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
    assert_eq!(http_get(&server.metrics, "/readyz").status, 200);
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
            (http_get(&server.metrics, "/readyz").status == 503).then_some(())
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
    let scrape = http_get(metrics["metrics"].as_str().unwrap(), "/metrics").body;
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
            if answer.status == 200 {
                return Some(());
            }
            assert_eq!(answer.status, 503, "{engine}: {answer}");
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
                .body
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
            if answer.status == 200 {
                return Some(());
            }
            assert_eq!(answer.status, 503, "{engine}: {answer}");
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
    let oldest = server.query(SortBy::ConnectedSecs, 0, 3);
    assert_eq!(oldest.total, CLIENTS);
    let oldest = oldest.clients;
    assert_eq!(oldest.len(), 3);
    assert!(
        oldest
            .windows(2)
            .all(|w| w[0].connected_secs >= w[1].connected_secs),
        "{oldest:?}"
    );
    let first = server.query(SortBy::Id, 0, 5).clients;
    assert_eq!(
        first.iter().map(|c| c.id).collect::<Vec<_>>(),
        ids[..5].to_vec()
    );
    // A page deep in the list: each core sends what comes before it too.
    let deep = server.query(SortBy::Id, 2_990, 20);
    assert_eq!(
        (
            deep.total,
            deep.clients.iter().map(|c| c.id).collect::<Vec<_>>()
        ),
        (CLIENTS, ids[2_990..].to_vec())
    );
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

/// `/clients` as JSON: the body of an HTTP answer, which must be 200.
fn clients_json(metrics: &str, query: &str) -> serde_json::Value {
    let answer = http_get(metrics, &format!("/clients{query}"));
    assert_eq!(answer.status, 200, "{answer}");
    let body = answer.body;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn ids(page: &serde_json::Value) -> Vec<u64> {
    page["clients"]
        .as_array()
        .expect("a list of clients")
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect()
}

/// The envelope (`now`, `total`, `offset`, `limit`) pages through the
/// sorted list across both cores, and each entry's counters move as its
/// client sends and receives.
fn clients_pages_in_an_envelope_with_counters_per_client(engine: EngineChoice) {
    const CLIENTS: usize = 7;
    let server = ServerProcess::start(&["--engine", engine_arg(engine), "--threads", "2"]);
    let mut clients = server.connect(CLIENTS);

    let all = clients_json(&server.metrics, "");
    assert_eq!(all["total"], CLIENTS, "{all}");
    assert_eq!((&all["offset"], &all["limit"]), (&0.into(), &1024.into()));
    let now =
        humantime::parse_rfc3339(all["now"].as_str().expect("now")).expect("an RFC 3339 time");
    let off = now
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_secs(60), "now is {off:?} off");
    let every = ids(&all);
    assert_eq!(every.len(), CLIENTS);
    assert!(every.windows(2).all(|w| w[0] < w[1]), "by id: {every:?}");

    let page = clients_json(&server.metrics, "?offset=2&limit=3");
    assert_eq!(
        (&page["total"], &page["offset"], &page["limit"]),
        (&CLIENTS.into(), &2.into(), &3.into()),
        "{page}"
    );
    assert_eq!(ids(&page), every[2..5]);
    let last = clients_json(&server.metrics, "?offset=5&limit=3");
    assert_eq!(ids(&last), every[5..]);
    let past = clients_json(&server.metrics, "?offset=100");
    assert_eq!((&past["total"], ids(&past)), (&CLIENTS.into(), vec![]));
    let huge = clients_json(&server.metrics, "?limit=100000000");
    assert_eq!(huge["limit"], 100_000, "bounded");
    let none = clients_json(&server.metrics, "?limit=0");
    assert_eq!((&none["total"], ids(&none)), (&CLIENTS.into(), vec![]));

    // Client 0 stays quiet while client 1 sends; everyone receives.
    let entry = |page: &serde_json::Value, peer: std::net::SocketAddr| {
        page["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["peer"] == peer.to_string())
            .cloned()
            .expect("the client's entry")
    };
    let (quiet, talker) = (
        clients[0].stream.local_addr().unwrap(),
        clients[1].stream.local_addr().unwrap(),
    );
    let fresh = entry(&all, talker);
    for field in ["bytes_in", "bytes_out", "msgs_in"] {
        assert_eq!(fresh[field], 0, "{field} of a new client: {fresh}");
    }
    // Idle time grows while a client sends nothing.
    wait_for("the quiet client idle for 0.3 s", PATIENCE, || {
        let page = clients_json(&server.metrics, "");
        (entry(&page, quiet)["idle_secs"].as_f64().unwrap() >= 0.3).then_some(())
    });
    clients[1].send(b"hello\nworld!\n");
    for c in &mut clients {
        assert_eq!(c.read_lines(2).len(), 2);
    }
    let page = wait_for("the counters to show the lines", PATIENCE, || {
        let page = clients_json(&server.metrics, "");
        let done = clients
            .iter()
            .all(|c| entry(&page, c.stream.local_addr().unwrap())["bytes_out"] == 13);
        done.then_some(page)
    });
    let (talked, stayed) = (entry(&page, talker), entry(&page, quiet));
    assert_eq!(
        (&talked["msgs_in"], &talked["bytes_in"]),
        (&2.into(), &13.into()),
        "{talked}"
    );
    assert_eq!(
        (&stayed["msgs_in"], &stayed["bytes_in"]),
        (&0.into(), &0.into()),
        "{stayed}"
    );
    assert_eq!(stayed["sent"], 2, "{stayed}");
    let (talker_idle, quiet_idle) = (
        talked["idle_secs"].as_f64().unwrap(),
        stayed["idle_secs"].as_f64().unwrap(),
    );
    assert!(
        talker_idle < quiet_idle && quiet_idle >= 0.3,
        "idle: talker {talker_idle}, quiet {quiet_idle}"
    );
}

/// The process metrics Prometheus's client libraries export, read when
/// scraped.
fn process_metrics_are_read_at_scrape(engine: EngineChoice) {
    const CLIENTS: usize = 50;
    let server = ServerProcess::start(&["--engine", engine_arg(engine)]);
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let before = server.scrape();
    let started = value(&before, "process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - started).abs() < 60.0, "started {started}, now {now}");
    let rss = value(&before, "process_resident_memory_bytes");
    let vsz = value(&before, "process_virtual_memory_bytes");
    assert!(rss > 1e6 && vsz >= rss, "rss {rss}, virtual {vsz}");
    let max_fds = value(&before, "process_max_fds");
    let fds = value(&before, "process_open_fds");
    assert!(
        fds >= 3.0 && max_fds >= fds,
        "{fds} of {max_fds} descriptors"
    );
    let cpu = value(&before, "process_cpu_seconds_total");
    assert!(cpu >= 0.0, "{cpu}");

    let _clients = server.connect(CLIENTS);
    let after = server.scrape();
    let more = value(&after, "process_open_fds");
    assert!(
        more >= fds + CLIENTS as f64,
        "{fds} then {more} with {CLIENTS} clients"
    );
    assert!(value(&after, "process_cpu_seconds_total") >= cpu);
    assert_eq!(value(&after, "process_start_time_seconds"), started);
}
