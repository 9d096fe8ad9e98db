//! The `tokio` engine: the honest baseline on a multi-threaded tokio (epoll)
//! runtime. Everything a connection does is in [`super::session`], as on
//! `uring`; this module only runs it on tokio.
//!
//! Connections live in one registry shared by every worker. A publisher
//! walks a snapshot of it and offers the message to each connection, whose
//! state sits behind a mutex of its own.

mod conn;

use std::net::SocketAddr;
use std::ops::Deref;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

use self::conn::Conn;
use super::session::{
    self, CloseReason, Cx, Host, Link as _, LogLimits, Next, Session, Settings, Slot,
};
use super::{
    Control, Endpoint, ExitWatch, IDLE_TICKS, Listening, Roster, accept_until_stopped,
    close_spread_out, failpoint, notified_until, sweep_idle_forever,
};
use crate::config::Config;
use crate::error::Error;
use crate::ops::clients;
use crate::ops::cluster::{QueueLocal, QueueOut};
use crate::ops::metrics::{Metrics, Shard};
use crate::policy::coalesce::{Coalescer, Timer, TokioTimer};
use crate::policy::limits::Gate;
use crate::policy::patience::Patience;
use crate::policy::run::Run;
use crate::sys::net;
use crate::sys::timer::FlushTimer;

thread_local! {
    /// Which metrics shard this worker thread writes.
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Starts the runtime on a thread of its own. Returns once it is up.
pub(crate) fn start(
    listening: Listening,
    config: &Config,
    metrics: &Arc<Metrics>,
    control: &Control,
    inspections: mpsc::UnboundedReceiver<clients::Request>,
) -> Result<(), Error> {
    let threads = config.thread_count();
    let next_shard = Arc::new(AtomicUsize::new(0));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("ringcast-tokio")
        .on_thread_start(move || {
            let index = next_shard.fetch_add(1, Ordering::Relaxed);
            SHARD.with(|s| s.set(index));
        })
        .enable_all()
        .build()
        .map_err(|source| Error::Runtime {
            engine: "tokio",
            source,
        })?;
    let gate = Gate::new(config.max_clients, config.max_clients_per_ip);
    let hub = Arc::new(Hub {
        metrics: Arc::clone(metrics),
        settings: config.session_settings(),
        logs: LogLimits::default(),
        conns: RwLock::new(Roster::new()),
        next_id: AtomicUsize::new(0),
        readers: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        flushing: std::sync::OnceLock::new(),
        changed: Notify::new(),
        handshakes: Gate::for_handshakes(&gate),
        gate,
        idle_timeout: config.idle_timeout,
        lame_duck: config.lame_duck,
        tick: AtomicU64::new(0),
        // One pacer for the whole runtime: busy means busy for all its
        // threads together.
        coalescer: Coalescer::new(
            config.coalesce,
            config.coalesce_above.saturating_mul(threads as u64),
        ),
        // Each thread may wait as long as a core of the io_uring engine.
        patience: Patience::new(
            config.stall_timeout.saturating_mul(threads as u32),
            Instant::now(),
        ),
        cluster_out: config.cluster.as_ref().map(|_| Arc::new(QueueOut::new())),
    });
    let listeners = {
        let _guard = runtime.enter();
        listening
            .into_iter()
            .map(|(l, endpoint)| {
                TcpListener::from_std(l)
                    .map(|l| (l, endpoint))
                    .map_err(|source| Error::Runtime {
                        engine: "tokio",
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    if let (Some(cluster), Some(out)) = (config.cluster.clone(), hub.cluster_out.clone()) {
        let alive = control.alive.clone();
        let remote = BridgeRemote {
            hub: Arc::clone(&hub),
            shard: super::bridge_shard(threads),
        };
        crate::ops::cluster::start(
            cluster,
            config.max_line,
            Arc::clone(metrics),
            super::bridge_shard(threads),
            QueueLocal(out),
            remote,
            control.stop.clone(),
            move || drop(alive),
        )?;
    }
    let control = control.clone();
    std::thread::Builder::new()
        .name("ringcast-tokio-main".into())
        .spawn(move || {
            let _watch = ExitWatch::new("the tokio engine".into(), &control);
            // The accept loop runs on this thread, not on a worker: it
            // writes a shard of its own.
            SHARD.with(|s| s.set(threads + 1));
            let _alive = control.alive.clone();
            if failpoint("core-exit:0") {
                return;
            }
            runtime.block_on(async move {
                tokio::spawn(Arc::clone(&hub).answer_inspections(inspections));
                let mut abort = pin!(control.abort.cancelled());
                tokio::select! {
                    () = Arc::clone(&hub).serve(listeners, &control) => {}
                    () = &mut abort => hub.close_all(CloseReason::DrainTimeout),
                }
            });
            runtime.shutdown_timeout(Duration::from_millis(100));
        })
        .map_err(Error::Thread)?;
    Ok(())
}

/// The coalescer's timer on epoll: a timerfd, waited on for readiness.
struct EpollTimer(AsyncFd<FlushTimer>);

impl EpollTimer {
    /// Must be called on the runtime.
    // Unsafe: tokio made registering a raw fd unsafe (it
    // cannot check the fd's lifetime), and there is no safe way to wait for
    // a timerfd's readiness on this runtime.
    #[allow(unsafe_code)]
    fn new() -> std::io::Result<Self> {
        let timer = FlushTimer::new(true)?;
        // SAFETY: `register` needs the fd to stay open, and to be the one
        // `as_raw_fd` returns, while the AsyncFd lives. A FlushTimer owns its
        // timerfd, never replaces it, and closes it only when dropped, which
        // is when the AsyncFd drops it.
        let fd = unsafe { AsyncFd::register(timer) }.map_err(std::io::Error::from)?;
        Ok(Self(fd))
    }
}

impl Timer for EpollTimer {
    async fn sleep(&mut self, after: Duration) {
        if self.0.get_ref().arm(after).is_ok() {
            loop {
                let Ok(mut ready) = self.0.readable().await else {
                    break;
                };
                match ready.try_io(|timer| timer.get_ref().expirations()) {
                    Ok(Ok(_)) => return,
                    Ok(Err(_)) => break,
                    Err(_would_block) => {}
                }
            }
        }
        TokioTimer.sleep(after).await;
    }
}

/// Every connection of the server, and its shutdown state.
struct Hub {
    metrics: Arc<Metrics>,
    settings: Settings,
    logs: LogLimits,
    conns: RwLock<Roster<Arc<Conn>>>,
    next_id: AtomicUsize,
    readers: AtomicUsize,
    stopping: AtomicBool,
    /// Since when nothing more is delivered (shutdown), if it is so.
    flushing: std::sync::OnceLock<Instant>,
    changed: Notify,
    /// `--max-clients`.
    gate: Gate,
    /// WebSocket connections before their handshake completed.
    handshakes: Gate,
    idle_timeout: Option<Duration>,
    lame_duck: Option<Duration>,
    /// Advanced by the idle sweeper; readers stamp it on their connection.
    tick: AtomicU64,
    /// Holds writes back briefly while the runtime is busy.
    coalescer: Coalescer,
    /// How long the runtime may still wait for clients that are behind.
    patience: Patience,
    /// Local lines on their way to the cluster bridge.
    cluster_out: Option<Arc<QueueOut>>,
}

/// The bridge delivers other nodes' lines straight into the hub.
struct BridgeRemote {
    hub: Arc<Hub>,
    shard: usize,
}

impl crate::ops::cluster::RemoteLines for BridgeRemote {
    async fn deliver(&mut self, run: Run) {
        // The bridge thread writes a metrics shard of its own.
        SHARD.with(|s| s.set(self.shard));
        if !self.hub.stopping() {
            self.hub.deliver(std::slice::from_ref(&run)).await;
        }
    }

    fn flush(&mut self) {}
}

impl Host for Hub {
    type Link = Conn;

    fn cx(&self) -> Cx<'_> {
        Cx {
            shard: self.shard(),
            settings: &self.settings,
            logs: &self.logs,
        }
    }

    /// Hands a local client's run to the cluster, telling the bridge at
    /// once, then delivers it.
    async fn publish(&self, run: &Run) {
        let shard = self.shard();
        shard.received(run.lines, run.bytes.len());
        if let Some(out) = &self.cluster_out
            && !out.offer(run)
        {
            shard.cluster_dropped(run.lines as usize);
        }
        if self.deliver(std::slice::from_ref(run)).await {
            // Everyone woken with us gets a turn before we take more room.
            tokio::task::yield_now().await;
        }
    }

    fn wake(&self, link: &Conn) {
        link.wake_writer();
    }

    /// One send after the other: epoll has no way to hand many sockets
    /// their bytes in one system call.
    fn send_now<L: Deref<Target = Conn>>(&self, conns: &[L], which: impl Iterator<Item = usize>) {
        let cx = self.cx();
        for link in which.map(|i| &*conns[i]) {
            let turn = link.with(|s| s.flush(|bufs| link.try_send(bufs), &cx));
            if session::settled(self, link, turn) && link.with(|s| s.is_blocked()) {
                // Its writer waits for the socket to take more.
                link.wake_writer();
            }
        }
    }

    fn admit_client(&self, peer: SocketAddr) -> bool {
        let admitted = self.gate.admit_handshaken(peer, self.shard());
        if admitted {
            self.handshakes.hand_over();
        }
        admitted
    }

    fn forget(&self, link: &Conn) {
        let (key, slot, peer) = link.with(|s| (s.key(), s.slot(), s.peer()));
        self.conns_mut().remove(key);
        match slot {
            Slot::Client => self.gate.release(peer),
            Slot::Handshake => self.handshakes.release(peer),
        }
        self.changed.notify_waiters();
    }

    fn reader_exited(&self) {
        self.readers.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn flushing(&self) -> Option<Instant> {
        self.flushing.get().copied()
    }

    fn coalescer(&self) -> &Coalescer {
        &self.coalescer
    }

    fn patience(&self) -> &Patience {
        &self.patience
    }

    fn tick(&self) -> u64 {
        self.tick.load(Ordering::Relaxed)
    }
}

impl Hub {
    fn shard(&self) -> &Shard {
        self.metrics.shard(SHARD.with(|s| s.get()))
    }

    fn conns(&self) -> std::sync::RwLockReadGuard<'_, Roster<Arc<Conn>>> {
        self.conns
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn conns_mut(&self) -> std::sync::RwLockWriteGuard<'_, Roster<Arc<Conn>>> {
        self.conns
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Everyone connected now; see [`Roster::snapshot`].
    fn snapshot(&self) -> Arc<[Arc<Conn>]> {
        let cached = self.conns().cached();
        cached.unwrap_or_else(|| self.conns_mut().snapshot())
    }

    /// Offers `runs` to everyone connected now. Returns whether it waited
    /// for one of them.
    async fn deliver(&self, runs: &[Run]) -> bool {
        session::deliver(self, &self.snapshot(), runs).await
    }

    async fn serve(self: Arc<Self>, listeners: Vec<(TcpListener, Endpoint)>, control: &Control) {
        if let Some(timeout) = self.idle_timeout {
            tokio::spawn(Arc::clone(&self).sweep_idle(timeout));
        }
        let hub = Arc::clone(&self);
        tokio::spawn(async move { hub.coalescer.run_with(EpollTimer::new).await });
        futures_util::future::join_all(
            listeners
                .into_iter()
                .map(|(listener, endpoint)| self.accept(listener, endpoint, control)),
        )
        .await;
        if let Some(over) = self.lame_duck {
            close_spread_out(
                over,
                &control.stop,
                || self.conns().len(),
                || self.close_one(CloseReason::LameDuck),
            )
            .await;
        }
        control.stop.cancelled().await;
        self.stopping.store(true, Ordering::SeqCst);
        for link in self.conns().iter() {
            link.shutdown(std::net::Shutdown::Read);
        }
        self.wait_changed(|| self.readers.load(Ordering::SeqCst) == 0)
            .await;
        // No reader is left, so no message is in flight: flush and close.
        let _ = self.flushing.set(Instant::now());
        for link in self.conns().iter() {
            link.wake_writer();
        }
        self.wait_changed(|| self.conns().is_empty()).await;
    }

    /// Accepts `endpoint` clients on `listener` until accepting ends.
    async fn accept(
        self: &Arc<Self>,
        listener: TcpListener,
        endpoint: Endpoint,
        control: &Control,
    ) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let gate = if endpoint.handshakes_first() {
            &self.handshakes
        } else {
            &self.gate
        };
        accept_until_stopped(
            0,
            &control.accepting_ends,
            || {
                let _ = control.accepting.send(());
            },
            gate,
            || self.shard(),
            || listener.accept(),
            || net::stop_listening(fd),
            |stream, peer| self.admit(stream, peer, &endpoint),
        )
        .await;
    }

    fn admit(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, endpoint: &Endpoint) {
        let tls = match endpoint.tls() {
            Ok(tls) => tls,
            Err(e) => {
                tracing::error!(error = %e, %peer, "cannot start a TLS session; closing the connection");
                self.handshakes.release(peer);
                return;
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) as u64;
        let session = Session::new(
            id,
            peer,
            0,
            endpoint.transport,
            tls,
            &self.settings,
            self.tick(),
        );
        let conn = Arc::new(Conn::new(session, stream));
        let key = self.conns_mut().insert(Arc::clone(&conn));
        conn.with(|s| s.set_key(key));
        self.shard().accepted();
        if endpoint.handshakes_first() {
            self.shard().handshake_begun();
        }
        self.readers.fetch_add(1, Ordering::SeqCst);
        tracing::debug!(conn = id, %peer, "connected");
        let (hub, reader) = (Arc::clone(self), Arc::clone(&conn));
        tokio::spawn(async move { session::read_loop(&*hub, &*reader).await });
        let hub = Arc::clone(self);
        tokio::spawn(async move { hub.write_loop(&conn).await });
    }

    /// A connection's writer: hands what is queued to the kernel,
    /// coalesced while the runtime is busy, and waits for the socket when
    /// the kernel refuses, until the connection closes.
    async fn write_loop(&self, conn: &Conn) {
        // A flush came while this writer waited to coalesce.
        let mut flush_due = false;
        loop {
            let cx = self.cx();
            let coalescer = &self.coalescer;
            let next = conn.with(|s| {
                s.next(self.flushing(), &cx, |out| {
                    !flush_due && coalescer.should_wait(out)
                })
            });
            match next {
                Next::Exit => return,
                Next::Close(reason) => {
                    session::finish(self, conn, reason);
                    return;
                }
                Next::Sleep => conn.writer_woken().await,
                Next::Coalesce => {
                    tokio::select! {
                        () = coalescer.next_flush() => flush_due = true,
                        () = conn.writer_woken() => {}
                    }
                }
                Next::Send => {
                    flush_due = false;
                    let turn = conn.with(|s| s.flush(|bufs| conn.try_send(bufs), &cx));
                    if !session::settled(self, conn, turn) {
                        return;
                    }
                }
                Next::Wait { give_up } => {
                    let deadline = async {
                        match give_up {
                            Some(at) => tokio::time::sleep_until(at.into()).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        writable = conn.writable() => match writable {
                            Ok(()) => conn.with(|s| s.writable()),
                            Err(_) => {
                                session::close(self, conn, CloseReason::WriteError);
                                return;
                            }
                        },
                        // Shutdown may have begun: look again.
                        () = conn.writer_woken() => {}
                        // The drain's stall time passed: `next` says so.
                        () = deadline => {}
                    }
                }
            }
        }
    }

    async fn wait_changed(&self, ready: impl Fn() -> bool) {
        notified_until(&self.changed, ready).await;
    }

    /// Tells whoever asks (`/clients`) how the clients are doing, a chunk
    /// of them at a time.
    async fn answer_inspections(
        self: Arc<Self>,
        mut requests: mpsc::UnboundedReceiver<clients::Request>,
    ) {
        while let Some(request) = requests.recv().await {
            clients::answer(&self.snapshot(), request, |c| c.with(|s| s.info())).await;
        }
    }

    /// Closes connections that have sent nothing for `timeout`, checking
    /// four times per timeout.
    async fn sweep_idle(self: Arc<Self>, timeout: Duration) {
        sweep_idle_forever(timeout, || {
            let tick = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
            session::close_idle(&*self, &self.snapshot(), tick, IDLE_TICKS);
        })
        .await;
    }

    /// Closes the longest-connected client; false if there is none.
    fn close_one(&self, reason: CloseReason) -> bool {
        let oldest = self.conns().iter().next().map(Arc::clone);
        oldest.is_some_and(|link| {
            session::close(self, &link, reason);
            true
        })
    }

    fn close_all(&self, reason: CloseReason) {
        for link in self.snapshot().iter() {
            session::close(self, link, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn the_epoll_timer_sleeps_its_delay_each_time() {
        let mut timer = EpollTimer::new().expect("timerfd");
        for _ in 0..3 {
            let start = Instant::now();
            timer.sleep(Duration::from_micros(300)).await;
            assert!(start.elapsed() >= Duration::from_micros(300));
        }
    }
}
