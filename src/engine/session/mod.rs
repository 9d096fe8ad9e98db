//! One client connection, as both engines run it.
//!
//! A message's whole way through a server is in this folder:
//!
//! 1. [`read_loop`] (`read.rs`) reads into the connection's
//!    [`Inbound`](crate::policy::inbound::Inbound) buffer and splits
//!    complete lines off it as runs (a WebSocket client's frames first
//!    become lines);
//! 2. [`Host::publish`] (the engine) takes each run to every core;
//! 3. [`deliver`] (`deliver.rs`) offers runs to every connection of a
//!    core, whose [`Session`] and [`Outbound`] (here) decide: queue it, have
//!    the queue handed to the kernel at once, hold it a moment, or drop it;
//! 4. the engine hands what is queued to the kernel (one send per
//!    connection at a time on `tokio`, every due connection of a core in one
//!    submission on `uring`) and reports the kernel's answer to
//!    [`Session::sent`] or [`Session::flush`]; `write.rs` has what both do
//!    with that answer.
//!
//! The decisions live in [`Outbound`] and
//! [`Inbound`](crate::policy::inbound::Inbound), with no I/O. An engine
//! supplies only its runtime glue (`host.rs`): [`Link`] (how to read and
//! shut down one socket) and [`Host`] (how a run reaches the other cores,
//! and how queues reach the kernel).

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::ops::clients::{ClientInfo, Transport};
use crate::ops::metrics::Shard;
use crate::policy::limits::Throttle;
use crate::policy::outbound::{Episode, Flushed, Offer, Outbound, SendBuf, Sent};
use crate::policy::run::{Kind, Run};
use crate::policy::tls::{self, Tls};

/// What every connection of a server is told.
#[derive(Debug, Clone)]
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
    /// `--handshake-timeout`: a WebSocket client's opening handshake must
    /// arrive whole within this long of its connect.
    pub(crate) handshake_timeout: Duration,
    /// `--ws-origin`: which pages may open a WebSocket.
    pub(crate) origins: std::sync::Arc<crate::policy::websocket::Origins>,
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
    /// [`OWN_BACKLOG`](crate::policy::outbound::OWN_BACKLOG).
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
    /// Bytes of the messages handed to the kernel, over its life.
    bytes_out: u64,
    /// Complete messages received, and their bytes, over its life: the
    /// reader adds them up once per read.
    msgs_in: u64,
    bytes_in: u64,
    /// When it last sent anything (a read returned bytes).
    last_read: Instant,
    /// The connection's slot in its host's roster.
    key: usize,
    out: Outbound,
    closed: bool,
    /// The host's idle tick when the client last sent something.
    last_active: u64,
    /// The reader is publishing: the server is not reading from the client
    /// right now, so it cannot count as idle.
    publishing: bool,
    /// Since when the socket has taken nothing, while the kernel refuses.
    stalled_since: Option<Instant>,
    /// Where a connection the server is closing stands (see [`LINGER`]).
    linger: Linger,
    /// Which limit the connection counts against.
    slot: Slot,
    /// A TLS client's session: what the queue holds is sealed on its way
    /// to the kernel.
    tls: Option<Box<Tls>>,
}

/// Which limit a connection counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// `--max-clients`: a line client, or a WebSocket client past its
    /// handshake.
    Client,
    /// The pending handshakes' own bound: a TLS or WebSocket connection
    /// before its handshake completed (or one answered with plain HTTP).
    Handshake,
}

/// A connection the server closes after answering it: the writer shuts
/// the socket's write side once the answer is out, the reader reads and
/// drops what the client still sends until it closes its side or
/// [`LINGER`] passes, and whichever comes last closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Linger {
    /// Not closing, or closing without lingering.
    No,
    /// The answer is on its way; the reader reads and drops.
    Reading,
    /// The answer is out and the write side shut; the reader closes.
    WriteShut,
    /// The reader is done; the writer closes once the answer is out.
    InputDone,
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
    Wait {
        /// When to stop waiting for it, if ever.
        give_up: Option<Instant>,
    },
}

impl Session {
    /// A new connection, active at `tick`; `tls` if it came to a TLS
    /// listener. A TLS or WebSocket client takes messages, and a
    /// `--max-clients` slot, once its handshake completed.
    pub(crate) fn new(
        id: u64,
        peer: SocketAddr,
        core: usize,
        transport: Transport,
        tls: Option<Tls>,
        settings: &Settings,
        tick: u64,
    ) -> Self {
        let plain_lines = transport == Transport::Tcp && tls.is_none();
        let now = Instant::now();
        Self {
            id,
            peer,
            core,
            transport,
            open: plain_lines,
            closing: None,
            connected: now,
            sent: 0,
            dropped: 0,
            bytes_out: 0,
            msgs_in: 0,
            bytes_in: 0,
            last_read: now,
            key: usize::MAX,
            out: Outbound::new(settings.queue, settings.grace),
            closed: false,
            last_active: tick,
            publishing: false,
            stalled_since: None,
            linger: Linger::No,
            slot: if plain_lines {
                Slot::Client
            } else {
                Slot::Handshake
            },
            tls: tls.map(Box::new),
        }
    }

    /// True for a client of a TLS listener.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// True while something waits to be sent: queued, or (TLS) sealed or
    /// to be written by the TLS session.
    fn has_output(&self) -> bool {
        !self.out.is_empty() || self.tls.as_ref().is_some_and(|t| t.has_output())
    }

    /// Which limit the connection counts against now.
    pub(crate) fn slot(&self) -> Slot {
        self.slot
    }

    pub(crate) fn key(&self) -> usize {
        self.key
    }

    /// The connection's id, as logs and `/clients` show it.
    pub(crate) fn id(&self) -> u64 {
        self.id
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

    /// Offers `run` from its line `skip` on; `framed` is the run as
    /// WebSocket frames, which a WebSocket client takes instead (the
    /// deliverer builds it once for all of them).
    pub(crate) fn offer(
        &mut self,
        run: &Run,
        skip: u32,
        framed: Option<&Bytes>,
        cx: &Cx<'_>,
    ) -> Action {
        if self.closed || !self.open || self.closing.is_some() {
            return Action::None;
        }
        let (bytes, kind) = match (self.transport, framed) {
            (Transport::Websocket, Some(frames)) => (frames, Kind::Frames),
            _ => (&run.bytes, Kind::Lines),
        };
        let cut;
        let bytes = if skip == 0 {
            bytes
        } else {
            cut = bytes.slice(kind.offset_of(bytes, skip)..);
            &cut
        };
        let offer = self
            .out
            .offer(bytes, run.lines.saturating_sub(skip), kind, Instant::now);
        match offer {
            Offer::Queued { wake: true } => Action::Wake,
            Offer::Queued { wake: false } => Action::None,
            Offer::Full { took } => Action::Full(skip + took),
            Offer::Hold { until, took } => Action::Hold {
                until,
                at: skip + took,
            },
            Offer::Dropped {
                started, dropped, ..
            } => {
                cx.shard.dropped(dropped);
                self.dropped += u64::from(dropped);
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
                Action::None
            }
        }
    }

    fn count_sent(&mut self, sent: Sent, cx: &Cx<'_>) {
        if sent.messages > 0 || sent.bytes > 0 {
            self.sent += sent.messages as u64;
            self.bytes_out += sent.bytes as u64;
            cx.shard.sent(sent.messages, sent.bytes, sent.sends);
        }
        if sent.own_bytes > 0 {
            cx.shard.own_sent(sent.own_bytes);
        }
    }

    /// How the client is doing, for `/clients`.
    pub(crate) fn info(&self) -> ClientInfo {
        ClientInfo {
            id: self.id,
            peer: self.peer,
            core: self.core,
            transport: self.transport,
            tls: self.tls.is_some(),
            connected_secs: self.connected.elapsed().as_secs_f64(),
            idle_secs: self.last_read.elapsed().as_secs_f64(),
            queued: self.out.len() + self.tls.as_ref().map_or(0, |t| t.sealed()),
            msgs_in: self.msgs_in,
            bytes_in: self.bytes_in,
            sent: self.sent,
            bytes_out: self.bytes_out,
            dropped: self.dropped,
            slow: self.out.episode().is_some(),
        }
    }

    /// Queues `bytes` the server itself sends (a handshake answer, a
    /// close), whatever the allowance of messages. Past
    /// [`OWN_BACKLOG`](crate::policy::outbound::OWN_BACKLOG) of them, the
    /// client is closed.
    pub(crate) fn send_own(&mut self, bytes: Bytes) -> Action {
        if self.closed {
            return Action::None;
        }
        let was_empty = self.out.is_empty();
        let within = self.out.push_own(bytes);
        self.queued_own(was_empty, within)
    }

    /// Queues the pong for a ping, replacing one not yet sent.
    pub(crate) fn pong(&mut self, frame: Bytes) -> Action {
        if self.closed {
            return Action::None;
        }
        let was_empty = self.out.is_empty();
        let within = self.out.push_pong(frame);
        self.queued_own(was_empty, within)
    }

    fn queued_own(&self, was_empty: bool, within: bool) -> Action {
        if !within {
            Action::Close(CloseReason::OwnBacklog)
        } else if was_empty && !self.out.is_blocked() {
            Action::Wake
        } else {
            Action::None
        }
    }

    /// The WebSocket handshake is done: the client takes messages now,
    /// and counts against `--max-clients`.
    pub(crate) fn open(&mut self, cx: &Cx<'_>) {
        self.open = true;
        if self.slot == Slot::Handshake {
            cx.shard.handshake_ended();
        }
        self.slot = Slot::Client;
    }

    /// Closes once what is queued has gone out, taking no more messages.
    /// `linger`: the client is sent an answer it should get whole (see
    /// [`LINGER`]).
    pub(crate) fn close_when_sent(&mut self, reason: CloseReason, linger: bool) {
        if self.closing.is_none() {
            self.closing = Some(reason);
            if linger {
                self.linger = Linger::Reading;
            }
        }
    }

    /// The writer has sent everything before a close. True if the reader
    /// is still reading what the client sends: the writer shuts the write
    /// side and leaves the close to the reader.
    fn finish_writing(&mut self) -> bool {
        if self.closed || self.linger != Linger::Reading {
            return false;
        }
        self.linger = Linger::WriteShut;
        true
    }

    /// The reader has read all it will of a connection being closed. True
    /// if the answer is out (or the connection closed): the reader closes
    /// it now; else the writer does once the answer is out.
    fn input_done(&mut self) -> bool {
        if self.closed || self.linger == Linger::WriteShut {
            return true;
        }
        self.linger = Linger::InputDone;
        false
    }

    /// Logs that the client broke the protocol, at most once a second.
    /// Returns whether it logged.
    pub(crate) fn report_protocol_error(&self, why: &str, cx: &Cx<'_>) -> bool {
        let Some(suppressed) = cx.logs.protocol_errors.allow() else {
            return false;
        };
        tracing::info!(
            conn = self.id,
            peer = %self.peer,
            why,
            also_broke_the_protocol_since_last_line = suppressed,
            "websocket client broke the protocol; closing it"
        );
        true
    }

    /// Counts a failed TLS session, and logs it at most once a second.
    pub(crate) fn report_tls_error(&self, error: &io::Error, cx: &Cx<'_>) {
        cx.shard.tls_error();
        let Some(suppressed) = cx.logs.tls_errors.allow() else {
            return;
        };
        tracing::info!(
            conn = self.id,
            peer = %self.peer,
            %error,
            also_failed_since_last_line = suppressed,
            "tls session failed; closing the connection"
        );
    }

    /// Logs, at most once a second, a WebSocket handshake refused for the
    /// page's `origin`. True if it did.
    pub(crate) fn report_forbidden_origin(&self, origin: &str, cx: &Cx<'_>) -> bool {
        let Some(suppressed) = cx.logs.origins.allow() else {
            return false;
        };
        tracing::info!(
            conn = self.id,
            peer = %self.peer,
            origin,
            also_refused_since_last_line = suppressed,
            "websocket handshake from a page --ws-origin does not allow: answered 403"
        );
        true
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// How the client speaks.
    pub(crate) fn transport(&self) -> Transport {
        self.transport
    }

    /// True when a held message can be offered again.
    fn has_room(&self) -> bool {
        self.closed || self.out.has_room()
    }

    /// What the writer should do next. `flushing`: since when the server
    /// has been shutting down with nothing more to offer. `coalesce` says
    /// whether a short queue should wait for the core's next flush.
    pub(crate) fn next(
        &self,
        flushing: Option<Instant>,
        cx: &Cx<'_>,
        coalesce: impl FnOnce(&Outbound) -> bool,
    ) -> Next {
        if self.closed || self.linger == Linger::WriteShut {
            return Next::Exit;
        }
        if self.out.is_blocked() {
            let Some(began) = flushing else {
                return Next::Wait { give_up: None };
            };
            // A client that is dropping anyway does not hold up shutdown,
            // nor does one whose socket takes nothing for a while.
            if self.out.episode().is_some() {
                return Next::Close(CloseReason::Shutdown);
            }
            let since = self.stalled_since.map_or(began, |s| s.max(began));
            let give_up = since + cx.settings.drain_stall;
            if Instant::now() >= give_up {
                return Next::Close(CloseReason::Shutdown);
            }
            return Next::Wait {
                give_up: Some(give_up),
            };
        }
        if !self.has_output() {
            return match (self.closing, flushing) {
                (Some(reason), _) => Next::Close(reason),
                (None, Some(_)) => Next::Close(CloseReason::Shutdown),
                (None, None) => Next::Sleep,
            };
        }
        if coalesce(&self.out) {
            Next::Coalesce
        } else {
            Next::Send
        }
    }

    /// Hands the queue to the kernel through `send`, a non-blocking
    /// vectored send that completes at once.
    pub(crate) fn flush(
        &mut self,
        mut send: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
        cx: &Cx<'_>,
    ) -> Turn {
        if self.tls.is_none() {
            let behind = self.out.is_behind();
            let mut sent = Sent::default();
            let flushed = self.out.flush(send, &mut sent);
            let took = sent.bytes + sent.own_bytes > 0;
            return self.settle(flushed, sent, took, behind, cx);
        }
        // TLS: one record at a time, until nothing is left or the kernel
        // refuses.
        let mut room = false;
        loop {
            let mut wire = Wire::default();
            let offered = self.fill(&mut wire);
            let Some(wire) = wire.0.filter(|_| offered > 0) else {
                return Turn { close: None, room };
            };
            let turn = self.sent(send(&[IoSlice::new(&wire)]), offered, cx);
            room |= turn.room;
            if turn.close.is_some() || self.out.is_blocked() {
                return Turn { room, ..turn };
            }
        }
    }

    /// Puts what the next send hands the kernel into `out`; returns how
    /// many bytes that is. Report the kernel's answer with
    /// [`sent`](Self::sent). For a TLS client, this is where the queue is
    /// sealed, a record at a time.
    pub(crate) fn fill<'a>(&'a mut self, out: &mut impl SendBuf<'a>) -> usize {
        if self.closed || self.out.is_blocked() {
            return 0;
        }
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.seal(&mut self.out);
        }
        let this: &'a Session = self;
        match this.tls.as_deref() {
            Some(tls) => tls.fill(out),
            None => this.out.fill(out),
        }
    }

    /// The kernel's answer to a send of the `offered` bytes
    /// [`fill`](Self::fill) gave.
    pub(crate) fn sent(&mut self, result: io::Result<usize>, offered: usize, cx: &Cx<'_>) -> Turn {
        let behind = self.out.is_behind();
        let mut sent = Sent::default();
        let Some(tls) = self.tls.as_deref_mut() else {
            let flushed = self.out.sent(result, offered, &mut sent);
            let took = sent.bytes + sent.own_bytes > 0;
            return self.settle(flushed, sent, took, behind, cx);
        };
        // Sealing took messages off the queue: room for a held line.
        let room = behind && tls.sealed_since();
        let (flushed, took) = match result {
            Ok(n) => match tls.took(n) {
                // The kernel took only part of the record: its buffer is
                // full.
                None => {
                    let refused = Err(io::ErrorKind::WouldBlock.into());
                    (self.out.sent(refused, 0, &mut sent), n > 0)
                }
                Some(carried) => {
                    sent = carried.sent;
                    let flushed = if self.has_output() {
                        Flushed::More
                    } else {
                        if let Some(tls) = self.tls.as_deref_mut() {
                            tls.rest();
                        }
                        // The kernel has taken everything: caught up.
                        Flushed::Drained {
                            caught_up: self.out.drained(),
                        }
                    };
                    (flushed, true)
                }
            },
            Err(e) => (self.out.sent(Err(e), 0, &mut sent), false),
        };
        let turn = self.settle(flushed, sent, took, behind, cx);
        Turn {
            room: turn.room || room,
            ..turn
        }
    }

    fn settle(
        &mut self,
        flushed: Flushed,
        sent: Sent,
        took: bool,
        behind: bool,
        cx: &Cx<'_>,
    ) -> Turn {
        self.count_sent(sent, cx);
        let close = match flushed {
            Flushed::Drained { caught_up } => {
                if let Some(episode) = caught_up {
                    self.caught_up(episode, cx);
                }
                self.stalled_since = None;
                None
            }
            Flushed::More => {
                self.stalled_since = None;
                None
            }
            Flushed::Blocked => {
                if took || self.stalled_since.is_none() {
                    self.stalled_since = Some(Instant::now());
                }
                None
            }
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

    /// Decrypts what a TLS client sent, moving up to `max` bytes of
    /// plaintext onto `plain` (see [`Tls::read`]).
    pub(crate) fn tls_input(
        &mut self,
        cipher: &mut bytes::BytesMut,
        plain: &mut bytes::BytesMut,
        max: usize,
    ) -> TlsInput {
        let Some(tls) = self.tls.as_deref_mut() else {
            return TlsInput {
                input: Ok(tls::Input::Need),
                wake: false,
                established: false,
            };
        };
        let input = tls.read(cipher, plain, max);
        TlsInput {
            established: input.is_ok() && tls.just_established(),
            wake: tls.has_output() && !self.out.is_blocked() && !self.closed,
            input,
        }
    }

    /// The socket is writable again: the queue may go to the kernel.
    pub(crate) fn writable(&mut self) {
        self.out.unblock();
    }

    /// True while the kernel refuses and the engine waits for the socket.
    pub(crate) fn is_blocked(&self) -> bool {
        self.out.is_blocked()
    }

    /// Marks the connection closed and drops what is queued. False if it
    /// already was closed.
    pub(crate) fn close(&mut self, cx: &Cx<'_>) -> bool {
        if std::mem::replace(&mut self.closed, true) {
            return false;
        }
        if self.slot == Slot::Handshake {
            cx.shard.handshake_ended();
        }
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.clear();
        }
        if self.out.clear().is_some() {
            cx.shard.slow_ended();
        }
        true
    }

    fn slow_started(&self, cx: &Cx<'_>) {
        cx.shard.slow_started();
        if let Some(suppressed) = cx.logs.started.allow() {
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
        if let Some(suppressed) = cx.logs.caught_up.allow() {
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

/// A [`SendBuf`] that keeps a handle to the one piece a TLS client's
/// [`Session::fill`] gives.
#[derive(Default)]
struct Wire(Option<Bytes>);

impl SendBuf<'_> for Wire {
    fn copy(&mut self, part: &[u8]) {
        self.0 = Some(Bytes::copy_from_slice(part));
    }

    fn refer(&mut self, bytes: &Bytes, start: usize) {
        self.0 = Some(bytes.slice(start..));
    }
}

mod deliver;
mod host;
mod read;
mod write;

pub(crate) use deliver::{close, close_idle, deliver, finish};
pub(crate) use host::{Host, HostState, Limits, Link};
pub(crate) use read::read_loop;
pub(crate) use write::settled;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::metrics::Metrics;

    #[test]
    fn protocol_errors_are_logged_at_most_once_a_second() {
        let metrics = Metrics::new(1);
        let settings = crate::config::Config::default().session_settings();
        let logs = LogLimits::default();
        let cx = Cx {
            shard: metrics.shard(0),
            settings: &settings,
            logs: &logs,
        };
        let peer = "127.0.0.1:1".parse().expect("an address");
        let sessions: Vec<Session> = (0..100)
            .map(|id| Session::new(id, peer, 0, Transport::Websocket, None, &settings, 0))
            .collect();
        let logged = sessions
            .iter()
            .filter(|s| s.report_protocol_error("a test", &cx))
            .count();
        assert_eq!(logged, 1, "one line for a burst of 100");
    }

    /// Hands everything the session has to send to `client`, as a kernel
    /// that takes it all would.
    fn to_client(s: &mut Session, client: &mut rustls::ClientConnection, cx: &Cx<'_>) {
        loop {
            let mut wire = Wire::default();
            let n = s.fill(&mut wire);
            let Some(bytes) = wire.0.filter(|_| n > 0) else {
                return;
            };
            client.read_tls(&mut &bytes[..]).expect("client reads");
            client.process_new_packets().expect("good records");
            s.sent(Ok(n), n, cx);
        }
    }

    #[test]
    fn a_tls_client_is_full_only_once_the_kernel_refuses_its_record() {
        use bytes::BufMut as _;

        let metrics = Metrics::new(1);
        let mut settings = crate::config::Config::default().session_settings();
        settings.queue = 2;
        let logs = LogLimits::default();
        let cx = Cx {
            shard: metrics.shard(0),
            settings: &settings,
            logs: &logs,
        };
        let cert = crate::policy::tls::testing::TestCert::new("session");
        let tls = cert.certs().accept().expect("a session");
        let peer = "127.0.0.1:1".parse().expect("an address");
        let mut s = Session::new(1, peer, 0, Transport::Tcp, Some(tls), &settings, 0);
        assert!(!s.open, "no messages before the handshake");
        assert_eq!(s.slot(), Slot::Handshake);
        // The handshake, as the engines drive it.
        let mut client = cert.client();
        for _ in 0..10 {
            let mut cipher = bytes::BytesMut::new();
            while client.wants_write() {
                client
                    .write_tls(&mut (&mut cipher).writer())
                    .expect("client writes");
            }
            let step = s.tls_input(&mut cipher, &mut bytes::BytesMut::new(), 4096);
            assert!(step.input.is_ok());
            if step.established {
                s.open(&cx);
            }
            to_client(&mut s, &mut client, &cx);
        }
        assert!(s.open && !client.is_handshaking());
        let sent_before = metrics.totals().sent;

        // Two messages sealed into a record: off the queue, still counted
        // as queued, not as sent.
        let run = Run::of(Bytes::from_static(b"one\ntwo\n"));
        assert_eq!(s.offer(&run, 0, None, &cx), Action::Wake);
        let mut wire = Wire::default();
        let n = s.fill(&mut wire);
        assert!(n > 8, "a record");
        assert_eq!(s.info().queued, 2);
        // The kernel takes part of it: the socket refuses, the session
        // waits for room.
        let record = wire.0.expect("a record");
        client
            .read_tls(&mut &record[..n / 2])
            .expect("client reads");
        let turn = s.sent(Ok(n / 2), n, &cx);
        assert_eq!(turn.close, None);
        assert!(s.is_blocked());
        assert_eq!(metrics.totals().sent, sent_before);
        // The queue has its own room: two more queue, the next is held
        // for the grace, as for a plain client whose kernel refused.
        let more = Run::of(Bytes::from_static(b"3\n4\n5\n"));
        match s.offer(&more, 0, None, &cx) {
            Action::Hold { at: 2, .. } => {}
            other => panic!("held at the third line, got {other:?}"),
        }
        s.end_grace();
        assert_eq!(s.offer(&more, 2, None, &cx), Action::None);
        assert_eq!(metrics.totals().dropped, 1);
        // The kernel takes the rest: the sealed messages count as sent,
        // and the queue follows.
        s.writable();
        let mut rest = Wire::default();
        let left = s.fill(&mut rest);
        assert_eq!(left, n - n / 2, "the rest of the same record");
        assert_eq!(rest.0.as_deref(), Some(&record[n / 2..]));
        client
            .read_tls(&mut &record[n / 2..])
            .expect("client reads");
        client.process_new_packets().expect("good records");
        s.sent(Ok(left), left, &cx);
        assert_eq!(metrics.totals().sent, sent_before + 2);
        to_client(&mut s, &mut client, &cx);
        assert_eq!(metrics.totals().sent, sent_before + 4);
        let mut got = Vec::new();
        let _ = std::io::Read::read_to_end(&mut client.reader(), &mut got);
        assert_eq!(got, b"one\ntwo\n3\n4\n");
    }

    /// A TLS session whose handshake is done, with `--queue 2`.
    fn tls_session(
        cert: &crate::policy::tls::testing::TestCert,
        settings: &Settings,
        cx: &Cx<'_>,
    ) -> (Session, rustls::ClientConnection) {
        use bytes::BufMut as _;
        let tls = cert.certs().accept().expect("a session");
        let peer = "127.0.0.1:1".parse().expect("an address");
        let mut s = Session::new(1, peer, 0, Transport::Tcp, Some(tls), settings, 0);
        let mut client = cert.client();
        for _ in 0..10 {
            let mut cipher = bytes::BytesMut::new();
            while client.wants_write() {
                client
                    .write_tls(&mut (&mut cipher).writer())
                    .expect("client writes");
            }
            if s.tls_input(&mut cipher, &mut bytes::BytesMut::new(), 4096)
                .established
            {
                s.open(cx);
            }
            to_client(&mut s, &mut client, cx);
        }
        assert!(s.open);
        (s, client)
    }

    /// Seals what is queued into a record and has the kernel take half of
    /// it; returns the record's length.
    fn seal_and_take_half(s: &mut Session, cx: &Cx<'_>) -> usize {
        let mut wire = Wire::default();
        let n = s.fill(&mut wire);
        assert!(n > 0, "a record");
        s.sent(Ok(n / 2), n, cx);
        assert!(s.is_blocked());
        n
    }

    #[test]
    fn a_slow_tls_client_catches_up_only_once_the_kernel_took_its_last_record() {
        let metrics = Metrics::new(1);
        let mut settings = crate::config::Config::default().session_settings();
        settings.queue = 2;
        let logs = LogLimits::default();
        let cx = Cx {
            shard: metrics.shard(0),
            settings: &settings,
            logs: &logs,
        };
        let cert = crate::policy::tls::testing::TestCert::new("slow-episode");
        let (mut s, _client) = tls_session(&cert, &settings, &cx);
        let lines = Run::of(Bytes::from_static(b"1\n2\n3\n"));
        // Two lines sealed, half taken; two more queued, the next held,
        // then dropped: a slow episode.
        s.offer(&Run::of(Bytes::from_static(b"a\nb\n")), 0, None, &cx);
        let first = seal_and_take_half(&mut s, &cx);
        assert!(matches!(
            s.offer(&lines, 0, None, &cx),
            Action::Hold { at: 2, .. }
        ));
        s.end_grace();
        s.offer(&lines, 2, None, &cx);
        assert_eq!(metrics.totals().slow_clients, 1);
        // The first record goes; the queue is sealed into a second one,
        // of which the kernel takes half: the client has not caught up.
        s.writable();
        let mut rest = Wire::default();
        let left = s.fill(&mut rest);
        s.sent(Ok(left), left, &cx);
        assert_eq!(left, first - first / 2);
        seal_and_take_half(&mut s, &cx);
        assert_eq!(s.info().queued, 2, "sealed, on their way");
        // Still slow: what comes now is dropped, and no second episode
        // begins.
        assert_eq!(s.offer(&lines, 0, None, &cx), Action::None);
        assert_eq!(metrics.totals().slow_clients, 1, "one episode");
        assert!(s.info().slow);
        // It leaves before the record went: its episode ends with it.
        s.close(&cx);
        assert_eq!(metrics.totals().slow_clients, 0);
    }
}
