//! The two engines. Each is the only place that knows its runtime; both use
//! the shared line splitter, queue, metrics and socket setup.

mod roster;
pub(crate) mod tokio;
pub(crate) mod uring;

pub(crate) use roster::Roster;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use ::tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::limits::{AcceptBackoff, Gate};
use crate::metrics::Shard;

/// First read buffer of a connection. Small, so idle clients stay cheap.
pub(crate) const READ_MIN: usize = 4 * 1024;
/// Largest read a connection grows to when reads keep filling the buffer.
pub(crate) const READ_MAX: usize = 64 * 1024;
/// A writer gathers queued messages up to this many bytes into one write.
pub(crate) const WRITE_BATCH: usize = 64 * 1024;

/// How the coordinator steers an engine through shutdown.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    /// Stop accepting and reading, deliver what is in flight, flush queues,
    /// then close.
    pub stop: CancellationToken,
    /// The drain timeout passed: close every connection now.
    pub abort: CancellationToken,
    /// Each engine thread holds a clone and drops it when it exits, so the
    /// receiver closes once the whole engine has stopped.
    pub alive: mpsc::Sender<()>,
}

/// Why a connection was closed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed its side (read EOF).
    PeerClosed,
    /// A read failed (reset, timeout).
    ReadError,
    /// A write failed (reset, broken pipe).
    WriteError,
    /// The client sent a line over `--max-line`.
    LineTooLong,
    /// The client sent nothing for `--idle-timeout`.
    IdleTimeout,
    /// Server shutdown, after flushing.
    Shutdown,
    /// Server shutdown, the drain timeout passed.
    DrainTimeout,
}

impl CloseReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer closed the connection",
            CloseReason::ReadError => "read failed",
            CloseReason::WriteError => "write failed",
            CloseReason::LineTooLong => "line too long",
            CloseReason::IdleTimeout => "idle for --idle-timeout",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::DrainTimeout => "drain timeout passed",
        }
    }
}

/// Read window for the next read: grows while reads fill it.
pub(crate) fn next_read_size(current: usize, filled: bool) -> usize {
    if filled {
        (current * 2).min(READ_MAX)
    } else {
        current
    }
}

/// Lines a reader publishes before it yields to the other tasks on its
/// core, so one flooding client cannot starve the rest.
pub(crate) const LINE_BUDGET: usize = 256;

/// Logs a closed connection: who, what happened, and what the server did.
pub(crate) fn log_close(id: u64, peer: std::net::SocketAddr, reason: CloseReason, max_line: usize) {
    match reason {
        CloseReason::LineTooLong => tracing::warn!(
            conn = id,
            %peer,
            max_line,
            "client sent more than --max-line bytes without a newline; disconnected it, other clients unaffected"
        ),
        CloseReason::IdleTimeout => {
            tracing::info!(conn = id, %peer, "client sent nothing for --idle-timeout; disconnected it")
        }
        _ => tracing::debug!(conn = id, %peer, reason = reason.as_str(), "connection closed"),
    }
}

/// Accepts connections until `stop` is cancelled, for either engine.
///
/// Every accepted connection passes the [`Gate`] (`--max-clients`) before
/// `admit` gets it; one over the limit is dropped, which closes it. When the
/// process is out of descriptors, accept pauses with a bounded backoff while
/// connected clients go on being served. `shard` gives the counters of the
/// thread the loop is running on.
pub(crate) async fn accept_until_stopped<'a, S, F>(
    core: usize,
    stop: &CancellationToken,
    gate: &Gate,
    shard: impl Fn() -> &'a Shard,
    mut accept: impl FnMut() -> F,
    mut admit: impl FnMut(S, SocketAddr),
) where
    F: Future<Output = io::Result<(S, SocketAddr)>>,
{
    let mut stopped = pin!(stop.cancelled());
    let mut backoff = AcceptBackoff::default();
    loop {
        let pause: Option<Duration> = ::tokio::select! {
            () = &mut stopped => return,
            accepted = accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff.on_success();
                    if gate.admit(peer, shard()) {
                        admit(stream, peer);
                    }
                    None
                }
                Err(e) => gate.accept_failed(core, &mut backoff, &e),
            },
        };
        if let Some(pause) = pause {
            ::tokio::select! {
                () = &mut stopped => return,
                () = ::tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// Sweeps for idle clients four times per `timeout`, forever. Each sweep
/// advances the tick that readers stamp on their connection when data
/// arrives, then `sweep(tick)` closes every connection stamped more than
/// [`IDLE_TICKS`] ticks ago; a silent client goes within 1.25 × `timeout`.
pub(crate) async fn sweep_idle_forever(timeout: Duration, mut sweep: impl FnMut()) {
    let mut ticker =
        ::tokio::time::interval((timeout / IDLE_TICKS as u32).max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(::tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    loop {
        ticker.tick().await;
        sweep();
    }
}

/// Sweeps per idle timeout.
pub(crate) const IDLE_TICKS: u64 = 4;

/// True when a connection last active at `stamp` is idle at `tick`.
pub(crate) fn is_idle(stamp: u64, tick: u64) -> bool {
    tick.saturating_sub(stamp) > IDLE_TICKS
}

/// Waits on `notify` until `ready()` holds. The check comes after the
/// waiter registers, so a `notify_waiters` in between is never missed.
pub(crate) async fn notified_until(notify: &::tokio::sync::Notify, ready: impl Fn() -> bool) {
    loop {
        let notified = pin!(notify.notified());
        if ready() {
            return;
        }
        notified.await;
    }
}
