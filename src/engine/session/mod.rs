//! One client connection, as both engines run it.
//!
//! A message's whole way through a server is in this folder:
//!
//! 1. [`read_loop`] (`read.rs`) reads into the connection's [`Inbound`]
//!    buffer and splits complete lines off it (a WebSocket client's frames
//!    first become lines);
//! 2. [`Host::publish`] (the engine) takes a read's lines to every core;
//! 3. [`deliver`] (`deliver.rs`) offers them to every connection of a core,
//!    whose [`Session`] and [`Outbound`] (here) decide: queue it, hand the
//!    queue to the kernel at once, hold it a moment, or drop it;
//! 4. [`write_loop`] (`write.rs`) hands what is queued to the kernel,
//!    coalescing while the core is busy, and waits for the socket when the
//!    kernel refuses.
//!
//! The decisions live in [`Outbound`] and [`Inbound`], with no I/O. An
//! engine supplies only its runtime glue: [`Link`] (how to read, send,
//! wait and wake for one socket) and [`Host`] (where its connections live
//! and how a line reaches the other cores).

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::ops::clients::{ClientInfo, Transport};
use crate::ops::metrics::Shard;
use crate::policy::coalesce::Coalescer;
use crate::policy::inbound::Inbound;
use crate::policy::limits::Throttle;
use crate::policy::outbound::{Episode, Flushed, Offer, Outbound, Sent};
use crate::policy::patience::Patience;
use crate::policy::websocket;

/// What every connection of a server is told.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// `--queue`.
    pub(crate) queue: usize,
    /// `--max-line`.
    pub(crate) max_line: usize,
    /// `--stall-timeout`: how long a deliverer may wait, per episode, for a
    /// client whose allowance is full.
    pub(crate) grace: Duration,
    /// `--slow-disconnect`.
    pub(crate) slow_disconnect: Option<Duration>,
    /// During the drain, a client whose socket takes nothing for this long
    /// is not reading: it is closed rather than waited for.
    pub(crate) drain_stall: Duration,
}

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
    /// A plain HTTP request on the `--ws` address was answered.
    Answered,
    /// The client sent nothing for `--idle-timeout`.
    IdleTimeout,
    /// The client dropped messages for `--slow-disconnect`.
    SlowDisconnect,
    /// Lame duck mode: clients are moved off before shutdown.
    LameDuck,
    /// Server shutdown, after flushing.
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
            CloseReason::Answered => "http request answered",
            CloseReason::IdleTimeout => "idle for --idle-timeout",
            CloseReason::SlowDisconnect => "dropping for --slow-disconnect",
            CloseReason::LameDuck => "lame duck: server leaving",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::DrainTimeout => "drain timeout passed",
        }
    }
}

/// Reports slow episodes: one warn line when a client starts dropping,
/// one info line when it catches up, each at most once a second.
#[derive(Debug, Default)]
pub(crate) struct SlowReport {
    started: Throttle,
    caught_up: Throttle,
}

/// What the shared code needs from the engine at one moment: the
/// counters of the thread it runs on, and the server's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cx<'a> {
    pub(crate) shard: &'a Shard,
    pub(crate) settings: &'a Settings,
    pub(crate) slow: &'a SlowReport,
}

/// The state of one connection, behind the engine's `RefCell` (uring) or
/// `Mutex` (tokio).
#[derive(Debug)]
pub(crate) struct Session {
    id: u64,
    peer: SocketAddr,
    core: usize,
    transport: Transport,
    /// Takes broadcast messages: a WebSocket client only once its
    /// handshake is done.
    open: bool,
    /// Close once everything queued has gone out (an HTTP answer, a
    /// WebSocket close); takes no more messages meanwhile.
    closing: Option<CloseReason>,
    connected: Instant,
    /// Messages handed to the kernel and dropped, over its life.
    sent: u64,
    dropped: u64,
    /// The connection's slot in its host's roster.
    key: usize,
    out: Outbound,
    closed: bool,
    /// The host's idle tick when the client last sent something.
    last_active: u64,
    /// The reader is publishing: the server is not reading from the client
    /// right now, so it cannot count as idle.
    publishing: bool,
}

/// What the engine does for a connection after an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing.
    None,
    /// Wake its writer.
    Wake,
    /// Offer it to everyone else first, then wait until this connection
    /// has room or the instant passes, and offer it again.
    Hold(Instant),
    /// Close it.
    Close(CloseReason),
}

/// What a writer's turn did, for the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Turn {
    /// Why to close the connection, if it must be.
    pub(crate) close: Option<CloseReason>,
    /// Messages left the queue of a client someone may be waiting for.
    pub(crate) room: bool,
}

/// What a writer does next.
#[derive(Debug)]
pub(crate) enum Next {
    /// The connection is closed: exit.
    Exit,
    /// Close the connection, then exit.
    Close(CloseReason),
    /// Nothing is queued: sleep until woken.
    Sleep,
    /// Wait for the core's next flush, or to be woken.
    Coalesce,
    /// Hand the queue to the kernel.
    Send,
    /// The kernel refused: wait until the socket takes more. The engine may
    /// hand it this rest of the front message itself.
    Wait(Bytes),
}

impl Session {
    /// A new connection, active at `tick`.
    pub(crate) fn new(
        id: u64,
        peer: SocketAddr,
        core: usize,
        transport: Transport,
        settings: &Settings,
        tick: u64,
    ) -> Self {
        Self {
            id,
            peer,
            core,
            transport,
            open: transport == Transport::Tcp,
            closing: None,
            connected: Instant::now(),
            sent: 0,
            dropped: 0,
            key: usize::MAX,
            out: Outbound::new(settings.queue, settings.grace),
            closed: false,
            last_active: tick,
            publishing: false,
        }
    }

    pub(crate) fn key(&self) -> usize {
        self.key
    }

    pub(crate) fn set_key(&mut self, key: usize) {
        self.key = key;
    }

    /// True when the client has sent nothing for more than `ticks` idle
    /// ticks, up to `tick`, and the server is not the one holding it up.
    pub(crate) fn is_idle(&self, tick: u64, ticks: u64) -> bool {
        !self.publishing && tick.saturating_sub(self.last_active) > ticks
    }

    /// The host cannot wait for this client any longer: its grace ends
    /// now, so the next offer drops unless it has room.
    pub(crate) fn end_grace(&mut self) {
        self.out.end_grace(Instant::now());
    }

    /// True if its grace is limited by the host's patience: it used one up
    /// before, and has not caught up within one since.
    pub(crate) fn ran_out_before(&self) -> bool {
        self.out.ran_out_before()
    }

    /// Offers the line `msg`, or its WebSocket frame (built into `frame`
    /// by the first WebSocket client to need it); `send` is the socket's
    /// non-blocking send.
    pub(crate) fn offer(
        &mut self,
        msg: &Bytes,
        frame: &mut Option<Bytes>,
        send: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
        cx: &Cx<'_>,
    ) -> Action {
        if self.closed || !self.open || self.closing.is_some() {
            return Action::None;
        }
        let msg = match self.transport {
            Transport::Tcp => msg,
            Transport::Websocket => frame.get_or_insert_with(|| websocket::frame_line(msg)),
        };
        let mut sent = Sent::default();
        let offer = self.out.offer(msg, send, Instant::now, &mut sent);
        self.count_sent(sent, cx);
        match offer {
            Offer::Queued { wake } => {
                if wake {
                    Action::Wake
                } else {
                    Action::None
                }
            }
            Offer::Dropped { started } => {
                cx.shard.dropped();
                self.dropped += 1;
                if started {
                    self.slow_started(cx);
                }
                if let Some(limit) = cx.settings.slow_disconnect
                    && self
                        .out
                        .episode()
                        .is_some_and(|e| e.since.elapsed() >= limit)
                {
                    cx.shard.slow_disconnected();
                    return Action::Close(CloseReason::SlowDisconnect);
                }
                if started {
                    // The writer learns that the socket refused.
                    Action::Wake
                } else {
                    Action::None
                }
            }
            Offer::Hold { until } => Action::Hold(until),
            Offer::Failed(e) => {
                tracing::debug!(conn = self.id, peer = %self.peer, error = %e, "send failed");
                Action::Close(CloseReason::WriteError)
            }
        }
    }

    fn count_sent(&mut self, sent: Sent, cx: &Cx<'_>) {
        if sent.sends > 0 {
            self.sent += sent.messages as u64;
            cx.shard.sent(sent.messages, sent.bytes, sent.sends);
        }
    }

    /// How the client is doing, for `/clients`.
    pub(crate) fn info(&self) -> ClientInfo {
        ClientInfo {
            id: self.id,
            peer: self.peer,
            core: self.core,
            transport: self.transport,
            connected_secs: self.connected.elapsed().as_secs_f64(),
            queued: self.out.len(),
            sent: self.sent,
            dropped: self.dropped,
            slow: self.out.episode().is_some(),
        }
    }

    /// Queues `bytes` the server itself sends (a handshake answer, a pong,
    /// a close), whatever the allowance: they are never dropped.
    pub(crate) fn send_own(&mut self, bytes: Bytes) -> Action {
        self.out.push_own(bytes);
        Action::Wake
    }

    /// The WebSocket handshake is done: the client takes messages now.
    pub(crate) fn open(&mut self) {
        self.open = true;
    }

    /// Closes once what is queued has gone out, taking no more messages.
    pub(crate) fn close_when_sent(&mut self, reason: CloseReason) {
        self.closing.get_or_insert(reason);
    }

    /// How the client speaks.
    pub(crate) fn transport(&self) -> Transport {
        self.transport
    }

    /// True when a held message can be offered again.
    fn has_room(&self) -> bool {
        self.closed || self.out.has_room()
    }

    /// What the writer should do next. `flushing`: the server is shutting
    /// down and nothing more will be offered. `coalesce` says whether a
    /// short queue should wait for the core's next flush.
    pub(crate) fn next(&self, flushing: bool, coalesce: impl FnOnce(&Outbound) -> bool) -> Next {
        if self.closed {
            return Next::Exit;
        }
        if self.out.is_blocked() {
            // A client that is dropping anyway does not hold up shutdown.
            if flushing && self.out.episode().is_some() {
                return Next::Close(CloseReason::Shutdown);
            }
            return self.out.front().map_or(Next::Send, Next::Wait);
        }
        if self.out.is_empty() {
            return match (self.closing, flushing) {
                (Some(reason), _) => Next::Close(reason),
                (None, true) => Next::Close(CloseReason::Shutdown),
                (None, false) => Next::Sleep,
            };
        }
        if coalesce(&self.out) {
            Next::Coalesce
        } else {
            Next::Send
        }
    }

    /// Hands the queue to the kernel through `send`.
    pub(crate) fn flush(
        &mut self,
        send: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
        cx: &Cx<'_>,
    ) -> Turn {
        let behind = self.out.is_behind();
        let mut sent = Sent::default();
        let flushed = self.out.flush(send, &mut sent);
        self.count_sent(sent, cx);
        let close = match flushed {
            Flushed::Drained { caught_up } => {
                if let Some(episode) = caught_up {
                    self.caught_up(episode, cx);
                }
                None
            }
            Flushed::Blocked => None,
            Flushed::Failed(e) => {
                tracing::debug!(conn = self.id, peer = %self.peer, error = %e, "send failed");
                Some(CloseReason::WriteError)
            }
        };
        Turn {
            close,
            room: behind && sent.messages > 0,
        }
    }

    /// The socket is writable again; the engine's own send of the front
    /// message, if it made one, took `result` bytes.
    pub(crate) fn writable(&mut self, result: io::Result<usize>, cx: &Cx<'_>) -> Turn {
        match result {
            Ok(n) => {
                let behind = self.out.is_behind();
                let mut sent = Sent::default();
                self.out.sent_async(n, &mut sent);
                self.count_sent(sent, cx);
                self.out.unblock();
                Turn {
                    close: None,
                    room: behind && sent.messages > 0,
                }
            }
            Err(e) => {
                tracing::debug!(conn = self.id, peer = %self.peer, error = %e, "send failed");
                Turn {
                    close: Some(CloseReason::WriteError),
                    room: false,
                }
            }
        }
    }

    /// Marks the connection closed and drops what is queued. False if it
    /// already was closed.
    pub(crate) fn close(&mut self, cx: &Cx<'_>) -> bool {
        if std::mem::replace(&mut self.closed, true) {
            return false;
        }
        if self.out.clear().is_some() {
            cx.shard.slow_ended();
        }
        true
    }

    fn slow_started(&self, cx: &Cx<'_>) {
        cx.shard.slow_started();
        if let Some(suppressed) = cx.slow.started.allow() {
            tracing::warn!(
                conn = self.id,
                peer = %self.peer,
                core = self.core,
                queue = self.out.capacity(),
                also_started_since_last_warning = suppressed,
                "slow client: its queue and socket buffer are full; dropping its messages until it catches up, other clients unaffected"
            );
        }
    }

    fn caught_up(&self, episode: Episode, cx: &Cx<'_>) {
        cx.shard.slow_ended();
        if let Some(suppressed) = cx.slow.caught_up.allow() {
            tracing::info!(
                conn = self.id,
                peer = %self.peer,
                core = self.core,
                lost = episode.dropped,
                slow_for = ?episode.since.elapsed(),
                also_caught_up_since_last_line = suppressed,
                "slow client caught up; it takes messages again"
            );
        }
    }
}

/// An engine's glue for one connection's socket.
pub(crate) trait Link {
    /// Runs `f` on the connection's state.
    fn with<R>(&self, f: impl FnOnce(&mut Session) -> R) -> R;
    /// Sends without blocking; see [`crate::sys::send::send_now`].
    fn try_send(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Wakes the writer (a permit is kept if it is not waiting).
    fn wake_writer(&self);
    /// Resolves when the writer is woken.
    fn writer_woken(&self) -> impl Future<Output = ()>;
    /// Where deliverers holding a message for this connection wait for
    /// room; the writer notifies it.
    fn room(&self) -> &Notify;
    /// Resolves once the socket takes more: the engine may hand `rest` to
    /// the kernel itself and report how much it took, or report 0.
    fn writable(&self, rest: Bytes) -> impl Future<Output = io::Result<usize>>;
    /// Reads at most `max` bytes into `inbound`'s buffer.
    fn read(&self, inbound: &mut Inbound, max: usize) -> impl Future<Output = io::Result<usize>>;
    /// Shuts the socket down, so any read or write in flight completes.
    fn shutdown(&self, how: Shutdown);
}

/// An engine's glue for the place its connections live: a core on
/// `uring`, the whole runtime on `tokio`.
pub(crate) trait Host {
    /// The engine's connection.
    type Link: Link;
    /// The counters of the running thread, and the settings.
    fn cx(&self) -> Cx<'_>;
    /// Takes a local client's lines, in order, to every connection of the
    /// server (and to the cluster).
    fn publish(&self, lines: &[Bytes]) -> impl Future<Output = ()>;
    /// A reader has published a read's lines: wake whoever they were sent to.
    fn lines_done(&self);
    /// Removes a closed connection from the host.
    fn forget(&self, link: &Self::Link);
    /// A reader task ended.
    fn reader_exited(&self);
    /// Shutdown began: readers stop after their current read.
    fn stopping(&self) -> bool;
    /// Nothing more will be delivered: writers close once flushed.
    fn flushing(&self) -> bool;
    /// The host's write pacer.
    fn coalescer(&self) -> &Coalescer;
    /// How long the host's deliverers may still wait for held messages.
    fn patience(&self) -> &Patience;
    /// The current idle tick.
    fn tick(&self) -> u64;
}
mod deliver;
mod read;
mod write;

pub(crate) use deliver::{close, close_idle, deliver};
pub(crate) use read::read_loop;
pub(crate) use write::write_loop;
