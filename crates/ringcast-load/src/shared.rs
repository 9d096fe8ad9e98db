//! The state every task of a run shares: the run's clock, its counters,
//! and each publisher's window and progress. Kept apart from [`crate::run`],
//! which starts the tasks, so that the tasks need not import it.

use std::sync::atomic::AtomicU64;

use tokio::time::Instant;

use crate::plan::PacedBy;
use crate::window::{PubState, Received};

/// State every task of a run shares.
pub(crate) struct Shared {
    /// Time zero of the send timestamps.
    pub(crate) origin: Instant,
    /// Line size, newline included.
    pub(crate) size: usize,
    /// Number of publishers.
    pub(crate) publishers: usize,
    /// Lines written in full, over all publishers.
    pub(crate) published: AtomicU64,
    /// Lines received, over all fast readers: what the drain waits for.
    /// Slow readers never add to it.
    pub(crate) delivered: AtomicU64,
    /// When the latest counted line was received, in ns since `origin`.
    pub(crate) last_rx_ns: AtomicU64,
    /// Per publisher: lines written, its window, and how far its lines
    /// have come back.
    pub(crate) pubs: Box<[PubState]>,
    /// At `max`, what holds a publisher's lines in flight.
    pub(crate) paced_by: PacedBy,
    /// How far each fast reader has each publisher's lines (used when
    /// paced by every reader).
    pub(crate) received: Received,
}

impl Shared {
    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
