//! One client connection, as both engines run it.
//!
//! A message's whole way through a server is in this folder:
//!
//! 1. [`read_loop`] (`read.rs`) reads into the connection's
//!    [`Inbound`](crate::policy::codec::inbound::Inbound) buffer and splits
//!    complete lines off it as runs (a WebSocket client's frames first
//!    become lines);
//! 2. [`Host::publish`] (the engine) takes each run to every core;
//! 3. [`deliver()`] (`deliver.rs`) offers runs to every connection of a
//!    core, whose [`Session`] (`state.rs`) and [`Outbound`] decide: queue it, have
//!    the queue handed to the kernel at once, hold it a moment, or drop it;
//! 4. the engine hands what is queued to the kernel (one send per
//!    connection at a time on `tokio`, every due connection of a core in one
//!    submission on `uring`) and reports the kernel's answer to
//!    [`Session::sent`] or [`Session::flush`]; `write.rs` has what both do
//!    with that answer.
//!
//! The decisions live in [`Outbound`] and
//! [`Inbound`](crate::policy::codec::inbound::Inbound), with no I/O. An engine
//! supplies only its runtime glue (`host.rs`): [`Link`] (how to read and
//! shut down one socket) and [`Host`] (how a run reaches the other cores,
//! and how queues reach the kernel).
//!
//! [`Outbound`]: crate::policy::send::outbound::Outbound

use std::io;
use std::time::{Duration, Instant};

use crate::ops::metrics::Shard;
use crate::policy::admission::limits::Throttle;
use crate::policy::send::tls;

/// What every connection of a server is told.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `--queue`.
    pub(crate) queue: usize,
    /// `--max-line`.
    pub(crate) max_line: usize,
    /// `--grace`: how long a deliverer may wait, per episode, for a
    /// client whose allowance is full.
    pub(crate) grace: Duration,
    /// `--slow-disconnect`.
    pub(crate) slow_disconnect: Option<Duration>,
    /// During the drain, a client whose socket takes nothing for this long
    /// is not reading: it is closed rather than waited for.
    pub(crate) drain_stall: Duration,
    /// `--handshake-timeout`: a WebSocket client's opening handshake must
    /// arrive whole within this long of its connect.
    pub(crate) handshake_timeout: Duration,
    /// `--ws-origin`: which pages may open a WebSocket.
    pub(crate) origins: std::sync::Arc<crate::policy::codec::websocket::Origins>,
}

/// How long a connection the server closes after answering it (an HTTP
/// answer, a WebSocket close or protocol error) has to read the answer:
/// meanwhile, what the client still sends is read and dropped, so that
/// closing with unread input does not reset the connection and lose the
/// answer on its way.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// Why a connection was closed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed its side (read EOF).
    PeerClosed,
    /// A read failed (reset, timeout).
    ReadError,
    /// A send failed (reset, broken pipe).
    WriteError,
    /// The client sent a line over `--max-line`.
    LineTooLong,
    /// A WebSocket client broke the protocol (closed with its code).
    ProtocolError,
    /// A WebSocket client did not complete its handshake within
    /// `--handshake-timeout`.
    HandshakeTimeout,
    /// A WebSocket client completed its handshake while `--max-clients`
    /// were connected (answered 503).
    Rejected,
    /// The server's own frames queued for it passed
    /// [`OWN_BACKLOG`](crate::policy::send::outbound::OWN_BACKLOG).
    OwnBacklog,
    /// A plain HTTP request on the `--ws` address was answered.
    Answered,
    /// A WebSocket handshake from a page `--ws-origin` does not allow
    /// (answered 403).
    OriginForbidden,
    /// The client sent nothing for `--idle-timeout`.
    IdleTimeout,
    /// The client dropped messages for `--slow-disconnect`.
    SlowDisconnect,
    /// Lame duck mode: clients are moved off before shutdown.
    LameDuck,
    /// Server shutdown, after draining.
    Shutdown,
    /// Server shutdown, the drain timeout passed.
    DrainTimeout,
}

impl CloseReason {
    fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer closed the connection",
            CloseReason::ReadError => "read failed",
            CloseReason::WriteError => "write failed",
            CloseReason::LineTooLong => "line too long",
            CloseReason::ProtocolError => "websocket protocol error",
            CloseReason::HandshakeTimeout => "websocket handshake timed out",
            CloseReason::Rejected => "--max-clients reached when its handshake completed",
            CloseReason::OwnBacklog => "too many control frames queued",
            CloseReason::Answered => "http request answered",
            CloseReason::OriginForbidden => "websocket origin not allowed by --ws-origin",
            CloseReason::IdleTimeout => "idle for --idle-timeout",
            CloseReason::SlowDisconnect => "dropping for --slow-disconnect",
            CloseReason::LameDuck => "lame duck: server leaving",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::DrainTimeout => "drain timeout passed",
        }
    }
}

/// Log lines any client can cause as often as it likes, each kind at most
/// once a second, with a count of those left out: one warn line when a
/// client starts dropping, one info line when it catches up, one info line
/// when a WebSocket client breaks the protocol.
#[derive(Debug, Default)]
pub(crate) struct LogLimits {
    started: Throttle,
    caught_up: Throttle,
    protocol_errors: Throttle,
    tls_errors: Throttle,
    origins: Throttle,
}

/// What the shared code needs from the engine at one moment: the
/// counters of the thread it runs on, and the server's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cx<'a> {
    pub(crate) shard: &'a Shard,
    pub(crate) settings: &'a Settings,
    pub(crate) logs: &'a LogLimits,
}

/// What the engine does for a connection after an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing.
    None,
    /// Wake its writer: it has something to send.
    Wake,
    /// Its queue is full: have the queue handed to the kernel now, then
    /// offer the run again from line `.0`.
    Full(u32),
    /// Offer the rest to everyone else first, then wait until this
    /// connection has room or `until` passes, and offer the run again from
    /// line `at`.
    Hold {
        /// The end of the client's grace.
        until: Instant,
        /// The first line not taken.
        at: u32,
    },
    /// Close it.
    Close(CloseReason),
}

/// What handing a queue to the kernel did, for the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Turn {
    /// Why to close the connection, if it must be.
    pub(crate) close: Option<CloseReason>,
    /// Messages left the queue of a client someone may be waiting for.
    pub(crate) room: bool,
}

/// What a connection's writer does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// The connection is closed: nothing.
    Exit,
    /// Close the connection.
    Close(CloseReason),
    /// Nothing is queued: sleep until woken.
    Sleep,
    /// Wait for the core's next flush, or to be woken.
    Coalesce,
    /// Hand the queue to the kernel.
    Send,
    /// The kernel refused: wait until the socket takes more, or, during
    /// the drain, until `give_up`, then close it.
    Writable {
        /// When to stop waiting for it, if ever.
        give_up: Option<Instant>,
    },
}

/// What reading a TLS client's bytes came to.
#[derive(Debug)]
pub(crate) struct TlsInput {
    /// Plaintext, the end of the session, or a need for more ciphertext;
    /// an error is the client's (a broken record, a failed handshake).
    pub(crate) input: io::Result<tls::Input>,
    /// The TLS session has something to send (a handshake answer): the
    /// writer should look.
    pub(crate) wake: bool,
    /// The handshake has just completed.
    pub(crate) established: bool,
}

mod deliver;
mod host;
mod log;
mod read;
mod state;
mod write;

pub(crate) use deliver::{close, close_idle, deliver, finish};
pub(crate) use host::{Host, HostState, Limits, Link};
pub(crate) use read::read_loop;
pub(crate) use state::{Session, Slot};
pub(crate) use write::settled;
