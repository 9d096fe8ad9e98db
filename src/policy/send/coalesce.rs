//! Write coalescing under heavy fan-out.
//!
//! Every socket write costs the same kernel work whether it carries one
//! message or fifty, and on a busy server that work is most of the CPU:
//! a line to 1,000 clients is 1,000 writes. When lines arrive in quick
//! succession, writing each one at once means many writes of one line each.
//!
//! A [`Coalescer`] trades a little latency for far fewer writes, but only
//! while a runtime (a core on `uring`, the whole runtime on `tokio`) is busy:
//!
//! - **Busy** means more than `busy_above` deliveries (messages offered to
//!   client queues) per second over the last [`WINDOW`]. Deliveries, not
//!   writes, so that coalescing does not switch itself off.
//! - While busy, a writer that wakes to a short queue waits for the next
//!   flush, which comes `delay` after the first writer asked for one, and
//!   then every waiting writer writes what has piled up in one write each.
//! - A queue holding a quarter of its capacity, or [`FLUSH_BYTES`], is
//!   written at once: coalescing never makes a queue fill up and never
//!   holds back a client that is receiving a lot anyway.
//! - While not busy, writes go at once: a lightly loaded server adds no
//!   latency.
//!
//! `delay` zero turns coalescing off; `busy_above` zero coalesces always.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::policy::send::outbound::{FLUSH_BYTES, Outbound, flush_mark};

/// How often the busy state is re-evaluated, at most.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);

/// One runtime's write pacer. See the module documentation.
#[derive(Debug)]
pub(crate) struct Coalescer {
    delay: Duration,
    /// Deliveries per [`WINDOW`] above which the runtime counts as busy.
    busy_above: u64,
    origin: Instant,
    /// Start of the current window, in nanoseconds since `origin`.
    window_start: AtomicU64,
    /// Deliveries counted in the current window.
    delivered: AtomicU64,
    busy: AtomicBool,
    /// A flush has been asked for and not yet given.
    requested: AtomicBool,
    /// Wakes the flusher for the first request.
    wanted: Notify,
    /// The flush: every waiting writer may write now.
    go: Notify,
}

impl Coalescer {
    /// A coalescer that holds writes back by up to `delay` while the runtime
    /// delivers more than `busy_above_per_s` messages per second.
    pub(crate) fn new(delay: Duration, busy_above_per_s: u64) -> Self {
        let per_window =
            u128::from(busy_above_per_s) * WINDOW.as_nanos() / Duration::from_secs(1).as_nanos();
        Self {
            delay,
            busy_above: u64::try_from(per_window).unwrap_or(u64::MAX),
            origin: Instant::now(),
            window_start: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            requested: AtomicBool::new(false),
            wanted: Notify::new(),
            go: Notify::new(),
        }
    }

    /// True when coalescing can ever happen.
    pub(crate) fn enabled(&self) -> bool {
        !self.delay.is_zero()
    }

    /// Counts `n` messages offered to client queues.
    pub(crate) fn delivered(&self, n: usize) {
        if self.enabled() {
            self.delivered.fetch_add(n as u64, Relaxed);
        }
    }

    /// Whether the writer of `queue` should wait for the next flush.
    pub(crate) fn should_wait(&self, queue: &Outbound) -> bool {
        self.should_wait_at(queue.len(), queue.bytes(), queue.capacity(), self.now_ns())
    }

    fn should_wait_at(&self, messages: usize, bytes: usize, capacity: usize, now: u64) -> bool {
        self.enabled()
            && bytes < FLUSH_BYTES
            && messages < flush_mark(capacity)
            && self.is_busy(now)
    }

    /// True while the runtime counts as busy, now.
    pub(crate) fn is_busy_now(&self) -> bool {
        self.is_busy(self.now_ns())
    }

    /// Waits for the next flush, asking for one unless it is already
    /// coming.
    pub(crate) async fn next_flush(&self) {
        let mut go = pin!(self.go.notified());
        go.as_mut().enable();
        // Only the first request wakes the flusher: a wake-up stored for
        // every later one would start another round after the flush, for
        // nobody. SeqCst, like the `go` count `notified()` reads: a writer
        // that finds a flush requested made its `go` future before that
        // flush clears the flag and notifies, so the flush lets it go.
        if !self.requested.swap(true, SeqCst) {
            self.wanted.notify_one();
        }
        go.await;
    }

    /// Runs the flushes on the timer `make` builds, or, if that fails, on
    /// the runtime's millisecond timers. Never returns while coalescing is
    /// on; spawn it on the runtime.
    pub(crate) async fn run_with<T: Timer>(&self, make: impl FnOnce() -> std::io::Result<T>) {
        if !self.enabled() {
            return;
        }
        match make() {
            Ok(timer) => self.run(timer).await,
            Err(e) => {
                tracing::warn!(error = %e, "no timerfd: write coalescing uses millisecond timers");
                self.run(TokioTimer).await;
            }
        }
    }

    /// Runs the flushes: once a writer waits, lets `delay` pass on `timer`,
    /// then lets every waiting writer go. Never returns; only for an enabled
    /// coalescer (see [`Coalescer::run_with`]).
    async fn run(&self, mut timer: impl Timer) {
        loop {
            self.wanted.notified().await;
            timer.sleep(self.delay).await;
            // Cleared first: a writer asking from here on waits for the next
            // flush, or is let go by this one and asks for one too many,
            // which is harmless.
            self.requested.store(false, SeqCst);
            self.go.notify_waiters();
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The busy state at `now` (nanoseconds since `origin`), first closing
    /// the window if it is over. A window that ran long (the runtime was
    /// idle) has a low rate, so the first write after a quiet spell goes at
    /// once.
    fn is_busy(&self, now: u64) -> bool {
        if self.busy_above == 0 {
            return true;
        }
        let start = self.window_start.load(Relaxed);
        let elapsed = now.saturating_sub(start);
        let window = u64::try_from(WINDOW.as_nanos()).unwrap_or(u64::MAX);
        if elapsed >= window
            && self
                .window_start
                .compare_exchange(start, now, Relaxed, Relaxed)
                .is_ok()
        {
            let delivered = self.delivered.swap(0, Relaxed);
            // Scale to a full window: busy if the rate is above the mark.
            let busy = u128::from(delivered) * u128::from(window)
                > u128::from(self.busy_above) * u128::from(elapsed);
            self.busy.store(busy, Relaxed);
        }
        self.busy.load(Relaxed)
    }
}

/// What a [`Coalescer`] sleeps on between a writer's request and the flush.
///
/// The runtimes' own timers tick in milliseconds and fire late on a busy
/// core; a flush delay is a fraction of a millisecond, so each engine waits
/// on a [`FlushTimer`](crate::sys::timer::FlushTimer) (a timerfd) its own way.
pub(crate) trait Timer {
    /// Returns once `after` has passed.
    fn sleep(&mut self, after: Duration) -> impl std::future::Future<Output = ()>;
}

/// Millisecond timers from the tokio runtime: the fallback when no timerfd
/// can be had.
#[derive(Debug, Default)]
pub(crate) struct TokioTimer;

impl Timer for TokioTimer {
    async fn sleep(&mut self, after: Duration) {
        tokio::time::sleep(after).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn idle_then_busy_then_idle_again() {
        // Busy above 1,000 deliveries/s: 100 per 100 ms window.
        let c = Coalescer::new(Duration::from_millis(1), 1_000);
        assert!(!c.is_busy(0));
        c.delivered(150);
        assert!(!c.is_busy(50 * MS), "the window is not over yet");
        assert!(c.is_busy(100 * MS), "150 in 100 ms is over the mark");
        c.delivered(50);
        assert!(c.is_busy(150 * MS), "the state holds within a window");
        assert!(!c.is_busy(200 * MS), "50 in 100 ms is under the mark");
    }

    #[test]
    fn a_long_quiet_spell_is_not_busy() {
        let c = Coalescer::new(Duration::from_millis(1), 1_000);
        c.delivered(150);
        assert!(c.is_busy(100 * MS));
        // 150 more, but over ten windows: a low rate.
        c.delivered(150);
        assert!(!c.is_busy(1_100 * MS));
    }

    #[test]
    fn full_queues_and_big_queues_never_wait() {
        let c = Coalescer::new(Duration::from_millis(1), 1_000);
        c.delivered(150);
        let (capacity, now) = (100, 100 * MS);
        assert_eq!(flush_mark(capacity), 25);
        assert!(c.should_wait_at(1, 64, capacity, now));
        assert!(c.should_wait_at(24, 24 * 64, capacity, now));
        assert!(
            !c.should_wait_at(25, 25 * 64, capacity, now),
            "a quarter full"
        );
        assert!(
            !c.should_wait_at(2, FLUSH_BYTES, capacity, now),
            "16 KiB queued"
        );
    }

    #[test]
    fn a_zero_mark_is_always_busy() {
        let c = Coalescer::new(Duration::from_millis(1), 0);
        assert!(c.is_busy(0));
        assert!(c.should_wait_at(1, 1, 100, 0));
    }

    #[test]
    fn zero_delay_turns_it_off() {
        let c = Coalescer::new(Duration::ZERO, 0);
        c.delivered(1_000_000);
        assert!(!c.enabled());
        assert!(!c.should_wait_at(1, 1, 100, 0));
    }

    /// Counts the sleeps it is asked for.
    struct CountingTimer(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Timer for CountingTimer {
        async fn sleep(&mut self, after: Duration) {
            self.0.fetch_add(1, Relaxed);
            tokio::time::sleep(after).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_flush_serves_every_writer_that_asked_and_no_more() {
        let c = std::sync::Arc::new(Coalescer::new(Duration::from_millis(5), 0));
        let sleeps = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let runner = tokio::spawn({
            let (c, sleeps) = (std::sync::Arc::clone(&c), std::sync::Arc::clone(&sleeps));
            async move { c.run(CountingTimer(sleeps)).await }
        });
        let start = tokio::time::Instant::now();
        let writers: Vec<_> = (0..3)
            .map(|_| {
                let c = std::sync::Arc::clone(&c);
                tokio::spawn(async move { c.next_flush().await })
            })
            .collect();
        for w in writers {
            w.await.expect("writer");
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(5),
            "one flush for all"
        );
        // Nobody asks again: no timer should run.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            sleeps.load(Relaxed),
            1,
            "the flush timer ran again for nobody"
        );
        runner.abort();
    }
}
