//! Tests of the send ring against real loopback sockets.

use std::io::Read as _;
use std::net::{TcpListener, TcpStream};

use super::*;

fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    (client, server)
}

#[test]
fn a_batch_sends_to_every_socket_in_one_submission_and_answers_each() {
    let mut ring = SendRing::new().expect("ring");
    let mut pairs: Vec<_> = (0..3).map(|_| pair()).collect();
    let held = Bytes::from_static(b"held piece\n");
    let mut batch = ring.batch();
    // A gathered send, a vectored one, and an empty one.
    batch.add(pairs[0].0.as_raw_fd(), |job| {
        job.copy(b"one ");
        job.copy(b"two\n");
        8
    });
    batch.add(pairs[1].0.as_raw_fd(), |job| {
        job.refer(&held, 5);
        job.refer(&held, 0);
        6 + 11
    });
    batch.add(pairs[2].0.as_raw_fd(), |_| 0);
    let results: Vec<usize> = batch
        .submit()
        .iter()
        .map(|r| *r.as_ref().expect("sent"))
        .collect();
    assert_eq!(results, [8, 17, 0]);
    let mut got = [0u8; 17];
    pairs[0].1.read_exact(&mut got[..8]).expect("read");
    assert_eq!(&got[..8], b"one two\n");
    pairs[1].1.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"piece\nheld piece\n");
}

#[test]
fn a_full_socket_answers_at_once_and_a_poll_says_when_it_takes_more() {
    let mut ring = SendRing::new().expect("ring");
    let (client, mut server) = pair();
    server.set_nonblocking(true).expect("nonblocking");
    let chunk = vec![7u8; 1 << 16];
    // Fill the socket until the kernel refuses: never a wait.
    let mut refused = None;
    for _ in 0..1000 {
        let mut batch = ring.batch();
        batch.add(client.as_raw_fd(), |job| {
            job.copy(&chunk);
            chunk.len()
        });
        match &batch.submit()[0] {
            Ok(n) if *n == chunk.len() => {}
            other => {
                refused = Some(format!("{other:?}"));
                break;
            }
        }
    }
    let refused = refused.expect("the socket filled up");
    assert!(
        refused.contains("WouldBlock") || refused.starts_with("Ok("),
        "{refused}"
    );
    ring.poll_writable(client.as_raw_fd(), 42);
    ring.submit();
    let mut woken = Vec::new();
    ring.take_woken(&mut woken);
    assert!(woken.is_empty(), "full: no room yet");
    assert_eq!(ring.armed(), 1);
    // The peer reads: the poll completes.
    let mut buf = vec![0u8; 1 << 20];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while woken.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the poll never completed"
        );
        let _ = server.read(&mut buf);
        ring.submit();
        ring.take_woken(&mut woken);
    }
    assert_eq!(woken[0], (42, false), "reported, and still armed");
    // Removed: its last report says so, and the socket is let go.
    ring.cancel_poll(42);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ring.armed() > 0 {
        assert!(std::time::Instant::now() < deadline, "the poll never ended");
        ring.submit();
    }
    woken.clear();
    ring.take_woken(&mut woken);
    assert_eq!(woken.last(), Some(&(42, true)));
}

#[test]
fn more_polls_than_the_submission_queue_holds_are_all_armed_at_once() {
    let mut ring = SendRing::new().expect("ring");
    let count = SEND_ENTRIES as usize + 200;
    let pairs: Vec<_> = (0..count)
        .map(|_| std::os::unix::net::UnixStream::pair().expect("pair"))
        .collect();
    for (i, (a, _)) in pairs.iter().enumerate() {
        ring.poll_writable(a.as_raw_fd(), i as u64);
    }
    ring.submit();
    assert!(ring.to_push.is_empty(), "every poll is in the kernel");
    // Every socket has room: every poll reports.
    let mut woken = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while woken.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {count} reported",
            woken.len()
        );
        ring.submit();
        ring.take_woken(&mut woken);
    }
    assert_eq!(ring.armed(), count, "multishot: all still armed");
}

#[test]
fn a_batch_lets_go_of_its_handles_and_its_big_copies_once_answered() {
    let mut ring = SendRing::new().expect("ring");
    let (client, server) = pair();
    server.set_nonblocking(true).expect("nonblocking");
    let held = Bytes::from(vec![1u8; 1000]);
    let copy = vec![2u8; 64 * 1024];
    let mut batch = ring.batch();
    batch.add(client.as_raw_fd(), |job| {
        job.refer(&held, 0);
        1000
    });
    // Many copies, as a batch of many small sends would make, to a
    // socket that takes what it can.
    for _ in 0..56 {
        batch.add(client.as_raw_fd(), |job| {
            job.copy(&copy);
            copy.len()
        });
    }
    assert!(batch.copied() > 3 * BATCH_COPIES);
    let _ = batch.submit();
    assert!(held.is_unique(), "the handle was let go");
    assert!(ring.store.arena.capacity() <= ARENA_KEEP);
}

#[test]
fn a_batch_to_many_clients_gives_back_its_lists_once_answered() {
    let mut ring = SendRing::new().expect("ring");
    let (client, server) = pair();
    server.set_nonblocking(true).expect("nonblocking");
    let held = Bytes::from(vec![1u8; 16]);
    // Vectored sends copy nothing, so only the count of sends and
    // pieces grows the lists: as a batch to thousands of clients would.
    let mut batch = ring.batch();
    for _ in 0..3 * LIST_KEEP {
        batch.add(client.as_raw_fd(), |job| {
            job.refer(&held, 0);
            job.refer(&held, 0);
            32
        });
    }
    assert_eq!(batch.copied(), 0);
    let _ = batch.submit();
    assert!(held.is_unique(), "the handles were let go");
    let store = &ring.store;
    for (list, capacity) in [
        ("held", store.held.capacity()),
        ("pieces", store.pieces.capacity()),
        ("jobs", store.jobs.capacity()),
        ("iovecs", store.iovecs.capacity()),
        ("msgs", store.msgs.capacity()),
    ] {
        assert!(capacity <= LIST_KEEP, "{list} kept {capacity} entries");
    }
}

#[test]
fn the_probe_finds_multishot_polls_and_sends_answered_at_once_on_this_kernel() {
    probe().expect("Linux 5.13 or later");
}

#[test]
fn a_poll_for_room_on_a_socket_shut_for_reading_waits_for_room() {
    // io_uring reports EPOLLRDHUP to any poll: a one-shot poll for room
    // on a socket shut for reading completes at once, full or not. The
    // multishot poll reports it once, then only when room frees.
    let mut ring = SendRing::new().expect("ring");
    let (client, mut server) = pair();
    server.set_nonblocking(true).expect("nonblocking");
    client.shutdown(std::net::Shutdown::Read).expect("shutdown");
    let chunk = vec![7u8; 1 << 16];
    loop {
        let mut batch = ring.batch();
        batch.add(client.as_raw_fd(), |job| {
            job.copy(&chunk);
            chunk.len()
        });
        if batch.submit()[0]
            .as_ref()
            .map_or(true, |n| *n < chunk.len())
        {
            break;
        }
    }
    ring.poll_writable(client.as_raw_fd(), 9);
    ring.submit();
    let mut woken = Vec::new();
    std::thread::sleep(std::time::Duration::from_millis(20));
    ring.submit();
    ring.take_woken(&mut woken);
    assert!(
        woken.len() <= 1,
        "{woken:?}: it kept reporting a full socket"
    );
    woken.clear();
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(5));
        ring.submit();
    }
    ring.take_woken(&mut woken);
    assert!(
        woken.is_empty(),
        "{woken:?}: nothing changed, nothing to report"
    );
    // Room frees: it reports.
    let mut buf = vec![0u8; 1 << 20];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while woken.is_empty() {
        assert!(std::time::Instant::now() < deadline, "room never reported");
        let _ = server.read(&mut buf);
        ring.submit();
        ring.take_woken(&mut woken);
    }
    assert_eq!(woken[0], (9, false));
}
