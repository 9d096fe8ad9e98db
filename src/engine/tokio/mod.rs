//! The `tokio` engine: the honest baseline on a multi-threaded tokio (epoll)
//! runtime. Everything a connection does is in [`super::session`], and
//! accepting and shutting down in [`super::lifecycle`], as on `uring`;
//! this module only runs them on tokio.
//!
//! Connections live in one registry shared by every worker. A publisher
//! walks a snapshot of it and offers the message to each connection, whose
//! state sits behind a mutex of its own.

mod conn;

use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use self::conn::Conn;
use super::lifecycle::{self, Place};
use super::session::{self, CloseReason, Host, HostState, Limits, Link as _, Next, Session};
use super::{Control, ExitWatch, Listening, Roster, failpoint};
use crate::config::Config;
use crate::error::Error;
use crate::ops::clients;
use crate::ops::cluster::{DirectRemote, QueueLocal, QueueOut};
use crate::ops::metrics::{Metrics, Shard};
use crate::policy::run::Run;
use crate::policy::send::coalesce::{Coalescer, Timer, TokioTimer};
use crate::policy::send::patience::Patience;
use crate::sys::timer::FlushTimer;

thread_local! {
    /// Which metrics shard this thread writes: set on the workers and the
    /// main thread; unset on the cluster bridge's.
    static SHARD: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
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
            SHARD.with(|s| s.set(Some(index)));
        })
        .enable_all()
        .build()
        .map_err(|source| Error::Runtime {
            engine: "tokio",
            source,
        })?;
    let coalescer = Coalescer::new(
        config.coalesce,
        // One pacer for the whole runtime: busy means busy for all its
        // threads together.
        config.coalesce_above.saturating_mul(threads as u64),
    );
    // Each thread may wait as long as a core of the io_uring engine.
    let patience = Patience::new(config.grace.saturating_mul(threads as u32), Instant::now());
    let limits = Arc::new(Limits::new(config));
    let hub = Arc::new(Hub {
        // The whole runtime is one place: core 0 of 1.
        state: HostState::new(0, 1, &limits, config, coalescer, patience),
        metrics: Arc::clone(metrics),
        conns: RwLock::new(Roster::new()),
        stopping: AtomicBool::new(false),
        draining: std::sync::OnceLock::new(),
        tick: AtomicU64::new(0),
        bridge_shard: super::bridge_shard(threads),
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
        let remote = DirectRemote(Arc::clone(&hub));
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
            SHARD.with(|s| s.set(Some(threads + 1)));
            let _alive = control.alive.clone();
            if failpoint("core-exit:0") {
                return;
            }
            // The lifecycle's own tasks (`/clients`, the idle sweep) run on
            // this thread too; connections run on the workers.
            tokio::task::LocalSet::new().block_on(&runtime, async move {
                let pacer = Arc::clone(&hub);
                tokio::spawn(async move { pacer.coalescer().run_with(EpollTimer::new).await });
                lifecycle::run::<Hub>(hub, listeners, inspections, &control).await;
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
    state: HostState,
    metrics: Arc<Metrics>,
    conns: RwLock<Roster<Arc<Conn>>>,
    stopping: AtomicBool,
    /// Since when nothing more is delivered (shutdown), if it is so.
    draining: std::sync::OnceLock<Instant>,
    /// Advanced by the idle sweeper; readers stamp it on their connection.
    tick: AtomicU64,
    /// The metrics shard of the cluster bridge's thread, the one thread
    /// outside the runtime that delivers into the hub.
    bridge_shard: usize,
    /// Local lines on their way to the cluster bridge.
    cluster_out: Option<Arc<QueueOut>>,
}

impl Host for Hub {
    type Link = Conn;

    fn state(&self) -> &HostState {
        &self.state
    }

    fn shard(&self) -> &Shard {
        self.metrics
            .shard(SHARD.with(|s| s.get()).unwrap_or(self.bridge_shard))
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
        if lifecycle::deliver(self, std::slice::from_ref(run)).await {
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

    fn forget(&self, link: &Conn) {
        lifecycle::forget(self, link);
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn draining(&self) -> Option<Instant> {
        self.draining.get().copied()
    }

    fn tick(&self) -> u64 {
        self.tick.load(Ordering::Relaxed)
    }
}

impl Place for Hub {
    type Shared<T: 'static> = Arc<T>;
    type Listener = TcpListener;
    type Stream = TcpStream;

    fn roster<T>(&self, f: impl FnOnce(&mut Roster<Arc<Conn>>) -> T) -> T {
        f(&mut self
            .conns
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn roster_ref<T>(&self, f: impl FnOnce(&Roster<Arc<Conn>>) -> T) -> T {
        f(&self
            .conns
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The cached snapshot under the read lock, while no one joined or
    /// left: publishers on every worker take it at once.
    fn snapshot(&self) -> Arc<[Arc<Conn>]> {
        let cached = self
            .conns
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .cached();
        cached.unwrap_or_else(|| self.roster(Roster::snapshot))
    }

    async fn accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        listener.accept().await
    }

    fn connect(session: Session, stream: TcpStream) -> Arc<Conn> {
        Arc::new(Conn::new(session, stream))
    }

    /// Its reader and its writer, on the workers.
    fn spawn_conn(hub: &Arc<Hub>, conn: Arc<Conn>) {
        let (reader, writer) = (Arc::clone(hub), Arc::clone(hub));
        let read = Arc::clone(&conn);
        tokio::spawn(async move { session::read_loop(&*reader, &*read).await });
        tokio::spawn(async move { write_loop(&writer, &conn).await });
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    fn next_tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// No reader is left, so no line is in flight: writers flush and close.
    async fn drain(&self) {
        let _ = self.draining.set(Instant::now());
        self.roster_ref(|r| {
            for link in r.iter() {
                link.wake_writer();
            }
        });
    }
}

/// A connection's writer: hands what is queued to the kernel, coalesced
/// while the runtime is busy, and waits for the socket when the kernel
/// refuses, until the connection closes.
async fn write_loop(hub: &Hub, conn: &Conn) {
    // A flush came while this writer waited to coalesce.
    let mut flush_due = false;
    loop {
        let cx = hub.cx();
        let coalescer = hub.coalescer();
        let next = conn.with(|s| {
            s.next(hub.draining(), &cx, |out| {
                !flush_due && coalescer.should_wait(out)
            })
        });
        match next {
            Next::Exit => return,
            Next::Close(reason) => {
                session::finish(hub, conn, reason);
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
                if !session::settled(hub, conn, turn) {
                    return;
                }
            }
            Next::Writable { give_up } => {
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
                            session::close(hub, conn, CloseReason::WriteError);
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
