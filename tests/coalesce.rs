//! Fewer writes for more lines. On both engines a read's lines reach each
//! client in one send, and a lightly loaded server writes each line at
//! once. On `tokio`, write coalescing (`--coalesce`, `--coalesce-above`):
//! a busy server gathers lines into fewer writes, and a full-ish queue
//! never waits. (`uring` coalesces by its flusher's rounds, with no timer.)
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, connect_all};
use ringcast::EngineChoice;
use ringcast::config::MAX_COALESCE;

on_both_engines!(
    a_reads_lines_reach_each_client_in_one_send,
    a_lightly_loaded_server_writes_each_line_at_once,
);

#[test]
fn a_busy_tokio_server_gathers_lines_into_fewer_writes() {
    a_busy_server_gathers_lines_into_fewer_writes(EngineChoice::Tokio);
}

#[test]
fn a_quarter_full_queue_is_written_without_waiting_on_tokio() {
    a_quarter_full_queue_is_written_without_waiting(EngineChoice::Tokio);
}

fn a_reads_lines_reach_each_client_in_one_send(engine: EngineChoice) {
    // Fifty lines in one write, so in one read: one run, one queue entry,
    // one send to each client, however many lines.
    const RUN: usize = 50;
    let server = TestServer::start(engine);
    let mut clients = connect_all(&server, CLIENTS);
    let lines: Vec<u8> = (0..RUN)
        .flat_map(|n| format!("line {n}\n").into_bytes())
        .collect();
    clients[0].send(&lines);
    for c in &mut clients {
        assert_eq!(c.read_lines(RUN).concat(), lines);
    }
    let t = server.wait_totals("all sent", |t| t.sent == (CLIENTS * RUN) as u64);
    assert_eq!(t.received, RUN as u64, "one read: {t:?}");
    assert_eq!(t.batches, CLIENTS as u64, "one send per client: {t:?}");
}

const CLIENTS: usize = 3;
const LINES: usize = 5;

fn a_busy_server_gathers_lines_into_fewer_writes(engine: EngineChoice) {
    // Always busy, and a flush window far longer than the test takes to send.
    let server = TestServer::start_with(engine, |c| {
        c.coalesce = Duration::from_millis(300);
        c.coalesce_above = 0;
    });
    let mut clients = connect_all(&server, CLIENTS);
    for n in 0..LINES {
        clients[0].send(format!("line {n}\n").as_bytes());
        // One line at a time into the server, so each would be its own
        // write without coalescing.
        server.wait_totals("the line read", |t| t.received == n as u64 + 1);
    }
    for c in &mut clients {
        assert_eq!(c.read_lines(LINES).len(), LINES);
    }
    let t = server.wait_totals("all sent", |t| t.sent == (CLIENTS * LINES) as u64);
    // One write per client, or two if a flush fell between two lines.
    assert!(
        t.batches <= 2 * CLIENTS as u64,
        "{} messages took {} writes",
        t.sent,
        t.batches
    );
}

fn a_quarter_full_queue_is_written_without_waiting(engine: EngineChoice) {
    // The longest flush there is: a line held for it arrives a whole
    // `MAX_COALESCE` after it was sent, never sooner. A queue of 8 goes out
    // at once from 2 messages.
    let server = TestServer::start_with(engine, |c| {
        c.coalesce = MAX_COALESCE;
        c.coalesce_above = 0;
        c.queue = 8;
    });
    let mut clients = connect_all(&server, CLIENTS);
    let sent = Instant::now();
    clients[0].send(b"one\n");
    // The writers now wait for a flush; the second line must wake them.
    server.wait_totals("the first line read", |t| t.received == 1);
    clients[0].send(b"two\n");
    for c in &mut clients {
        assert_eq!(c.read_lines(2), vec![b"one\n".to_vec(), b"two\n".to_vec()]);
    }
    let took = sent.elapsed();
    assert!(
        took < MAX_COALESCE * 3 / 4,
        "the lines waited {took:?}, as for a flush"
    );
}

fn a_lightly_loaded_server_writes_each_line_at_once(engine: EngineChoice) {
    // The default busy mark, and the longest flush there is: each line held
    // back for a flush would arrive `MAX_COALESCE` late. Each line is sent
    // only once every client has the previous one.
    let server = TestServer::start_with(engine, |c| c.coalesce = MAX_COALESCE);
    let mut clients = connect_all(&server, CLIENTS);
    let started = Instant::now();
    for n in 0..LINES {
        clients[0].send(format!("line {n}\n").as_bytes());
        for c in &mut clients {
            assert_eq!(c.read_lines(1).len(), 1);
        }
    }
    let took = started.elapsed();
    assert!(
        took < MAX_COALESCE * LINES as u32 / 2,
        "{LINES} lines took {took:?}, as if held for flushes"
    );
    let t = server.wait_totals("all sent", |t| t.sent == (CLIENTS * LINES) as u64);
    assert_eq!(t.batches, t.sent, "one write per line");
}
