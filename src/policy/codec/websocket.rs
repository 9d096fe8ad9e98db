//! WebSocket clients (`--ws`), with no I/O: the opening handshake, the
//! frames a client sends, and the frames the server sends. Frame headers
//! are parsed and written by tungstenite; the engines only move bytes.
//!
//! - **Lines to WebSocket.** Each line reaches a WebSocket client as one
//!   message without its newline: a text message when the line is valid
//!   UTF-8, a binary one otherwise. A line is framed once per core and the
//!   frame shared by every WebSocket client there: server frames are not
//!   masked, so one frame fits all.
//! - **WebSocket to lines.** A text or binary message from a client is what
//!   a TCP client would send followed by a newline: `hi` is the line
//!   `hi\n`, and a message with newlines inside is several lines (`a\nb`
//!   is `a\n` and `b\n`), so every receiver sees the same lines.
//! - **Control.** Ping gets pong, a close is answered with a close, and a
//!   protocol error closes with its code: 1002 (protocol), 1007 (invalid
//!   UTF-8 in a text message), 1009 (a message over `--max-line`).
//! - `GET /` without an upgrade gets the demo chat page.
//! - **Origin.** A browser's handshake carries the `Origin` of the page
//!   that opens it; [`Origins`] (`--ws-origin`) says which may, and the
//!   others get 403. A handshake without one (not a browser) passes.

use std::io::Cursor;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// The longest opening handshake a client may send.
pub(crate) const MAX_HANDSHAKE: usize = 8 * 1024;
/// The longest header of a client frame: 2 bytes, 8 of extended length
/// and a 4-byte mask (RFC 6455, 5.2).
pub(crate) const MAX_HEADER: usize = 14;

/// The demo chat page, served at `/` of the `--ws` address.
const CHAT_PAGE: &str = include_str!("../../../web/chat.html");

/// What the first bytes of a connection on the `--ws` address came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// Not a whole request yet: read more.
    Incomplete,
    /// A WebSocket upgrade: send `response`, drop `consumed` bytes, and
    /// speak WebSocket from then on.
    Upgrade {
        /// The 101 response.
        response: Bytes,
        /// Bytes of the request.
        consumed: usize,
    },
    /// Plain HTTP (the page, or an error): send `response`, then close.
    Http {
        /// The whole response.
        response: Bytes,
    },
    /// A WebSocket upgrade from a page whose origin `--ws-origin` does not
    /// allow: send `response` (403), then close.
    Forbidden {
        /// The whole response.
        response: Bytes,
        /// The `Origin` it came with, for the log.
        origin: String,
    },
}

/// Reads the opening handshake at the start of `buf`. `origins` says which
/// pages may open a WebSocket; `secure` whether the connection is TLS (the
/// scheme of its own origin is then `https`).
pub(crate) fn opening(buf: &[u8], origins: &Origins, secure: bool) -> Opening {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HANDSHAKE => return Opening::Incomplete,
        Ok(httparse::Status::Partial) => {
            return http(
                431,
                "Request Header Fields Too Large",
                "request too large\n",
            );
        }
        Err(_) => return http(400, "Bad Request", "not an HTTP request\n"),
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    if request.method != Some("GET") {
        return http(405, "Method Not Allowed", "only GET\n");
    }
    if !has_token("Upgrade", "websocket") {
        return match request.path {
            Some("/") | Some("/index.html") => Opening::Http {
                response: response(200, "OK", "text/html; charset=utf-8", CHAT_PAGE),
            },
            _ => http(
                404,
                "Not Found",
                "not found: / is the chat page, and WebSocket clients connect here\n",
            ),
        };
    }
    let key = match header("Sec-WebSocket-Key") {
        Some(key) if has_token("Connection", "upgrade") => key,
        _ => return http(400, "Bad Request", "not a WebSocket upgrade\n"),
    };
    if header("Sec-WebSocket-Version") != Some(b"13") {
        let mut r = BytesMut::new();
        r.put_slice(
            b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return Opening::Http {
            response: r.freeze(),
        };
    }
    if let Some(origin) = header("Origin")
        && let Err(why) = origins.allows(origin, header("Host"), secure)
    {
        return Opening::Forbidden {
            response: response(403, "Forbidden", "text/plain; charset=utf-8", why),
            origin: String::from_utf8_lossy(origin).into_owned(),
        };
    }
    let accept = tungstenite::handshake::derive_accept_key(key);
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    Opening::Upgrade {
        response: Bytes::from(response),
        consumed,
    }
}

/// Which pages may open a WebSocket, by their `Origin` (`--ws-origin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origins {
    /// The request's own origin only: its scheme, `Host` and port.
    Same,
    /// Any origin.
    Any,
    /// These origins only (`None` is `null`, the origin of sandboxed
    /// frames and local files).
    List(Vec<Option<Origin>>),
    /// None: what an invalid list (refused at start) would mean.
    Nobody,
}

/// An origin, `scheme://host[:port]`, compared as browsers do: scheme and
/// host without regard to case, and a scheme's default port the same as
/// none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    /// `None` for the scheme's default port.
    port: Option<u16>,
}

impl Origin {
    /// Parses `scheme://host[:port]`, as in an `Origin` header; `None` if
    /// it is not one (a path, user info, a bad port).
    pub(crate) fn parse(text: &str) -> Option<Origin> {
        let (scheme, authority) = text.split_once("://")?;
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if !scheme_ok {
            return None;
        }
        let scheme = scheme.to_ascii_lowercase();
        Self::with_authority(scheme, authority)
    }

    /// The origin of a request to `host` (its `Host` header) over `scheme`.
    fn of_request(scheme: &str, host: &str) -> Option<Origin> {
        Self::with_authority(scheme.to_owned(), host)
    }

    fn with_authority(scheme: String, authority: &str) -> Option<Origin> {
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            // An IPv6 literal: `[::1]` or `[::1]:8080`.
            let (inside, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                after => Some(after.strip_prefix(':')?),
            };
            (format!("[{inside}]"), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (authority.to_owned(), None),
            }
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~!$&'()*+;=%[]:".contains(c))
            && (host.starts_with('[') || !host.contains([':', '[', ']']));
        if !host_ok {
            return None;
        }
        let port = match port {
            None => None,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(p.parse::<u16>().ok()?)
            }
            Some(_) => return None,
        };
        let default = match scheme.as_str() {
            "http" | "ws" => Some(80),
            "https" | "wss" => Some(443),
            _ => None,
        };
        Some(Origin {
            host: host.to_ascii_lowercase(),
            port: port.filter(|&p| Some(p) != default),
            scheme,
        })
    }
}

impl Origins {
    /// The origins of `--ws-origin`'s list, or why one is not an origin.
    pub(crate) fn list(list: &[String]) -> Result<Origins, String> {
        if list.iter().all(|o| o.is_empty()) {
            return Err("--ws-origin must name at least one origin, or `*`".into());
        }
        let mut origins = Vec::new();
        for text in list.iter().filter(|o| !o.is_empty()) {
            if text == "*" {
                return Err("--ws-origin: `*` allows every origin, and stands alone".into());
            }
            if text.eq_ignore_ascii_case("null") {
                origins.push(None);
                continue;
            }
            match Origin::parse(text) {
                Some(origin) => origins.push(Some(origin)),
                None => {
                    return Err(format!(
                        "--ws-origin: {text:?} is not an origin: write scheme://host[:port], such as https://example.com or http://localhost:8080, with no path"
                    ));
                }
            }
        }
        Ok(Origins::List(origins))
    }

    /// Whether a page whose origin is `origin` may open a WebSocket with a
    /// request to `host` (its `Host` header), over TLS if `secure`; if
    /// not, the body of the 403 saying why.
    pub(crate) fn allows(
        &self,
        origin: &[u8],
        host: Option<&[u8]>,
        secure: bool,
    ) -> Result<(), &'static str> {
        let origin = std::str::from_utf8(origin).unwrap_or("").trim();
        let parsed = Origin::parse(origin);
        let null = origin.eq_ignore_ascii_case("null");
        match self {
            Origins::Any => Ok(()),
            Origins::Same => {
                let scheme = if secure { "https" } else { "http" };
                let own = host
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| Origin::of_request(scheme, h.trim()));
                if parsed.is_some() && parsed == own {
                    Ok(())
                } else {
                    Err(
                        "forbidden: this page's origin may not open a WebSocket here (only the server's own pages may; see --ws-origin)\n",
                    )
                }
            }
            Origins::List(list) => {
                let listed = if null {
                    list.contains(&None)
                } else {
                    parsed.is_some_and(|o| list.contains(&Some(o)))
                };
                if listed {
                    Ok(())
                } else {
                    Err("forbidden: this page's origin is not in --ws-origin\n")
                }
            }
            Origins::Nobody => Err("forbidden: no origin is allowed by --ws-origin\n"),
        }
    }
}

/// The answer to a WebSocket handshake that completed while
/// `--max-clients` were connected.
pub(crate) fn unavailable() -> Bytes {
    response(
        503,
        "Service Unavailable",
        "text/plain; charset=utf-8",
        "too many clients connected; try again later\n",
    )
}

fn http(code: u16, reason: &str, body: &str) -> Opening {
    Opening::Http {
        response: response(code, reason, "text/plain; charset=utf-8", body),
    }
}

fn response(code: u16, reason: &str, content_type: &str, body: &str) -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// A line (with its newline) as one unmasked server frame: text if it is
/// valid UTF-8, binary otherwise.
#[cfg(test)]
pub(crate) fn frame_line(line: &[u8]) -> Bytes {
    let payload = line.strip_suffix(b"\n").unwrap_or(line);
    let opcode = if std::str::from_utf8(payload).is_ok() {
        Data::Text
    } else {
        Data::Binary
    };
    frame(OpCode::Data(opcode), payload)
}

/// The lines of `run` as consecutive frames, one per line, as
/// [`frame_line`] makes them: one buffer for the whole run.
pub(crate) fn frame_run(run: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(run.len() + 10 * memchr::memchr_iter(b'\n', run).count());
    for line in run.split_inclusive(|&b| b == b'\n') {
        let payload = line.strip_suffix(b"\n").unwrap_or(line);
        let opcode = if std::str::from_utf8(payload).is_ok() {
            Data::Text
        } else {
            Data::Binary
        };
        append_frame(OpCode::Data(opcode), payload, &mut out);
    }
    Bytes::from(out)
}

/// A close frame with `code`.
pub(crate) fn close_frame(code: u16) -> Bytes {
    frame(OpCode::Control(Control::Close), &code.to_be_bytes())
}

fn frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 10);
    append_frame(opcode, payload, &mut out);
    Bytes::from(out)
}

fn append_frame(opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// What a client's frames came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A whole text or binary message, as lines: the payload plus `\n`.
    Lines(Bytes),
    /// Send this pong back: the answer to a ping.
    Pong(Bytes),
    /// The client closes: send this close frame, then close.
    Closed(Bytes),
    /// A protocol error: send this close frame, then close.
    Failed {
        /// The close frame, with the code.
        close: Bytes,
        /// What went wrong, for the log.
        why: &'static str,
    },
}

/// Whether `close`, the frame of an [`Event::Failed`], closes for a message
/// over `--max-line` (1009): such a client is counted as one that sent an
/// overlong line.
pub(crate) fn too_long(close: &[u8]) -> bool {
    close.get(2..4) == Some(&TOO_BIG.to_be_bytes()[..])
}

/// Close codes, from RFC 6455.
pub(crate) const NORMAL: u16 = 1000;
const PROTOCOL_ERROR: u16 = 1002;
const INVALID_DATA: u16 = 1007;
const TOO_BIG: u16 = 1009;

/// Takes a client's frames apart and puts its messages together.
#[derive(Debug)]
pub(crate) struct Decoder {
    max_message: usize,
    /// The message being received, unmasked, and whether it is text.
    partial: Option<(BytesMut, bool)>,
    /// The client closed or broke the protocol: nothing after counts.
    ended: bool,
}

impl Decoder {
    /// For messages of at most `max_message` bytes (`--max-line`).
    pub(crate) fn new(max_message: usize) -> Self {
        Self {
            max_message,
            partial: None,
            ended: false,
        }
    }

    /// The next event from the frames at the start of `buf`, consuming
    /// them; `None` if no whole frame is there yet, or ever will be: after a
    /// close or a protocol error.
    pub(crate) fn next(&mut self, buf: &mut BytesMut) -> Option<Event> {
        if self.ended {
            return None;
        }
        let event = self.decode(buf);
        self.ended = matches!(event, Some(Event::Closed(_) | Event::Failed { .. }));
        event
    }

    fn decode(&mut self, buf: &mut BytesMut) -> Option<Event> {
        loop {
            let mut cursor = Cursor::new(&buf[..]);
            let (header, length) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return None,
                Err(_) => return Some(fail(PROTOCOL_ERROR, "a malformed frame header")),
            };
            let header_len = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
            let Some(mask) = header.mask else {
                return Some(fail(PROTOCOL_ERROR, "an unmasked client frame"));
            };
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Some(fail(PROTOCOL_ERROR, "reserved bits set"));
            }
            let limit = match header.opcode {
                OpCode::Control(_) => 125,
                OpCode::Data(_) => self.max_message,
            };
            let length = match usize::try_from(length) {
                Ok(l) if l <= limit => l,
                _ if matches!(header.opcode, OpCode::Control(_)) => {
                    return Some(fail(PROTOCOL_ERROR, "a control frame over 125 bytes"));
                }
                _ => return Some(fail(TOO_BIG, "a message over --max-line")),
            };
            if buf.len() < header_len + length {
                // Wait for the rest; the read buffer grows to hold it.
                return None;
            }
            buf.advance(header_len);
            let mut payload = buf.split_to(length);
            unmask(&mut payload, mask);
            if let Some(event) = self.frame(header.opcode, header.is_final, payload) {
                return Some(event);
            }
        }
    }

    fn frame(&mut self, opcode: OpCode, last: bool, payload: BytesMut) -> Option<Event> {
        match opcode {
            OpCode::Control(Control::Ping) if last => {
                Some(Event::Pong(frame(OpCode::Control(Control::Pong), &payload)))
            }
            OpCode::Control(Control::Pong) if last => None,
            OpCode::Control(Control::Close) if last => {
                let code = match payload.len() {
                    0 => NORMAL,
                    1 => return Some(fail(PROTOCOL_ERROR, "a one-byte close payload")),
                    _ => u16::from_be_bytes([payload[0], payload[1]]),
                };
                let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
                if !valid || std::str::from_utf8(&payload[2.min(payload.len())..]).is_err() {
                    return Some(fail(PROTOCOL_ERROR, "an invalid close frame"));
                }
                Some(Event::Closed(close_frame(code)))
            }
            OpCode::Control(_) => Some(fail(
                PROTOCOL_ERROR,
                "a fragmented or unknown control frame",
            )),
            OpCode::Data(Data::Text | Data::Binary) if self.partial.is_some() => Some(fail(
                PROTOCOL_ERROR,
                "a new message inside a fragmented one",
            )),
            OpCode::Data(Data::Text) => self.data(payload, true, last),
            OpCode::Data(Data::Binary) => self.data(payload, false, last),
            OpCode::Data(Data::Continue) => match self.partial.take() {
                Some((mut so_far, text)) => {
                    if so_far.len() + payload.len() > self.max_message {
                        return Some(fail(TOO_BIG, "a message over --max-line"));
                    }
                    so_far.extend_from_slice(&payload);
                    self.data(so_far, text, last)
                }
                None => Some(fail(
                    PROTOCOL_ERROR,
                    "a continuation with nothing to continue",
                )),
            },
            OpCode::Data(Data::Reserved(_)) => Some(fail(PROTOCOL_ERROR, "a reserved opcode")),
        }
    }

    fn data(&mut self, payload: BytesMut, text: bool, last: bool) -> Option<Event> {
        if !last {
            self.partial = Some((payload, text));
            return None;
        }
        if text && std::str::from_utf8(&payload).is_err() {
            return Some(fail(INVALID_DATA, "a text message that is not UTF-8"));
        }
        let mut lines = BytesMut::with_capacity(payload.len() + 1);
        lines.extend_from_slice(&payload);
        lines.put_u8(b'\n');
        Some(Event::Lines(lines.freeze()))
    }
}

fn fail(code: u16, why: &'static str) -> Event {
    Event::Failed {
        close: close_frame(code),
        why,
    }
}

/// Clients mask every frame with a 4-byte key (RFC 6455, 5.3).
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests;
