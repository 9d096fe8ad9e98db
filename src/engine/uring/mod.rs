//! The `uring` engine: one pinned OS thread per core, each running its own
//! tokio-uring runtime with its own SO_REUSEPORT listener.
//!
//! A core owns its connections outright (`Rc`, `RefCell`, no locks). A
//! message read on core `i` is delivered to core `i`'s connections directly
//! and pushed onto the ring towards every other core, whose drainer task
//! delivers it there. See [`crate::fanout`].

mod conn;

use std::cell::{Cell, RefCell};
use std::net::TcpListener as StdListener;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio_uring::net::TcpListener;

use self::conn::Conn;
use super::{
    CloseReason, Control, Roster, accept_until_stopped, is_idle, log_close, notified_until,
    sweep_idle_forever,
};
use crate::coalesce::{Coalescer, FlushTimer, Timer, TokioTimer};
use crate::config::Config;
use crate::error::Error;
use crate::fanout::{self, Doorbell, Inbox, Outbox, SpaceWaiter};
use crate::limits::Gate;
use crate::metrics::{Metrics, Shard};
use crate::queue::{Admission, OutQueue};

/// Messages each cross-core ring holds before the publisher must wait.
///
/// This is how far one core may run ahead of another, and every line
/// waiting in a ring is late for all of that core's clients. At 4,096, one
/// core ran seconds ahead at saturation: at 1,000 clients x 1 KiB the p50
/// latency was 0.95 s and the drain after publishing 2 s; at 1,000 x 64 B
/// the p99 was 2.8 to 4.4 s. At 512 these were 0.16 to 0.25 s, 0.4 to
/// 0.5 s and 0.6 to 1.0 s, with delivered/s within the run-to-run noise
/// (about 10 %) in every saturation cell. 512 is still five client queues deep, enough
/// to absorb a burst.
const RING_CAPACITY: usize = 512;
/// Messages a drainer takes from one ring before looking at the next.
const RING_BATCH: usize = 64;
/// Submission queue entries per runtime.
const URING_ENTRIES: u32 = 1024;

/// State every core sees: how many cores have stopped reading.
#[derive(Debug)]
struct Shared {
    cores: usize,
    gate: Gate,
    quiet: AtomicUsize,
    quiet_bell: Doorbell,
}

/// Starts one thread per listener. Returns once every runtime is up, or the
/// first error.
pub(crate) fn start(
    listeners: Vec<StdListener>,
    config: &Config,
    metrics: &Arc<Metrics>,
    control: &Control,
) -> Result<(), Error> {
    let cores = listeners.len();
    let core_ids = core_affinity::get_core_ids().unwrap_or_default();
    let shared = Arc::new(Shared {
        cores,
        gate: Gate::new(config.max_clients),
        quiet: AtomicUsize::new(0),
        quiet_bell: Doorbell::default(),
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // With a cluster, the bridge is one more core of the mesh: it drains a
    // ring from every core and feeds one to every core.
    let mut links = fanout::mesh(cores + usize::from(config.cluster.is_some()), RING_CAPACITY);
    let bridge = config.cluster.is_some().then(|| links.pop()).flatten();
    for (index, (listener, (outbox, inbox))) in listeners.into_iter().zip(links).enumerate() {
        let pin_to = (!core_ids.is_empty()).then(|| core_ids[index % core_ids.len()]);
        let settings = Settings {
            queue: config.queue,
            max_line: config.max_line,
            stall_timeout: config.stall_timeout,
            idle_timeout: config.idle_timeout,
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
                if let Some(id) = pin_to {
                    core_affinity::set_for_current(id);
                }
                let runtime = match tokio_uring::Runtime::new(
                    tokio_uring::builder().entries(URING_ENTRIES),
                ) {
                    Ok(rt) => rt,
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
                    index,
                    settings,
                    metrics,
                    conns: RefCell::new(Roster::new()),
                    space: outbox.space_waiter(),
                    outbox: RefCell::new(outbox),
                    shared,
                    stopping: Cell::new(false),
                    rings_closed: Cell::new(false),
                    flushing: Cell::new(false),
                    readers: Cell::new(0),
                    next_id: Cell::new(0),
                    tick: Cell::new(0),
                    changed: tokio::sync::Notify::new(),
                    coalescer: Coalescer::new(settings.coalesce, settings.coalesce_above),
                });
                runtime.block_on(core.run(listener, inbox, control));
            })
            .map_err(Error::Thread)?;
    }
    drop(ready_tx);
    if let (Some(cluster), Some((outbox, inbox))) = (config.cluster.clone(), bridge) {
        let alive = control.alive.clone();
        let remote = BridgeRemote {
            space: outbox.space_waiter(),
            outbox,
            stop: control.stop.clone(),
        };
        crate::cluster::start(
            cluster,
            Arc::clone(metrics),
            cores,
            BridgeLocal(inbox),
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

#[derive(Debug, Clone, Copy)]
struct Settings {
    queue: usize,
    max_line: usize,
    stall_timeout: Duration,
    idle_timeout: Option<Duration>,
    coalesce: Duration,
    coalesce_above: u64,
}

/// One core: its connections, its rings, its counters.
struct Core {
    index: usize,
    settings: Settings,
    metrics: Arc<Metrics>,
    conns: RefCell<Roster<Rc<Conn>>>,
    outbox: RefCell<Outbox>,
    space: SpaceWaiter,
    shared: Arc<Shared>,
    /// Shutdown began: readers that see EOF exit quietly.
    stopping: Cell<bool>,
    /// Every core has stopped reading: once the rings are empty, nothing more arrives.
    rings_closed: Cell<bool>,
    /// Rings are drained: writers close their connection once their queue is empty.
    flushing: Cell<bool>,
    /// Reader tasks still running.
    readers: Cell<usize>,
    next_id: Cell<u64>,
    /// Advanced by the idle sweeper; readers stamp it on their connection.
    tick: Cell<u64>,
    /// Wakes the core's main task when a reader exits or a connection closes.
    changed: tokio::sync::Notify,
    /// Holds this core's writes back briefly while it is busy.
    coalescer: Coalescer,
}

impl Core {
    fn shard(&self) -> &Shard {
        self.metrics.shard(self.index)
    }

    async fn run(self: Rc<Self>, listener: StdListener, inbox: Inbox, control: Control) {
        let _alive = control.alive;
        let listener = TcpListener::from_std(listener);
        tokio_uring::spawn(Rc::clone(&self).drain_rings(inbox));
        let core = Rc::clone(&self);
        tokio_uring::spawn(async move { core.coalescer.run_with(UringTimer::new).await });
        if let Some(timeout) = self.settings.idle_timeout {
            tokio_uring::spawn(Rc::clone(&self).sweep_idle(timeout));
        }
        let mut abort = pin!(control.abort.cancelled());
        tokio::select! {
            () = Rc::clone(&self).serve(listener, &control.stop) => {}
            () = &mut abort => {
                self.close_all(CloseReason::DrainTimeout);
            }
        }
    }

    /// Accepts until stopped, then shuts down gracefully.
    async fn serve(
        self: Rc<Self>,
        listener: TcpListener,
        stop: &tokio_util::sync::CancellationToken,
    ) {
        accept_until_stopped(
            self.index,
            stop,
            &self.shared.gate,
            || self.shard(),
            || listener.accept(),
            |stream, peer| self.admit(stream, peer),
        )
        .await;
        drop(listener);
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
        self.outbox.borrow().wake(self.index);
        // The drainer flushes the rings, then sets `flushing`; writers close
        // their connections as their queues empty.
        self.wait_changed(|| self.conns.borrow().is_empty()).await;
    }

    fn admit(self: &Rc<Self>, stream: tokio_uring::net::TcpStream, peer: std::net::SocketAddr) {
        let seq = self.next_id.get();
        self.next_id.set(seq + 1);
        let id = seq * self.shared.cores as u64 + self.index as u64;
        let conn = Rc::new(Conn::new(
            id,
            peer,
            stream,
            OutQueue::new(self.settings.queue, self.settings.stall_timeout),
        ));
        conn.set_key(self.conns.borrow_mut().insert(Rc::clone(&conn)));
        self.shard().accepted();
        self.readers.set(self.readers.get() + 1);
        tracing::debug!(conn = id, %peer, core = self.index, "connected");
        tokio_uring::spawn(conn::read_loop(Rc::clone(self), Rc::clone(&conn)));
        tokio_uring::spawn(conn::write_loop(Rc::clone(self), conn));
    }

    /// Ends every reader: shutting down the read side makes pending reads
    /// return EOF, and `stopping` tells readers not to treat it as a disconnect.
    async fn stop_reading(&self) {
        self.stopping.set(true);
        for conn in self.conns.borrow().iter() {
            conn.shutdown_read();
        }
        self.wait_changed(|| self.readers.get() == 0).await;
    }

    fn reader_exited(&self) {
        self.readers.set(self.readers.get() - 1);
        self.changed.notify_waiters();
    }

    async fn wait_changed(&self, ready: impl Fn() -> bool) {
        notified_until(&self.changed, ready).await;
    }

    /// Removes a connection: it gets no more messages, its socket is shut
    /// down so any in-flight read or write completes, and the gauge drops.
    fn close(&self, conn: &Conn, reason: CloseReason) {
        if !conn.mark_closed() {
            return;
        }
        self.conns.borrow_mut().remove(conn.key());
        self.shared.gate.release();
        self.shard().closed();
        self.changed.notify_waiters();
        log_close(conn.id(), conn.peer(), reason, self.settings.max_line);
    }

    fn close_all(&self, reason: CloseReason) {
        let conns = self.conns.borrow_mut().snapshot();
        for conn in conns.iter() {
            self.close(conn, reason);
        }
    }

    /// Delivers one message from a local client: to every other core first,
    /// so they start writing while this core delivers locally.
    async fn publish(&self, line: Bytes) {
        self.shard().received(line.len());
        let peers = self.outbox.borrow().peers();
        let mut waited = false;
        for peer in peers {
            loop {
                if self
                    .outbox
                    .borrow_mut()
                    .try_push(peer, line.clone())
                    .is_ok()
                {
                    break;
                }
                // Full ring: stop reading this client until the peer catches up.
                self.outbox.borrow_mut().ring();
                self.space
                    .wait_for_room(peer, || self.outbox.borrow().has_room(peer))
                    .await;
                waited = true;
            }
        }
        if self.deliver_local(&line).await || waited {
            // Everyone woken with us gets a turn before we take more room:
            // without this, the first publisher woken refills the queue
            // alone, round after round.
            tokio::task::yield_now().await;
        }
    }

    /// Offers `msg` to every connection on this core. Waits only for a
    /// connection whose queue is full while its socket is still draining.
    /// Returns whether it waited, so that the caller lets the others woken
    /// with it have their turn.
    async fn deliver_local(&self, msg: &Bytes) -> bool {
        let shard = self.shard();
        // Everyone connected when the message arrived; a client that joins
        // while we wait below does not get it.
        let conns = self.conns.borrow_mut().snapshot();
        self.coalescer.delivered(conns.len());
        let mut waited = false;
        for conn in conns.iter() {
            while let Admission::Wait(deadline) = conn.offer(msg, shard) {
                waited = true;
                // Let other cores start on what we pushed before we sleep.
                self.outbox.borrow_mut().ring();
                conn.wait_room(deadline).await;
            }
        }
        waited
    }

    /// Closes connections that have sent nothing for `timeout`.
    async fn sweep_idle(self: Rc<Self>, timeout: Duration) {
        sweep_idle_forever(timeout, || {
            let tick = self.tick.get() + 1;
            self.tick.set(tick);
            let idle: Vec<Rc<Conn>> = self
                .conns
                .borrow()
                .iter()
                .filter(|c| is_idle(c.last_active(), tick))
                .map(Rc::clone)
                .collect();
            for conn in idle {
                self.close(&conn, CloseReason::IdleTimeout);
            }
        })
        .await;
    }

    /// Delivers messages other cores pushed to us.
    ///
    /// At full queues, publishers take turns: each waits, offers one line,
    /// and yields. This task carries the lines of every publisher on the
    /// other cores, so it takes one turn for each of them that is held up
    /// waiting for room in its ring to us before it yields. A congested core
    /// then shares its queues out per publisher, wherever the publisher is.
    async fn drain_rings(self: Rc<Self>, mut inbox: Inbox) {
        let mut turns = 0;
        loop {
            let closed = self.rings_closed.get();
            let mut any = false;
            for peer in inbox.peers() {
                let mut taken = 0;
                while taken < RING_BATCH {
                    let Some(msg) = inbox.pop_from(peer) else {
                        break;
                    };
                    if self.deliver_local(&msg).await {
                        turns += 1;
                        if turns >= inbox.senders_waiting(peer).max(1) {
                            tokio::task::yield_now().await;
                            turns = 0;
                        }
                    }
                    taken += 1;
                }
                if taken > 0 {
                    inbox.release(peer);
                    any = true;
                }
            }
            if any {
                continue;
            }
            if closed {
                break;
            }
            inbox.wait_or(|| self.rings_closed.get()).await;
        }
        self.flushing.set(true);
        for conn in self.conns.borrow().iter() {
            conn.wake_writer();
        }
    }
}

/// The coalescer's timer on io_uring: a timerfd, read through the ring.
struct UringTimer {
    timer: FlushTimer,
    file: tokio_uring::fs::File,
    buf: Option<Vec<u8>>,
}

impl UringTimer {
    fn new() -> std::io::Result<Self> {
        let timer = FlushTimer::new(false)?;
        let fd = timer.fd().try_clone_to_owned()?;
        Ok(Self {
            timer,
            file: tokio_uring::fs::File::from_std(std::fs::File::from(fd)),
            buf: Some(vec![0; 8]),
        })
    }
}

impl Timer for UringTimer {
    async fn sleep(&mut self, after: Duration) {
        let buf = self.buf.take().unwrap_or_else(|| vec![0; 8]);
        if self.timer.arm(after).is_ok() {
            // The read completes when the timer expires.
            let (result, buf) = self.file.read_at(buf, 0).await;
            self.buf = Some(buf);
            if result.is_ok() {
                return;
            }
        }
        TokioTimer.sleep(after).await;
    }
}

/// The bridge's view of the cores' rings towards it.
struct BridgeLocal(Inbox);

impl crate::cluster::LocalLines for BridgeLocal {
    fn pop(&mut self) -> Option<Bytes> {
        let peers = self.0.peers();
        for core in peers {
            if let Some(line) = self.0.pop_from(core) {
                return Some(line);
            }
        }
        None
    }

    fn release(&mut self) {
        for core in self.0.peers() {
            self.0.release(core);
        }
    }

    async fn wait(&self, stop: &(dyn Fn() -> bool + Sync)) {
        self.0.wait_or(stop).await;
    }
}

/// The bridge's rings towards every core.
struct BridgeRemote {
    outbox: Outbox,
    space: SpaceWaiter,
    stop: tokio_util::sync::CancellationToken,
}

impl crate::cluster::RemoteLines for BridgeRemote {
    async fn deliver(&mut self, line: Bytes) {
        for core in self.outbox.peers() {
            while self.outbox.try_push(core, line.clone()).is_err() {
                if self.stop.is_cancelled() {
                    return; // shutting down: lines from other nodes are not flushed
                }
                self.outbox.ring();
                let outbox = &self.outbox;
                let stop = &self.stop;
                self.space
                    .wait_until(|| outbox.has_room(core) || stop.is_cancelled())
                    .await;
            }
        }
    }

    fn flush(&mut self) {
        self.outbox.ring();
    }
}
