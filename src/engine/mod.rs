//! The two engines, and what they share. [`session`] is one connection's
//! whole life and [`lifecycle`] a place's (a core's, or the tokio
//! runtime's), each written once; an engine (`uring`, `tokio`) is only the
//! glue that runs them on its runtime. [`mesh`] carries lines between
//! `uring`'s cores, [`roster`] holds a place's connections, and this
//! module has the shutdown controls both use.

pub(crate) mod lifecycle;
pub(crate) mod mesh;
mod roster;
pub(crate) mod session;
pub(crate) mod tokio;
pub(crate) mod uring;

pub(crate) use roster::Roster;

use std::sync::Arc;

use ::tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ops::clients::Transport;
use crate::policy::send::tls::{Certs, Tls};

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
/// cluster bridge ([`bridge_shard`]), and one for tokio's main thread
/// (accept, `/clients`, the idle sweep).
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
