//! The two engines. Each is the only place that knows its runtime; both use
//! the shared line splitter, queue, metrics and socket setup.

pub(crate) mod tokio;
pub(crate) mod uring;

use ::tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
