//! Unit tests of the outbound policy, without sockets.

use super::*;
use crate::policy::run::Run;

fn msg(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A socket that takes up to `room` bytes, then refuses.
struct Socket {
    room: usize,
    got: Vec<u8>,
    calls: usize,
}

impl Socket {
    fn with_room(room: usize) -> Self {
        Self {
            room,
            got: Vec::new(),
            calls: 0,
        }
    }

    fn send(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.calls += 1;
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(self.room - n);
            self.got.extend_from_slice(&b[..take]);
            n += take;
        }
        self.room -= n;
        Ok(n)
    }
}

/// Offers the one-line run `s` as an engine does: when the queue is full
/// and the kernel has not refused since, the queue goes to `sock` at once
/// and the rest is offered again.
fn offer_at(q: &mut Outbound, s: &str, sock: &mut Socket, at: Instant) -> Offer {
    offer_run(q, &msg(s), sock, at)
}

fn offer_run(q: &mut Outbound, run: &Bytes, sock: &mut Socket, at: Instant) -> Offer {
    let lines = Run::of(run.clone()).lines;
    let mut from = 0;
    loop {
        let rest = run.slice(Kind::Lines.offset_of(run, from)..);
        match q.offer(&rest, lines - from, Kind::Lines, || at) {
            Offer::Full { took } => {
                from += took;
                if let Flushed::Failed(e) = flush(q, sock) {
                    panic!("the socket failed: {e}");
                }
            }
            other => return other,
        }
    }
}

fn offer(q: &mut Outbound, s: &str, sock: &mut Socket) -> Offer {
    offer_at(q, s, sock, Instant::now())
}

fn flush(q: &mut Outbound, sock: &mut Socket) -> Flushed {
    q.flush(|b| sock.send(b), &mut Sent::default())
}

const GRACE: Duration = Duration::from_millis(5);

/// A queue of one, full, whose socket refuses.
fn full(t0: Instant) -> (Outbound, Socket) {
    let mut q = Outbound::new(1, GRACE);
    let mut sock = Socket::with_room(0);
    offer_at(&mut q, "a\n", &mut sock, t0);
    (q, sock)
}

/// The client of [`full`] reads its one message, and the queue fills again
/// at `at` (the socket refusing once more); returns what the flush found.
fn catch_up_and_refill(q: &mut Outbound, sock: &mut Socket, at: Instant) -> Flushed {
    sock.room = 2;
    q.unblock();
    let flushed = flush(q, sock);
    offer_at(q, "y\n", sock, at);
    flushed
}

#[test]
fn a_full_allowance_holds_once_for_the_grace_and_room_ends_it() {
    let t0 = Instant::now();
    let (mut q, mut sock) = full(t0);
    let until = t0 + GRACE;
    assert!(
        matches!(offer_at(&mut q, "b\n", &mut sock, t0), Offer::Hold { until: u, .. } if u == until)
    );
    assert!(!q.has_room() && q.is_behind());
    // The client reads: the writer drains the queue, and the held
    // message goes in. Nothing was dropped.
    sock.room = 100;
    q.unblock();
    assert!(matches!(
        flush(&mut q, &mut sock),
        Flushed::Drained { caught_up: None }
    ));
    assert!(q.has_room() && !q.is_behind());
    assert!(matches!(
        offer_at(&mut q, "b\n", &mut sock, t0),
        Offer::Queued { .. }
    ));
    assert!(q.episode().is_none(), "nothing was dropped");
}

#[test]
fn ending_the_grace_early_drops_the_held_message_and_starts_the_cooldown() {
    let t0 = Instant::now();
    let mut q = Outbound::new(1, GRACE);
    let mut sock = Socket::with_room(0);
    offer_at(&mut q, "a\n", &mut sock, t0);
    assert!(matches!(
        offer_at(&mut q, "b\n", &mut sock, t0),
        Offer::Hold { .. }
    ));
    let early = t0 + GRACE / 10;
    q.end_grace(early);
    assert!(matches!(
        offer_at(&mut q, "b\n", &mut sock, early),
        Offer::Dropped { started: true, .. }
    ));
    // It used a grace up: the next time it is behind, no grace.
    sock.room = usize::MAX;
    q.unblock();
    assert!(matches!(
        flush(&mut q, &mut sock),
        Flushed::Drained { caught_up: Some(_) }
    ));
    sock.room = 0;
    offer_at(&mut q, "c\n", &mut sock, early);
    assert!(matches!(
        offer_at(&mut q, "d\n", &mut sock, early),
        Offer::Dropped { started: true, .. }
    ));
    assert!(q.ran_out_before());
    // Ending a grace that is not running changes nothing.
    let mut q = Outbound::new(1, GRACE);
    q.end_grace(t0);
    offer_at(&mut q, "a\n", &mut sock, t0);
    assert!(matches!(
        offer_at(&mut q, "b\n", &mut sock, t0),
        Offer::Hold { until, .. } if until == t0 + GRACE
    ));
}

#[test]
fn progress_does_not_renew_the_grace() {
    let t0 = Instant::now();
    let mut q = Outbound::new(2, GRACE);
    let mut sock = Socket::with_room(0);
    offer_at(&mut q, "a\n", &mut sock, t0);
    offer_at(&mut q, "b\n", &mut sock, t0);
    assert!(matches!(
        offer_at(&mut q, "c\n", &mut sock, t0),
        Offer::Hold { .. }
    ));
    // It reads one message' worth: room, but not caught up.
    sock.room = 2;
    q.unblock();
    assert!(matches!(flush(&mut q, &mut sock), Flushed::Blocked));
    assert!(matches!(
        offer_at(&mut q, "c\n", &mut sock, t0),
        Offer::Queued { .. }
    ));
    let later = t0 + GRACE / 2;
    assert!(
        matches!(offer_at(&mut q, "d\n", &mut sock, later), Offer::Hold { until, .. } if until == t0 + GRACE),
        "the same deadline, not a new one"
    );
    assert!(matches!(
        offer_at(&mut q, "d\n", &mut sock, t0 + GRACE),
        Offer::Dropped { started: true, .. }
    ));
    assert!(q.episode().is_some());
}

#[test]
fn a_client_that_used_its_grace_up_gets_none_for_a_cooldown_that_doubles() {
    let t0 = Instant::now();
    let (mut q, mut sock) = full(t0);
    let mut now = t0;
    for round in 0..3u32 {
        // Full: a grace, used up.
        assert!(
            matches!(offer_at(&mut q, "x\n", &mut sock, now), Offer::Hold { .. }),
            "round {round}"
        );
        now += GRACE;
        assert!(matches!(
            offer_at(&mut q, "x\n", &mut sock, now),
            Offer::Dropped { started: true, .. }
        ));
        // It catches up, and fills again within the cooldown: no wait.
        assert!(matches!(
            catch_up_and_refill(&mut q, &mut sock, now),
            Flushed::Drained { caught_up: Some(_) }
        ));
        let cooldown = COOLDOWN * 2u32.pow(round);
        assert!(
            matches!(
                offer_at(&mut q, "z\n", &mut sock, now + cooldown - GRACE),
                Offer::Dropped { started: true, .. }
            ),
            "round {round}: still cooling down"
        );
        assert!(matches!(
            catch_up_and_refill(&mut q, &mut sock, now),
            Flushed::Drained { caught_up: Some(_) }
        ));
        now += cooldown;
    }
    // A client that catches up within its grace is forgiven.
    assert!(matches!(
        offer_at(&mut q, "x\n", &mut sock, now),
        Offer::Hold { .. }
    ));
    assert!(matches!(
        catch_up_and_refill(&mut q, &mut sock, now),
        Flushed::Drained { caught_up: None }
    ));
    assert!(matches!(
        offer_at(&mut q, "x\n", &mut sock, now),
        Offer::Hold { .. }
    ));
    now += GRACE;
    assert!(matches!(
        offer_at(&mut q, "x\n", &mut sock, now),
        Offer::Dropped { started: true, .. }
    ));
    catch_up_and_refill(&mut q, &mut sock, now);
    assert!(
        matches!(
            offer_at(&mut q, "z\n", &mut sock, now + COOLDOWN),
            Offer::Hold { .. }
        ),
        "back to the first cooldown"
    );
}

#[test]
fn a_queue_with_room_takes_messages_without_touching_the_socket() {
    let mut q = Outbound::new(3, Duration::ZERO);
    let mut sock = Socket::with_room(0);
    assert!(matches!(
        offer(&mut q, "a\n", &mut sock),
        Offer::Queued { wake: true }
    ));
    assert!(matches!(
        offer(&mut q, "b\n", &mut sock),
        Offer::Queued { wake: false }
    ));
    assert_eq!((q.len(), q.bytes(), sock.calls), (2, 4, 0));
}

#[test]
fn a_full_queue_goes_to_the_kernel_before_anything_is_dropped() {
    let mut q = Outbound::new(2, Duration::ZERO);
    let mut sock = Socket::with_room(1 << 20);
    for s in ["a\n", "b\n", "c\n", "d\n", "e\n"] {
        assert!(matches!(offer(&mut q, s, &mut sock), Offer::Queued { .. }));
    }
    assert_eq!(sock.got, b"a\nb\nc\nd\n", "full queues were sent, in order");
    assert_eq!(q.len(), 1);
    assert!(q.episode().is_none());
}

#[test]
fn the_allowance_is_the_queue_plus_what_the_kernel_takes_then_drop_newest() {
    let mut q = Outbound::new(2, Duration::ZERO);
    // The kernel has room for three 2-byte messages.
    let mut sock = Socket::with_room(6);
    let results: Vec<bool> = (0..8)
        .map(|n| {
            matches!(
                offer(&mut q, &format!("{n}\n"), &mut sock),
                Offer::Queued { .. }
            )
        })
        .collect();
    // 0 and 1 queue. 2 finds the queue full: 0 and 1 go to the kernel,
    // and 2 queues, then 3. 4 finds it full: the kernel takes 2 but
    // refuses 3, so there is room for 4. 5 finds it full, and the kernel
    // has refused: 5, 6 and 7 are dropped.
    assert_eq!(sock.got, b"0\n1\n2\n");
    assert_eq!(results, [true, true, true, true, true, false, false, false]);
    assert!(q.is_blocked());
    let episode = q.episode().expect("dropping");
    assert_eq!(episode.dropped, 3);
    // What the allowance held comes out once the client reads.
    sock.room = 100;
    q.unblock();
    let Flushed::Drained {
        caught_up: Some(ended),
    } = flush(&mut q, &mut sock)
    else {
        panic!("should drain and end the episode");
    };
    assert_eq!(ended.dropped, 3);
    assert_eq!(sock.got, b"0\n1\n2\n3\n4\n", "drop-newest keeps the oldest");
    assert!(q.episode().is_none());
}

#[test]
fn a_slow_client_drops_until_it_has_caught_up_completely() {
    let mut q = Outbound::new(2, Duration::ZERO);
    let mut sock = Socket::with_room(0);
    offer(&mut q, "a\n", &mut sock);
    offer(&mut q, "b\n", &mut sock);
    assert!(matches!(
        offer(&mut q, "c\n", &mut sock),
        Offer::Dropped { started: true, .. }
    ));
    // It reads one message' worth: room in the queue, but still behind.
    sock.room = 2;
    q.unblock();
    assert!(matches!(flush(&mut q, &mut sock), Flushed::Blocked));
    assert_eq!(q.len(), 1);
    assert!(matches!(
        offer(&mut q, "d\n", &mut sock),
        Offer::Dropped { started: false, .. }
    ));
    sock.room = 100;
    q.unblock();
    assert!(matches!(
        flush(&mut q, &mut sock),
        Flushed::Drained { caught_up: Some(_) }
    ));
    assert!(matches!(
        offer(&mut q, "e\n", &mut sock),
        Offer::Queued { wake: true }
    ));
    assert_eq!(sock.got, b"a\nb\n");
}

#[test]
fn no_send_while_the_engine_waits_on_the_socket() {
    let mut q = Outbound::new(2, Duration::ZERO);
    let mut sock = Socket::with_room(3);
    offer(&mut q, "ab\n", &mut sock);
    offer(&mut q, "cd\n", &mut sock);
    assert!(matches!(flush(&mut q, &mut sock), Flushed::Blocked));
    assert_eq!(sock.got, b"ab\n");
    let calls = sock.calls;
    sock.room = 100;
    assert!(matches!(
        offer(&mut q, "ef\n", &mut sock),
        Offer::Queued { wake: false }
    ));
    assert!(matches!(flush(&mut q, &mut sock), Flushed::Blocked));
    assert!(matches!(
        offer(&mut q, "gh\n", &mut sock),
        Offer::Dropped { started: true, .. }
    ));
    assert_eq!(sock.calls, calls, "blocked: the socket is not touched");
    // The socket is writable: what is queued goes, and the episode ends.
    q.unblock();
    assert!(matches!(
        flush(&mut q, &mut sock),
        Flushed::Drained { caught_up: Some(_) }
    ));
    assert_eq!(sock.got, b"ab\ncd\nef\n");
}

#[test]
fn whatever_send_takes_the_last_byte_ends_the_episode() {
    // A queue of one, refused mid-message: the send that finishes the
    // message empties the queue, and that alone ends the slow episode.
    let mut q = Outbound::new(1, Duration::ZERO);
    let mut sock = Socket::with_room(2);
    offer(&mut q, "abcd\n", &mut sock);
    assert!(matches!(flush(&mut q, &mut sock), Flushed::Blocked));
    assert!(matches!(
        offer(&mut q, "x\n", &mut sock),
        Offer::Dropped { started: true, .. }
    ));
    assert!(q.episode().is_some());
    q.unblock();
    let mut buf = Owned::default();
    let offered = q.fill(&mut buf);
    assert_eq!((offered, &buf.bytes[..]), (3, &b"cd\n"[..]));
    assert!(matches!(
        q.sent(Ok(3), offered, &mut Sent::default()),
        Flushed::Drained { caught_up: Some(_) }
    ));
    assert!(q.episode().is_none() && q.is_empty());
    assert!(matches!(
        offer(&mut q, "y\n", &mut sock),
        Offer::Queued { wake: true }
    ));
}

/// A [`SendBuf`] that copies everything, as an engine that sends later
/// keeps what it sends.
#[derive(Default)]
struct Owned {
    bytes: Vec<u8>,
    pieces: usize,
}

impl SendBuf<'_> for Owned {
    fn copy(&mut self, part: &[u8]) {
        self.bytes.extend_from_slice(part);
    }

    fn refer(&mut self, bytes: &Bytes, start: usize) {
        self.bytes.extend_from_slice(&bytes[start..]);
        self.pieces += 1;
    }
}

#[test]
fn a_run_is_one_entry_counted_as_its_messages_and_cut_where_it_stops_fitting() {
    let mut q = Outbound::new(5, Duration::ZERO);
    let run = msg("a\nb\nc\n");
    assert!(matches!(
        q.offer(&run, 3, Kind::Lines, Instant::now),
        Offer::Queued { wake: true }
    ));
    assert_eq!((q.len(), q.bytes()), (3, 6));
    // Room for two of three: those two go in, and the kernel is asked.
    assert!(matches!(
        q.offer(&msg("d\ne\nf\n"), 3, Kind::Lines, Instant::now),
        Offer::Full { took: 2 }
    ));
    assert_eq!((q.len(), q.bytes()), (5, 10));
    // The kernel takes a line and a half: one message more is whole.
    let mut sent = Sent::default();
    let mut buf = Owned::default();
    let offered = q.fill(&mut buf);
    assert_eq!(&buf.bytes[..], b"a\nb\nc\nd\ne\n");
    assert!(matches!(
        q.sent(Ok(3), offered, &mut sent),
        Flushed::Blocked
    ));
    assert_eq!((sent.messages, sent.bytes, q.len()), (1, 3, 4));
    // That made room for one; the next is refused and dropped: the queue
    // keeps the oldest.
    assert!(matches!(
        q.offer(&msg("f\n"), 1, Kind::Lines, Instant::now),
        Offer::Queued { wake: false }
    ));
    assert!(matches!(
        q.offer(&msg("g\n"), 1, Kind::Lines, Instant::now),
        Offer::Dropped {
            started: true,
            took: 0,
            dropped: 1
        }
    ));
    q.unblock();
    let mut sock = Socket::with_room(100);
    let mut sent = Sent::default();
    assert!(matches!(
        q.flush(|b| sock.send(b), &mut sent),
        Flushed::Drained { caught_up: Some(_) }
    ));
    assert_eq!(sock.got, b"\nc\nd\ne\nf\n");
    assert_eq!((sent.messages, sent.bytes, sent.sends), (5, 9, 1));
}

#[test]
fn partial_sends_of_frames_count_whole_frames() {
    let frames: Vec<Bytes> = ["one", "two", "three"]
        .iter()
        .map(|l| crate::policy::codec::websocket::frame_line(l.as_bytes()))
        .collect();
    let run: Bytes = frames.concat().into();
    let mut q = Outbound::new(10, Duration::ZERO);
    q.offer(&run, 3, Kind::Frames, Instant::now);
    let mut sent = Sent::default();
    // The whole first frame and the header of the second.
    let n = frames[0].len() + 2;
    assert!(matches!(
        q.sent(Ok(n), run.len(), &mut sent),
        Flushed::Blocked
    ));
    assert_eq!((sent.messages, q.len()), (1, 2));
    let rest = run.len() - n;
    assert!(matches!(
        q.sent(Ok(rest), rest, &mut sent),
        Flushed::Drained { .. }
    ));
    assert_eq!((sent.messages, sent.bytes, q.len()), (3, run.len(), 0));
}

#[test]
fn the_servers_own_bytes_are_not_messages() {
    let mut q = Outbound::new(1, Duration::ZERO);
    q.push_own(msg("pong"));
    q.push_own(msg("pong"));
    assert!(q.has_room(), "own bytes take no room");
    assert!(matches!(
        q.offer(&msg("a\n"), 1, Kind::Lines, Instant::now),
        Offer::Queued { .. }
    ));
    assert_eq!((q.len(), q.bytes(), q.own_bytes()), (1, 10, 8));
    let mut sock = Socket::with_room(100);
    let mut sent = Sent::default();
    q.flush(|b| sock.send(b), &mut sent);
    assert_eq!(
        sent,
        Sent {
            messages: 1,
            bytes: 2,
            own_bytes: 8,
            sends: 1
        }
    );
    // A send of own bytes alone is not a send of messages.
    q.push_own(msg("pong"));
    let mut sent = Sent::default();
    q.flush(|b| sock.send(b), &mut sent);
    assert_eq!((sent.sends, sent.own_bytes, q.own_bytes()), (0, 4, 0));
}

#[test]
fn only_the_latest_unsent_pong_is_queued() {
    let mut q = Outbound::new(4, Duration::ZERO);
    let mut sock = Socket::with_room(3);
    for i in 0..10_000 {
        assert!(q.push_pong(msg(&format!("p{i:04}"))), "within the bound");
    }
    assert_eq!(q.own_bytes(), 5, "one pong, the latest");
    // The kernel takes part of it: that one stays, and the next ping gets
    // a pong of its own, which later ones replace.
    let mut sent = Sent::default();
    assert!(matches!(
        q.flush(|b| sock.send(b), &mut sent),
        Flushed::Blocked
    ));
    q.push_pong(msg("pa"));
    q.push_pong(msg("pb"));
    assert_eq!(
        q.offer(&msg("x\n"), 1, Kind::Lines, Instant::now),
        Offer::Queued { wake: false }
    );
    q.push_pong(msg("pc"));
    assert_eq!((q.own_bytes(), q.bytes()), (2 + 2, 2 + 2 + 2));
    sock.room = 100;
    q.unblock();
    let mut sent = Sent::default();
    q.flush(|b| sock.send(b), &mut sent);
    assert_eq!(sock.got, b"p9999pcx\n");
    assert_eq!((sent.messages, sent.own_bytes, q.own_bytes()), (1, 4, 0));
    // Once sent, a pong is not replaced: the next ping gets its own.
    q.push_pong(msg("pd"));
    assert_eq!(q.own_bytes(), 2);
}

#[test]
fn an_own_backlog_past_its_bound_says_so() {
    let mut q = Outbound::new(4, Duration::ZERO);
    let chunk = Bytes::from(vec![b'c'; 1024]);
    let fits = (0..OWN_BACKLOG / 1024).all(|_| q.push_own(chunk.clone()));
    assert!(fits, "up to the bound");
    assert!(!q.push_own(chunk), "past it");
}

#[test]
fn partial_sends_resume_mid_message() {
    let mut q = Outbound::new(4, Duration::ZERO);
    let mut sock = Socket::with_room(5);
    for s in ["hello\n", "world\n"] {
        offer(&mut q, s, &mut sock);
    }
    let mut sent = Sent::default();
    assert!(matches!(
        q.flush(|b| sock.send(b), &mut sent),
        Flushed::Blocked
    ));
    assert_eq!(
        sent,
        Sent {
            messages: 0,
            bytes: 5,
            own_bytes: 0,
            sends: 1
        }
    );
    assert_eq!(q.bytes(), 7);
    sock.room = 100;
    q.unblock();
    let mut sent = Sent::default();
    assert!(matches!(
        q.flush(|b| sock.send(b), &mut sent),
        Flushed::Drained { caught_up: None }
    ));
    assert_eq!(
        sent,
        Sent {
            messages: 2,
            bytes: 7,
            own_bytes: 0,
            sends: 1
        }
    );
    assert_eq!(sock.got, b"hello\nworld\n");
    assert_eq!(q.bytes(), 0);
}

#[test]
fn large_messages_go_out_as_iovecs_small_ones_gathered() {
    // 150 messages of 600 B: an iovec entry each, 64 to a send.
    let mut q = Outbound::new(200, Duration::ZERO);
    let mut sock = Socket::with_room(1 << 20);
    let big: Vec<String> = (0..150).map(|n| format!("{n:0>599}\n")).collect();
    for m in &big {
        offer(&mut q, m, &mut sock);
    }
    let mut sent = Sent::default();
    assert!(matches!(
        q.flush(|b| sock.send(b), &mut sent),
        Flushed::Drained { .. }
    ));
    assert_eq!(sent.messages, 150);
    assert_eq!(sent.sends, 150usize.div_ceil(SEND_IOVECS));
    assert_eq!(sock.got, big.concat().into_bytes());
    // 150 small ones: copied into one piece, one send.
    let mut sock = Socket::with_room(1 << 20);
    for n in 0..150 {
        offer(&mut q, &format!("{n}\n"), &mut sock);
    }
    let mut sent = Sent::default();
    let mut pieces = 0;
    assert!(matches!(
        q.flush(
            |b| {
                pieces += b.len();
                sock.send(b)
            },
            &mut sent
        ),
        Flushed::Drained { .. }
    ));
    assert_eq!((sent.messages, sent.sends, pieces), (150, 1, 1));
    let expected: Vec<u8> = (0..150)
        .flat_map(|n| format!("{n}\n").into_bytes())
        .collect();
    assert_eq!(sock.got, expected);
}

#[test]
fn a_failing_socket_is_reported() {
    let mut q = Outbound::new(1, Duration::ZERO);
    offer(&mut q, "a\n", &mut Socket::with_room(0));
    let broken = |_: &[IoSlice<'_>]| Err(io::Error::from(io::ErrorKind::BrokenPipe));
    assert!(matches!(
        q.flush(broken, &mut Sent::default()),
        Flushed::Failed(_)
    ));
}

#[test]
fn zero_capacity_is_raised_to_one() {
    let mut q = Outbound::new(0, Duration::ZERO);
    let mut sock = Socket::with_room(0);
    assert!(matches!(
        offer(&mut q, "a\n", &mut sock),
        Offer::Queued { .. }
    ));
    assert!(matches!(
        offer(&mut q, "b\n", &mut sock),
        Offer::Dropped { .. }
    ));
    assert_eq!(q.len(), 1);
}

#[test]
fn clearing_hands_back_the_running_episode() {
    let mut q = Outbound::new(1, Duration::ZERO);
    let mut sock = Socket::with_room(0);
    offer(&mut q, "a\n", &mut sock);
    offer(&mut q, "b\n", &mut sock);
    assert_eq!(q.clear().map(|e| e.dropped), Some(1));
    assert!(q.is_empty() && q.episode().is_none());
}

#[test]
fn pushes_wake_the_writer_on_the_first_message_and_at_the_marks() {
    let wakes: Vec<usize> = (1..=100)
        .filter(|&n| wakes_writer(n, n * 64, 64, 100))
        .collect();
    assert_eq!(wakes, [1, 25]);
    // 1 KiB lines cross 16 KiB at the 16th.
    let wakes: Vec<usize> = (1..=100)
        .filter(|&n| wakes_writer(n, n * 1024, 1024, 100))
        .collect();
    assert_eq!(wakes, [1, 16, 25]);
}
