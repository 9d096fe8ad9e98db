//! Unit tests of the queue's kernel side: what a send carries, and what
//! the kernel's answer counts for.

use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::SEND_IOVECS;
use crate::policy::run::Kind;
use crate::policy::send::outbound::tests::{Owned, Socket, caught_up, emptied, msg, offer, queued};
use crate::policy::send::outbound::{Change, Outbound, Outcome, Sent, Step};

#[test]
fn a_run_is_one_entry_counted_as_its_messages_and_cut_where_it_stops_fitting() {
    let mut q = Outbound::new(5, Duration::ZERO);
    let run = msg("a\nb\nc\n");
    assert_eq!(
        queued(q.offer(&run, 3, Kind::Lines, Instant::now)),
        Some(Step::Wake)
    );
    assert_eq!((q.len(), q.bytes()), (3, 6));
    // Room for two of three: those two go in, and the kernel is asked.
    assert!(matches!(
        q.offer(&msg("d\ne\nf\n"), 3, Kind::Lines, Instant::now),
        Outcome {
            next: Step::SendNow,
            took: 2,
            ..
        }
    ));
    assert_eq!((q.len(), q.bytes()), (5, 10));
    // The kernel takes a line and a half: one message more is whole.
    let mut sent = Sent::default();
    let mut buf = Owned::default();
    let offered = q.fill(&mut buf);
    assert_eq!(&buf.bytes[..], b"a\nb\nc\nd\ne\n");
    let outcome = q.sent(Ok(3), offered);
    sent += outcome.sent;
    assert_eq!(outcome.next, Step::Blocked);
    assert_eq!((sent.messages, sent.bytes, q.len()), (1, 3, 4));
    // That made room for one; the next is refused and dropped: the queue
    // keeps the oldest.
    assert_eq!(
        queued(q.offer(&msg("f\n"), 1, Kind::Lines, Instant::now)),
        Some(Step::Idle)
    );
    assert!(matches!(
        q.offer(&msg("g\n"), 1, Kind::Lines, Instant::now),
        Outcome {
            episode: Some(Change::Started),
            took: 0,
            dropped: 1,
            ..
        }
    ));
    q.unblock();
    let mut sock = Socket::with_room(100);
    let outcome = q.flush(|b| sock.send(b));
    let sent = outcome.sent;
    assert!(caught_up(outcome));
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
    let _ = q.offer(&run, 3, Kind::Frames, Instant::now);
    let mut sent = Sent::default();
    // The whole first frame and the header of the second.
    let n = frames[0].len() + 2;
    let outcome = q.sent(Ok(n), run.len());
    sent += outcome.sent;
    assert_eq!(outcome.next, Step::Blocked);
    assert_eq!((sent.messages, q.len()), (1, 2));
    let rest = run.len() - n;
    let outcome = q.sent(Ok(rest), rest);
    sent += outcome.sent;
    assert_eq!(outcome.next, Step::Idle);
    assert_eq!((sent.messages, sent.bytes, q.len()), (3, run.len(), 0));
}

#[test]
fn the_servers_own_bytes_are_not_messages() {
    let mut q = Outbound::new(1, Duration::ZERO);
    let _ = q.push_own(msg("pong"));
    let _ = q.push_own(msg("pong"));
    assert!(q.has_room(), "own bytes take no room");
    assert!(queued(q.offer(&msg("a\n"), 1, Kind::Lines, Instant::now)).is_some());
    assert_eq!((q.len(), q.bytes(), q.own_bytes()), (1, 10, 8));
    let mut sock = Socket::with_room(100);
    let mut sent = Sent::default();
    sent += q.flush(|b| sock.send(b)).sent;
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
    let _ = q.push_own(msg("pong"));
    let mut sent = Sent::default();
    sent += q.flush(|b| sock.send(b)).sent;
    assert_eq!((sent.sends, sent.own_bytes, q.own_bytes()), (0, 4, 0));
}

#[test]
fn partial_sends_resume_mid_message() {
    let mut q = Outbound::new(4, Duration::ZERO);
    let mut sock = Socket::with_room(5);
    for s in ["hello\n", "world\n"] {
        let _ = offer(&mut q, s, &mut sock);
    }
    let outcome = q.flush(|b| sock.send(b));
    let sent = outcome.sent;
    assert_eq!(outcome.next, Step::Blocked);
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
    let outcome = q.flush(|b| sock.send(b));
    let sent = outcome.sent;
    assert!(emptied(outcome));
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
        let _ = offer(&mut q, m, &mut sock);
    }
    let outcome = q.flush(|b| sock.send(b));
    let sent = outcome.sent;
    assert_eq!(outcome.next, Step::Idle);
    assert_eq!(sent.messages, 150);
    assert_eq!(sent.sends, 150usize.div_ceil(SEND_IOVECS));
    assert_eq!(sock.got, big.concat().into_bytes());
    // 150 small ones: copied into one piece, one send.
    let mut sock = Socket::with_room(1 << 20);
    for n in 0..150 {
        let _ = offer(&mut q, &format!("{n}\n"), &mut sock);
    }
    let mut sent = Sent::default();
    let mut pieces = 0;
    let outcome = q.flush(|b| {
        pieces += b.len();
        sock.send(b)
    });
    sent += outcome.sent;
    assert_eq!(outcome.next, Step::Idle);
    assert_eq!((sent.messages, sent.sends, pieces), (150, 1, 1));
    let expected: Vec<u8> = (0..150)
        .flat_map(|n| format!("{n}\n").into_bytes())
        .collect();
    assert_eq!(sock.got, expected);
}

#[test]
fn a_failing_socket_is_reported() {
    let mut q = Outbound::new(1, Duration::ZERO);
    let _ = offer(&mut q, "a\n", &mut Socket::with_room(0));
    let broken = |_: &[IoSlice<'_>]| Err(io::Error::from(io::ErrorKind::BrokenPipe));
    assert_eq!(
        q.flush(broken).next,
        Step::Failed {
            kind: io::ErrorKind::BrokenPipe,
            os: None
        }
    );
    // An OS error keeps its number, for the log.
    let reset = |_: &[IoSlice<'_>]| Err(io::Error::from_raw_os_error(nix::libc::ECONNRESET));
    assert_eq!(
        q.flush(reset).next,
        Step::Failed {
            kind: io::ErrorKind::ConnectionReset,
            os: Some(nix::libc::ECONNRESET)
        }
    );
}
