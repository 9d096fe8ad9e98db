//! A connection's reader: bytes in, runs of lines out to
//! [`Host::publish`], for line clients and WebSocket clients alike.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::pin;
use std::time::Instant;

use super::{Action, CloseReason, Host, LINGER, Link, Session, close};
use crate::ops::clients::Transport;
use crate::policy::codec::inbound::Inbound;
use crate::policy::codec::websocket::{self, Decoder, Event, Opening};
use crate::policy::run::{RUN_LINES, Run};
use crate::policy::send::tls;

/// Lines a reader publishes before it lets the other tasks of its core
/// run, so one flooding client cannot starve the rest.
pub(crate) const LINE_BUDGET: usize = 256;

/// Reads lines from the client and publishes them, in order, until the
/// client leaves, sends an overlong line, or shutdown begins. A TLS
/// client's records are decrypted first (see [`tls`]), and a WebSocket
/// client's frames taken apart (see [`websocket`]); their handshakes must
/// complete within `--handshake-timeout`. A client the server answers and
/// closes gets [`LINGER`] to read the answer.
pub(crate) async fn read_loop<H: Host>(host: &H, link: &H::Link) {
    let settings = host.cx().settings;
    let max_line = settings.max_line;
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
    // A TLS client's ciphertext, before it is decrypted into `inbound`.
    let mut cipher = link.with(|s| s.is_tls()).then(|| Inbound::new(0));
    let mut established = false;
    let handshake_by = Instant::now() + settings.handshake_timeout;
    let mut tally = Tally::default();
    let mut answered = None;
    loop {
        let max = inbound.prepare();
        let handshaking =
            matches!(framing, Framing::Handshake(_)) || (cipher.is_some() && !established);
        let read = async {
            match cipher.as_mut() {
                None => link.read(&mut inbound, max).await.map(Some),
                Some(cipher) => {
                    read_tls(host, link, cipher, &mut inbound, max, &mut established).await
                }
            }
        };
        let result = if handshaking {
            match within(link, read, handshake_by).await {
                Some(result) => result,
                None => {
                    host.cx().shard.handshake_timed_out();
                    close(host, link, CloseReason::HandshakeTimeout);
                    break;
                }
            }
        } else {
            read.await
        };
        // During shutdown a reader publishes the lines it already holds,
        // then stops, however much the client still sends.
        let stopping = host.stopping();
        let reason = match result {
            // A TLS handshake completed: the next read has no deadline.
            Ok(None) => continue,
            Ok(Some(0)) => Some(CloseReason::PeerClosed),
            Ok(Some(n)) => {
                inbound.filled(n);
                None
            }
            Err(e) => {
                link.with(
                    |s| tracing::debug!(conn = s.id(), peer = %s.peer(), error = %e, "read failed"),
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
        let now = Instant::now();
        if link.with(|s| s.publishing(now, tick)) {
            break;
        }
        let ended = match &mut framing {
            Framing::Lines => publish_lines(host, &mut inbound, &mut tally).await,
            Framing::Handshake(_) | Framing::Frames(_) => {
                read_websocket(host, link, &mut inbound, &mut framing, &mut tally).await
            }
        };
        let tick = host.tick();
        let (msgs, bytes) = tally.take();
        link.with(|s| s.published(tick, msgs, bytes));
        match ended {
            Ended::No => {}
            Ended::TooLong => {
                host.cx().shard.too_long();
                close(host, link, CloseReason::LineTooLong);
                break;
            }
            Ended::Answered(reason) => {
                answered = reason;
                break;
            }
        }
        if stopping {
            break;
        }
    }
    // A lingering reader publishes nothing: shutdown need not wait for it.
    host.reader_exited();
    if let Some(reason) = answered {
        linger(host, link, &mut inbound, reason).await;
    }
}

/// Reads a TLS client's records into `cipher` until they give plaintext,
/// and moves up to `max` bytes of it onto `inbound`'s buffer; `Ok(Some(0))`
/// once the client closed. Wakes the writer when the TLS session has
/// something to send (its handshake answers). When the handshake
/// completes, admits a line client and returns `Ok(None)`.
async fn read_tls<H: Host>(
    host: &H,
    link: &H::Link,
    cipher: &mut Inbound,
    inbound: &mut Inbound,
    max: usize,
    established: &mut bool,
) -> io::Result<Option<usize>> {
    loop {
        let step = link.with(|s| s.tls_input(cipher.buffer(), inbound.buffer(), max));
        if step.wake {
            host.wake(link);
        }
        let input = match step.input {
            Ok(input) => input,
            Err(e) => {
                let cx = host.cx();
                link.with(|s| s.report_tls_error(&e, &cx));
                return Err(e);
            }
        };
        if step.established {
            *established = true;
            if !admit_tls(host, link) {
                close(host, link, CloseReason::Rejected);
                return Ok(Some(0));
            }
            if input == tls::Input::Need {
                return Ok(None);
            }
        }
        match input {
            tls::Input::Plain(n) => return Ok(Some(n)),
            tls::Input::Closed => return Ok(Some(0)),
            tls::Input::Need => {}
        }
        let room = cipher.prepare();
        let n = link.read(cipher, room).await?;
        if n == 0 {
            return Ok(Some(0));
        }
        cipher.filled(n);
    }
}

/// A TLS client completed its handshake: a line client takes a
/// `--max-clients` slot now, from its handshake slot, and takes messages;
/// false if every slot is taken (counted and reported). A WebSocket client
/// does so at its own handshake.
fn admit_tls<H: Host>(host: &H, link: &H::Link) -> bool {
    let cx = host.cx();
    link.with(|s| {
        if s.transport() != Transport::Tcp {
            return true;
        }
        let admitted = !s.is_closed() && host.admit_client(s.peer());
        if admitted {
            s.open(&cx);
        }
        admitted
    })
}

/// A read that gives up at `until`: `None` if it did. The read is ended by
/// shutting the socket's read side down and waited for, not dropped: on
/// io_uring a dropped read would go on in the kernel.
async fn within<T>(link: &impl Link, read: impl Future<Output = T>, until: Instant) -> Option<T> {
    let mut read = pin!(read);
    tokio::select! {
        result = &mut read => Some(result),
        () = tokio::time::sleep_until(until.into()) => {
            link.shutdown(Shutdown::Read);
            drop(read.await);
            None
        }
    }
}

/// After an answer the server closes on (see [`super::LINGER`]): reads and
/// drops what the client still sends until it closes its side, the read
/// fails, or [`LINGER`] passes; then closes the connection, or leaves that
/// to the writer if the answer is not out yet, for at most the rest of
/// [`LINGER`].
async fn linger<H: Host>(host: &H, link: &H::Link, inbound: &mut Inbound, reason: CloseReason) {
    let until = Instant::now() + LINGER;
    loop {
        inbound.buffer().clear();
        let max = inbound.prepare();
        match within(link, link.read(inbound, max), until).await {
            Some(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    if !link.with(|s| s.input_done()) {
        // The writer closes once the answer is out; a client that does
        // not read it is closed when the time is up.
        wait_closed(link, until).await;
    }
    close(host, link, reason);
}

/// Waits until the connection is closed or `until` passes.
async fn wait_closed(link: &impl Link, until: Instant) {
    let mut deadline = pin!(tokio::time::sleep_until(until.into()));
    loop {
        // Closing a connection wakes those waiting for its room.
        let notified = pin!(link.room().notified());
        if link.with(|s| s.is_closed()) {
            return;
        }
        tokio::select! {
            () = notified => {}
            () = &mut deadline => return,
        }
    }
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

/// What a reader has published.
#[derive(Debug, Default)]
struct Tally {
    /// Lines since the other tasks of the core last ran.
    spent: usize,
    /// Messages, and their bytes, since the session last heard of them.
    msgs: u64,
    bytes: u64,
}

impl Tally {
    /// The messages and bytes not yet added to the session.
    fn take(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.msgs),
            std::mem::take(&mut self.bytes),
        )
    }
}

/// Why a reader stops reading, if it does.
enum Ended {
    /// It goes on.
    No,
    /// An overlong line.
    TooLong,
    /// The server answered and closes once the answer is out (an HTTP
    /// request, a WebSocket close or protocol error); with the reason if
    /// the reader is to linger (see [`LINGER`]).
    Answered(Option<CloseReason>),
}

/// Publishes every complete line in `inbound`, in runs of at most
/// [`RUN_LINES`].
async fn publish_lines<H: Host>(host: &H, inbound: &mut Inbound, tally: &mut Tally) -> Ended {
    loop {
        match inbound.next_run(RUN_LINES) {
            Ok(Some(run)) => publish(host, &run, tally).await,
            Ok(None) => return Ended::No,
            // The lines before an overlong one were published.
            Err(_) => return Ended::TooLong,
        }
    }
}

/// Publishes `run`, and lets the other tasks of the core run after every
/// [`LINE_BUDGET`] lines.
async fn publish<H: Host>(host: &H, run: &Run, tally: &mut Tally) {
    host.publish(run).await;
    tally.msgs += u64::from(run.lines);
    tally.bytes += run.bytes.len() as u64;
    tally.spent += run.lines as usize;
    if tally.spent >= LINE_BUDGET {
        tokio::task::yield_now().await;
        tally.spent = 0;
    }
}

/// Answers a WebSocket client's handshake, then publishes the lines of its
/// messages and answers its control frames.
async fn read_websocket<H: Host>(
    host: &H,
    link: &H::Link,
    inbound: &mut Inbound,
    framing: &mut Framing,
    tally: &mut Tally,
) -> Ended {
    if let Framing::Handshake(_) = framing {
        let cx = host.cx();
        // A TLS client's page is served over https.
        let secure = link.with(|s| s.is_tls());
        match websocket::opening(inbound.buffer(), &cx.settings.origins, secure) {
            Opening::Incomplete => return Ended::No,
            Opening::Upgrade { response, consumed } => {
                let _ = inbound.buffer().split_to(consumed);
                // From a handshake slot to a client slot, and the 101
                // queued before the client takes messages, in one step:
                // no message can go out before the 101.
                let cx = host.cx();
                let mut admitted = false;
                let queued = own(host, link, |s| {
                    admitted = !s.is_closed() && host.admit_client(s.peer());
                    if !admitted {
                        return Action::None;
                    }
                    let action = s.send_own(response);
                    s.open(&cx);
                    action
                });
                if !admitted {
                    own(host, link, |s| {
                        s.close_when_sent(CloseReason::Rejected, true);
                        s.send_own(websocket::unavailable())
                    });
                    return Ended::Answered(Some(CloseReason::Rejected));
                }
                if !queued {
                    return Ended::Answered(None);
                }
                let Framing::Handshake(decoder) = std::mem::replace(framing, Framing::Lines) else {
                    unreachable!("matched above");
                };
                *framing = Framing::Frames(decoder);
            }
            Opening::Forbidden { response, origin } => {
                cx.shard.origin_rejected();
                own(host, link, |s| {
                    s.report_forbidden_origin(&origin, &cx);
                    s.close_when_sent(CloseReason::OriginForbidden, true);
                    s.send_own(response)
                });
                return Ended::Answered(Some(CloseReason::OriginForbidden));
            }
            Opening::Http { response } => {
                own(host, link, |s| {
                    s.close_when_sent(CloseReason::Answered, true);
                    s.send_own(response)
                });
                return Ended::Answered(Some(CloseReason::Answered));
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
                    publish(host, &run, tally).await;
                }
            }
            Event::Pong(frame) => {
                if !own(host, link, |s| s.pong(frame)) {
                    // Closed for its backlog of the server's own frames:
                    // nothing more of it is published.
                    return Ended::Answered(None);
                }
            }
            Event::Closed(frame) => {
                // The client closed first: it sends nothing more, and the
                // server closes once the answer is out (RFC 6455, 7.1.1).
                own(host, link, |s| {
                    s.close_when_sent(CloseReason::PeerClosed, false);
                    s.send_own(frame)
                });
                return Ended::Answered(None);
            }
            Event::Failed { close, why } => {
                if websocket::too_long(&close) {
                    host.cx().shard.too_long();
                }
                let cx = host.cx();
                cx.shard.protocol_error();
                link.with(|s| s.report_protocol_error(why, &cx));
                own(host, link, |s| {
                    s.close_when_sent(CloseReason::ProtocolError, true);
                    s.send_own(close)
                });
                return Ended::Answered(Some(CloseReason::ProtocolError));
            }
        }
    }
    Ended::No
}

/// Runs `f`, which queues something the server sends, and wakes the
/// writer, or closes the connection if `f` says so: false then.
fn own<H: Host>(host: &H, link: &H::Link, f: impl FnOnce(&mut Session) -> Action) -> bool {
    match link.with(f) {
        Action::Wake => host.wake(link),
        Action::Close(reason) => {
            close(host, link, reason);
            return false;
        }
        _ => {}
    }
    true
}
