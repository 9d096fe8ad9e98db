//! `ringcast probe`: the container image's health check (slim images have
//! no curl). Exit 0 on a 200 answer, 1 on anything else, within its
//! timeout.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::ServerProcess;

fn probe(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .arg("probe")
        .args(args)
        .env_remove("RINGCAST_METRICS")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Asserts exit status `code` and, on failure, one error line containing
/// `needle`.
fn assert_exit(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    if code != 0 {
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn probe_exits_0_once_the_server_is_ready() {
    for engine in ["uring", "tokio"] {
        let server = ServerProcess::start(&["--engine", engine]);
        // The address as a flag, and from the environment as the image sets it.
        assert_exit(&probe(&["--metrics", &server.metrics], &[]), 0, "");
        assert_exit(&probe(&[], &[("RINGCAST_METRICS", &server.metrics)]), 0, "");
        assert_exit(
            &probe(&["--metrics", &server.metrics, "--path", "/healthz"], &[]),
            0,
            "",
        );
    }
}

#[test]
fn probe_exits_1_on_an_answer_other_than_200() {
    let server = ServerProcess::start(&["--engine", "tokio"]);
    let out = probe(&["--metrics", &server.metrics, "--path", "/nowhere"], &[]);
    assert_exit(&out, 1, "404");
}

#[test]
fn probe_exits_1_when_nothing_listens() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = probe(&["--metrics", &format!("127.0.0.1:{port}")], &[]);
    assert_exit(&out, 1, &format!("127.0.0.1:{port}"));
}

#[test]
fn probe_gives_up_on_a_silent_server_after_its_timeout() {
    // Accepts (the kernel does, from the backlog) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let start = Instant::now();
    let out = probe(&["--metrics", &addr, "--timeout", "300ms"], &[]);
    assert_exit(&out, 1, "no answer within 300ms");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn probe_without_an_address_is_a_usage_error() {
    let out = probe(&[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metrics"));
}
