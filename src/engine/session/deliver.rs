//! How a line reaches the connections of a core: offered to each, held
//! for a moment for one that is behind, and how a connection is closed.

use std::net::Shutdown;
use std::ops::Deref;
use std::pin::pin;
use std::time::Instant;

use bytes::Bytes;

use super::{Action, CloseReason, Cx, Host, Link};
use crate::ops::clients::Transport;
use crate::policy::patience::Whose;

/// Offers `msgs`, in order, to every connection in `conns`: each
/// connection takes the whole batch before the next one is looked at, so
/// its state is read once per batch, not once per line. A connection whose
/// allowance is full may hold a line: it gets that line and the rest of the
/// batch last, after a wait of at most its grace, in which the deliverer's
/// own task sleeps and every other task of the core runs. The host's
/// [`Patience`](crate::policy::patience) bounds the waits of all its
/// clients together; a wait it cannot pay for ends early, as if the grace
/// ran out. Returns whether it waited.
pub(crate) async fn deliver<H: Host, L: Deref<Target = H::Link>>(
    host: &H,
    conns: &[L],
    msgs: &[Bytes],
) -> bool {
    if msgs.is_empty() {
        return false;
    }
    host.coalescer().delivered(conns.len() * msgs.len());
    let mut frames = Frames::default();
    let mut held = Vec::new();
    {
        let cx = host.cx();
        for link in conns {
            if let Some((next, until)) = offer_from(host, link, msgs, 0, &mut frames, &cx) {
                held.push((&**link, next, until));
            }
        }
    }
    let waited = !held.is_empty();
    for (link, mut next, mut until) in held {
        loop {
            if wait_held(host, link, until).await {
                // The host's patience ran out first: the grace ends now.
                link.with(|s| s.end_grace());
            }
            let cx = host.cx();
            match offer_from(host, link, msgs, next, &mut frames, &cx) {
                Some(later) => (next, until) = later,
                None => break,
            }
        }
    }
    waited
}

/// Offers `msgs[from..]` to `link`, in order, until one is held: returns
/// its index and the end of the client's grace.
fn offer_from<H: Host>(
    host: &H,
    link: &H::Link,
    msgs: &[Bytes],
    from: usize,
    frames: &mut Frames,
    cx: &Cx<'_>,
) -> Option<(usize, Instant)> {
    let mut wake = false;
    let mut stop = None;
    link.with(|s| {
        // Only a WebSocket client needs a frame of the line.
        let framed = s.transport() == Transport::Websocket;
        let mut unframed = None;
        for (i, msg) in msgs.iter().enumerate().skip(from) {
            let frame = if framed {
                frames.slot(i, msgs.len())
            } else {
                &mut unframed
            };
            let action = s.offer(msg, frame, |bufs| link.try_send(bufs), cx);
            match action {
                Action::None => {}
                Action::Wake => wake = true,
                Action::Hold(until) => {
                    stop = Some(Stop::Held(i, until));
                    break;
                }
                Action::Close(reason) => {
                    stop = Some(Stop::Close(reason));
                    break;
                }
            }
        }
    });
    if wake {
        link.wake_writer();
    }
    match stop? {
        Stop::Held(i, until) => Some((i, until)),
        Stop::Close(reason) => {
            close(host, link, reason);
            None
        }
    }
}

/// Why a connection took only part of a batch.
enum Stop {
    /// It holds line `.0` until `.1` at the latest.
    Held(usize, Instant),
    /// It is to be closed.
    Close(CloseReason),
}

/// A batch's WebSocket frames, each built by the first WebSocket client to
/// need it: nothing is allocated while no WebSocket client is connected.
#[derive(Default)]
struct Frames(Vec<Option<Bytes>>);

impl Frames {
    /// The frame of line `i` of a batch of `len`.
    fn slot(&mut self, i: usize, len: usize) -> &mut Option<Bytes> {
        if self.0.len() < len {
            self.0.resize(len, None);
        }
        &mut self.0[i]
    }
}

/// Waits for a client that holds a message until it has room or its grace
/// ends at `until`. Returns true if the host's patience ended the wait
/// first.
async fn wait_held<H: Host>(host: &H, link: &H::Link, until: Instant) -> bool {
    let patience = host.patience();
    let start = Instant::now();
    let want = until.saturating_duration_since(start);
    let whose = if link.with(|s| s.ran_out_before()) {
        Whose::Again
    } else {
        Whose::First
    };
    let granted = patience.take(whose, want, start);
    let room = wait_for_room(link, start + granted).await;
    let spent = start.elapsed();
    patience.spent(whose, granted, spent);
    host.cx().shard.held(spent);
    !room && granted < want
}

/// Waits until `link` has room for a held message (true), or `until`
/// passes (false).
async fn wait_for_room(link: &impl Link, until: Instant) -> bool {
    let mut deadline = pin!(tokio::time::sleep_until(until.into()));
    loop {
        let notified = pin!(link.room().notified());
        if link.with(|s| s.has_room()) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::select! {
            () = notified => {}
            () = &mut deadline => return false,
        }
    }
}

/// Closes a connection: it gets no more messages, its socket is shut down
/// so every read and write in flight completes, and the gauge drops.
pub(crate) fn close<H: Host>(host: &H, link: &H::Link, reason: CloseReason) {
    let cx = host.cx();
    let Some((id, peer)) = link.with(|s| s.close(&cx).then_some((s.id, s.peer))) else {
        return;
    };
    link.shutdown(Shutdown::Both);
    link.wake_writer();
    link.room().notify_waiters();
    host.forget(link);
    cx.shard.closed();
    match reason {
        CloseReason::LineTooLong => tracing::warn!(
            conn = id,
            %peer,
            max_line = cx.settings.max_line,
            "client sent more than --max-line bytes without a newline; disconnected it, other clients unaffected"
        ),
        CloseReason::IdleTimeout => {
            tracing::info!(conn = id, %peer, "client sent nothing for --idle-timeout; disconnected it")
        }
        CloseReason::SlowDisconnect => tracing::warn!(
            conn = id,
            %peer,
            "client kept dropping messages for --slow-disconnect; disconnected it"
        ),
        _ => tracing::debug!(conn = id, %peer, reason = reason.as_str(), "connection closed"),
    }
}

/// The idle sweep: closes every connection of `conns` that has sent
/// nothing for more than `ticks` ticks up to `tick`.
pub(crate) fn close_idle<H: Host, L: Deref<Target = H::Link>>(
    host: &H,
    conns: &[L],
    tick: u64,
    ticks: u64,
) {
    for link in conns {
        if link.with(|s| s.is_idle(tick, ticks)) {
            close(host, link, CloseReason::IdleTimeout);
        }
    }
}
