//! Session tests that look at its state.

use super::send::Wire;
use super::*;
use crate::engine::session::LogLimits;
use crate::ops::metrics::Metrics;

/// What a session's calls need around them: metrics, settings and log
/// throttles, with a queue of `queue` messages.
struct Around {
    metrics: std::sync::Arc<Metrics>,
    settings: Settings,
    logs: LogLimits,
}

impl Around {
    fn new(queue: Option<usize>) -> Self {
        let mut settings = crate::config::Config::default().session_settings();
        if let Some(queue) = queue {
            settings.queue = queue;
        }
        Self {
            metrics: Metrics::new(1),
            settings,
            logs: LogLimits::default(),
        }
    }

    fn cx(&self) -> Cx<'_> {
        Cx {
            shard: self.metrics.shard(0),
            settings: &self.settings,
            logs: &self.logs,
        }
    }
}

#[test]
fn protocol_errors_are_logged_at_most_once_a_second() {
    let around = Around::new(None);
    let (settings, cx) = (&around.settings, around.cx());
    let peer = "127.0.0.1:1".parse().expect("an address");
    let sessions: Vec<Session> = (0..100)
        .map(|id| Session::new(id, peer, 0, Transport::Websocket, None, settings, 0))
        .collect();
    let logged = sessions
        .iter()
        .filter(|s| s.report_protocol_error("a test", &cx))
        .count();
    assert_eq!(logged, 1, "one line for a burst of 100");
}

/// Hands everything the session has to send to `client`, as a kernel
/// that takes it all would.
fn to_client(s: &mut Session, client: &mut rustls::ClientConnection, cx: &Cx<'_>) {
    loop {
        let mut wire = Wire::default();
        let n = s.fill(&mut wire);
        let Some(bytes) = wire.0.filter(|_| n > 0) else {
            return;
        };
        client.read_tls(&mut &bytes[..]).expect("client reads");
        client.process_new_packets().expect("good records");
        s.sent(Ok(n), n, cx);
    }
}

#[test]
fn a_tls_client_is_full_only_once_the_kernel_refuses_its_record() {
    let around = Around::new(Some(2));
    let (metrics, settings, cx) = (&around.metrics, &around.settings, around.cx());
    let cert = crate::policy::send::tls::testing::TestCert::new("session");
    let (mut s, mut client) = tls_session(&cert, settings, &cx);
    let sent_before = metrics.totals().sent;

    // Two messages sealed into a record: off the queue, still counted
    // as queued, not as sent.
    let run = Run::of(Bytes::from_static(b"one\ntwo\n"));
    assert_eq!(s.offer(&run, 0, None, &cx), Action::Wake);
    let mut wire = Wire::default();
    let n = s.fill(&mut wire);
    assert!(n > 8, "a record");
    assert_eq!(s.info().queued, 2);
    // The kernel takes part of it: the socket refuses, the session
    // waits for room.
    let record = wire.0.expect("a record");
    client
        .read_tls(&mut &record[..n / 2])
        .expect("client reads");
    let turn = s.sent(Ok(n / 2), n, &cx);
    assert_eq!(turn.close, None);
    assert!(s.is_blocked());
    assert_eq!(metrics.totals().sent, sent_before);
    // The queue has its own room: two more queue, the next is held
    // for the grace, as for a plain client whose kernel refused.
    let more = Run::of(Bytes::from_static(b"3\n4\n5\n"));
    match s.offer(&more, 0, None, &cx) {
        Action::Hold { at: 2, .. } => {}
        other => panic!("held at the third line, got {other:?}"),
    }
    s.end_grace();
    assert_eq!(s.offer(&more, 2, None, &cx), Action::None);
    assert_eq!(metrics.totals().dropped, 1);
    // The kernel takes the rest: the sealed messages count as sent,
    // and the queue follows.
    s.writable();
    let mut rest = Wire::default();
    let left = s.fill(&mut rest);
    assert_eq!(left, n - n / 2, "the rest of the same record");
    assert_eq!(rest.0.as_deref(), Some(&record[n / 2..]));
    client
        .read_tls(&mut &record[n / 2..])
        .expect("client reads");
    client.process_new_packets().expect("good records");
    s.sent(Ok(left), left, &cx);
    assert_eq!(metrics.totals().sent, sent_before + 2);
    to_client(&mut s, &mut client, &cx);
    assert_eq!(metrics.totals().sent, sent_before + 4);
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut client.reader(), &mut got);
    assert_eq!(got, b"one\ntwo\n3\n4\n");
}

/// A TLS session whose handshake is done, driven as the engines drive
/// it: it takes no messages, and counts as a handshake, until then.
fn tls_session(
    cert: &crate::policy::send::tls::testing::TestCert,
    settings: &Settings,
    cx: &Cx<'_>,
) -> (Session, rustls::ClientConnection) {
    use bytes::BufMut as _;
    let tls = cert.certs().accept().expect("a session");
    let peer = "127.0.0.1:1".parse().expect("an address");
    let mut s = Session::new(1, peer, 0, Transport::Tcp, Some(tls), settings, 0);
    assert!(!s.open, "no messages before the handshake");
    assert_eq!(s.slot(), Slot::Handshake);
    let mut client = cert.client();
    for _ in 0..10 {
        let mut cipher = bytes::BytesMut::new();
        while client.wants_write() {
            client
                .write_tls(&mut (&mut cipher).writer())
                .expect("client writes");
        }
        let step = s.tls_input(&mut cipher, &mut bytes::BytesMut::new(), 4096);
        assert!(step.input.is_ok());
        if step.established {
            s.open(cx);
        }
        to_client(&mut s, &mut client, cx);
    }
    assert!(s.open && !client.is_handshaking());
    (s, client)
}

/// Seals what is queued into a record and has the kernel take half of
/// it; returns the record's length.
fn seal_and_take_half(s: &mut Session, cx: &Cx<'_>) -> usize {
    let mut wire = Wire::default();
    let n = s.fill(&mut wire);
    assert!(n > 0, "a record");
    s.sent(Ok(n / 2), n, cx);
    assert!(s.is_blocked());
    n
}

#[test]
fn a_slow_tls_client_catches_up_only_once_the_kernel_took_its_last_record() {
    let around = Around::new(Some(2));
    let (metrics, settings, cx) = (&around.metrics, &around.settings, around.cx());
    let cert = crate::policy::send::tls::testing::TestCert::new("slow-episode");
    let (mut s, _client) = tls_session(&cert, settings, &cx);
    let lines = Run::of(Bytes::from_static(b"1\n2\n3\n"));
    // Two lines sealed, half taken; two more queued, the next held,
    // then dropped: a slow episode.
    s.offer(&Run::of(Bytes::from_static(b"a\nb\n")), 0, None, &cx);
    let first = seal_and_take_half(&mut s, &cx);
    assert!(matches!(
        s.offer(&lines, 0, None, &cx),
        Action::Hold { at: 2, .. }
    ));
    s.end_grace();
    s.offer(&lines, 2, None, &cx);
    assert_eq!(metrics.totals().slow_clients, 1);
    // The first record goes; the queue is sealed into a second one,
    // of which the kernel takes half: the client has not caught up.
    s.writable();
    let mut rest = Wire::default();
    let left = s.fill(&mut rest);
    s.sent(Ok(left), left, &cx);
    assert_eq!(left, first - first / 2);
    seal_and_take_half(&mut s, &cx);
    assert_eq!(s.info().queued, 2, "sealed, on their way");
    // Still slow: what comes now is dropped, and no second episode
    // begins.
    assert_eq!(s.offer(&lines, 0, None, &cx), Action::None);
    assert_eq!(metrics.totals().slow_clients, 1, "one episode");
    assert!(s.info().slow);
    // It leaves before the record went: its episode ends with it.
    s.close(&cx);
    assert_eq!(metrics.totals().slow_clients, 0);
}
