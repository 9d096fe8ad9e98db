//! What a connection needs from its engine: [`Link`], its own socket, and
//! [`Host`], the place it lives (a core on `uring`, the whole runtime on
//! `tokio`), with the [`HostState`] both engines keep the same way.

use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{Cx, LogLimits, Session, Settings};
use crate::config::Config;
use crate::ops::metrics::Shard;
use crate::policy::admission::limits::Gate;
use crate::policy::codec::inbound::Inbound;
use crate::policy::run::Run;
use crate::policy::send::coalesce::Coalescer;
use crate::policy::send::patience::Patience;

/// An engine's glue for one connection's socket.
pub(crate) trait Link {
    /// Runs `f` on the connection's state.
    fn with<R>(&self, f: impl FnOnce(&mut Session) -> R) -> R;
    /// Where deliverers holding a message for this connection wait for
    /// room; whoever settles a send notifies it.
    fn room(&self) -> &Notify;
    /// Reads at most `max` bytes into `inbound`'s buffer.
    fn read(&self, inbound: &mut Inbound, max: usize) -> impl Future<Output = io::Result<usize>>;
    /// Shuts the socket down, so any read or write in flight completes.
    fn shutdown(&self, how: Shutdown);
}

/// An engine's glue for the place its connections live: a core on
/// `uring`, the whole runtime on `tokio`.
///
/// An engine writes what differs: how a run reaches the other cores, how
/// queues reach the kernel, where its connections are listed, and the
/// three flags read on every read or send, kept in whatever is cheapest on
/// its threads (`Cell` on a `uring` core). The rest is written here, once,
/// against [`HostState`].
pub(crate) trait Host {
    /// The engine's connection.
    type Link: Link;
    /// What the place keeps the same way on both engines.
    fn state(&self) -> &HostState;
    /// The counters of the running thread.
    fn shard(&self) -> &Shard;
    /// Takes a run of a local client's lines to every connection of the
    /// server (and to the cluster), telling every other core (and the
    /// cluster) before it waits for anyone.
    fn publish(&self, run: &Run) -> impl Future<Output = ()>;
    /// The connection has something to send, or a state its writer must
    /// look at: the engine sees to it soon.
    fn wake(&self, link: &Self::Link);
    /// Hands the queues of `conns[i]`, for `i` in `which` (each at most
    /// once), to the kernel now and settles the kernel's answers (see
    /// [`Action::Full`](super::Action::Full)); one whose socket refuses
    /// gets a wait for writability.
    fn send_now<L: Deref<Target = Self::Link>>(
        &self,
        conns: &[L],
        which: impl Iterator<Item = usize>,
    );
    /// Removes a closed connection from the host, and gives back the slot
    /// it held ([`Session::slot`]).
    fn forget(&self, link: &Self::Link);
    /// Shutdown began: readers stop after their current read.
    fn stopping(&self) -> bool;
    /// The drain (shutdown, once the readers stopped): nothing more will
    /// be delivered, since when; writers close once their queues are out.
    fn draining(&self) -> Option<Instant>;
    /// The current idle tick.
    fn tick(&self) -> u64;

    /// The counters of the running thread, and the settings.
    fn cx(&self) -> Cx<'_> {
        let state = self.state();
        Cx {
            shard: self.shard(),
            settings: &state.settings,
            logs: &state.limits.logs,
        }
    }

    /// A WebSocket or TLS client completed its handshake: takes a
    /// `--max-clients` slot for it and gives back its handshake slot, or,
    /// when every slot is taken, counts and reports the rejection and
    /// returns false.
    fn admit_client(&self, peer: SocketAddr) -> bool {
        let limits = &self.state().limits;
        let admitted = limits.clients.admit_handshaken(peer, self.shard());
        if admitted {
            limits.handshakes.hand_over();
        }
        admitted
    }

    /// A reader task ended.
    fn reader_exited(&self) {
        let state = self.state();
        state.readers.fetch_sub(1, Ordering::SeqCst);
        state.changed.notify_waiters();
    }

    /// The host's write pacer.
    fn coalescer(&self) -> &Coalescer {
        &self.state().coalescer
    }

    /// How long the host's deliverers may still wait for held messages.
    fn patience(&self) -> &Patience {
        &self.state().patience
    }
}

/// What every place of a server shares: its client slots and its log
/// throttles.
#[derive(Debug)]
pub(crate) struct Limits {
    /// `--max-clients` (and `--max-clients-per-ip`).
    pub(crate) clients: Gate,
    /// WebSocket and TLS connections before their handshake completed.
    pub(crate) handshakes: Gate,
    pub(crate) logs: LogLimits,
}

impl Limits {
    pub(crate) fn new(config: &Config) -> Self {
        let clients = Gate::new(config.max_clients, config.max_clients_per_ip);
        Self {
            handshakes: Gate::for_handshakes(&clients),
            clients,
            logs: LogLimits::default(),
        }
    }
}

/// What a place keeps the same way on both engines: its settings, its
/// pacer and patience, the count of connections it accepted (behind
/// their ids) and of its readers.
///
/// The counters here change once per connection, never per line: they
/// are atomics on both engines.
#[derive(Debug)]
pub(crate) struct HostState {
    /// This core (`uring`), or 0 (`tokio`): shown in `/clients` and logs.
    pub(crate) core: usize,
    /// How many places the server has: ids go `core`, `core + cores`, …,
    /// so that they are unique across the server.
    cores: usize,
    /// Shared by every place of the server.
    pub(crate) limits: Arc<Limits>,
    pub(crate) settings: Settings,
    /// `--idle-timeout`.
    pub(crate) idle_timeout: Option<Duration>,
    /// `--lame-duck`.
    pub(crate) lame_duck: Option<Duration>,
    /// Holds the place's writes back briefly while it is busy.
    pub(crate) coalescer: Coalescer,
    /// How long the place may still wait for clients that are behind.
    pub(crate) patience: Patience,
    /// Connections accepted so far.
    accepted: AtomicU64,
    /// Reader tasks still running.
    readers: AtomicUsize,
    /// Wakes whoever waits for the place to change: a reader exited, or a
    /// connection closed.
    pub(crate) changed: Notify,
}

impl HostState {
    /// The state of place `core` of `cores`.
    pub(crate) fn new(
        core: usize,
        cores: usize,
        limits: &Arc<Limits>,
        config: &Config,
        coalescer: Coalescer,
        patience: Patience,
    ) -> Self {
        Self {
            core,
            cores,
            limits: Arc::clone(limits),
            settings: config.session_settings(),
            idle_timeout: config.idle_timeout,
            lame_duck: config.lame_duck,
            coalescer,
            patience,
            accepted: AtomicU64::new(0),
            readers: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    /// A new connection's id, unique across the server.
    pub(crate) fn next_id(&self) -> u64 {
        let seq = self.accepted.fetch_add(1, Ordering::Relaxed);
        seq * self.cores as u64 + self.core as u64
    }

    /// A reader task began.
    pub(crate) fn reader_started(&self) {
        self.readers.fetch_add(1, Ordering::SeqCst);
    }

    /// Reader tasks still running.
    pub(crate) fn readers(&self) -> usize {
        self.readers.load(Ordering::SeqCst)
    }
}
