//! The closed loop at `--rate max` against a server that drops a
//! publisher's own lines, as ringcast does for a client that is slow.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringcast_load::wire::{Header, Kind};
use ringcast_load::{Plan, Rate, Report};

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

/// Runs `plan` on a runtime of its own.
fn run(plan: &Plan) -> Report {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(ringcast_load::run(plan))
        .expect("run")
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
    let report = run(&plan);
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

/// Lines the server holds for its slow connection, at most; the rest are
/// dropped for it, as ringcast drops for a client whose allowance is full.
const SLOW_QUEUE: usize = 100;
/// How many lines the slow connection takes per millisecond.
const SLOW_PER_MS: usize = 10;

/// A broadcast server whose last connection of three takes
/// [`SLOW_PER_MS`] lines a millisecond from a queue of [`SLOW_QUEUE`],
/// and loses what does not fit. The other two get everything: a full
/// queue paces the publisher that writes to it.
fn server_with_a_slow_reader() -> SocketAddr {
    use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Each connection's queue, and whether it is the slow one.
    type Queues = Arc<Mutex<Vec<(SyncSender<Vec<u8>>, bool)>>>;
    let queues: Queues = Arc::default();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            let slow = i == 2;
            let (tx, rx) = sync_channel::<Vec<u8>>(if slow { SLOW_QUEUE } else { 100_000 });
            queues.lock().expect("lock").push((tx, slow));
            let mut out = stream.try_clone().expect("clone");
            std::thread::spawn(move || {
                let mut batch = Vec::new();
                while let Ok(line) = rx.recv() {
                    batch.extend_from_slice(&line);
                    let more = if slow { SLOW_PER_MS - 1 } else { 1000 };
                    batch.extend(rx.try_iter().take(more).flatten());
                    if out.write_all(&batch).is_err() {
                        return;
                    }
                    batch.clear();
                    if slow {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            });
            let queues = Arc::clone(&queues);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = Vec::new();
                while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                    for (queue, slow) in queues.lock().expect("lock").iter() {
                        if *slow {
                            match queue.try_send(line.clone()) {
                                Ok(()) | Err(TrySendError::Full(_)) => {}
                                Err(TrySendError::Disconnected(_)) => return,
                            }
                        } else if queue.send(line.clone()).is_err() {
                            return;
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
fn saturation_paces_publishers_to_the_slowest_reader() {
    let plan = Plan::builder(server_with_a_slow_reader())
        .clients(3)
        .publishers(2)
        .size(64)
        .rate(Rate::Max)
        .duration(Duration::from_secs(3))
        .threads(2)
        .build()
        .expect("plan");
    let report = run(&plan);
    // Publishers that outpaced the slow reader would lose most of what
    // they sent there: a third of every delivery, less what it took.
    let expected = report.published * 3;
    assert!(
        report.loss * 50 < expected,
        "lost {} of {expected} deliveries (published {}): {report}",
        report.loss,
        report.published,
    );
    // And the publishers kept going at the slow reader's pace, rather than
    // wait for lines it lost: none had to give its window up after a
    // second with nothing back. The pace itself depends on how busy the
    // machine is, so the floor is loose (a tenth of what the slow reader
    // takes on an idle machine).
    assert_eq!(report.window_resets, 0, "{report}");
    let can_take = (SLOW_PER_MS * 3000) as u64;
    assert!(
        report.published * 10 >= can_take,
        "published {} lines; the slow reader takes up to {can_take}: {report}",
        report.published,
    );
    assert_eq!(report.order_violations, 0);
}
