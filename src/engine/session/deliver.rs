//! How a line reaches the connections of a core: offered to each, held
//! for a moment for one that is behind, and how a connection is closed.

use std::net::Shutdown;
use std::ops::Deref;
use std::pin::pin;
use std::time::Instant;

use bytes::Bytes;

use super::{Action, CloseReason, Host, Link};
use crate::policy::patience::Whose;

/// Offers `msg` to every connection in `conns`. A connection whose
/// allowance is full may hold it: it gets it last, after a wait of at most
/// its grace, in which the deliverer's own task sleeps and every other task
/// of the core runs. The host's [`Patience`](crate::policy::patience)
/// bounds the waits of all its clients together; a wait it cannot pay for
/// ends early, as if the grace ran out. Returns whether
/// it waited.
pub(crate) async fn deliver<H: Host, L: Deref<Target = H::Link>>(
    host: &H,
    conns: &[L],
    msg: &Bytes,
) -> bool {
    host.coalescer().delivered(conns.len());
    let mut held = Vec::new();
    let mut frame = None;
    {
        let cx = host.cx();
        for link in conns {
            let action = link.with(|s| s.offer(msg, &mut frame, |bufs| link.try_send(bufs), &cx));
            if let Some(until) = act(host, link, action) {
                held.push((&**link, until));
            }
        }
    }
    let waited = !held.is_empty();
    for (link, mut until) in held {
        loop {
            let out_of_patience = wait_held(host, link, until).await;
            let cx = host.cx();
            let action = link.with(|s| {
                if out_of_patience {
                    s.end_grace();
                }
                s.offer(msg, &mut frame, |bufs| link.try_send(bufs), &cx)
            });
            match act(host, link, action) {
                Some(later) => until = later,
                None => break,
            }
        }
    }
    waited
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

/// Carries out what an offer asked of the engine; `Some(until)` if the
/// connection holds the message.
fn act<H: Host>(host: &H, link: &H::Link, action: Action) -> Option<Instant> {
    match action {
        Action::None => {}
        Action::Wake => link.wake_writer(),
        Action::Hold(until) => return Some(until),
        Action::Close(reason) => close(host, link, reason),
    }
    None
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
