//! The closed loop at `--rate max` against a server that drops a
//! publisher's own lines, as ringcast does for a client that is slow.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringcast_load::wire::{Header, Kind};
use ringcast_load::{Plan, Rate};

/// Publisher 0's lines from this one on never reach its own connection.
const LOST_FROM: u64 = 5;

/// A broadcast server that writes every line to every connection, except
/// publisher 0's lines from [`LOST_FROM`] on to publisher 0 itself: the
/// tail of its window is lost with nothing after it to show the gap.
fn server_that_loses_a_publishers_own_lines() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let me = {
                let mut conns = conns.lock().expect("lock");
                conns.push(stream.try_clone().expect("clone"));
                conns.len() - 1
            };
            let conns = Arc::clone(&conns);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = Vec::new();
                while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                    let lost_on_me = Header::parse(&line).is_some_and(|h| {
                        h.kind == Kind::Data && h.publisher == 0 && h.seq >= LOST_FROM
                    });
                    for (i, conn) in conns.lock().expect("lock").iter_mut().enumerate() {
                        if !(lost_on_me && i == me) {
                            let _ = conn.write_all(&line);
                        }
                    }
                    line.clear();
                }
            });
        }
    });
    addr
}

#[test]
fn a_publisher_whose_own_lines_are_lost_keeps_publishing() {
    const WINDOW: usize = 20;
    let plan = Plan::builder(server_that_loses_a_publishers_own_lines())
        .clients(3)
        .publishers(2)
        .size(64)
        .rate(Rate::Max)
        .window(WINDOW)
        .duration(Duration::from_millis(3500))
        .threads(2)
        .build()
        .expect("plan");
    let report = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(ringcast_load::run(&plan))
        .expect("run");
    // Waiting for lines that never come back, publisher 0 would stop at its
    // first window. It gives them up after a second each time instead.
    assert!(
        report.published_min >= 3 * WINDOW as u64,
        "a publisher stalled: {} to {} lines, window {WINDOW}, given up {} times",
        report.published_min,
        report.published_max,
        report.window_resets
    );
    assert!(report.window_resets >= 2, "{report}");
    assert_eq!(report.order_violations, 0);
}
