//! The `uring` engine: one pinned OS thread per core, each running its own
//! tokio-uring runtime with its own SO_REUSEPORT listener.
//!
//! A core owns its connections outright (`Rc`, `RefCell`, no locks). A run
//! of lines read on core `i` is pushed onto the ring towards every other
//! core, whose drainer task delivers it there, and delivered to core `i`'s
//! connections. See [`super::mesh`]. Everything a connection does is in
//! [`super::session`]; this module only runs it on io_uring.
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
use std::net::TcpListener as StdListener;
use std::ops::Deref;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_uring::net::TcpListener;

use self::conn::Conn;
use self::flush::Flusher;
use super::mesh::{self, Doorbell, Inbox, Outbox, Pushed};
use super::session::{self, CloseReason, Cx, Host, Link as _, LogLimits, Session, Slot};
use super::{
    Control, Endpoint, ExitWatch, IDLE_TICKS, Listening, Roster, accept_until_stopped,
    close_spread_out, failpoint, notified_until, sweep_idle_forever,
};
use crate::config::Config;
use crate::error::Error;
use crate::ops::clients;
use crate::ops::cluster::{MeshLocal, MeshRemote};
use crate::ops::metrics::{Metrics, Shard};
use crate::policy::coalesce::Coalescer;
use crate::policy::limits::Gate;
use crate::policy::patience::Patience;
use crate::policy::run::Run;
use crate::sys::net::{self, URING_ENTRIES};
use crate::sys::sendring::SendRing;

/// Lines a drainer takes from one ring before looking at the next, and
/// before the core's other tasks run: the flusher then sends what the
/// batch queued in one go (docs/decisions/0026).
const RING_BATCH: usize = 256;

/// State every core sees: how many cores have stopped reading.
#[derive(Debug)]
struct Shared {
    cores: usize,
    /// `--max-clients`.
    gate: Gate,
    /// WebSocket connections before their handshake completed.
    handshakes: Gate,
    quiet: AtomicUsize,
    quiet_bell: Doorbell,
    logs: LogLimits,
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
    let gate = Gate::new(config.max_clients, config.max_clients_per_ip);
    let shared = Arc::new(Shared {
        cores,
        handshakes: Gate::for_handshakes(&gate),
        gate,
        quiet: AtomicUsize::new(0),
        quiet_bell: Doorbell::default(),
        logs: LogLimits::default(),
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
        let settings = Settings {
            conn: config.session_settings(),
            idle_timeout: config.idle_timeout,
            lame_duck: config.lame_duck,
            coalesce: config.coalesce,
            coalesce_above: config.coalesce_above,
        };
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
                let (coalescer, patience) = (
                    Coalescer::new(settings.coalesce, settings.coalesce_above),
                    Patience::new(settings.conn.grace, Instant::now()),
                );
                let core = Rc::new(Core {
                    index,
                    settings,
                    metrics,
                    conns: RefCell::new(Roster::new()),
                    outbox,
                    shared,
                    flusher: Flusher::new(ring),
                    stopping: Cell::new(false),
                    rings_closed: Cell::new(false),
                    flushing: Cell::new(None),
                    readers: Cell::new(0),
                    next_id: Cell::new(0),
                    tick: Cell::new(0),
                    changed: tokio::sync::Notify::new(),
                    failed: tokio::sync::Notify::new(),
                    coalescer,
                    patience,
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

/// What a core is told.
#[derive(Debug, Clone)]
struct Settings {
    conn: session::Settings,
    idle_timeout: Option<Duration>,
    lame_duck: Option<Duration>,
    coalesce: Duration,
    coalesce_above: u64,
}

/// One core: its connections, its rings, its counters.
struct Core {
    index: usize,
    settings: Settings,
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
    flushing: Cell<Option<Instant>>,
    /// Reader tasks still running.
    readers: Cell<usize>,
    next_id: Cell<u64>,
    /// Advanced by the idle sweeper; readers stamp it on their connection.
    tick: Cell<u64>,
    /// Wakes the core's main task when a reader exits or a connection closes.
    changed: tokio::sync::Notify,
    /// Stops the core: its send ring broke.
    failed: tokio::sync::Notify,
    /// Holds this core's writes back briefly while it is busy.
    coalescer: Coalescer,
    /// How long this core may still wait for clients that are behind.
    patience: Patience,
}

impl Host for Core {
    type Link = Conn;

    fn cx(&self) -> Cx<'_> {
        Cx {
            shard: self.shard(),
            settings: &self.settings.conn,
            logs: &self.shared.logs,
        }
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
        waited |= self.deliver_local(std::slice::from_ref(run)).await;
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

    fn admit_client(&self, peer: std::net::SocketAddr) -> bool {
        let admitted = self.shared.gate.admit_handshaken(peer, self.shard());
        if admitted {
            self.shared.handshakes.hand_over();
        }
        admitted
    }

    fn forget(&self, link: &Conn) {
        self.flusher.forget(self, link);
        let (key, slot, peer) = link.with(|s| (s.key(), s.slot(), s.peer()));
        self.conns.borrow_mut().remove(key);
        match slot {
            Slot::Client => self.shared.gate.release(peer),
            Slot::Handshake => self.shared.handshakes.release(peer),
        }
        self.changed.notify_waiters();
    }

    fn reader_exited(&self) {
        self.readers.set(self.readers.get() - 1);
        self.changed.notify_waiters();
    }

    fn stopping(&self) -> bool {
        self.stopping.get()
    }

    fn flushing(&self) -> Option<Instant> {
        self.flushing.get()
    }

    fn coalescer(&self) -> &Coalescer {
        &self.coalescer
    }

    fn patience(&self) -> &Patience {
        &self.patience
    }

    fn tick(&self) -> u64 {
        self.tick.get()
    }
}

impl Core {
    fn shard(&self) -> &Shard {
        self.metrics.shard(self.index)
    }

    async fn run(
        self: Rc<Self>,
        listening: Listening,
        inbox: Inbox<Run>,
        inspections: mpsc::UnboundedReceiver<clients::Request>,
        control: Control,
    ) {
        let _alive = control.alive.clone();
        if failpoint(&format!("core-exit:{}", self.index)) {
            return;
        }
        tokio_uring::spawn(Rc::clone(&self).drain_rings(inbox));
        tokio_uring::spawn(Rc::clone(&self).answer_inspections(inspections));
        tokio_uring::spawn(flush::flush_forever(Rc::clone(&self)));
        let core = Rc::clone(&self);
        tokio_uring::spawn(async move { core.coalescer.run_with(flush::UringTimer::new).await });
        tokio_uring::spawn(flush::reap_polls_forever(Rc::clone(&self)));
        if let Some(timeout) = self.settings.idle_timeout {
            tokio_uring::spawn(Rc::clone(&self).sweep_idle(timeout));
        }
        let mut abort = pin!(control.abort.cancelled());
        tokio::select! {
            () = Rc::clone(&self).serve(listening, &control) => {}
            () = &mut abort => {
                self.close_all(CloseReason::DrainTimeout);
            }
            // The send ring broke (logged there): this core stops, and with
            // it the process, for a supervisor to restart.
            () = self.failed.notified() => {
                self.close_all(CloseReason::WriteError);
            }
        }
    }

    /// The core cannot go on (its send ring broke): it closes its clients
    /// and stops.
    fn fail(&self, why: std::io::ErrorKind) {
        tracing::error!(core = self.index, error = %why, "core stops: its send ring failed");
        self.failed.notify_one();
    }

    /// Accepts until shutdown begins, then shuts down gracefully.
    async fn serve(self: Rc<Self>, listening: Listening, control: &Control) {
        futures_util::future::join_all(
            listening
                .into_iter()
                .map(|(listener, endpoint)| self.accept(listener, endpoint, control)),
        )
        .await;
        if let Some(over) = self.settings.lame_duck {
            close_spread_out(
                over,
                &control.stop,
                || self.conns.borrow().len(),
                || self.close_one(CloseReason::LameDuck),
            )
            .await;
        }
        control.stop.cancelled().await;
        self.stop_reading().await;
        // Once every core has stopped reading, no message can enter the rings.
        let shared = Arc::clone(&self.shared);
        if shared.quiet.fetch_add(1, Ordering::SeqCst) + 1 == shared.cores {
            shared.quiet_bell.ring();
        }
        shared
            .quiet_bell
            .wait_until(|| shared.quiet.load(Ordering::SeqCst) == shared.cores)
            .await;
        self.rings_closed.set(true);
        self.outbox.wake(self.index);
        // The drainer flushes the rings, then sets `flushing`; writers close
        // their connections as their queues empty.
        self.wait_changed(|| self.conns.borrow().is_empty()).await;
    }

    /// Accepts `endpoint` clients on `listener` until accepting ends.
    async fn accept(self: &Rc<Self>, listener: StdListener, endpoint: Endpoint, control: &Control) {
        // Kept to shut the socket down when accepting stops; the listener
        // itself lives until every op on it has completed.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let listener = TcpListener::from_std(listener);
        let gate = if endpoint.handshakes_first() {
            &self.shared.handshakes
        } else {
            &self.shared.gate
        };
        accept_until_stopped(
            self.index,
            &control.accepting_ends,
            || {
                let _ = control.accepting.send(());
            },
            gate,
            || self.shard(),
            || listener.accept(),
            // Refuses new connects, and ends the accept in flight.
            || net::stop_listening(fd),
            |stream, peer| self.admit(stream, peer, &endpoint),
        )
        .await;
    }

    fn admit(
        self: &Rc<Self>,
        stream: tokio_uring::net::TcpStream,
        peer: std::net::SocketAddr,
        endpoint: &Endpoint,
    ) {
        let tls = match endpoint.tls() {
            Ok(tls) => tls,
            Err(e) => {
                tracing::error!(error = %e, %peer, "cannot start a TLS session; closing the connection");
                self.shared.handshakes.release(peer);
                return;
            }
        };
        let seq = self.next_id.get();
        self.next_id.set(seq + 1);
        let id = seq * self.shared.cores as u64 + self.index as u64;
        let session = Session::new(
            id,
            peer,
            self.index,
            endpoint.transport,
            tls,
            &self.settings.conn,
            self.tick.get(),
        );
        let conn = Rc::new(Conn::new(session, stream));
        let key = self.conns.borrow_mut().insert(Rc::clone(&conn));
        conn.with(|s| s.set_key(key));
        self.shard().accepted();
        if endpoint.handshakes_first() {
            self.shard().handshake_begun();
        }
        self.readers.set(self.readers.get() + 1);
        tracing::debug!(conn = id, %peer, core = self.index, "connected");
        let core = Rc::clone(self);
        tokio_uring::spawn(async move { session::read_loop(&*core, &*conn).await });
    }

    /// Ends every reader: shutting down the read side makes pending reads
    /// complete, and `stopping` tells readers not to read again.
    async fn stop_reading(&self) {
        self.stopping.set(true);
        for link in self.conns.borrow().iter() {
            link.shutdown(std::net::Shutdown::Read);
        }
        self.wait_changed(|| self.readers.get() == 0).await;
    }

    async fn wait_changed(&self, ready: impl Fn() -> bool) {
        notified_until(&self.changed, ready).await;
    }

    /// Closes the longest-connected client; false if there is none.
    fn close_one(&self, reason: CloseReason) -> bool {
        let oldest = self.conns.borrow().iter().next().map(Rc::clone);
        oldest.is_some_and(|link| {
            session::close(self, &link, reason);
            true
        })
    }

    fn close_all(&self, reason: CloseReason) {
        let conns = self.conns.borrow_mut().snapshot();
        for link in conns.iter() {
            session::close(self, link, reason);
        }
    }

    /// Offers `runs` to everyone connected to this core now. Returns
    /// whether it waited for one of them.
    async fn deliver_local(&self, runs: &[Run]) -> bool {
        let conns = self.conns.borrow_mut().snapshot();
        session::deliver(self, &conns, runs).await
    }

    /// Tells whoever asks (`/clients`) how this core's clients are doing,
    /// a chunk of them at a time.
    async fn answer_inspections(
        self: Rc<Self>,
        mut requests: mpsc::UnboundedReceiver<clients::Request>,
    ) {
        while let Some(request) = requests.recv().await {
            let conns = self.conns.borrow_mut().snapshot();
            clients::answer(&conns, request, |c| c.with(|s| s.info())).await;
        }
    }

    /// Closes connections that have sent nothing for `timeout`.
    async fn sweep_idle(self: Rc<Self>, timeout: Duration) {
        sweep_idle_forever(timeout, || {
            let tick = self.tick.get() + 1;
            self.tick.set(tick);
            let conns = self.conns.borrow_mut().snapshot();
            session::close_idle(&*self, &conns, tick, IDLE_TICKS);
        })
        .await;
    }

    /// Delivers messages other cores pushed to us.
    ///
    /// It takes up to [`RING_BATCH`] lines from a ring, frees their room at
    /// once, delivers them, and lets the core's other tasks (accept,
    /// writers, the sweep, shutdown) run before the next batch, however hard
    /// another core floods. Delivery waits for a client only within that
    /// client's grace (see [`crate::policy::outbound`]), at most once per
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
                self.deliver_local(&batch).await;
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
        self.flushing.set(Some(Instant::now()));
        for link in self.conns.borrow().iter() {
            self.flusher.mark(link);
        }
        tokio_uring::spawn(flush::close_stalled(Rc::clone(&self)));
    }
}
