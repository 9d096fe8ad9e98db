//! The `uring` engine: one pinned OS thread per core, each running its own
//! tokio-uring runtime with its own SO_REUSEPORT listener.
//!
//! A core owns its connections outright (`Rc`, `RefCell`, no locks). A run
//! of lines read on core `i` is pushed onto the ring towards every other
//! core, whose drainer task delivers it there, and delivered to core `i`'s
//! connections. See [`super::mesh`]. Everything a connection does is in
//! [`super::session`], and a core's accepting and shutting down in
//! [`super::lifecycle`]; this module only runs them on io_uring.
//!
//! A core's sends go through its send ring ([`crate::sys::sendring`]):
//! deliveries mark connections due, and the core's flusher, once the tasks
//! that were ready with it have run, hands every due queue to the kernel in
//! one submission. A queue that fills mid-delivery goes at once, with the
//! others that filled in the same delivery. A socket that refuses gets a
//! poll for room on the same ring.

mod conn;
mod flush;

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_uring::net::{TcpListener, TcpStream};

use self::conn::Conn;
use self::flush::Flusher;
use super::lifecycle::{self, Place};
use super::mesh::{self, Doorbell, Inbox, Outbox, Pushed};
use super::session::{self, CloseReason, Host, HostState, Limits, Session};
use super::{Control, ExitWatch, Listening, Roster, failpoint};
use crate::config::Config;
use crate::error::Error;
use crate::ops::clients;
use crate::ops::cluster::{MeshLocal, MeshRemote};
use crate::ops::metrics::{Metrics, Shard};
use crate::policy::run::Run;
use crate::policy::send::coalesce::Coalescer;
use crate::policy::send::patience::Patience;
use crate::sys::net::URING_ENTRIES;
use crate::sys::sendring::SendRing;

/// Lines a drainer takes from one ring before looking at the next, and
/// before the core's other tasks run: the flusher then sends what the
/// batch queued in one go (docs/decisions/0026).
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub))]
pub const RING_BATCH: usize = 256;

/// State every core sees: how many cores have stopped reading.
#[derive(Debug)]
struct Shared {
    cores: usize,
    quiet: AtomicUsize,
    quiet_bell: Doorbell,
}

/// Starts one thread per listener. Returns once every runtime is up, or the
/// first error.
pub(crate) fn start(
    listeners: Vec<Listening>,
    config: &Config,
    metrics: &Arc<Metrics>,
    control: &Control,
    inspections: Vec<mpsc::UnboundedReceiver<clients::Request>>,
) -> Result<(), Error> {
    let cores = listeners.len();
    let core_ids = core_affinity::get_core_ids().unwrap_or_default();
    let limits = Arc::new(Limits::new(config));
    let shared = Arc::new(Shared {
        cores,
        quiet: AtomicUsize::new(0),
        quiet_bell: Doorbell::default(),
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // With a cluster, the bridge is one more core of the mesh: it drains a
    // ring from every core and feeds one to every core.
    let mut links = mesh::mesh(
        cores + usize::from(config.cluster.is_some()),
        mesh::RING_CAPACITY,
    );
    let bridge = config.cluster.is_some().then(|| links.pop()).flatten();
    let per_core = listeners.into_iter().zip(links).zip(inspections);
    for (index, ((listener, (outbox, inbox)), inspections)) in per_core.enumerate() {
        let pin_to = (!core_ids.is_empty()).then(|| core_ids[index % core_ids.len()]);
        let state = HostState::new(
            index,
            cores,
            &limits,
            config,
            Coalescer::new(config.coalesce, config.coalesce_above),
            Patience::new(config.grace, Instant::now()),
        );
        let (metrics, control, shared, ready_tx) = (
            Arc::clone(metrics),
            control.clone(),
            Arc::clone(&shared),
            ready_tx.clone(),
        );
        std::thread::Builder::new()
            .name(format!("ringcast-uring-{index}"))
            .spawn(move || {
                let _watch = ExitWatch::new(format!("core {index}"), &control);
                if let Some(id) = pin_to {
                    core_affinity::set_for_current(id);
                }
                let rings =
                    tokio_uring::Runtime::new(tokio_uring::builder().entries(URING_ENTRIES))
                        .and_then(|rt| Ok((rt, SendRing::new()?)));
                let (runtime, ring) = match rings {
                    Ok(rings) => rings,
                    Err(source) => {
                        let _ = ready_tx.send(Err(Error::Runtime {
                            engine: "uring",
                            source,
                        }));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                drop(ready_tx);
                let core = Rc::new(Core {
                    state,
                    metrics,
                    conns: RefCell::new(Roster::new()),
                    outbox,
                    shared,
                    flusher: Flusher::new(ring),
                    stopping: Cell::new(false),
                    rings_closed: Cell::new(false),
                    draining: Cell::new(None),
                    tick: Cell::new(0),
                    failed: tokio::sync::Notify::new(),
                });
                runtime.block_on(core.run(listener, inbox, inspections, control));
            })
            .map_err(Error::Thread)?;
    }
    drop(ready_tx);
    if let (Some(cluster), Some((outbox, inbox))) = (config.cluster.clone(), bridge) {
        let alive = control.alive.clone();
        let remote = MeshRemote {
            outbox,
            stop: control.stop.clone(),
        };
        crate::ops::cluster::start(
            cluster,
            config.max_line,
            Arc::clone(metrics),
            super::bridge_shard(cores),
            MeshLocal::new(inbox),
            remote,
            control.stop.clone(),
            move || drop(alive),
        )?;
    }
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Thread(std::io::Error::other(
                    "a core thread died while starting",
                )));
            }
        }
    }
    Ok(())
}

/// One core: its connections, its rings, its counters.
struct Core {
    state: HostState,
    metrics: Arc<Metrics>,
    conns: RefCell<Roster<Rc<Conn>>>,
    outbox: Outbox<Run>,
    shared: Arc<Shared>,
    /// Hands the core's queues to the kernel.
    flusher: Flusher,
    /// Shutdown began: readers stop after their current read.
    stopping: Cell<bool>,
    /// Every core has stopped reading: once the rings are empty, nothing more arrives.
    rings_closed: Cell<bool>,
    /// Rings are drained, since when: connections close once their queue is empty.
    draining: Cell<Option<Instant>>,
    /// Advanced by the idle sweeper; readers stamp it on their connection.
    tick: Cell<u64>,
    /// Stops the core: its send ring broke.
    failed: tokio::sync::Notify,
}

impl Host for Core {
    type Link = Conn;

    fn state(&self) -> &HostState {
        &self.state
    }

    fn shard(&self) -> &Shard {
        self.metrics.shard(self.state.core)
    }

    /// To every other core first, told at once, so they start writing
    /// while this core delivers locally, and hear of the run before this
    /// core waits for any client of its own.
    async fn publish(&self, run: &Run) {
        self.shard().received(run.lines, run.bytes.len());
        let mut waited = false;
        for peer in self.outbox.peers() {
            // A full ring stops reading this client until that core (or
            // the cluster bridge) catches up.
            let (pushed, wait) = self.outbox.push(peer, run.clone()).await;
            waited |= wait;
            if pushed == Pushed::Abandoned {
                // Only the bridge leaves before the cores do.
                self.shard().cluster_dropped(run.lines as usize);
            }
        }
        self.outbox.ring();
        waited |= lifecycle::deliver(self, std::slice::from_ref(run)).await;
        if waited {
            // Everyone woken with us gets a turn before we take more room.
            tokio::task::yield_now().await;
        }
    }

    fn wake(&self, link: &Conn) {
        self.flusher.mark(link);
    }

    fn send_now<L: Deref<Target = Conn>>(&self, conns: &[L], which: impl Iterator<Item = usize>) {
        self.flusher.send(self, conns, which);
    }

    fn forget(&self, link: &Conn) {
        self.flusher.forget(self, link);
        lifecycle::forget(self, link);
    }

    fn stopping(&self) -> bool {
        self.stopping.get()
    }

    fn draining(&self) -> Option<Instant> {
        self.draining.get()
    }

    fn tick(&self) -> u64 {
        self.tick.get()
    }
}

impl Place for Core {
    type Shared<T: 'static> = Rc<T>;
    type Listener = TcpListener;
    type Stream = TcpStream;

    fn roster<T>(&self, f: impl FnOnce(&mut Roster<Rc<Conn>>) -> T) -> T {
        f(&mut self.conns.borrow_mut())
    }

    fn roster_ref<T>(&self, f: impl FnOnce(&Roster<Rc<Conn>>) -> T) -> T {
        f(&self.conns.borrow())
    }

    async fn accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        listener.accept().await
    }

    fn connect(session: Session, stream: TcpStream) -> Rc<Conn> {
        Rc::new(Conn::new(session, stream))
    }

    /// Only the reader: the core's flusher does every connection's writes.
    fn spawn_conn(core: &Rc<Core>, conn: Rc<Conn>) {
        let core = Rc::clone(core);
        tokio_uring::spawn(async move { session::read_loop(&*core, &*conn).await });
    }

    fn stop(&self) {
        self.stopping.set(true);
    }

    fn next_tick(&self) -> u64 {
        let tick = self.tick.get() + 1;
        self.tick.set(tick);
        tick
    }

    /// Waits until every core has stopped reading: then no line can enter
    /// the rings. The drainer empties them, then sets `draining`.
    async fn drain(&self) {
        let shared = &self.shared;
        if shared.quiet.fetch_add(1, Ordering::SeqCst) + 1 == shared.cores {
            shared.quiet_bell.ring();
        }
        shared
            .quiet_bell
            .wait_until(|| shared.quiet.load(Ordering::SeqCst) == shared.cores)
            .await;
        self.rings_closed.set(true);
        self.outbox.wake(self.state.core);
    }
}

impl Core {
    /// Runs the core until it has shut down, or its send ring broke.
    async fn run(
        self: Rc<Self>,
        listening: Listening,
        inbox: Inbox<Run>,
        inspections: mpsc::UnboundedReceiver<clients::Request>,
        control: Control,
    ) {
        let _alive = control.alive.clone();
        if failpoint(&format!("core-exit:{}", self.state.core)) {
            return;
        }
        tokio_uring::spawn(Rc::clone(&self).drain_rings(inbox));
        tokio_uring::spawn(flush::flush_forever(Rc::clone(&self)));
        let core = Rc::clone(&self);
        tokio_uring::spawn(async move { core.coalescer().run_with(flush::UringTimer::new).await });
        tokio_uring::spawn(flush::reap_polls_forever(Rc::clone(&self)));
        let listening = listening
            .into_iter()
            .map(|(listener, endpoint)| (TcpListener::from_std(listener), endpoint))
            .collect();
        tokio::select! {
            () = lifecycle::run::<Core>(Rc::clone(&self), listening, inspections, &control) => {}
            // The send ring broke (logged there): this core stops, and with
            // it the process, for a supervisor to restart.
            () = self.failed.notified() => {
                lifecycle::close_all(&*self, CloseReason::WriteError);
            }
        }
    }

    /// The core cannot go on (its send ring broke): it closes its clients
    /// and stops.
    fn fail(&self, why: std::io::ErrorKind) {
        tracing::error!(core = self.state.core, error = %why, "core stops: its send ring failed");
        self.failed.notify_one();
    }

    /// Delivers messages other cores pushed to us.
    ///
    /// It takes up to [`RING_BATCH`] lines from a ring, frees their room at
    /// once, delivers them, and lets the core's other tasks (accept,
    /// writers, the sweep, shutdown) run before the next batch, however hard
    /// another core floods. Delivery waits for a client only within that
    /// client's grace (see [`crate::policy::send::outbound`]), at most once per
    /// slow episode, and every other client of the core gets the line
    /// first.
    async fn drain_rings(self: Rc<Self>, mut inbox: Inbox<Run>) {
        let mut batch: Vec<Run> = Vec::with_capacity(RING_BATCH);
        loop {
            let closed = self.rings_closed.get();
            let mut any = false;
            for peer in inbox.peers() {
                let mut lines = 0;
                while lines < RING_BATCH {
                    let Some(run) = inbox.pop_from(peer) else {
                        break;
                    };
                    lines += run.lines as usize;
                    batch.push(run);
                }
                if batch.is_empty() {
                    continue;
                }
                any = true;
                inbox.release(peer);
                lifecycle::deliver(&*self, &batch).await;
                batch.clear();
                tokio::task::yield_now().await;
            }
            if any {
                continue;
            }
            if closed {
                break;
            }
            inbox.wait_or(|| self.rings_closed.get()).await;
        }
        // Nothing more arrives: every connection closes once its queue is
        // out, or once its socket has taken nothing for a while.
        self.draining.set(Some(Instant::now()));
        for link in self.conns.borrow().iter() {
            self.flusher.mark(link);
        }
        tokio_uring::spawn(flush::close_stalled(Rc::clone(&self)));
    }
}
