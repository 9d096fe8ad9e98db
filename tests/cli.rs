//! The binary as an operator meets it: flags, errors, signals.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

use common::{PATIENCE, ServerProcess, http_get, wait_for};

fn ringcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(args)
        .output()
        .unwrap()
}

/// Asserts a clean failure: non-zero exit, no panic, a one-line error that
/// mentions `needle`.
fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
}

#[test]
fn bad_flags_fail_with_a_clear_message() {
    assert_clean_error(
        &ringcast(&["serve", "--listen", "not-an-address"]),
        "invalid value 'not-an-address'",
    );
    assert_clean_error(
        &ringcast(&["serve", "--engine", "epoll"]),
        "invalid value 'epoll'",
    );
    assert_clean_error(&ringcast(&["serve", "--queue", "0"]), "must be at least 1");
    assert_clean_error(
        &ringcast(&["serve", "--max-line", "lots"]),
        "invalid value 'lots' for '--max-line <BYTES>'",
    );
    assert_clean_error(
        &ringcast(&["serve", "--sndbuf", "100"]),
        "--sndbuf must be at least 4096",
    );
    assert_clean_error(
        &ringcast(&["serve", "--idle-timeout", "100years"]),
        "--idle-timeout must be at most 30 days",
    );
    assert_clean_error(
        &ringcast(&["serve", "--drain-timeout", "soon"]),
        "--drain-timeout",
    );
    assert_clean_error(&ringcast(&["serve", "--threads", "0"]), "--threads");
    assert_clean_error(
        &ringcast(&["serve", "--idle-timeout", "0s"]),
        "--idle-timeout must be longer than 0",
    );
    assert_clean_error(
        &ringcast(&["serve", "--cluster", "http://127.0.0.1:4222"]),
        "invalid --cluster URL",
    );
    assert_clean_error(
        &ringcast(&[
            "serve",
            "--cluster",
            "nats://127.0.0.1:4222",
            "--cluster-subject",
            "a b",
        ]),
        "invalid --cluster-subject",
    );
    assert_clean_error(
        &ringcast(&["serve", "--max-clients", "0"]),
        "must be at least 1",
    );
    assert_clean_error(
        &ringcast(&["serve", "--frobnicate"]),
        "unexpected argument '--frobnicate'",
    );
    assert_clean_error(
        &ringcast(&["serve", "--log", "[[["]),
        "invalid --log filter",
    );
}

/// Runs `ringcast serve --listen 127.0.0.1:0 ARGS`, killing it if it is
/// still running after a few seconds: a value that should have been refused
/// would otherwise leave it serving.
fn serve_briefly(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

/// Every numeric option has an absolute bound: an absurd value is one
/// clear error line at start, naming the option, and a non-zero exit;
/// never a panic, an abort, a misleading "cannot listen", or a server that
/// runs with some other value.
#[test]
fn absurd_numbers_are_one_clear_error_line_each() {
    let cases: &[(&[&str], &str)] = &[
        (&["--threads", "65535"], "--threads must be at most"),
        (
            &["--threads", "65535", "--engine", "tokio"],
            "--threads must be at most",
        ),
        (
            &["--tcp-keepalive", "32768s"],
            "--tcp-keepalive must be at most 32767s",
        ),
        (
            &["--tcp-user-timeout", "25days"],
            "--tcp-user-timeout must be at most",
        ),
        (&["--sndbuf", "2147483648"], "--sndbuf must be at most"),
        (
            &["--sndbuf", "18446744073709551615"],
            "--sndbuf must be at most",
        ),
        (
            &["--max-line", "18446744073709551615"],
            "--max-line must be at most",
        ),
        (
            &["--queue", "18446744073709551615"],
            "--queue must be at most",
        ),
        (
            &["--max-clients", "18446744073709551615"],
            "--max-clients must be at most",
        ),
        (&["--coalesce", "1h"], "--coalesce must be at most"),
        (&["--grace", "1h"], "--grace must be at most"),
        // The old spelling is the same option, bound and all.
        (&["--stall-timeout", "1h"], "--grace must be at most"),
        (&["--lame-duck", "1000days"], "--lame-duck must be at most"),
        (
            &["--drain-timeout", "1000days"],
            "--drain-timeout must be at most",
        ),
        (
            &["--slow-disconnect", "1000days"],
            "--slow-disconnect must be at most",
        ),
        (
            &["--idle-timeout", "1000days"],
            "--idle-timeout must be at most",
        ),
        (
            &["--max-clients-per-ip", "18446744073709551615"],
            "--max-clients-per-ip must be at most",
        ),
        (
            &["--ws-origin", "https://example.com/chat"],
            "--ws-origin: \"https://example.com/chat\" is not an origin",
        ),
    ];
    for (args, needle) in cases {
        let out = serve_briefly(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code().is_some_and(|c| c != 0),
            "{args:?}: expected a non-zero exit, got {:?}; stderr: {stderr}",
            out.status
        );
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line, not {stderr}");
        assert!(
            lines[0].contains(needle),
            "{args:?}: {needle:?} not in {stderr}"
        );
        assert!(lines[0].contains("error"), "{args:?}: {stderr}");
    }
}

/// `--sndbuf` above `net.core.wmem_max` runs, with one warning that says
/// what the kernel gives each socket instead.
#[test]
fn an_sndbuf_above_wmem_max_is_a_warning_with_the_effective_value() {
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if wmem_max >= ringcast::config::MAX_SNDBUF {
        eprintln!("net.core.wmem_max {wmem_max} is at --sndbuf's own bound: nothing to check");
        return;
    }
    let asked = (wmem_max + 1).to_string();
    let mut server = ServerProcess::start(&["--sndbuf", &asked]);
    let warnings: Vec<&String> = server
        .startup
        .iter()
        .filter(|l| l.contains("--sndbuf"))
        .collect();
    assert_eq!(warnings.len(), 1, "{:?}", server.startup);
    assert!(
        warnings[0].contains("WARN")
            && warnings[0].contains(&format!("wmem_max={wmem_max}"))
            && warnings[0].contains(&format!("effective={wmem_max}")),
        "{warnings:?}"
    );
    // It serves.
    let mut a = server.connect(1).remove(0);
    a.send(b"hi\n");
    assert_eq!(a.read_lines(1), vec![b"hi\n".to_vec()]);
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit().success());
}

#[test]
fn a_port_in_use_is_one_line_and_a_nonzero_exit() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for engine in ["uring", "tokio"] {
        let out = ringcast(&["serve", "--engine", engine, "--listen", &addr]);
        assert_clean_error(&out, &format!("cannot listen on {addr}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let error_lines: Vec<_> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(error_lines.len(), 1, "one error line: {stderr}");
        assert_eq!(
            error_lines[0].matches("Address already in use").count(),
            1,
            "the cause once: {stderr}"
        );
    }
}

#[test]
fn a_configuration_error_exits_2_and_a_failure_to_run_1() {
    // Starting again fails the same way: a supervisor should not retry.
    for args in [
        &["serve", "--queue", "0"][..],
        &["serve", "--idle-timeout", "0s"],
        &["serve", "--log", "[[["],
        &["serve", "--cluster", "http://127.0.0.1:4222"],
        // clap's own, for a flag it cannot parse.
        &["serve", "--frobnicate"],
        &["serve", "--queue", "lots"],
    ] {
        let out = ringcast(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    // May work next time: a port still held by the previous process.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = ringcast(&["serve", "--listen", &addr]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn a_core_that_dies_ends_the_process_with_one_error_line() {
    for (engine, failpoint, what) in [
        ("uring", "core-exit:1", "core 1"),
        ("tokio", "core-exit:0", "the tokio engine"),
    ] {
        let mut cmd = ServerProcess::command(&[], &["--engine", engine, "--threads", "2"]);
        cmd.env("RINGCAST_FAILPOINT", failpoint);
        let ready_file = ServerProcess::ready_file(&cmd);
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{engine}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.to_lowercase().contains("error"))
            .collect();
        assert_eq!(errors.len(), 1, "{engine}: {stderr}");
        assert!(
            errors[0].contains(&format!("{what} stopped unexpectedly")),
            "{engine}: {errors:?}"
        );
        // It never accepted on every core: never ready.
        assert!(!stderr.contains("serving"), "{engine}: {stderr}");
        assert!(!ready_file.exists(), "{engine}: a ready file");
    }
}

#[test]
fn version_names_the_commit() {
    let out = ringcast(&["--version"]);
    assert!(out.status.success());
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with(&format!("ringcast {} (", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    assert!(!version.contains("()"), "{version}");
}

#[test]
fn help_explains_every_option() {
    let out = ringcast(&["serve", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    // Clap wraps the text to the terminal's width: read it as one line.
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for flag in [
        "--listen",
        "--engine",
        "--threads",
        "--queue",
        "--max-line",
        "--sndbuf",
        "--slow-disconnect",
        "--drain-timeout",
        "--max-clients",
        "--max-clients-per-ip",
        "--ws-origin",
        "--idle-timeout",
        "--metrics",
        "--log",
        "--grace",
        "Formerly --stall-timeout",
        "127.0.0.1:9000",
        "[default: 100]",
        "[default: 65536]",
        // Clap's default for --grace is text: it must say DEFAULT_GRACE.
        &format!(
            "[default: {}]",
            humantime::format_duration(ringcast::config::DEFAULT_GRACE)
        ),
    ] {
        assert!(flat.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

/// The grace as the "serving" line reports it, for a server started with
/// `args` and the variables `env` (and no other RINGCAST_GRACE or
/// RINGCAST_STALL_TIMEOUT), and the startup lines that warn about
/// RINGCAST_STALL_TIMEOUT.
fn grace_served(args: &[&str], env: &[(&str, &str)]) -> (String, Vec<String>) {
    let mut cmd = ServerProcess::command(&[], args);
    cmd.env_remove("RINGCAST_GRACE")
        .env_remove("RINGCAST_STALL_TIMEOUT")
        .envs(env.iter().copied());
    let server = ServerProcess::spawn(cmd);
    let serving = server.startup.last().unwrap();
    let grace = serving
        .split_whitespace()
        .find_map(|field| field.strip_prefix("grace="))
        .unwrap_or_else(|| panic!("no grace= in {serving}"))
        .to_owned();
    let warnings = server
        .startup
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("RINGCAST_STALL_TIMEOUT"))
        .cloned()
        .collect();
    (grace, warnings)
}

/// `--grace` was `--stall-timeout`, and its variable RINGCAST_STALL_TIMEOUT:
/// the old flag still works, and the old variable, which systemd units set,
/// counts (with one warning) when neither the flag nor RINGCAST_GRACE is
/// given; when one is, a warning says the old variable is ignored.
#[test]
fn the_old_names_of_grace_still_work() {
    let (grace, warnings) = grace_served(&["--stall-timeout", "7ms"], &[]);
    assert_eq!((grace.as_str(), warnings.len()), ("7ms", 0), "{warnings:?}");
    let (grace, warnings) = grace_served(&[], &[("RINGCAST_STALL_TIMEOUT", "9ms")]);
    assert_eq!(grace, "9ms");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("RINGCAST_GRACE"), "{warnings:?}");
    let old_and_new = [("RINGCAST_STALL_TIMEOUT", "9ms"), ("RINGCAST_GRACE", "3ms")];
    // The new name wins, and the old one, left behind, is pointed out.
    let ignored = |w: &[String]| w.len() == 1 && w[0].contains("ignored");
    let (grace, warnings) = grace_served(&[], &old_and_new);
    assert_eq!(grace, "3ms");
    assert!(ignored(&warnings), "{warnings:?}");
    let (grace, warnings) = grace_served(&["--grace", "4ms"], &old_and_new);
    assert_eq!(grace, "4ms");
    assert!(ignored(&warnings), "{warnings:?}");
    let (grace, warnings) = grace_served(&[], &[]);
    assert_eq!((grace.as_str(), warnings.len()), ("5ms", 0), "{warnings:?}");
}

fn signal_stops_the_server_after_flushing(engine: &str, signal: nix::sys::signal::Signal) {
    let mut server = ServerProcess::start(&["--engine", engine, "--drain-timeout", "5s"]);
    let mut clients = server.connect(2);
    let (mut a, mut b) = (clients.remove(0), clients.remove(0));
    a.send(b"one\n");
    assert_eq!(a.read_lines(1), vec![b"one\n".to_vec()]);
    assert_eq!(b.read_lines(1), vec![b"one\n".to_vec()]);
    b.send(b"two\n");
    assert_eq!(a.read_lines(1), vec![b"two\n".to_vec()]);
    server.signal(signal);
    // What was sent before the signal arrives, then the server closes.
    assert_eq!(b.read_to_end(), b"two\n");
    let status = server.wait_exit();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn sigterm_drains_and_exits_zero_on_uring() {
    signal_stops_the_server_after_flushing("uring", nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn sigint_drains_and_exits_zero_on_tokio() {
    signal_stops_the_server_after_flushing("tokio", nix::sys::signal::Signal::SIGINT);
}

#[test]
fn sigint_drains_and_exits_zero_on_uring() {
    signal_stops_the_server_after_flushing("uring", nix::sys::signal::Signal::SIGINT);
}

#[test]
fn sigterm_drains_and_exits_zero_on_tokio() {
    signal_stops_the_server_after_flushing("tokio", nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn metrics_endpoint_serves_the_documented_names() {
    let server = ServerProcess::start(&[]);
    let metrics = server.metrics.clone();
    let mut a = server.connect(1).remove(0);
    a.send(b"hi\n");
    assert_eq!(a.read_lines(1), vec![b"hi\n".to_vec()]);
    let body = wait_for("a scrape showing the message", PATIENCE, || {
        let body = http_get(&metrics, "/metrics").body;
        body.contains("ringcast_messages_sent_total 1")
            .then_some(body)
    });
    for name in [
        "ringcast_connected_clients 1",
        "ringcast_connections_accepted_total 1",
        "ringcast_messages_received_total 1",
        "ringcast_messages_dropped_total 0",
        "ringcast_received_bytes_total 3",
        "ringcast_sent_bytes_total 3",
        "ringcast_write_batches_total 1",
        "ringcast_lines_too_long_total 0",
    ] {
        assert!(
            body.lines().any(|l| l == name),
            "{name:?} missing from\n{body}"
        );
    }
    assert!(
        body.lines().any(|l| l.starts_with("ringcast_build_info{")
            && l.contains("revision=\"")
            && !l.contains("engine=")),
        "no build info with a revision in\n{body}"
    );
    assert!(
        body.lines()
            .any(|l| l.starts_with("ringcast_engine_info{engine=\"") && l.ends_with("\"} 1")),
        "no engine info in\n{body}"
    );
    let other = http_get(&metrics, "/other");
    assert!(
        other.status == 404 && other.body.contains("not found"),
        "{other}"
    );
    let health = http_get(&metrics, "/healthz");
    assert_eq!(health.status, 200, "{health}");
    let ready = http_get(&metrics, "/readyz");
    assert_eq!(ready.status, 200, "{ready}");
    let clients = http_get(&metrics, "/clients?sort=dropped&limit=5");
    assert!(
        clients.status == 200 && clients.body.contains("\"transport\":\"tcp\""),
        "{clients}"
    );
    let bad = http_get(&metrics, "/clients?sort=bytes");
    assert!(
        bad.status == 400 && bad.body.contains("unknown sort"),
        "{bad}"
    );
}

#[test]
fn an_unreachable_cluster_at_startup_is_a_warning_not_an_exit() {
    // Nothing listens on port 1: the bridge keeps retrying while local
    // clients are served.
    let server = ServerProcess::start(&["--cluster", "nats://127.0.0.1:1"]);
    let mut a = server.connect(1).remove(0);
    a.send(b"local only\n");
    assert_eq!(a.read_lines(1), vec![b"local only\n".to_vec()]);
    let body = http_get(&server.metrics, "/metrics").body;
    assert!(
        body.lines().any(|l| l == "ringcast_cluster_connected 0"),
        "{body}"
    );
}
