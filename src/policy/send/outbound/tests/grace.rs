//! Unit tests of the grace: the one short wait for a client whose
//! allowance is full, and the cooldown after it is used up.

use std::time::{Duration, Instant};

use super::super::{COOLDOWN, Change, Outbound, Outcome, Step};
use super::{Socket, flush, offer_at};

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
    assert!(matches!(
        flush(&mut q, &mut sock),
        Outcome {
            next: Step::Idle,
            episode: None,
            ..
        }
    ));
    assert!(q.has_room() && !q.is_behind());
    assert!(matches!(
        offer_at(&mut q, "b\n", &mut sock, t0),
        Outcome {
            next: Step::Idle | Step::Wake,
            dropped: 0,
            ..
        }
    ));
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
    assert!(matches!(
        offer_at(&mut q, "b\n", &mut sock, early),
        Outcome {
            episode: Some(Change::Started),
            ..
        }
    ));
    // It used a grace up: the next time it is behind, no grace.
    sock.room = usize::MAX;
    q.unblock();
    assert!(matches!(
        flush(&mut q, &mut sock),
        Outcome {
            next: Step::Idle,
            episode: Some(Change::CaughtUp(_)),
            ..
        }
    ));
    sock.room = 0;
    let _ = offer_at(&mut q, "c\n", &mut sock, early);
    assert!(matches!(
        offer_at(&mut q, "d\n", &mut sock, early),
        Outcome {
            episode: Some(Change::Started),
            ..
        }
    ));
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
    assert!(matches!(flush(&mut q, &mut sock).next, Step::Blocked));
    assert!(matches!(
        offer_at(&mut q, "c\n", &mut sock, t0),
        Outcome {
            next: Step::Idle | Step::Wake,
            dropped: 0,
            ..
        }
    ));
    let later = t0 + GRACE / 2;
    assert!(
        matches!(offer_at(&mut q, "d\n", &mut sock, later), Outcome { next: Step::Hold { until }, .. } if until == t0 + GRACE),
        "the same deadline, not a new one"
    );
    assert!(matches!(
        offer_at(&mut q, "d\n", &mut sock, t0 + GRACE),
        Outcome {
            episode: Some(Change::Started),
            ..
        }
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
            matches!(
                offer_at(&mut q, "x\n", &mut sock, now).next,
                Step::Hold { .. }
            ),
            "round {round}"
        );
        now += GRACE;
        assert!(matches!(
            offer_at(&mut q, "x\n", &mut sock, now),
            Outcome {
                episode: Some(Change::Started),
                ..
            }
        ));
        // It catches up, and fills again within the cooldown: no wait.
        assert!(matches!(
            catch_up_and_refill(&mut q, &mut sock, now),
            Outcome {
                next: Step::Idle,
                episode: Some(Change::CaughtUp(_)),
                ..
            }
        ));
        let cooldown = COOLDOWN * 2u32.pow(round);
        assert!(
            matches!(
                offer_at(&mut q, "z\n", &mut sock, now + cooldown - GRACE),
                Outcome {
                    episode: Some(Change::Started),
                    ..
                }
            ),
            "round {round}: still cooling down"
        );
        assert!(matches!(
            catch_up_and_refill(&mut q, &mut sock, now),
            Outcome {
                next: Step::Idle,
                episode: Some(Change::CaughtUp(_)),
                ..
            }
        ));
        now += cooldown;
    }
    // A client that catches up within its grace is forgiven.
    assert!(matches!(
        offer_at(&mut q, "x\n", &mut sock, now).next,
        Step::Hold { .. }
    ));
    assert!(matches!(
        catch_up_and_refill(&mut q, &mut sock, now),
        Outcome {
            next: Step::Idle,
            episode: None,
            ..
        }
    ));
    assert!(matches!(
        offer_at(&mut q, "x\n", &mut sock, now).next,
        Step::Hold { .. }
    ));
    now += GRACE;
    assert!(matches!(
        offer_at(&mut q, "x\n", &mut sock, now),
        Outcome {
            episode: Some(Change::Started),
            ..
        }
    ));
    let _ = catch_up_and_refill(&mut q, &mut sock, now);
    assert!(
        matches!(
            offer_at(&mut q, "z\n", &mut sock, now + COOLDOWN).next,
            Step::Hold { .. }
        ),
        "back to the first cooldown"
    );
}
