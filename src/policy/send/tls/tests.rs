use std::io::Write as _;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls::ClientConnection;

use super::testing::TestCert;
use super::*;
use crate::policy::run::Kind;
use crate::policy::send::outbound::{Outbound, Outcome, Step};

/// What a kernel would take in one send: everything, or up to `room`.
struct Send {
    bytes: Vec<u8>,
}

impl<'a> SendBuf<'a> for Send {
    fn copy(&mut self, part: &[u8]) {
        self.bytes.extend_from_slice(part);
    }

    fn refer(&mut self, bytes: &'a Bytes, start: usize) {
        self.bytes.extend_from_slice(&bytes[start..]);
    }
}

/// Hands `records` to the client; returns the plaintext it got.
fn to_client(client: &mut ClientConnection, mut records: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    while !records.is_empty() {
        client.read_tls(&mut records).expect("client reads");
        client
            .process_new_packets()
            .expect("client accepts the records");
        let mut reader = client.reader();
        while let Ok(buf) = std::io::BufRead::fill_buf(&mut reader) {
            if buf.is_empty() {
                break;
            }
            let n = buf.len();
            got.extend_from_slice(buf);
            std::io::BufRead::consume(&mut reader, n);
        }
    }
    got
}

/// Seals what there is and hands all of it to `client`, as a kernel that
/// takes everything would. Returns what the records counted for, and the
/// plaintext the client got.
fn send_all(
    server: &mut Tls,
    out: &mut Outbound,
    client: &mut ClientConnection,
) -> (Carried, Vec<u8>) {
    let mut carried = Carried::default();
    let mut got = Vec::new();
    loop {
        server.seal(out);
        let mut send = Send { bytes: Vec::new() };
        let n = server.fill(&mut send);
        if n == 0 {
            return (carried, got);
        }
        got.extend(to_client(client, &send.bytes));
        let done = server.took(n).expect("all of it taken");
        carried.sent.messages += done.sent.messages;
        carried.sent.bytes += done.sent.bytes;
    }
}

/// Hands what the client has to send to the server; returns the
/// plaintext the server got.
fn client_to_server(client: &mut ClientConnection, server: &mut Tls) -> Vec<u8> {
    let mut cipher = BytesMut::new();
    while client.wants_write() {
        client
            .write_tls(&mut (&mut cipher).writer())
            .expect("client writes");
    }
    let mut plain = BytesMut::new();
    loop {
        match server
            .read(&mut cipher, &mut plain, 1 << 20)
            .expect("server reads")
        {
            Input::Plain(_) => {}
            Input::Need | Input::Closed => return plain.to_vec(),
        }
    }
}

fn handshake(server: &mut Tls, out: &mut Outbound, client: &mut ClientConnection) {
    for _ in 0..10 {
        if !client.is_handshaking() && server.just_established() {
            return;
        }
        client_to_server(client, server);
        send_all(server, out, client);
    }
    panic!("the handshake did not complete");
}

fn lines(n: usize, len: usize) -> Bytes {
    let mut line = vec![b'x'; len - 1];
    line.push(b'\n');
    Bytes::from(line.repeat(n))
}

fn connected(cert: &TestCert) -> (Tls, Outbound, ClientConnection) {
    let mut server = cert.certs().accept().expect("a session");
    let mut out = Outbound::new(100, Duration::from_millis(5));
    let mut client = cert.client();
    handshake(&mut server, &mut out, &mut client);
    (server, out, client)
}

#[test]
fn lines_go_both_ways_through_the_session() {
    let cert = TestCert::new("both-ways");
    let (mut server, mut out, mut client) = connected(&cert);
    client.writer().write_all(b"hello\n").expect("write");
    assert_eq!(client_to_server(&mut client, &mut server), b"hello\n");

    let run = lines(3, 10);
    assert!(matches!(
        out.offer(&run, 3, Kind::Lines, Instant::now),
        Outcome {
            next: Step::Wake,
            took: 3,
            ..
        }
    ));
    let (carried, got) = send_all(&mut server, &mut out, &mut client);
    assert_eq!((carried.sent.messages, carried.sent.bytes), (3, 30));
    assert_eq!(got, run);
}

#[test]
fn a_records_messages_count_only_once_the_kernel_took_its_last_byte() {
    let cert = TestCert::new("count");
    let (mut server, mut out, _client) = connected(&cert);
    let _ = out.offer(&lines(3, 10), 3, Kind::Lines, Instant::now);
    server.seal(&mut out);
    assert!(out.is_empty(), "sealed: off the queue");
    let mut send = Send { bytes: Vec::new() };
    let n = server.fill(&mut send);
    assert!(n > 30, "a record with its header and tag: {n}");
    assert!(server.took(n - 1).is_none(), "the last byte is still out");
    assert!(server.has_output());
    // Nothing more is sealed while the record is on its way.
    let _ = out.offer(&lines(1, 10), 1, Kind::Lines, Instant::now);
    server.seal(&mut out);
    assert_eq!(out.len(), 1, "the new message waits in the queue");
    let mut rest = Send { bytes: Vec::new() };
    assert_eq!(server.fill(&mut rest), 1, "the record's last byte");
    let carried = server.took(1).expect("all of it taken");
    assert_eq!(carried.sent.messages, 3);
}

#[test]
fn one_seal_takes_at_most_one_record_of_the_queue() {
    let cert = TestCert::new("one-record");
    let (mut server, mut out, mut client) = connected(&cert);
    let run = lines(40, 1000);
    let _ = out.offer(&run, 40, Kind::Lines, Instant::now);
    server.seal(&mut out);
    let mut send = Send { bytes: Vec::new() };
    let n = server.fill(&mut send);
    let carried = server.took(n).expect("all taken");
    assert_eq!(carried.sent.bytes, SEAL_BYTES);
    assert_eq!(carried.sent.messages, SEAL_BYTES / 1000);
    assert!(n < SEAL_BYTES + 100, "one record: {n} bytes");
    let mut got = to_client(&mut client, &send.bytes);
    // The rest follows, a record at a time, whole in the end.
    got.extend(send_all(&mut server, &mut out, &mut client).1);
    assert!(got == run, "{} bytes of {}", got.len(), run.len());
}

#[test]
fn a_client_that_sends_garbage_is_an_error_not_a_panic() {
    let cert = TestCert::new("garbage");
    let mut server = cert.certs().accept().expect("a session");
    let mut cipher = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
    let mut plain = BytesMut::new();
    let err = server
        .read(&mut cipher, &mut plain, 1024)
        .expect_err("not TLS");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(plain.is_empty());
}

#[test]
fn a_bad_new_certificate_keeps_the_old_one_and_a_good_one_replaces_it() {
    let cert = TestCert::new("reload");
    let certs = cert.certs();
    let good = std::fs::read(cert.cert()).expect("read");
    std::fs::write(cert.cert(), "not a certificate").expect("write");
    let err = certs.reload().expect_err("a bad file is refused");
    assert!(err.contains("cert.pem"), "names the file: {err}");
    // Still serving with the old certificate.
    let mut server = certs.accept().expect("a session");
    let mut out = Outbound::new(100, Duration::from_millis(5));
    handshake(&mut server, &mut out, &mut cert.client());

    // A new pair: clients that trust only the new certificate connect.
    let next = TestCert::new("reload-next");
    std::fs::copy(next.cert(), cert.cert()).expect("copy");
    std::fs::copy(next.key(), cert.key()).expect("copy");
    certs.reload().expect("a good pair is taken");
    let mut server = certs.accept().expect("a session");
    handshake(&mut server, &mut out, &mut next.client());
    drop(good);
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused_at_load() {
    let cert = TestCert::new("mismatch");
    let other = TestCert::new("mismatch-other");
    let err = Certs::load(&cert.cert(), &other.key()).expect_err("a mismatched pair");
    assert!(err.contains("do not make a usable pair"), "{err}");
    let err = Certs::load(&cert.dir.join("missing.pem"), &cert.key()).expect_err("no file");
    assert!(err.contains("missing.pem"), "{err}");
}
