//! A connection's reader: bytes in, runs of lines out to
//! [`Host::publish`], for line clients and WebSocket clients alike.

use super::{Action, CloseReason, Host, Link, Session, close};
use crate::ops::clients::Transport;
use crate::policy::inbound::Inbound;
use crate::policy::run::{RUN_LINES, Run};
use crate::policy::websocket::{self, Decoder, Event, Opening};

/// Lines a reader publishes before it lets the other tasks of its core
/// run, so one flooding client cannot starve the rest.
pub(crate) const LINE_BUDGET: usize = 256;

/// Reads lines from the client and publishes them, in order, until the
/// client leaves, sends an overlong line, or shutdown begins. A WebSocket
/// client's frames are taken apart first (see [`websocket`]).
pub(crate) async fn read_loop<H: Host>(host: &H, link: &H::Link) {
    let max_line = host.cx().settings.max_line;
    let (mut framing, mut inbound) = match link.with(|s| s.transport()) {
        // The splitter holds TCP lines to --max-line exactly.
        Transport::Tcp => (Framing::Lines, Inbound::new(max_line)),
        // The decoder holds messages to --max-line; the buffer has room for
        // a frame's header beside the longest payload, and splits nothing.
        Transport::Websocket => (
            Framing::Handshake(Decoder::new(max_line)),
            Inbound::new(max_line.saturating_add(websocket::MAX_HEADER)),
        ),
    };
    // Lines published since the other tasks of the core last ran.
    let mut spent = 0;
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
            Framing::Lines => publish_lines(host, &mut inbound, &mut spent).await,
            Framing::Handshake(_) | Framing::Frames(_) => {
                read_websocket(host, link, &mut inbound, &mut framing, &mut spent).await
            }
        };
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

/// Publishes every complete line in `inbound`, in runs of at most
/// [`RUN_LINES`].
async fn publish_lines<H: Host>(host: &H, inbound: &mut Inbound, spent: &mut usize) -> Ended {
    loop {
        match inbound.next_run(RUN_LINES) {
            Ok(Some(run)) => publish(host, &run, spent).await,
            Ok(None) => return Ended::No,
            // The lines before an overlong one were published.
            Err(_) => return Ended::TooLong,
        }
    }
}

/// Publishes `run`, and lets the other tasks of the core run after every
/// [`LINE_BUDGET`] lines.
async fn publish<H: Host>(host: &H, run: &Run, spent: &mut usize) {
    host.publish(run).await;
    *spent += run.lines as usize;
    if *spent >= LINE_BUDGET {
        tokio::task::yield_now().await;
        *spent = 0;
    }
}

/// Answers a WebSocket client's handshake, then publishes the lines of its
/// messages and answers its control frames.
async fn read_websocket<H: Host>(
    host: &H,
    link: &H::Link,
    inbound: &mut Inbound,
    framing: &mut Framing,
    spent: &mut usize,
) -> Ended {
    if let Framing::Handshake(_) = framing {
        match websocket::opening(inbound.buffer()) {
            Opening::Incomplete => return Ended::No,
            Opening::Upgrade { response, consumed } => {
                let _ = inbound.buffer().split_to(consumed);
                own(host, link, |s| {
                    s.open();
                    s.send_own(response)
                });
                let Framing::Handshake(decoder) = std::mem::replace(framing, Framing::Lines) else {
                    unreachable!("matched above");
                };
                *framing = Framing::Frames(decoder);
            }
            Opening::Http { response } => {
                own(host, link, |s| {
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
                for run in Run::split(&lines) {
                    publish(host, &run, spent).await;
                }
            }
            Event::Reply(frame) => own(host, link, |s| s.send_own(frame)),
            Event::Closed(frame) => {
                own(host, link, |s| {
                    s.close_when_sent(CloseReason::PeerClosed);
                    s.send_own(frame)
                });
                return Ended::Answered;
            }
            Event::Failed { close, why } => {
                if websocket::too_long(&close) {
                    host.cx().shard.too_long();
                }
                link.with(|s| {
                    tracing::info!(conn = s.id, peer = %s.peer, why, "websocket client broke the protocol; closing it");
                });
                own(host, link, |s| {
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
fn own<H: Host>(host: &H, link: &H::Link, f: impl FnOnce(&mut Session) -> Action) {
    if link.with(f) == Action::Wake {
        host.wake(link);
    }
}
