//! Unit tests of the outbound policy, without sockets.

use std::io::{self, IoSlice};

use super::*;
use crate::policy::run::Run;

pub(super) fn msg(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The step an offer's whole run was queued with (`Wake` or `Idle`), or
/// `None` if any of it was not queued.
pub(super) fn queued(o: Outcome) -> Option<Step> {
    (o.dropped == 0 && matches!(o.next, Step::Idle | Step::Wake)).then_some(o.next)
}

/// The offer dropped, and began a slow episode.
pub(super) fn started(o: Outcome) -> bool {
    o.episode == Some(Change::Started)
}

/// The kernel took everything queued, which ended a slow episode.
pub(super) fn caught_up(o: Outcome) -> bool {
    o.next == Step::Idle && matches!(o.episode, Some(Change::CaughtUp(_)))
}

/// The kernel took everything queued, and no slow episode ended.
pub(super) fn emptied(o: Outcome) -> bool {
    o.next == Step::Idle && o.episode.is_none()
}

/// A socket that takes up to `room` bytes, then refuses.
pub(super) struct Socket {
    pub(super) room: usize,
    pub(super) got: Vec<u8>,
    pub(super) calls: usize,
}

impl Socket {
    pub(super) fn with_room(room: usize) -> Self {
        Self {
            room,
            got: Vec::new(),
            calls: 0,
        }
    }

    pub(super) fn send(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
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
pub(super) fn offer_at(q: &mut Outbound, s: &str, sock: &mut Socket, at: Instant) -> Outcome {
    offer_run(q, &msg(s), sock, at)
}

pub(super) fn offer_run(q: &mut Outbound, run: &Bytes, sock: &mut Socket, at: Instant) -> Outcome {
    let lines = Run::of(run.clone()).lines;
    let mut from = 0;
    loop {
        let rest = run.slice(Kind::Lines.offset_of(run, from)..);
        match q.offer(&rest, lines - from, Kind::Lines, || at) {
            Outcome {
                next: Step::SendNow,
                took,
                ..
            } => {
                from += took;
                if let Step::Failed { kind, .. } = flush(q, sock).next {
                    panic!("the socket failed: {kind:?}");
                }
            }
            other => return other,
        }
    }
}

pub(super) fn offer(q: &mut Outbound, s: &str, sock: &mut Socket) -> Outcome {
    offer_at(q, s, sock, Instant::now())
}

pub(super) fn flush(q: &mut Outbound, sock: &mut Socket) -> Outcome {
    q.flush(|b| sock.send(b))
}

/// A [`SendBuf`] that copies everything, as an engine that sends later
/// keeps what it sends.
#[derive(Default)]
pub(super) struct Owned {
    pub(super) bytes: Vec<u8>,
    pub(super) pieces: usize,
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
fn a_queue_with_room_takes_messages_without_touching_the_socket() {
    let mut q = Outbound::new(3, Duration::ZERO);
    let mut sock = Socket::with_room(0);
    assert_eq!(queued(offer(&mut q, "a\n", &mut sock)), Some(Step::Wake));
    assert_eq!(queued(offer(&mut q, "b\n", &mut sock)), Some(Step::Idle));
    assert_eq!((q.len(), q.bytes(), sock.calls), (2, 4, 0));
}

#[test]
fn a_full_queue_goes_to_the_kernel_before_anything_is_dropped() {
    let mut q = Outbound::new(2, Duration::ZERO);
    let mut sock = Socket::with_room(1 << 20);
    for s in ["a\n", "b\n", "c\n", "d\n", "e\n"] {
        assert!(queued(offer(&mut q, s, &mut sock)).is_some());
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
                Outcome {
                    next: Step::Idle | Step::Wake,
                    dropped: 0,
                    ..
                }
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
    let Outcome {
        next: Step::Idle,
        episode: Some(Change::CaughtUp(ended)),
        ..
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
    let _ = offer(&mut q, "a\n", &mut sock);
    let _ = offer(&mut q, "b\n", &mut sock);
    assert!(started(offer(&mut q, "c\n", &mut sock)));
    // It reads one message' worth: room in the queue, but still behind.
    sock.room = 2;
    q.unblock();
    assert_eq!(flush(&mut q, &mut sock).next, Step::Blocked);
    assert_eq!(q.len(), 1);
    assert!(matches!(
        offer(&mut q, "d\n", &mut sock),
        Outcome {
            dropped: 1..,
            episode: None,
            ..
        }
    ));
    sock.room = 100;
    q.unblock();
    assert!(caught_up(flush(&mut q, &mut sock)));
    assert_eq!(queued(offer(&mut q, "e\n", &mut sock)), Some(Step::Wake));
    assert_eq!(sock.got, b"a\nb\n");
}

#[test]
fn no_send_while_the_engine_waits_on_the_socket() {
    let mut q = Outbound::new(2, Duration::ZERO);
    let mut sock = Socket::with_room(3);
    let _ = offer(&mut q, "ab\n", &mut sock);
    let _ = offer(&mut q, "cd\n", &mut sock);
    assert_eq!(flush(&mut q, &mut sock).next, Step::Blocked);
    assert_eq!(sock.got, b"ab\n");
    let calls = sock.calls;
    sock.room = 100;
    assert_eq!(queued(offer(&mut q, "ef\n", &mut sock)), Some(Step::Idle));
    assert_eq!(flush(&mut q, &mut sock).next, Step::Blocked);
    assert!(started(offer(&mut q, "gh\n", &mut sock)));
    assert_eq!(sock.calls, calls, "blocked: the socket is not touched");
    // The socket is writable: what is queued goes, and the episode ends.
    q.unblock();
    assert!(caught_up(flush(&mut q, &mut sock)));
    assert_eq!(sock.got, b"ab\ncd\nef\n");
}

#[test]
fn whatever_send_takes_the_last_byte_ends_the_episode() {
    // A queue of one, refused mid-message: the send that finishes the
    // message empties the queue, and that alone ends the slow episode.
    let mut q = Outbound::new(1, Duration::ZERO);
    let mut sock = Socket::with_room(2);
    let _ = offer(&mut q, "abcd\n", &mut sock);
    assert_eq!(flush(&mut q, &mut sock).next, Step::Blocked);
    assert!(started(offer(&mut q, "x\n", &mut sock)));
    assert!(q.episode().is_some());
    q.unblock();
    let mut buf = Owned::default();
    let offered = q.fill(&mut buf);
    assert_eq!((offered, &buf.bytes[..]), (3, &b"cd\n"[..]));
    assert!(caught_up(q.sent(Ok(3), offered)));
    assert!(q.episode().is_none() && q.is_empty());
    assert_eq!(queued(offer(&mut q, "y\n", &mut sock)), Some(Step::Wake));
}

#[test]
fn own_bytes_wake_the_writer_only_into_an_empty_queue_it_may_send() {
    let mut q = Outbound::new(4, Duration::ZERO);
    assert_eq!(q.push_own(msg("hello")).next, Step::Wake, "empty");
    assert_eq!(q.push_own(msg("again")).next, Step::Idle, "not empty");
    assert_eq!(q.push_pong(msg("p1")).next, Step::Idle, "not empty");
    assert_eq!(q.push_pong(msg("p2")).next, Step::Idle, "replaced");
    // The kernel refuses: the writer waits for the socket, not for a wake.
    let mut sock = Socket::with_room(0);
    assert_eq!(flush(&mut q, &mut sock).next, Step::Blocked);
    let mut cleared = Outbound::new(4, Duration::ZERO);
    let _ = cleared.push_own(msg("x"));
    let _ = cleared.sent(Err(io::ErrorKind::WouldBlock.into()), 1);
    let _ = cleared.clear();
    assert_eq!(
        cleared.push_own(msg("y")).next,
        Step::Idle,
        "empty, but blocked"
    );
}

#[test]
fn drained_with_more_queued_says_send_again() {
    let mut q = Outbound::new(4, Duration::ZERO);
    let _ = q.offer(&msg("a\n"), 1, Kind::Lines, Instant::now);
    assert_eq!(q.drained(), Outcome::step(Step::More));
    let mut sock = Socket::with_room(100);
    let _ = flush(&mut q, &mut sock);
    assert_eq!(q.drained(), Outcome::default());
}

#[test]
fn only_the_latest_unsent_pong_is_queued() {
    let mut q = Outbound::new(4, Duration::ZERO);
    let mut sock = Socket::with_room(3);
    for i in 0..10_000 {
        let pong = q.push_pong(msg(&format!("p{i:04}")));
        assert!(!matches!(pong.next, Step::OwnBacklog), "within the bound");
    }
    assert_eq!(q.own_bytes(), 5, "one pong, the latest");
    // The kernel takes part of it: that one stays, and the next ping gets
    // a pong of its own, which later ones replace.
    assert_eq!(q.flush(|b| sock.send(b)).next, Step::Blocked);
    let _ = q.push_pong(msg("pa"));
    let _ = q.push_pong(msg("pb"));
    assert_eq!(
        queued(q.offer(&msg("x\n"), 1, Kind::Lines, Instant::now)),
        Some(Step::Idle)
    );
    let _ = q.push_pong(msg("pc"));
    assert_eq!((q.own_bytes(), q.bytes()), (2 + 2, 2 + 2 + 2));
    sock.room = 100;
    q.unblock();
    let mut sent = Sent::default();
    sent += q.flush(|b| sock.send(b)).sent;
    assert_eq!(sock.got, b"p9999pcx\n");
    assert_eq!((sent.messages, sent.own_bytes, q.own_bytes()), (1, 4, 0));
    // Once sent, a pong is not replaced: the next ping gets its own.
    let _ = q.push_pong(msg("pd"));
    assert_eq!(q.own_bytes(), 2);
}

#[test]
fn an_own_backlog_past_its_bound_says_so() {
    let mut q = Outbound::new(4, Duration::ZERO);
    let chunk = Bytes::from(vec![b'c'; 1024]);
    let fits = (0..OWN_BACKLOG / 1024)
        .all(|_| !matches!(q.push_own(chunk.clone()).next, Step::OwnBacklog));
    assert!(fits, "up to the bound");
    assert_eq!(q.push_own(chunk).next, Step::OwnBacklog, "past it");
}

#[test]
fn zero_capacity_is_raised_to_one() {
    let mut q = Outbound::new(0, Duration::ZERO);
    let mut sock = Socket::with_room(0);
    assert!(queued(offer(&mut q, "a\n", &mut sock)).is_some());
    assert!(matches!(
        offer(&mut q, "b\n", &mut sock),
        Outcome { dropped: 1.., .. }
    ));
    assert_eq!(q.len(), 1);
}

#[test]
fn clearing_hands_back_the_running_episode() {
    let mut q = Outbound::new(1, Duration::ZERO);
    let mut sock = Socket::with_room(0);
    let _ = offer(&mut q, "a\n", &mut sock);
    let _ = offer(&mut q, "b\n", &mut sock);
    assert!(matches!(
        q.clear().episode,
        Some(Change::Cleared(Episode { dropped: 1, .. }))
    ));
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

// The grace: the one short wait for a client whose allowance is full,
// and the cooldown after it is used up.

const GRACE: Duration = Duration::from_millis(5);

/// A queue of one, full, whose socket refuses.
fn full(t0: Instant) -> (Outbound, Socket) {
    let mut q = Outbound::new(1, GRACE);
    let mut sock = Socket::with_room(0);
    let _ = offer_at(&mut q, "a\n", &mut sock, t0);
    (q, sock)
}

/// The client of [`full`] reads its one message, and the queue fills again
/// at `at` (the socket refusing once more); returns what the flush found.
fn catch_up_and_refill(q: &mut Outbound, sock: &mut Socket, at: Instant) -> Outcome {
    sock.room = 2;
    q.unblock();
    let flushed = flush(q, sock);
    let _ = offer_at(q, "y\n", sock, at);
    flushed
}

#[test]
fn a_full_allowance_holds_once_for_the_grace_and_room_ends_it() {
    let t0 = Instant::now();
    let (mut q, mut sock) = full(t0);
    let until = t0 + GRACE;
    assert!(
        matches!(offer_at(&mut q, "b\n", &mut sock, t0), Outcome { next: Step::Hold { until: u }, .. } if u == until)
    );
    assert!(!q.has_room() && q.is_behind());
    // The client reads: the writer drains the queue, and the held
    // message goes in. Nothing was dropped.
    sock.room = 100;
    q.unblock();
    assert!(emptied(flush(&mut q, &mut sock)));
    assert!(q.has_room() && !q.is_behind());
    assert!(queued(offer_at(&mut q, "b\n", &mut sock, t0)).is_some());
    assert!(q.episode().is_none(), "nothing was dropped");
}

#[test]
fn ending_the_grace_early_drops_the_held_message_and_starts_the_cooldown() {
    let t0 = Instant::now();
    let mut q = Outbound::new(1, GRACE);
    let mut sock = Socket::with_room(0);
    let _ = offer_at(&mut q, "a\n", &mut sock, t0);
    assert!(matches!(
        offer_at(&mut q, "b\n", &mut sock, t0).next,
        Step::Hold { .. }
    ));
    let early = t0 + GRACE / 10;
    q.end_grace(early);
    assert!(started(offer_at(&mut q, "b\n", &mut sock, early)));
    // It used a grace up: the next time it is behind, no grace.
    sock.room = usize::MAX;
    q.unblock();
    assert!(caught_up(flush(&mut q, &mut sock)));
    sock.room = 0;
    let _ = offer_at(&mut q, "c\n", &mut sock, early);
    assert!(started(offer_at(&mut q, "d\n", &mut sock, early)));
    assert!(q.ran_out_before());
    // Ending a grace that is not running changes nothing.
    let mut q = Outbound::new(1, GRACE);
    q.end_grace(t0);
    let _ = offer_at(&mut q, "a\n", &mut sock, t0);
    assert!(matches!(
        offer_at(&mut q, "b\n", &mut sock, t0),
        Outcome { next: Step::Hold { until }, .. } if until == t0 + GRACE
    ));
}

#[test]
fn progress_does_not_renew_the_grace() {
    let t0 = Instant::now();
    let mut q = Outbound::new(2, GRACE);
    let mut sock = Socket::with_room(0);
    let _ = offer_at(&mut q, "a\n", &mut sock, t0);
    let _ = offer_at(&mut q, "b\n", &mut sock, t0);
    assert!(matches!(
        offer_at(&mut q, "c\n", &mut sock, t0).next,
        Step::Hold { .. }
    ));
    // It reads one message' worth: room, but not caught up.
    sock.room = 2;
    q.unblock();
    assert_eq!(flush(&mut q, &mut sock).next, Step::Blocked);
    assert!(queued(offer_at(&mut q, "c\n", &mut sock, t0)).is_some());
    let later = t0 + GRACE / 2;
    assert!(
        matches!(offer_at(&mut q, "d\n", &mut sock, later), Outcome { next: Step::Hold { until }, .. } if until == t0 + GRACE),
        "the same deadline, not a new one"
    );
    assert!(started(offer_at(&mut q, "d\n", &mut sock, t0 + GRACE)));
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
            matches!(
                offer_at(&mut q, "x\n", &mut sock, now).next,
                Step::Hold { .. }
            ),
            "round {round}"
        );
        now += GRACE;
        assert!(started(offer_at(&mut q, "x\n", &mut sock, now)));
        // It catches up, and fills again within the cooldown: no wait.
        assert!(caught_up(catch_up_and_refill(&mut q, &mut sock, now)));
        let cooldown = COOLDOWN * 2u32.pow(round);
        assert!(
            started(offer_at(&mut q, "z\n", &mut sock, now + cooldown - GRACE)),
            "round {round}: still cooling down"
        );
        assert!(caught_up(catch_up_and_refill(&mut q, &mut sock, now)));
        now += cooldown;
    }
    // A client that catches up within its grace is forgiven.
    assert!(matches!(
        offer_at(&mut q, "x\n", &mut sock, now).next,
        Step::Hold { .. }
    ));
    assert!(emptied(catch_up_and_refill(&mut q, &mut sock, now)));
    assert!(matches!(
        offer_at(&mut q, "x\n", &mut sock, now).next,
        Step::Hold { .. }
    ));
    now += GRACE;
    assert!(started(offer_at(&mut q, "x\n", &mut sock, now)));
    let _ = catch_up_and_refill(&mut q, &mut sock, now);
    assert!(
        matches!(
            offer_at(&mut q, "z\n", &mut sock, now + COOLDOWN).next,
            Step::Hold { .. }
        ),
        "back to the first cooldown"
    );
}
