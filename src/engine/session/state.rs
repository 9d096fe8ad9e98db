//! A connection's state, [`Session`], and every change to it. Its fields
//! are private to this module (this file and its sending side, `send`):
//! the reader, the deliverer and the engines change it only through the
//! methods here. What goes out is counted in one place,
//! [`Session::account`], from the queue's [`Outcome`]s.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use super::{Action, CloseReason, Cx, Settings, TlsInput};
use crate::ops::clients::{ClientInfo, Transport};
use crate::policy::run::{Kind, Run};
use crate::policy::send::outbound::{Change, Outbound, Outcome, Sent, Step};
use crate::policy::send::tls::{self, Tls};

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
    /// Where a connection the server is closing stands (see [`LINGER`](super::LINGER)).
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
/// [`LINGER`](super::LINGER) passes, and whichever comes last closes the connection.
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

    /// Its reader read at `now` (`tick`) and is about to publish what it
    /// read. True if the connection was closed meanwhile: the reader stops.
    pub(super) fn publishing(&mut self, now: Instant, tick: u64) -> bool {
        self.last_read = now;
        self.last_active = tick;
        self.publishing = true;
        self.closed
    }

    /// Its reader published `msgs` messages of `bytes` at `tick`.
    pub(super) fn published(&mut self, tick: u64, msgs: u64, bytes: u64) {
        self.last_active = tick;
        self.publishing = false;
        self.msgs_in += msgs;
        self.bytes_in += bytes;
    }

    /// Closed: its reader and writer stop.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// The core it was accepted on.
    pub(crate) fn core(&self) -> usize {
        self.core
    }

    /// The messages its queue holds at most (`--queue`).
    pub(crate) fn queue_capacity(&self) -> usize {
        self.out.capacity()
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
        let outcome = self
            .out
            .offer(bytes, run.lines.saturating_sub(skip), kind, Instant::now);
        let at = skip + outcome.took;
        match self.account(outcome, cx) {
            Ok(Step::Wake) => Action::Wake,
            Ok(Step::SendNow) => Action::Full(at),
            Ok(Step::Hold { until }) => Action::Hold { until, at },
            Ok(_) => Action::None,
            Err(reason) => Action::Close(reason),
        }
    }

    /// Counts and logs what `outcome` of a call on the queue says
    /// happened: the one place the counts of what goes out, and of slow
    /// episodes, change. Returns what comes next, or why the connection
    /// closes.
    fn account(&mut self, outcome: Outcome, cx: &Cx<'_>) -> Result<Step, CloseReason> {
        let Outcome {
            dropped,
            sent,
            episode,
            next,
            ..
        } = outcome;
        if dropped > 0 {
            cx.shard.dropped(dropped);
            self.dropped += u64::from(dropped);
        }
        if sent.messages > 0 || sent.bytes > 0 {
            self.sent += sent.messages as u64;
            self.bytes_out += sent.bytes as u64;
            cx.shard.sent(sent.messages, sent.bytes, sent.sends);
        }
        if sent.own_bytes > 0 {
            cx.shard.own_sent(sent.own_bytes);
        }
        match episode {
            None => {}
            Some(Change::Started) => self.slow_started(cx),
            Some(Change::CaughtUp(episode)) => self.caught_up(episode, cx),
            Some(Change::Cleared(_)) => cx.shard.slow_ended(),
        }
        if dropped > 0
            && let Some(limit) = cx.settings.slow_disconnect
            && self
                .out
                .episode()
                .is_some_and(|e| e.since.elapsed() >= limit)
        {
            cx.shard.slow_disconnected();
            return Err(CloseReason::SlowDisconnect);
        }
        match next {
            Step::Failed { kind, os } => {
                let error = os.map_or_else(|| io::Error::from(kind), io::Error::from_raw_os_error);
                tracing::debug!(conn = self.id, peer = %self.peer, %error, "send failed");
                Err(CloseReason::WriteError)
            }
            Step::OwnBacklog => Err(CloseReason::OwnBacklog),
            next => Ok(next),
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
    /// [`OWN_BACKLOG`](crate::policy::send::outbound::OWN_BACKLOG) of them, the
    /// client is closed.
    pub(crate) fn send_own(&mut self, bytes: Bytes) -> Action {
        if self.closed {
            return Action::None;
        }
        let outcome = self.out.push_own(bytes);
        own_action(outcome)
    }

    /// Queues the pong for a ping, replacing one not yet sent.
    pub(crate) fn pong(&mut self, frame: Bytes) -> Action {
        if self.closed {
            return Action::None;
        }
        let outcome = self.out.push_pong(frame);
        own_action(outcome)
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
    /// [`LINGER`](super::LINGER)).
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
    pub(super) fn finish_writing(&mut self) -> bool {
        if self.closed || self.linger != Linger::Reading {
            return false;
        }
        self.linger = Linger::WriteShut;
        true
    }

    /// The reader has read all it will of a connection being closed. True
    /// if the answer is out (or the connection closed): the reader closes
    /// it now; else the writer does once the answer is out.
    pub(super) fn input_done(&mut self) -> bool {
        if self.closed || self.linger == Linger::WriteShut {
            return true;
        }
        self.linger = Linger::InputDone;
        false
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
    pub(super) fn has_room(&self) -> bool {
        self.closed || self.out.has_room()
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
        let cleared = self.out.clear();
        // Counts the end of a slow episode it was in (not as a catch-up);
        // there is nothing to do next.
        let _ = self.account(cleared, cx);
        true
    }
}

/// What queueing the server's own bytes asks of the engine. There is
/// nothing to count yet: they are counted, in [`Session::account`], once
/// the kernel takes them.
fn own_action(outcome: Outcome) -> Action {
    debug_assert!(
        outcome.sent == Sent::default() && outcome.dropped == 0 && outcome.episode.is_none(),
        "queueing own bytes counts nothing: {outcome:?}"
    );
    match outcome.next {
        Step::OwnBacklog => Action::Close(CloseReason::OwnBacklog),
        Step::Wake => Action::Wake,
        _ => Action::None,
    }
}

mod send;
#[cfg(test)]
mod tests;
