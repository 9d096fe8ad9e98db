//! The engines' ends of the bridge: how local lines reach it
//! ([`LocalLines`]) and how other nodes' lines reach local clients
//! ([`RemoteLines`]).
//!
//! - `uring`: the bridge is one more core of the mesh. [`MeshLocal`] drains
//!   a ring from every core, [`MeshRemote`] feeds one to every core.
//! - `tokio`: local lines wait in a bounded queue ([`QueueOut`], read
//!   through [`QueueLocal`]); other nodes' lines are delivered straight
//!   into the runtime's clients ([`DirectRemote`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_queue::ArrayQueue;
use tokio_util::sync::CancellationToken;

use super::{LocalLines, RemoteLines};
use crate::engine::lifecycle::{self, Place};
use crate::engine::mesh::{Doorbell, Inbox, Outbox};
use crate::policy::run::Run;

/// The bridge's view of the cores' rings towards it.
pub(crate) struct MeshLocal {
    inbox: Inbox<Run>,
    /// The cores, in order.
    cores: Vec<usize>,
    /// Which of `cores` the next pop tries first: the one after the core
    /// the last run came from, so that one flooding core cannot hold the
    /// others' lines back.
    next: usize,
}

impl MeshLocal {
    pub(crate) fn new(inbox: Inbox<Run>) -> Self {
        let cores = inbox.peers().collect();
        Self {
            inbox,
            cores,
            next: 0,
        }
    }
}

impl LocalLines for MeshLocal {
    /// The next run, taking turns among the cores that have one.
    fn pop(&mut self) -> Option<Run> {
        let n = self.cores.len();
        for i in 0..n {
            let at = (self.next + i) % n;
            if let Some(run) = self.inbox.pop_from(self.cores[at]) {
                self.next = (at + 1) % n;
                return Some(run);
            }
        }
        None
    }

    fn release(&mut self) {
        for &core in &self.cores {
            self.inbox.release(core);
        }
    }

    async fn wait(&self, stop: &(dyn Fn() -> bool + Sync)) {
        self.inbox.wait_or(stop).await;
    }
}

/// The bridge's rings towards every core.
pub(crate) struct MeshRemote {
    pub(crate) outbox: Outbox<Run>,
    /// Shutdown: lines from other nodes are no longer taken in.
    pub(crate) stop: CancellationToken,
}

impl RemoteLines for MeshRemote {
    async fn publish(&mut self, run: Run) {
        for core in self.outbox.peers() {
            tokio::select! {
                _ = self.outbox.push(core, run.clone()) => {}
                // Shutting down: lines from other nodes are not flushed.
                () = self.stop.cancelled() => return,
            }
        }
    }

    fn ring(&mut self) {
        self.outbox.ring();
    }
}

/// Lines waiting for the cluster bridge; full means dropped (counted).
const QUEUE_LINES: usize = 16 * 1024;

/// Runs of local lines on their way to the bridge, at most
/// [`QUEUE_LINES`] lines in all.
#[derive(Debug)]
pub(crate) struct QueueOut {
    runs: ArrayQueue<Run>,
    /// Lines in `runs`.
    lines: AtomicUsize,
    bell: Doorbell,
}

impl QueueOut {
    pub(crate) fn new() -> Self {
        Self {
            runs: ArrayQueue::new(QUEUE_LINES),
            lines: AtomicUsize::new(0),
            bell: Doorbell::default(),
        }
    }

    /// Queues `run` for the bridge and tells it; false if the queue had no
    /// room, and the run was dropped.
    pub(crate) fn offer(&self, run: &Run) -> bool {
        // Counted before it goes in, so that the bridge never takes off
        // lines not yet added.
        let lines = run.lines as usize;
        let before = self.lines.fetch_add(lines, Ordering::Relaxed);
        let queued = before + lines <= QUEUE_LINES && self.runs.push(run.clone()).is_ok();
        if !queued {
            self.lines.fetch_sub(lines, Ordering::Relaxed);
        }
        self.bell.ring();
        queued
    }
}

/// The bridge's view of a [`QueueOut`].
pub(crate) struct QueueLocal(pub(crate) Arc<QueueOut>);

impl LocalLines for QueueLocal {
    fn pop(&mut self) -> Option<Run> {
        let run = self.0.runs.pop()?;
        self.0
            .lines
            .fetch_sub(run.lines as usize, Ordering::Relaxed);
        Some(run)
    }

    fn release(&mut self) {}

    async fn wait(&self, stop: &(dyn Fn() -> bool + Sync)) {
        self.0
            .bell
            .wait_until(|| stop() || !self.0.runs.is_empty())
            .await;
    }
}

/// The bridge delivers other nodes' lines straight into a place, from
/// its own thread.
pub(crate) struct DirectRemote<P>(pub(crate) Arc<P>);

impl<P: Place + Send + Sync> RemoteLines for DirectRemote<P> {
    async fn publish(&mut self, run: Run) {
        if !self.0.stopping() {
            lifecycle::deliver(&*self.0, std::slice::from_ref(&run)).await;
        }
    }

    fn ring(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::mesh;

    #[test]
    fn the_bridge_takes_turns_among_the_cores() {
        let mut links = mesh::mesh::<Run>(3, mesh::RING_CAPACITY);
        let (_, inbox) = links.pop().expect("the bridge");
        let mut bridge = MeshLocal::new(inbox);
        let line = |core: usize, n: usize| Run {
            bytes: bytes::Bytes::from(format!("{core} {n}\n")),
            lines: 1,
        };
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(async {
                for (core, (outbox, _)) in links.iter().enumerate() {
                    // Core 0 floods; core 1 has a few lines.
                    for n in 0..if core == 0 { 20 } else { 3 } {
                        outbox.push(2, line(core, n)).await;
                    }
                }
            });
        let order: Vec<Run> = std::iter::from_fn(|| bridge.pop()).collect();
        let want: Vec<Run> = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
            .into_iter()
            .map(|(core, n)| line(core, n))
            .chain((3..20).map(|n| line(0, n)))
            .collect();
        assert_eq!(order, want, "each core's lines in order, the cores in turn");
    }
}
