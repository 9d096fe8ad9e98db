//! The closed loop at `--rate max`: how many lines each publisher may have
//! in flight, and how far they have come back.
//!
//! # Paced by every reader (the default)
//!
//! A publisher's line is in flight until every fast reader has it, or has
//! a later line of the same publisher (then it was lost there). The window
//! moves as TCP's congestion window does, with every reader as the
//! receiver:
//!
//! - It starts at [`INITIAL_WINDOW`] lines and grows by as many lines as
//!   come back (doubling every round trip, TCP's slow start) until the
//!   first loss, never past `--window`.
//! - A reader that finds lines of the publisher missing cuts it in half,
//!   once per round trip: lines written before the last cut were sent into
//!   the same congestion.
//! - After a cut it grows by one line for every window's worth delivered
//!   (additive increase).
//!
//! So the publishers settle near the fastest rate that every reader keeps
//! up with. This is throughput in the RFC 2544 sense, the
//! highest rate without loss, near enough. A server that paces its
//! publishers to its slowest reader and one that drops for it (ringcast)
//! measure alike on it.
//!
//! # Paced by its own connection
//!
//! A line is in flight until the publisher's own connection has it, and the
//! window stays at `--window`. The publisher outpaces any reader slower
//! than its own connection, and the server must drop for those readers or
//! pace the publisher: this measures a server in overload. A server that
//! drops may drop the publisher's own lines, which then never come back,
//! so a gap on its own connection gives up what it has in flight.
//!
//! # Paced by nobody
//!
//! No window: the publisher always has room for a full write, and only
//! its socket slows it down. Nothing here is consulted after that, and no
//! line is ever in flight.
//!
//! # Lines lost at the tail
//!
//! A reader shows a loss only when a later line of the same publisher
//! arrives. When the last lines a publisher wrote are lost, nothing comes
//! after them, and a full window would wait for good. So a publisher whose
//! wait runs several times longer than its recent waits sends one line
//! more, beyond the window, to show the gap (TCP's tail-loss probe). A
//! publisher that sees nothing come back for a second all the same gives
//! its lines in flight up: its own connection may lose every line it
//! sends.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use tokio::sync::Notify;

use crate::plan::PacedBy;

/// The window paced by every reader starts at this many lines (TCP's
/// initial window is 10 segments).
pub(crate) const INITIAL_WINDOW: u64 = 10;
/// `PubState::waiting_on` when the publisher waits for no reader.
const NOBODY: usize = usize::MAX;
/// A probe goes out after this many times the recent waits...
const PROBE_AFTER_WAITS: u32 = 4;
/// ...but not sooner than this (the timer's resolution),
const PROBE_AFTER_MIN: Duration = Duration::from_millis(1);
/// ...nor later than this.
const PROBE_AFTER_MAX: Duration = Duration::from_millis(200);

/// One publisher's side of the loop: lines written, its window, how far
/// its lines have come back, and its wake-up.
pub(crate) struct PubState {
    /// Lines written in full.
    pub(crate) written: CachePadded<AtomicU64>,
    /// One past the highest sequence number received back on the
    /// publisher's own connection.
    pub(crate) next: CachePadded<AtomicU64>,
    /// Lines below this no longer count as in flight: they may never come
    /// back (see the module docs).
    pub(crate) given_up: CachePadded<AtomicU64>,
    /// Lines the publisher may have in flight now.
    window: CachePadded<AtomicU64>,
    /// It never grows past this (`--window`).
    max: u64,
    /// Below this the window doubles every round trip (slow start); from
    /// the first cut on, half the window before the latest cut.
    threshold: AtomicU64,
    /// A loss of a line below this was already answered by a cut.
    cut_below: AtomicU64,
    /// The reader the publisher waits for, or [`NOBODY`].
    waiting_on: AtomicUsize,
    /// The line count that reader must reach.
    waiting_for: AtomicU64,
    /// Times the publisher gave its lines in flight up.
    pub(crate) resets: AtomicU64,
    /// Times its window was cut.
    pub(crate) cuts: AtomicU64,
    /// Lines it sent beyond its window to show a loss at the tail.
    pub(crate) probes: AtomicU64,
    /// Notified when the lines in flight may have gone down.
    pub(crate) moved: Notify,
}

impl PubState {
    /// A publisher that may have up to `max` lines in flight, paced by
    /// `paced_by`: from the start, or from [`INITIAL_WINDOW`] up.
    pub(crate) fn new(max: usize, paced_by: PacedBy) -> Self {
        let max = max as u64;
        let window = match paced_by {
            PacedBy::EveryReader => INITIAL_WINDOW.min(max),
            PacedBy::OwnConnection | PacedBy::Nobody => max,
        };
        PubState {
            written: CachePadded::default(),
            next: CachePadded::default(),
            given_up: CachePadded::default(),
            window: CachePadded::new(AtomicU64::new(window)),
            max,
            threshold: AtomicU64::new(max),
            cut_below: AtomicU64::new(0),
            waiting_on: AtomicUsize::new(NOBODY),
            waiting_for: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            moved: Notify::new(),
        }
    }

    /// Lines the publisher may have in flight now.
    pub(crate) fn window(&self) -> u64 {
        self.window.load(Ordering::Relaxed)
    }

    /// The publisher's lines in flight may never come back (its own
    /// connection lost lines, or none came back for a while): they no
    /// longer hold its window. Counted once per call that gives up more.
    pub(crate) fn give_up_in_flight(&self) {
        let written = self.written.load(Ordering::Acquire);
        if self.given_up.fetch_max(written, Ordering::AcqRel) < written {
            self.resets.fetch_add(1, Ordering::Relaxed);
            self.moved.notify_one();
        }
    }

    /// Lines in flight, of `written`, with every line below `back` back:
    /// neither back nor given up.
    fn in_flight(&self, written: u64, back: u64) -> u64 {
        written.saturating_sub(back.max(self.given_up.load(Ordering::Acquire)))
    }

    /// How far the publisher's lines have come back on its own connection.
    fn back_on_own(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// A reader found lines missing before line `seq`: cuts the window in
    /// half, unless a cut since `seq` was written already answered it.
    pub(crate) fn lost(&self, seq: u64) {
        let mut below = self.cut_below.load(Ordering::Acquire);
        loop {
            if seq < below {
                return;
            }
            // Only a loss not answered yet reads the publisher's count.
            let written = self.written.load(Ordering::Acquire);
            match self.cut_below.compare_exchange_weak(
                below,
                written.max(seq + 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => below = now,
            }
        }
        let half = |w: u64| (w / 2).max(1);
        // The closure never declines, so this cannot fail.
        let before = self
            .window
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| Some(half(w)))
            .unwrap_or_else(|w| w);
        self.threshold.store(half(before), Ordering::Relaxed);
        self.cuts.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the window is still in slow start.
    fn starting(&self) -> bool {
        self.window() < self.threshold.load(Ordering::Relaxed)
    }

    /// `lines` more in flight, up to `--window`.
    fn grow(&self, lines: u64) {
        // A cut in between wins: the closure sees the cut window.
        let max = self.max;
        let _ = self
            .window
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| {
                (w < max).then(|| w.saturating_add(lines).min(max))
            });
    }
}

/// How far each fast reader has received each publisher's lines: one past
/// the highest sequence number seen. Each reader writes its own row, on
/// cache lines of its own; publishers read down their column.
pub(crate) struct Received {
    /// Fast readers.
    readers: usize,
    /// Cache lines per reader's row.
    row: usize,
    cells: Box<[CachePadded<[AtomicU64; PER_LINE]>]>,
}

/// Counters per cache line.
const PER_LINE: usize = 8;

impl Received {
    pub(crate) fn new(readers: usize, publishers: usize) -> Self {
        let row = publishers.div_ceil(PER_LINE);
        Received {
            readers,
            row,
            cells: (0..readers * row).map(|_| CachePadded::default()).collect(),
        }
    }

    /// Fast readers.
    pub(crate) fn readers(&self) -> usize {
        self.readers
    }

    fn cell(&self, reader: usize, publisher: usize) -> &AtomicU64 {
        &self.cells[reader * self.row + publisher / PER_LINE][publisher % PER_LINE]
    }

    /// What `reader` has of `publisher`'s lines.
    pub(crate) fn get(&self, reader: usize, publisher: usize) -> u64 {
        self.cell(reader, publisher).load(Ordering::Relaxed)
    }

    /// Reader `reader` now has `publishers`' lines up to the counts given,
    /// `(publisher, next)`; wakes each publisher that waited for it to get
    /// there.
    pub(crate) fn arrived(&self, reader: usize, pubs: &[PubState], progress: &[(usize, u64)]) {
        for &(publisher, next) in progress {
            self.cell(reader, publisher).store(next, Ordering::Relaxed);
        }
        // Pairs with the fence in `Loop::watch`: either the publisher sees
        // these counts, or this sees it waiting.
        fence(Ordering::SeqCst);
        for &(publisher, next) in progress {
            let state = &pubs[publisher];
            if state.waiting_on.load(Ordering::Acquire) == reader
                && next >= state.waiting_for.load(Ordering::Acquire)
                && state
                    .waiting_on
                    .compare_exchange(reader, NOBODY, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                state.moved.notify_one();
            }
        }
    }
}

/// What a publisher may do now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Room {
    /// Write this many lines.
    Lines(u64),
    /// Wait for `PubState::moved`.
    Wait,
}

/// A publisher's view of its window, from its own task.
pub(crate) struct Loop<'a> {
    me: &'a PubState,
    publisher: usize,
    received: &'a Received,
    paced_by: PacedBy,
    /// The most lines one write carries.
    batch: u64,
    /// Every reader has received, or lost, every line below this.
    back: u64,
    /// The scan down the readers: the next one to look at, and the fewest
    /// lines one of those looked at had.
    scan_at: usize,
    scan_low: u64,
    /// Lines delivered to every reader since the window last grew.
    delivered: u64,
    /// How long waits for the window have lasted of late (a moving
    /// average).
    recent_wait: Duration,
}

impl<'a> Loop<'a> {
    pub(crate) fn new(
        me: &'a PubState,
        publisher: usize,
        received: &'a Received,
        paced_by: PacedBy,
        batch: usize,
    ) -> Self {
        Loop {
            me,
            publisher,
            received,
            paced_by,
            batch: batch as u64,
            back: 0,
            scan_at: 0,
            scan_low: u64::MAX,
            delivered: 0,
            recent_wait: Duration::ZERO,
        }
    }

    /// What to do, with `written` lines written. Refills only when a good
    /// part of the window is free, so writes stay large.
    pub(crate) fn room(&mut self, written: u64) -> Room {
        loop {
            let window = self.me.window();
            let refill = (window.min(self.batch) / 4).max(1);
            let back = match self.paced_by {
                PacedBy::Nobody => return Room::Lines(self.batch),
                PacedBy::OwnConnection => self.me.back_on_own(),
                PacedBy::EveryReader => self.back,
            };
            let in_flight = self.me.in_flight(written, back);
            let free = window.saturating_sub(in_flight);
            if free >= refill {
                return Room::Lines(free.min(self.batch));
            }
            if self.paced_by == PacedBy::OwnConnection {
                return Room::Wait;
            }
            // Every reader must have had the lines below this.
            let target = (written + refill).saturating_sub(window);
            if let Some(reader) = self.scan(target)
                && self.watch(reader, target)
            {
                return Room::Wait;
            }
        }
    }

    /// A wait for the window ended, after `waited`, with lines back.
    pub(crate) fn waited(&mut self, waited: Duration) {
        self.recent_wait = self.recent_wait * 7 / 8 + waited / 8;
    }

    /// How long a wait may run before the publisher probes.
    pub(crate) fn probe_after(&self) -> Duration {
        (self.recent_wait * PROBE_AFTER_WAITS).clamp(PROBE_AFTER_MIN, PROBE_AFTER_MAX)
    }

    /// Goes on down the readers; the first one with fewer than `target`
    /// lines, if any. Once past the last, every reader has at least the
    /// fewest lines seen on the way: the window moves on, and grows.
    fn scan(&mut self, target: u64) -> Option<usize> {
        while self.scan_at < self.received.readers() {
            let has = self.received.get(self.scan_at, self.publisher);
            if has < target {
                return Some(self.scan_at);
            }
            self.scan_low = self.scan_low.min(has);
            self.scan_at += 1;
        }
        let low = std::mem::replace(&mut self.scan_low, u64::MAX);
        self.scan_at = 0;
        if low > self.back && low != u64::MAX {
            let back = low - self.back;
            self.back = low;
            if self.me.starting() {
                self.me.grow(back);
            } else {
                self.delivered += back;
                if self.delivered >= self.me.window() {
                    self.delivered = 0;
                    self.me.grow(1);
                }
            }
        }
        None
    }

    /// Asks `reader` to wake the publisher once it has `target` lines;
    /// false if it has them already.
    fn watch(&self, reader: usize, target: u64) -> bool {
        let me = self.me;
        me.waiting_for.store(target, Ordering::Release);
        me.waiting_on.store(reader, Ordering::Release);
        // Pairs with the fence in `Received::arrived`.
        fence(Ordering::SeqCst);
        if self.received.get(reader, self.publisher) >= target {
            me.waiting_on.store(NOBODY, Ordering::Release);
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publisher_gives_up_what_was_in_flight_once_per_loss() {
        let ack = PubState::new(1000, PacedBy::OwnConnection);
        ack.written.store(100, Ordering::Release);
        ack.next.store(40, Ordering::Release);
        let in_flight = |written| ack.in_flight(written, ack.back_on_own());
        assert_eq!(in_flight(100), 60);
        ack.give_up_in_flight();
        assert_eq!(in_flight(100), 0);
        assert_eq!(in_flight(130), 30, "lines written since still count");
        // Nothing written since: nothing more to give up, no second reset.
        ack.give_up_in_flight();
        assert_eq!(ack.resets.load(Ordering::Relaxed), 1);
        // Lines that come back after all move the window on as before.
        ack.next.store(120, Ordering::Release);
        assert_eq!(in_flight(130), 10);
    }

    #[test]
    fn losses_cut_the_window_once_per_round_trip() {
        let me = PubState::new(100, PacedBy::OwnConnection);
        me.written.store(500, Ordering::Release);
        me.lost(300);
        assert_eq!(me.window(), 50);
        // More of the same burst, lost before the cut was felt.
        me.lost(310);
        me.lost(499);
        assert_eq!(me.window(), 50);
        // A loss of a line written after the cut: a new one.
        me.written.store(600, Ordering::Release);
        me.lost(500);
        assert_eq!(me.window(), 25);
        assert_eq!(me.cuts.load(Ordering::Relaxed), 2);
        for seq in 600..700 {
            me.written.store(seq + 1, Ordering::Release);
            me.lost(seq);
        }
        assert_eq!(me.window(), 1, "never below one line");
    }

    /// One publisher paced by every reader, with a window of up to `max`
    /// lines, and two readers.
    fn two_readers(max: usize) -> (PubState, Received) {
        (
            PubState::new(max, PacedBy::EveryReader),
            Received::new(2, 1),
        )
    }

    /// Runs `lp` for `rounds` steps, each reader getting every line it
    /// waits for at once; the window after each step that waited.
    fn lossless(lp: &mut Loop<'_>, received: &Received, rounds: usize) -> Vec<u64> {
        let me = lp.me;
        let pubs = std::slice::from_ref(me);
        let mut windows = Vec::new();
        let mut written = me.written.load(Ordering::Acquire);
        for _ in 0..rounds {
            match lp.room(written) {
                Room::Lines(n) => {
                    written += n;
                    me.written.store(written, Ordering::Release);
                }
                Room::Wait => {
                    received.arrived(0, pubs, &[(0, written)]);
                    received.arrived(1, pubs, &[(0, written)]);
                    windows.push(me.window());
                }
            }
        }
        windows
    }

    #[test]
    fn the_window_doubles_each_round_trip_until_the_first_loss() {
        let (me, received) = two_readers(1000);
        let mut lp = Loop::new(&me, 0, &received, PacedBy::EveryReader, 10_000);
        assert_eq!(me.window(), INITIAL_WINDOW);
        let windows = lossless(&mut lp, &received, 40);
        assert_eq!(windows[..5], [10, 20, 40, 80, 160], "{windows:?}");
        assert_eq!(
            windows[windows.len() - 3..],
            [1000; 3],
            "up to --window only"
        );
        me.lost(me.written.load(Ordering::Acquire));
        assert_eq!(me.window(), 500);
        // From there, one line per window delivered.
        // The round trip in flight at the cut counts towards the first line.
        let windows = lossless(&mut lp, &received, 8);
        assert_eq!(windows[..3], [501, 502, 503], "{windows:?}");
    }

    #[test]
    fn every_reader_paces_the_publisher_to_the_slowest() {
        let (me, received) = two_readers(8);
        let mut lp = Loop::new(&me, 0, &received, PacedBy::EveryReader, 64);
        assert_eq!(lp.room(0), Room::Lines(8));
        // Reader 0 has all eight, reader 1 none: the window is full.
        received.arrived(0, std::slice::from_ref(&me), &[(0, 8)]);
        assert_eq!(lp.room(8), Room::Wait);
        // Reader 1 gets six: six of the eight are back everywhere.
        received.arrived(1, std::slice::from_ref(&me), &[(0, 6)]);
        assert_eq!(lp.room(8), Room::Lines(6));
    }

    #[test]
    fn the_reader_waited_for_wakes_the_publisher() {
        let (me, received) = two_readers(8);
        let mut lp = Loop::new(&me, 0, &received, PacedBy::EveryReader, 64);
        received.arrived(0, std::slice::from_ref(&me), &[(0, 8)]);
        assert_eq!(lp.room(8), Room::Wait);
        let woken = me.moved.notified();
        tokio::pin!(woken);
        assert!(!woken.as_mut().enable(), "no wake-up stored yet");
        // One line is not enough for a refill (8 / 4): no wake-up.
        received.arrived(1, std::slice::from_ref(&me), &[(0, 1)]);
        assert!(futures_now(woken.as_mut()).is_none());
        received.arrived(1, std::slice::from_ref(&me), &[(0, 2)]);
        assert!(futures_now(woken.as_mut()).is_some(), "reader 1 woke it");
        assert_eq!(lp.room(8), Room::Lines(2));
    }

    /// Polls `f` once.
    fn futures_now<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        match f.poll(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn after_a_loss_the_window_grows_by_one_per_window_delivered() {
        let (me, received) = two_readers(8);
        let mut lp = Loop::new(&me, 0, &received, PacedBy::EveryReader, 64);
        me.written.store(8, Ordering::Release);
        me.lost(0);
        assert_eq!(me.window(), 4);
        let windows = lossless(&mut lp, &received, 100);
        assert_eq!(windows[..6], [4, 5, 6, 7, 8, 8], "one line per round trip");
        assert_eq!(me.window(), 8, "and no further than --window");
    }

    #[test]
    fn a_probe_waits_for_several_recent_waits_within_bounds() {
        let (me, received) = two_readers(8);
        let mut lp = Loop::new(&me, 0, &received, PacedBy::EveryReader, 64);
        assert_eq!(lp.probe_after(), PROBE_AFTER_MIN);
        for _ in 0..100 {
            lp.waited(Duration::from_millis(5));
        }
        let after = lp.probe_after();
        assert!(after > Duration::from_millis(19) && after <= Duration::from_millis(20));
        for _ in 0..100 {
            lp.waited(Duration::from_secs(1));
        }
        assert_eq!(lp.probe_after(), PROBE_AFTER_MAX);
    }

    #[test]
    fn paced_by_nobody_always_has_room_for_a_full_write() {
        let me = PubState::new(8, PacedBy::Nobody);
        let received = Received::new(0, 1);
        let mut lp = Loop::new(&me, 0, &received, PacedBy::Nobody, 64);
        // Far more written than any window, nothing back anywhere.
        for written in [0, 8, 1_000, 1_000_000] {
            me.written.store(written, Ordering::Release);
            assert_eq!(lp.room(written), Room::Lines(64), "{written} written");
        }
        // A loss does not slow it down either.
        me.lost(0);
        assert_eq!(lp.room(1_000_000), Room::Lines(64));
    }

    #[test]
    fn own_connection_pacing_ignores_the_other_readers() {
        let me = PubState::new(8, PacedBy::OwnConnection);
        let received = Received::new(2, 1);
        let mut lp = Loop::new(&me, 0, &received, PacedBy::OwnConnection, 64);
        assert_eq!(lp.room(8), Room::Wait);
        me.next.store(8, Ordering::Release);
        assert_eq!(lp.room(8), Room::Lines(8), "reader 1 has nothing");
    }
}
