//! The two engines, and what they share. [`session`] is one connection's
//! whole life, written once; an engine (`uring`, `tokio`) is only the glue
//! that runs it on its runtime. [`mesh`] carries lines between `uring`'s
//! cores, [`roster`] holds a core's connections, and this module has the
//! accept loop, the idle sweep and the shutdown controls both use.

pub(crate) mod mesh;
mod roster;
pub(crate) mod session;
pub(crate) mod tokio;
pub(crate) mod uring;

pub(crate) use roster::Roster;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use ::tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ops::clients::Transport;
use crate::ops::metrics::Shard;
use crate::policy::limits::{AcceptBackoff, Gate};
use crate::policy::tls::{Certs, Tls};

/// How the coordinator steers an engine through shutdown.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    /// Stop accepting: shutdown (or lame duck) has begun.
    pub accepting_ends: CancellationToken,
    /// Stop reading, deliver what is in flight, flush queues, then close.
    pub stop: CancellationToken,
    /// The drain timeout passed: close every connection now.
    pub abort: CancellationToken,
    /// Each engine thread holds a clone and drops it when it exits, so the
    /// receiver closes once the whole engine has stopped.
    pub alive: mpsc::Sender<()>,
    /// An engine thread that exits before `stop` names itself here (see
    /// [`ExitWatch`]).
    pub exits: mpsc::UnboundedSender<String>,
    /// Every accept loop sends one message here once it accepts: the
    /// server is ready when all have.
    pub accepting: mpsc::UnboundedSender<()>,
}

/// What one core (or the tokio runtime) accepts clients on: a listener
/// for each of `--listen`, `--ws`, `--plain-listen` and `--plain-ws` that
/// is set.
pub(crate) type Listening = Vec<(std::net::TcpListener, Endpoint)>;

/// What a listener's clients speak.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// Lines or WebSocket.
    pub(crate) transport: Transport,
    /// TLS with these certificates, or plain.
    pub(crate) tls: Option<Arc<Certs>>,
}

impl Endpoint {
    /// True if its connections hold a pending-handshake slot until their
    /// handshake completes, and a `--max-clients` slot only then.
    pub(crate) fn handshakes_first(&self) -> bool {
        self.transport == Transport::Websocket || self.tls.is_some()
    }

    /// A new connection's TLS state: `Ok(None)` for a plain listener.
    pub(crate) fn tls(&self) -> Result<Option<Tls>, rustls::Error> {
        self.tls.as_ref().map(|certs| certs.accept()).transpose()
    }
}

/// Held by every engine thread: if the thread ends (returns or panics)
/// before shutdown began, it reports itself, so that the process exits
/// non-zero instead of serving on with a core missing.
#[derive(Debug)]
pub(crate) struct ExitWatch {
    what: String,
    control: Control,
}

impl ExitWatch {
    pub(crate) fn new(what: String, control: &Control) -> Self {
        Self {
            what,
            control: control.clone(),
        }
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        if !self.control.stop.is_cancelled() {
            let _ = self.control.exits.send(std::mem::take(&mut self.what));
        }
    }
}

/// Metrics shards for `threads` engine threads: one each, one for the
/// cluster bridge ([`bridge_shard`]), and one for tokio's accept thread.
pub(crate) fn shard_count(threads: usize) -> usize {
    threads + 2
}

/// The metrics shard the cluster bridge writes.
pub(crate) fn bridge_shard(threads: usize) -> usize {
    threads
}

/// A test-only fault, named by the `RINGCAST_FAILPOINT` environment
/// variable in debug builds; release builds never read it.
pub(crate) fn failpoint(name: &str) -> bool {
    cfg!(debug_assertions) && std::env::var("RINGCAST_FAILPOINT").is_ok_and(|v| v == name)
}

/// Accepts connections until `stop` is cancelled, for either engine.
///
/// Every accepted connection passes the [`Gate`] (`--max-clients`) before
/// `admit` gets it; one over the limit is dropped, which closes it. When the
/// process is out of descriptors, accept pauses with a bounded backoff while
/// connected clients go on being served, and resumes as soon as any
/// connection of the server closes. `shard` gives the counters of the
/// thread the loop is running on.
///
/// When `stop` fires, `halt` shuts the listening socket down, so that new
/// connects are refused at once, and the accept in flight is awaited to its
/// end: on io_uring, dropping it would leave the socket open and the
/// descriptor it may return unclosed.
///
/// `started` is called once the loop accepts.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn accept_until_stopped<'a, S, F>(
    core: usize,
    stop: &CancellationToken,
    started: impl FnOnce(),
    gate: &Gate,
    shard: impl Fn() -> &'a Shard,
    mut accept: impl FnMut() -> F,
    halt: impl FnOnce(),
    mut admit: impl FnMut(S, SocketAddr),
) where
    F: Future<Output = io::Result<(S, SocketAddr)>>,
{
    let mut stopped = pin!(stop.cancelled());
    // One accept loop of the process (whichever gets here first), for
    // `accept-late-one`.
    static LATE_ONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let late = failpoint("accept-late")
        || (failpoint("accept-late-one")
            && !LATE_ONE.swap(true, std::sync::atomic::Ordering::Relaxed));
    if late {
        // A core that is slow to start: readiness must wait for it.
        ::tokio::select! {
            () = &mut stopped => return,
            () = ::tokio::time::sleep(Duration::from_secs(3)) => {}
        }
    }
    started();
    let mut backoff = AcceptBackoff::default();
    loop {
        let mut accepting = pin!(accept());
        let accepted = ::tokio::select! {
            biased;
            () = &mut stopped => {
                halt();
                // Whatever it returns now is closed when dropped.
                drop(accepting.await);
                return;
            }
            accepted = &mut accepting => accepted,
        };
        let pause: Option<Duration> = match accepted {
            Ok((stream, peer)) => {
                backoff.on_success();
                if gate.admit(peer, shard()) {
                    admit(stream, peer);
                }
                None
            }
            Err(e) => gate.accept_failed(core, &mut backoff, &e),
        };
        if let Some(pause) = pause {
            let freed = gate.freed();
            ::tokio::select! {
                () = &mut stopped => {
                    halt();
                    return;
                }
                () = ::tokio::time::sleep(pause) => {}
                () = freed => {}
            }
        }
    }
}

/// Lame duck mode: closes the host's clients one by one, spread evenly over
/// `over`, until none is left or `stop` fires. `count` says how many are
/// connected, `close_one` closes one (false if none was left).
pub(crate) async fn close_spread_out(
    over: Duration,
    stop: &CancellationToken,
    count: impl Fn() -> usize,
    mut close_one: impl FnMut() -> bool,
) {
    let n = count();
    if n == 0 {
        return;
    }
    let every = over / u32::try_from(n).unwrap_or(u32::MAX);
    let mut next = ::tokio::time::Instant::now();
    loop {
        next += every;
        ::tokio::select! {
            () = stop.cancelled() => return,
            () = ::tokio::time::sleep_until(next) => {}
        }
        if !close_one() {
            return;
        }
    }
}

/// Sweeps for idle clients four times per `timeout`, forever. Each sweep
/// advances the tick that readers stamp on their connection when data
/// arrives, then closes every connection stamped more than [`IDLE_TICKS`]
/// ticks ago; a silent client goes within 1.25 × `timeout`.
pub(crate) async fn sweep_idle_forever(timeout: Duration, mut sweep: impl FnMut()) {
    let mut ticker =
        ::tokio::time::interval((timeout / IDLE_TICKS as u32).max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(::tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    loop {
        ticker.tick().await;
        sweep();
    }
}

/// Sweeps per idle timeout.
pub(crate) const IDLE_TICKS: u64 = 4;

/// Waits on `notify` until `ready()` holds. The check comes after the
/// waiter registers, so a `notify_waiters` in between is never missed.
pub(crate) async fn notified_until(notify: &::tokio::sync::Notify, ready: impl Fn() -> bool) {
    loop {
        let notified = pin!(notify.notified());
        if ready() {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::io;
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::accept_until_stopped;
    use crate::ops::metrics::Metrics;
    use crate::policy::limits::Gate;

    #[tokio::test(start_paused = true)]
    async fn an_accept_paused_for_want_of_descriptors_resumes_when_a_client_leaves() {
        let metrics = Metrics::new(1);
        let gate = Gate::new(10, 0);
        let peer: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert!(gate.admit(peer, metrics.shard(0)), "a client holds a slot");
        let stop = CancellationToken::new();
        let start = ::tokio::time::Instant::now();
        // The process has no descriptor to spare until a client leaves at 10 s.
        let leaves_at = Duration::from_secs(10);
        let left = Cell::new(false);
        let admitted = Cell::new(None);
        let accepting = accept_until_stopped(
            0,
            &stop,
            || {},
            &gate,
            || metrics.shard(0),
            || {
                let result = if left.get() {
                    Ok(((), peer))
                } else {
                    Err(io::Error::from_raw_os_error(
                        nix::errno::Errno::EMFILE as i32,
                    ))
                };
                std::future::ready(result)
            },
            || {},
            |(), _| {
                admitted.set(Some(start.elapsed()));
                stop.cancel();
            },
        );
        let leaving = async {
            ::tokio::time::sleep(leaves_at).await;
            left.set(true);
            gate.release(peer);
        };
        ::tokio::join!(accepting, leaving);
        let at = admitted.get().expect("accepted once a descriptor was free");
        // The backoff had grown to 500 ms: without the wake-up, the accept
        // would come up to that much later.
        assert!(
            at < leaves_at + Duration::from_millis(1),
            "accepted at {at:?}"
        );
    }
}
