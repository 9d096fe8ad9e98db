//! How long a host's deliverers may spend, in all, waiting for clients
//! that hold a message (see [`crate::policy::outbound`]).
//!
//! Each client's grace bounds one wait, and its cooldown makes a steadily
//! slow client's graces ever rarer. But a hundred slow clients each get a
//! grace now and then, and every wait delays the next messages for
//! everyone on the core. So the waits of a host also come out of one token
//! bucket: it holds one grace, and refills one grace every
//! [`REFILL_EVERY`].
//!
//! A client behind for the first time (or that caught up within its last
//! grace) may be a good reader that was not scheduled for a moment: it
//! gets its whole grace, and the bucket pays what it can. A client that
//! used a grace up before waits only as long as the bucket pays; a wait it
//! cannot pay for ends early, as if the grace ran out. With
//! `--stall-timeout 5ms` a core so spends about 5 ms in any half second,
//! 1% of its time, waiting for clients that were slow before, however many
//! there are.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bucket refills one grace in this long.
pub(crate) const REFILL_EVERY: Duration = Duration::from_millis(500);

/// A token bucket of waiting time, shared by a host's deliverers.
#[derive(Debug)]
pub(crate) struct Patience {
    capacity: Duration,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    left: Duration,
    at: Instant,
}

impl Patience {
    /// A full bucket of one `grace`.
    pub(crate) fn new(grace: Duration, now: Instant) -> Self {
        Self {
            capacity: grace,
            bucket: Mutex::new(Bucket {
                left: grace,
                at: now,
            }),
        }
    }

    /// Takes up to `want` of waiting time out of the bucket; returns how
    /// much it may wait. Settle with [`Self::spent`] when the wait is over.
    pub(crate) fn take(&self, want: Duration, now: Instant) -> Duration {
        let mut bucket = self.lock();
        self.refill(&mut bucket, now);
        let granted = want.min(bucket.left);
        bucket.left -= granted;
        granted
    }

    /// A wait `granted` by [`Self::take`] took `spent`: what it did not use
    /// (the client had room sooner) comes back, and a timer's overshoot is
    /// paid for too.
    pub(crate) fn spent(&self, granted: Duration, spent: Duration) {
        let mut bucket = self.lock();
        bucket.left = (bucket.left + granted)
            .saturating_sub(spent)
            .min(self.capacity);
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.at);
        if self.capacity.is_zero() {
            return;
        }
        // One capacity per REFILL_EVERY, in nanoseconds (u128: even years
        // of elapsed time times a second of capacity fit).
        let earned = elapsed.as_nanos() * self.capacity.as_nanos() / REFILL_EVERY.as_nanos();
        let earned = Duration::from_nanos(u64::try_from(earned).unwrap_or(u64::MAX));
        bucket.left = (bucket.left + earned).min(self.capacity);
        bucket.at = bucket.at.max(now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        // The bucket holds two plain values: a panic cannot leave it torn.
        self.bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grants_one_grace_then_only_what_it_earned() {
        let t0 = Instant::now();
        let p = Patience::new(5 * MS, t0);
        assert_eq!(p.take(3 * MS, t0), 3 * MS);
        assert_eq!(p.take(5 * MS, t0), 2 * MS, "only what is left");
        assert_eq!(p.take(5 * MS, t0), Duration::ZERO, "empty");
        // One grace per REFILL_EVERY: 100 ms earns 1 ms.
        assert_eq!(p.take(5 * MS, t0 + 100 * MS), MS);
        assert_eq!(p.take(5 * MS, t0 + 100 * MS), Duration::ZERO);
    }

    #[test]
    fn never_holds_more_than_one_grace() {
        let t0 = Instant::now();
        let p = Patience::new(5 * MS, t0);
        assert_eq!(p.take(10 * MS, t0 + 60 * REFILL_EVERY), 5 * MS);
        p.spent(5 * MS, Duration::ZERO);
        p.spent(5 * MS, Duration::ZERO);
        assert_eq!(p.take(10 * MS, t0 + 60 * REFILL_EVERY), 5 * MS);
    }

    #[test]
    fn unused_time_comes_back_and_overshoot_is_paid() {
        let t0 = Instant::now();
        let p = Patience::new(5 * MS, t0);
        let granted = p.take(5 * MS, t0);
        p.spent(granted, MS);
        assert_eq!(p.take(2 * MS, t0), 2 * MS, "4 ms came back");
        p.spent(2 * MS, 3 * MS);
        assert_eq!(p.take(5 * MS, t0), MS, "4 - 3: the 1 ms over is paid");
    }

    #[test]
    fn at_most_one_grace_per_refill_over_a_long_run() {
        // Waits asked for every millisecond for 10 s: the total granted is
        // one grace to start plus one per REFILL_EVERY.
        let t0 = Instant::now();
        let p = Patience::new(5 * MS, t0);
        let total: Duration = (0..10_000).map(|i| p.take(5 * MS, t0 + i * MS)).sum();
        let bound = 5 * MS * (1 + 20);
        assert!(total <= bound, "{total:?} > {bound:?}");
        assert!(total >= bound - MS, "{total:?}: it should refill");
    }

    #[test]
    fn no_grace_no_waiting() {
        let t0 = Instant::now();
        let p = Patience::new(Duration::ZERO, t0);
        assert_eq!(p.take(5 * MS, t0 + REFILL_EVERY), Duration::ZERO);
    }
}
