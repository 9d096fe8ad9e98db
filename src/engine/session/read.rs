//! A connection's reader: bytes in, lines out to [`Host::publish`], for
//! line clients and WebSocket clients alike.

use bytes::Bytes;

use super::{Action, CloseReason, Host, Link, Session, close};
use crate::ops::clients::Transport;
use crate::policy::inbound::Inbound;
use crate::policy::websocket::{self, Decoder, Event, Opening};

/// Lines a reader publishes before it lets the other tasks of its core
/// run, so one flooding client cannot starve the rest.
pub(crate) const LINE_BUDGET: usize = 256;
/// Most lines a reader hands to [`Host::publish`] at once.
pub(crate) const LINE_BATCH: usize = 64;

/// Reads lines from the client and publishes them, in order, until the
/// client leaves, sends an overlong line, or shutdown begins. A WebSocket
/// client's frames are taken apart first (see [`websocket`]).
pub(crate) async fn read_loop<H: Host>(host: &H, link: &H::Link) {
    let max_line = host.cx().settings.max_line;
    let mut framing = match link.with(|s| s.transport()) {
        Transport::Tcp => Framing::Lines,
        Transport::Websocket => Framing::Handshake(Decoder::new(max_line)),
    };
    // Room for a WebSocket frame's header beside its longest payload.
    let mut inbound = Inbound::new(max_line.saturating_add(14));
    // Grows to the most lines one read held (at most LINE_BATCH), so a
    // client that never publishes costs nothing here.
    let mut batch = Batch::default();
    loop {
        let max = inbound.prepare();
        let result = link.read(&mut inbound, max).await;
        // During shutdown a reader publishes the lines it already holds,
        // then stops, however much the client still sends.
        let stopping = host.stopping();
        let reason = match result {
            Ok(0) => Some(CloseReason::PeerClosed),
            Ok(n) => {
                inbound.filled(n);
                None
            }
            Err(e) => {
                link.with(
                    |s| tracing::debug!(conn = s.id, peer = %s.peer, error = %e, "read failed"),
                );
                Some(CloseReason::ReadError)
            }
        };
        if let Some(reason) = reason {
            // An EOF during shutdown is the server's own doing: the
            // connection stays open for its writer to flush. A partial line
            // is discarded either way.
            if !stopping {
                close(host, link, reason);
            }
            break;
        }
        let tick = host.tick();
        if link.with(|s| {
            s.last_active = tick;
            s.publishing = true;
            s.closed
        }) {
            break;
        }
        let ended = match &mut framing {
            Framing::Lines => publish_lines(host, &mut inbound, &mut batch).await,
            Framing::Handshake(_) | Framing::Frames(_) => {
                read_websocket(host, link, &mut inbound, &mut framing, &mut batch).await
            }
        };
        // Wake the other cores for this read's lines on every way out: a
        // client that leaves with an overlong line sends nothing more that
        // would wake them for the lines before it.
        host.lines_done();
        let tick = host.tick();
        link.with(|s| {
            s.last_active = tick;
            s.publishing = false;
        });
        match ended {
            Ended::No => {}
            Ended::TooLong => {
                host.cx().shard.too_long();
                close(host, link, CloseReason::LineTooLong);
                break;
            }
            // The writer closes once the answer is out.
            Ended::Answered => break,
        }
        if stopping {
            break;
        }
    }
    host.reader_exited();
}

/// How a reader takes its client's bytes apart.
enum Framing {
    /// Newline-terminated lines.
    Lines,
    /// A WebSocket client before its opening handshake.
    Handshake(Decoder),
    /// A WebSocket client after it.
    Frames(Decoder),
}

/// Why a reader stops reading, if it does.
enum Ended {
    /// It goes on.
    No,
    /// An overlong line.
    TooLong,
    /// The server answered and closes once the answer is out (an HTTP
    /// request, a WebSocket close or protocol error).
    Answered,
}

/// Publishes every complete line in `inbound`.
async fn publish_lines<H: Host>(host: &H, inbound: &mut Inbound, batch: &mut Batch) -> Ended {
    let ended = loop {
        match inbound.next_line() {
            Ok(Some(line)) => batch.push(host, line).await,
            Ok(None) => break Ended::No,
            Err(_) => break Ended::TooLong,
        }
    };
    // The lines before an overlong one are published too.
    batch.publish(host).await;
    ended
}

/// A reader's lines on their way to [`Host::publish`]: handed over
/// [`LINE_BATCH`] at a time, and the other tasks of the core run after
/// every [`LINE_BUDGET`] of them.
#[derive(Default)]
struct Batch {
    lines: Vec<Bytes>,
    /// Lines published since the other tasks last ran.
    spent: usize,
}

impl Batch {
    async fn push<H: Host>(&mut self, host: &H, line: Bytes) {
        self.lines.push(line);
        if self.lines.len() == LINE_BATCH {
            self.publish(host).await;
        }
    }

    /// Publishes the lines held, if any.
    async fn publish<H: Host>(&mut self, host: &H) {
        if self.lines.is_empty() {
            return;
        }
        host.publish(&self.lines).await;
        self.spent += self.lines.len();
        self.lines.clear();
        if self.spent >= LINE_BUDGET {
            host.lines_done();
            tokio::task::yield_now().await;
            self.spent = 0;
        }
    }
}

/// Answers a WebSocket client's handshake, then publishes the lines of its
/// messages and answers its control frames.
async fn read_websocket<H: Host>(
    host: &H,
    link: &H::Link,
    inbound: &mut Inbound,
    framing: &mut Framing,
    batch: &mut Batch,
) -> Ended {
    if let Framing::Handshake(_) = framing {
        match websocket::opening(inbound.buffer()) {
            Opening::Incomplete => return Ended::No,
            Opening::Upgrade { response, consumed } => {
                let _ = inbound.buffer().split_to(consumed);
                own(link, |s| {
                    s.open();
                    s.send_own(response)
                });
                let Framing::Handshake(decoder) = std::mem::replace(framing, Framing::Lines) else {
                    unreachable!("matched above");
                };
                *framing = Framing::Frames(decoder);
            }
            Opening::Http { response } => {
                own(link, |s| {
                    s.close_when_sent(CloseReason::Answered);
                    s.send_own(response)
                });
                return Ended::Answered;
            }
        }
    }
    let Framing::Frames(decoder) = framing else {
        return Ended::No;
    };
    while let Some(event) = decoder.next(inbound.buffer()) {
        match event {
            Event::Lines(lines) => {
                let mut start = 0;
                for end in memchr::memchr_iter(b'\n', &lines) {
                    batch.push(host, lines.slice(start..=end)).await;
                    start = end + 1;
                }
                batch.publish(host).await;
            }
            Event::Reply(frame) => own(link, |s| s.send_own(frame)),
            Event::Closed(frame) => {
                own(link, |s| {
                    s.close_when_sent(CloseReason::PeerClosed);
                    s.send_own(frame)
                });
                return Ended::Answered;
            }
            Event::Failed { close, why } => {
                link.with(|s| {
                    tracing::info!(conn = s.id, peer = %s.peer, why, "websocket client broke the protocol; closing it");
                });
                own(link, |s| {
                    s.close_when_sent(CloseReason::ProtocolError);
                    s.send_own(close)
                });
                return Ended::Answered;
            }
        }
    }
    Ended::No
}

/// Runs `f`, which queues something the server sends, and wakes the writer.
fn own<L: Link>(link: &L, f: impl FnOnce(&mut Session) -> Action) {
    if link.with(f) == Action::Wake {
        link.wake_writer();
    }
}
