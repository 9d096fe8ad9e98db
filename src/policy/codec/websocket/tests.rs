//! Unit tests of the WebSocket codec: handshakes and frames, against
//! what browsers send.

use super::*;

/// A client frame: masked, as browsers send them.
fn client_frame(opcode: u8, last: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![opcode | if last { 0x80 } else { 0 }];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn decode(max: usize, bytes: &[u8]) -> Vec<Event> {
    let mut d = Decoder::new(max);
    let mut buf = BytesMut::from(bytes);
    std::iter::from_fn(|| d.next(&mut buf)).collect()
}

fn close_code(event: &Event) -> u16 {
    let frame = match event {
        Event::Closed(f) | Event::Failed { close: f, .. } => f,
        other => panic!("not a close: {other:?}"),
    };
    u16::from_be_bytes([frame[2], frame[3]])
}

#[test]
fn the_handshake_answers_with_the_accept_key() {
    // The example of RFC 6455, 1.3.
    let request = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nrest";
    let Opening::Upgrade { response, consumed } = opening(request, &Origins::Same, false) else {
        panic!("an upgrade");
    };
    assert_eq!(consumed, request.len() - 4);
    let response = std::str::from_utf8(&response).expect("text");
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert_eq!(
        opening(&request[..40], &Origins::Same, false),
        Opening::Incomplete
    );
}

#[test]
fn other_requests_get_the_page_or_an_error() {
    let status = |r: &[u8]| match opening(r, &Origins::Same, false) {
        Opening::Http { response } => String::from_utf8_lossy(&response[9..12]).into_owned(),
        other => panic!("{other:?}"),
    };
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "200");
    assert_eq!(status(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"), "404");
    assert_eq!(status(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n"), "405");
    assert_eq!(status(b"\x16\x03\x01 not http\r\n\r\n"), "400");
    assert_eq!(
        status(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
        "400",
        "no key"
    );
    assert_eq!(
        status(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 8\r\n\r\n"),
        "426"
    );
    let huge = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; MAX_HANDSHAKE]].concat();
    assert_eq!(status(&huge), "431");
}

fn upgrade_from(origin: Option<&str>, host: &str) -> Vec<u8> {
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    format!("GET / HTTP/1.1\r\nHost: {host}\r\n{origin}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").into_bytes()
}

/// The status `opening` answers a handshake from `origin` to `host`
/// with, over plain HTTP.
fn status_for(origins: &Origins, origin: Option<&str>, host: &str) -> u16 {
    match opening(&upgrade_from(origin, host), origins, false) {
        Opening::Upgrade { .. } => 101,
        Opening::Forbidden {
            response,
            origin: seen,
        } => {
            assert_eq!(Some(seen.as_str()), origin);
            let text = String::from_utf8_lossy(&response).into_owned();
            assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
            assert!(text.contains("Connection: close"), "{text}");
            assert!(
                text.ends_with("--ws-origin)\n") || text.ends_with("--ws-origin\n"),
                "{text}"
            );
            403
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn by_default_only_the_requests_own_origin_may_upgrade() {
    let same = Origins::Same;
    let ok = |origin: &str, host: &str| status_for(&same, Some(origin), host) == 101;
    assert!(ok("http://127.0.0.1:9001", "127.0.0.1:9001"));
    // Scheme and host without regard to case; default ports as none.
    assert!(ok("HTTP://Chat.Example.COM", "chat.example.com"));
    assert!(ok("http://chat.example.com:80", "chat.example.com"));
    assert!(ok("http://chat.example.com", "chat.example.com:80"));
    assert!(ok("http://[::1]:9001", "[::1]:9001"));
    // Another host, port or scheme is another origin.
    assert!(!ok("http://evil.example", "chat.example.com"));
    assert!(!ok("http://127.0.0.1:9002", "127.0.0.1:9001"));
    assert!(!ok("http://127.0.0.1", "127.0.0.1:9001"));
    assert!(!ok("https://chat.example.com", "chat.example.com"));
    assert!(!ok(
        "http://chat.example.com.evil.example",
        "chat.example.com"
    ));
    // Sandboxed frames and local files say `null`; garbage is refused.
    assert!(!ok("null", "chat.example.com"));
    assert!(!ok("", "chat.example.com"));
    assert!(!ok("chat.example.com", "chat.example.com"));
    // Non-browsers send no Origin at all.
    assert_eq!(status_for(&same, None, "chat.example.com"), 101);
    // Over TLS, the request's own origin is https.
    let tls = |origin: &str| match opening(&upgrade_from(Some(origin), "a.example"), &same, true) {
        Opening::Upgrade { .. } => true,
        Opening::Forbidden { .. } => false,
        other => panic!("{other:?}"),
    };
    assert!(tls("https://a.example") && tls("https://a.example:443"));
    assert!(!tls("http://a.example"));
}

#[test]
fn a_star_lets_every_origin_in_and_a_list_only_its_own() {
    assert_eq!(
        status_for(&Origins::Any, Some("http://evil.example"), "x"),
        101
    );
    assert_eq!(status_for(&Origins::Any, Some("null"), "x"), 101);
    let list = Origins::list(&["https://Example.com".into(), "http://localhost:8080".into()])
        .expect("a valid list");
    let ok = |origin: &str| status_for(&list, Some(origin), "ringcast.internal:9001") == 101;
    assert!(ok("https://example.com") && ok("https://EXAMPLE.com:443"));
    assert!(ok("http://localhost:8080"));
    assert!(!ok("http://example.com") && !ok("http://localhost:8081"));
    assert!(!ok("null"));
    // The list replaces the default: the server's own origin is not in it.
    assert!(!ok("http://ringcast.internal:9001"));
    assert_eq!(status_for(&list, None, "x"), 101);
    let with_null = Origins::list(&["null".into()]).expect("a valid list");
    assert_eq!(status_for(&with_null, Some("null"), "x"), 101);
    assert_eq!(status_for(&Origins::Nobody, Some("http://x"), "x"), 403);
}

#[test]
fn a_list_holds_origins_only() {
    for bad in [
        "example.com",
        "https://example.com/",
        "https://example.com/chat",
        "https://user@example.com",
        "https://example.com:99999",
        "https://example.com:",
        "https://",
        "*",
    ] {
        assert!(Origins::list(&[bad.into()]).is_err(), "{bad}");
    }
    assert!(Origins::list(&[String::new()]).is_err());
    assert!(Origins::list(&["https://[::1]:8443".into(), "NULL".into()]).is_ok());
}

#[test]
fn lines_become_text_or_binary_frames_without_their_newline() {
    assert_eq!(&frame_line(b"hi\n")[..], b"\x81\x02hi");
    assert_eq!(&frame_line(b"\xff\n")[..], b"\x82\x01\xff");
    let long = frame_line(&[b'x'; 300]);
    assert_eq!(&long[..4], b"\x81\x7e\x01\x2c");
    assert_eq!(long.len(), 4 + 300);
}

#[test]
fn messages_become_lines_and_fragments_join() {
    let mut bytes = client_frame(0x1, true, b"hello");
    bytes.extend(client_frame(0x2, false, b"a\nb"));
    bytes.extend(client_frame(0x0, true, b"c"));
    assert_eq!(
        decode(100, &bytes),
        [
            Event::Lines(Bytes::from_static(b"hello\n")),
            Event::Lines(Bytes::from_static(b"a\nbc\n"))
        ]
    );
}

#[test]
fn a_frame_split_over_reads_waits_for_the_rest() {
    let bytes = client_frame(0x1, true, &[b'z'; 1000]);
    let mut d = Decoder::new(2000);
    let mut buf = BytesMut::from(&bytes[..500]);
    assert_eq!(d.next(&mut buf), None);
    buf.extend_from_slice(&bytes[500..]);
    assert!(matches!(d.next(&mut buf), Some(Event::Lines(l)) if l.len() == 1001));
    assert!(buf.is_empty());
}

#[test]
fn ping_gets_pong_and_close_gets_close() {
    let mut bytes = client_frame(0x9, true, b"hb");
    bytes.extend(client_frame(0xA, true, b"ignored"));
    bytes.extend(client_frame(0x8, true, &[0x03, 0xe8]));
    let events = decode(100, &bytes);
    assert_eq!(events[0], Event::Pong(Bytes::from_static(b"\x8a\x02hb")));
    assert_eq!(events.len(), 2);
    assert_eq!(close_code(&events[1]), 1000);
}

#[test]
fn nothing_counts_after_a_close_or_an_error() {
    let mut bytes = client_frame(0x8, true, &[0x03, 0xe8]);
    bytes.extend(client_frame(0x1, true, b"late"));
    assert_eq!(decode(100, &bytes).len(), 1, "the close only");
    // An error consumes nothing, yet is reported once.
    assert_eq!(decode(100, &[0x81, 0x02, b'h', b'i']).len(), 1);
}

#[test]
fn protocol_errors_close_with_their_code() {
    let unmasked = vec![0x81, 0x02, b'h', b'i'];
    assert_eq!(close_code(&decode(100, &unmasked)[0]), 1002);
    assert_eq!(
        close_code(&decode(4, &client_frame(0x1, true, b"hello"))[0]),
        1009
    );
    assert_eq!(
        close_code(&decode(100, &client_frame(0x1, true, b"\xff"))[0]),
        1007
    );
    assert_eq!(
        close_code(&decode(100, &client_frame(0x0, true, b"x"))[0]),
        1002
    );
    assert_eq!(
        close_code(&decode(100, &client_frame(0x3, true, b"x"))[0]),
        1002
    );
    assert_eq!(
        close_code(&decode(100, &client_frame(0x9, false, b"x"))[0]),
        1002
    );
    assert_eq!(
        close_code(&decode(100, &client_frame(0x9, true, &[0; 126]))[0]),
        1002
    );
    let mut two = client_frame(0x1, false, b"a");
    two.extend(client_frame(0x1, true, b"b"));
    assert_eq!(close_code(&decode(100, &two)[0]), 1002);
    let mut over = client_frame(0x1, false, b"abc");
    over.extend(client_frame(0x0, true, b"de"));
    assert_eq!(close_code(&decode(4, &over)[0]), 1009, "fragments add up");
    let failed = |events: Vec<Event>| match events.into_iter().next() {
        Some(Event::Failed { close, .. }) => close,
        other => panic!("not a failure: {other:?}"),
    };
    assert!(too_long(&failed(decode(4, &over))));
    assert!(!too_long(&failed(decode(100, &two))), "1002 is not 1009");
    // A message of exactly --max-line is lines; one byte more is not.
    assert_eq!(
        decode(4, &client_frame(0x2, true, b"abcd")),
        vec![Event::Lines(Bytes::from_static(b"abcd\n"))]
    );
    assert!(too_long(&failed(decode(
        4,
        &client_frame(0x2, true, b"abcde")
    ))));
    assert_eq!(
        close_code(&decode(100, &client_frame(0x8, true, &[0x03, 0xed]))[0]),
        1002
    );
}
