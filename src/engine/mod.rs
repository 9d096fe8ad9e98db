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
use std::time::Duration;

use ::tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ops::metrics::Shard;
use crate::policy::limits::{AcceptBackoff, Gate};

/// How the coordinator steers an engine through shutdown.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    /// Stop accepting and reading, deliver what is in flight, flush queues,
    /// then close.
    pub stop: CancellationToken,
    /// The drain timeout passed: close every connection now.
    pub abort: CancellationToken,
    /// Each engine thread holds a clone and drops it when it exits, so the
    /// receiver closes once the whole engine has stopped.
    pub alive: mpsc::Sender<()>,
}

/// Accepts connections until `stop` is cancelled, for either engine.
///
/// Every accepted connection passes the [`Gate`] (`--max-clients`) before
/// `admit` gets it; one over the limit is dropped, which closes it. When the
/// process is out of descriptors, accept pauses with a bounded backoff while
/// connected clients go on being served. `shard` gives the counters of the
/// thread the loop is running on.
pub(crate) async fn accept_until_stopped<'a, S, F>(
    core: usize,
    stop: &CancellationToken,
    gate: &Gate,
    shard: impl Fn() -> &'a Shard,
    mut accept: impl FnMut() -> F,
    mut admit: impl FnMut(S, SocketAddr),
) where
    F: Future<Output = io::Result<(S, SocketAddr)>>,
{
    let mut stopped = pin!(stop.cancelled());
    let mut backoff = AcceptBackoff::default();
    loop {
        let pause: Option<Duration> = ::tokio::select! {
            () = &mut stopped => return,
            accepted = accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff.on_success();
                    if gate.admit(peer, shard()) {
                        admit(stream, peer);
                    }
                    None
                }
                Err(e) => gate.accept_failed(core, &mut backoff, &e),
            },
        };
        if let Some(pause) = pause {
            ::tokio::select! {
                () = &mut stopped => return,
                () = ::tokio::time::sleep(pause) => {}
            }
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
