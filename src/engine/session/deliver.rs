//! How runs reach the connections of a core: offered to each, handed to
//! the kernel at once where a queue is full, held for a moment for one that
//! is behind, and how a connection is closed.

use std::cell::RefCell;
use std::net::Shutdown;
use std::ops::Deref;
use std::pin::pin;
use std::time::Instant;

use bytes::Bytes;

use super::{Action, CloseReason, Cx, Host, Link};
use crate::ops::clients::Transport;
use crate::policy::codec::websocket;
use crate::policy::run::Run;
use crate::policy::send::patience::Whose;

/// Offers `runs`, in order, to every connection in `conns`: each
/// connection takes the whole batch before the next one is looked at, so
/// its state is read once per batch, not once per line.
///
/// A connection whose queue fills stops there; once every connection has
/// been offered the batch, the full queues go to the kernel together
/// ([`Host::send_now`]) and those connections are offered the rest, until
/// each has taken it or its socket refused. One whose allowance is full
/// may hold a line: it gets that line and the rest of the batch last, after
/// a wait of at most its grace, in which the deliverer's own task sleeps
/// and every other task of the core runs. The host's
/// [`Patience`](crate::policy::send::patience) bounds the waits of all its
/// clients together; a wait it cannot pay for ends early, as if the grace
/// ran out. Returns whether it waited.
pub(crate) async fn deliver<H: Host, L: Deref<Target = H::Link>>(
    host: &H,
    conns: &[L],
    runs: &[Run],
) -> bool {
    let lines: usize = runs.iter().map(|r| r.lines as usize).sum();
    if lines == 0 {
        return false;
    }
    host.coalescer().delivered(conns.len() * lines);
    let mut frames = Frames::default();
    let held = offer_everyone(host, conns, runs, &mut frames);
    let waited = !held.is_empty();
    for (link, mut at, mut until) in held {
        loop {
            if hold(host, link, until).await {
                // The host's patience ran out first: the grace ends now.
                link.with(|s| s.end_grace());
            }
            match offer_alone(host, link, runs, at, &mut frames) {
                None => break,
                Some((next, later)) => (at, until) = (next, later),
            }
        }
    }
    waited
}

thread_local! {
    /// Connections whose queue filled during a delivery on this thread, by
    /// index, and where they stopped. A delivery finishes with it before it
    /// waits for anything, so one list per thread serves them all, and a
    /// delivery allocates nothing per receiver.
    static FULL: RefCell<Vec<(usize, Cursor)>> = const { RefCell::new(Vec::new()) };
}

/// Offers `runs` to every connection, then hands every queue that filled
/// to the kernel at once and offers those connections the rest, until each
/// has taken it or its socket refused. Returns those that hold a line:
/// their cursor, and the end of their grace.
fn offer_everyone<'c, H: Host, L: Deref<Target = H::Link>>(
    host: &H,
    conns: &'c [L],
    runs: &[Run],
    frames: &mut Frames,
) -> Vec<(&'c H::Link, Cursor, Instant)> {
    let mut held = Vec::new();
    FULL.with_borrow_mut(|full| {
        full.clear();
        let cx = host.cx();
        for (i, link) in conns.iter().enumerate() {
            match offer_from(host, link, runs, Cursor::START, frames, &cx) {
                Stop::Done => {}
                Stop::Full(at) => full.push((i, at)),
                Stop::Held(at, until) => held.push((&**link, at, until)),
            }
        }
        while !full.is_empty() {
            host.send_now(conns, full.iter().map(|&(i, _)| i));
            let cx = host.cx();
            let mut kept = 0;
            for j in 0..full.len() {
                let (i, at) = full[j];
                let link = &conns[i];
                match offer_from(host, link, runs, at, frames, &cx) {
                    Stop::Done => {}
                    Stop::Full(at) => {
                        full[kept] = (i, at);
                        kept += 1;
                    }
                    Stop::Held(at, until) => held.push((&**link, at, until)),
                }
            }
            full.truncate(kept);
        }
    });
    held
}

/// Offers `runs` from `at` to `link` alone, handing its queue to the
/// kernel each time it fills, until it has taken the rest or holds a line
/// (its cursor and the end of its grace).
fn offer_alone<H: Host>(
    host: &H,
    link: &H::Link,
    runs: &[Run],
    mut at: Cursor,
    frames: &mut Frames,
) -> Option<(Cursor, Instant)> {
    loop {
        let cx = host.cx();
        match offer_from(host, link, runs, at, frames, &cx) {
            Stop::Done => return None,
            Stop::Held(at, until) => return Some((at, until)),
            // Each round the kernel takes some (the queue has room again)
            // or refuses (the next offer holds or drops): it ends.
            Stop::Full(next) => {
                host.send_now(std::slice::from_ref(&link), 0..1);
                at = next;
            }
        }
    }
}

/// Where a connection stands in a batch: the next line to offer it.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// The run.
    run: usize,
    /// The line of that run.
    line: u32,
}

impl Cursor {
    const START: Cursor = Cursor { run: 0, line: 0 };
}

/// Why a connection took only part of a batch, if it did.
enum Stop {
    /// It took (or dropped) all of it, or it was closed.
    Done,
    /// Its queue is full: hand it to the kernel, then offer from here.
    Full(Cursor),
    /// It holds the line here until the instant at the latest.
    Held(Cursor, Instant),
}

/// Offers `runs` from `from` to `link`, in order, until its queue is full
/// or it holds a line.
fn offer_from<H: Host>(
    host: &H,
    link: &H::Link,
    runs: &[Run],
    from: Cursor,
    frames: &mut Frames,
    cx: &Cx<'_>,
) -> Stop {
    let mut wake = false;
    let mut stop = None;
    link.with(|s| {
        // Only a WebSocket client needs the runs as frames.
        let framed = s.transport() == Transport::Websocket;
        for (i, run) in runs.iter().enumerate().skip(from.run) {
            let skip = if i == from.run { from.line } else { 0 };
            let frame = framed.then(|| frames.get(i, runs.len(), run));
            match s.offer(run, skip, frame, cx) {
                Action::None => {}
                Action::Wake => wake = true,
                Action::Full(line) => {
                    stop = Some(Ok(Stop::Full(Cursor { run: i, line })));
                    break;
                }
                Action::Hold { until, at } => {
                    stop = Some(Ok(Stop::Held(Cursor { run: i, line: at }, until)));
                    break;
                }
                Action::Close(reason) => {
                    stop = Some(Err(reason));
                    break;
                }
            }
        }
    });
    if wake {
        host.wake(link);
    }
    match stop {
        None => Stop::Done,
        Some(Ok(stop)) => stop,
        Some(Err(reason)) => {
            close(host, link, reason);
            Stop::Done
        }
    }
}

/// A batch's runs as WebSocket frames, each built by the first WebSocket
/// client to need it: nothing is allocated while no WebSocket client is
/// connected.
#[derive(Default)]
struct Frames(Vec<Option<Bytes>>);

impl Frames {
    /// Run `i` of a batch of `len`, framed.
    fn get(&mut self, i: usize, len: usize, run: &Run) -> &Bytes {
        if self.0.len() < len {
            self.0.resize(len, None);
        }
        self.0[i].get_or_insert_with(|| websocket::frame_run(&run.bytes))
    }
}

/// Holds a message for a client that is behind: waits until it has room
/// or its grace ends at `until`. Returns true if the host's patience ended the wait
/// first.
async fn hold<H: Host>(host: &H, link: &H::Link, until: Instant) -> bool {
    let patience = host.patience();
    let start = Instant::now();
    let want = until.saturating_duration_since(start);
    if want.is_zero() {
        return false;
    }
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
    let Some((id, peer)) = link.with(|s| s.close(&cx).then_some((s.id(), s.peer()))) else {
        return;
    };
    link.shutdown(Shutdown::Both);
    host.wake(link);
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
        CloseReason::OwnBacklog => tracing::warn!(
            conn = id,
            %peer,
            limit = crate::policy::send::outbound::OWN_BACKLOG,
            "websocket client does not read the server's control frames (pongs, closes); disconnected it"
        ),
        _ => tracing::debug!(conn = id, %peer, reason = reason.as_str(), "connection closed"),
    }
}

/// The writer's end of a connection the server closes once what is queued
/// is out: closes it, unless the client's reader still reads what the
/// client sends (see [`super::LINGER`]); then the write side is shut, so
/// the client reads the answer and an end of file, and the reader closes
/// the connection.
pub(crate) fn finish<H: Host>(host: &H, link: &H::Link, reason: CloseReason) {
    if link.with(|s| s.finish_writing()) {
        link.shutdown(Shutdown::Write);
    } else {
        close(host, link, reason);
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
