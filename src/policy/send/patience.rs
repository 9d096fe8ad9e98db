//! How long a host's deliverers may spend, in all, waiting for clients
//! that hold a message (see [`crate::policy::send::outbound`]).
//!
//! Each client's grace bounds one wait, and its cooldown makes a steadily
//! slow client's graces ever rarer. But a hundred slow clients each get a
//! grace now and then, and every wait delays the next messages for
//! everyone on the core. So the waits of a host also come out of two token
//! buckets, each refilled with one grace every [`REFILL_EVERY`]:
//!
//! - **First waits** (a client behind for the first time, or that caught up
//!   within its last grace: it may be a good reader that was not scheduled
//!   for a moment) come out of a bucket of [`FIRST_GRACES`] graces, so that
//!   a few such clients at a time each get their whole grace.
//! - **Waits again** (a client that used a grace up before) come out of a
//!   bucket of one grace.
//!
//! A wait a bucket cannot pay for ends early, as if the grace ran out.
//! Waits for clients held by the same message overlap, and are paid once.
//! With `--grace 5ms` a core so spends at most about 10 ms in any
//! half second, 2% of its time, waiting, however many clients are slow.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Each bucket refills one grace in this long.
pub(crate) const REFILL_EVERY: Duration = Duration::from_millis(500);

/// The graces the bucket for first waits holds.
pub(crate) const FIRST_GRACES: u32 = 4;

/// Which bucket a wait comes out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Whose {
    /// A client behind for the first time, or that caught up within its
    /// last grace.
    First,
    /// A client that used a grace up before.
    Again,
}

/// A host's waiting time, shared by its deliverers.
#[derive(Debug)]
pub(crate) struct Patience {
    /// Earned per [`REFILL_EVERY`], by each bucket.
    grace: Duration,
    first: Mutex<Bucket>,
    again: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    capacity: i128,
    /// Nanoseconds of waiting left; below zero, owed: a timer's overshoot
    /// past what was left (a millisecond on tokio's timers) is paid from
    /// what the bucket earns next.
    left: i128,
    at: Instant,
}

impl Bucket {
    fn full(capacity: Duration, now: Instant) -> Mutex<Self> {
        Mutex::new(Self {
            capacity: nanos(capacity),
            left: nanos(capacity),
            at: now,
        })
    }
}

fn nanos(d: Duration) -> i128 {
    // At most u64::MAX seconds of nanoseconds: fits in an i128.
    d.as_nanos() as i128
}

impl Patience {
    /// Full buckets for waits of at most `grace` each.
    pub(crate) fn new(grace: Duration, now: Instant) -> Self {
        Self {
            grace,
            first: Bucket::full(grace.saturating_mul(FIRST_GRACES), now),
            again: Bucket::full(grace, now),
        }
    }

    /// Takes up to `want` of waiting time out of `whose` bucket; returns
    /// how much it may wait. Settle with [`Self::spent`] when the wait is
    /// over.
    pub(crate) fn take(&self, whose: Whose, want: Duration, now: Instant) -> Duration {
        let mut bucket = self.lock(whose);
        self.refill(&mut bucket, now);
        let left = u64::try_from(bucket.left.max(0)).unwrap_or(u64::MAX);
        let granted = want.min(Duration::from_nanos(left));
        bucket.left -= nanos(granted);
        granted
    }

    /// A wait `granted` by [`Self::take`] took `spent`: what it did not use
    /// (the client had room sooner) comes back, and a timer's overshoot is
    /// paid for too, if need be from what the bucket earns next.
    pub(crate) fn spent(&self, whose: Whose, granted: Duration, spent: Duration) {
        let mut bucket = self.lock(whose);
        bucket.left = (bucket.left + nanos(granted) - nanos(spent)).min(bucket.capacity);
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.at);
        // One grace per REFILL_EVERY, in nanoseconds (u128: even years of
        // elapsed time times a second of grace fit).
        let earned = elapsed.as_nanos() * self.grace.as_nanos() / REFILL_EVERY.as_nanos();
        let earned = i128::try_from(earned).unwrap_or(i128::MAX);
        bucket.left = bucket.left.saturating_add(earned).min(bucket.capacity);
        bucket.at = bucket.at.max(now);
    }

    fn lock(&self, whose: Whose) -> std::sync::MutexGuard<'_, Bucket> {
        let bucket = match whose {
            Whose::First => &self.first,
            Whose::Again => &self.again,
        };
        // A bucket holds plain values: a panic cannot leave it torn.
        bucket
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
        assert_eq!(p.take(Whose::Again, 3 * MS, t0), 3 * MS);
        assert_eq!(
            p.take(Whose::Again, 5 * MS, t0),
            2 * MS,
            "only what is left"
        );
        assert_eq!(p.take(Whose::Again, 5 * MS, t0), Duration::ZERO, "empty");
        // One grace per REFILL_EVERY: 100 ms earns 1 ms.
        assert_eq!(p.take(Whose::Again, 5 * MS, t0 + 100 * MS), MS);
        assert_eq!(p.take(Whose::Again, 5 * MS, t0 + 100 * MS), Duration::ZERO);
    }

    #[test]
    fn never_holds_more_than_one_grace() {
        let t0 = Instant::now();
        let p = Patience::new(5 * MS, t0);
        assert_eq!(
            p.take(Whose::Again, 10 * MS, t0 + 60 * REFILL_EVERY),
            5 * MS
        );
        p.spent(Whose::Again, 5 * MS, Duration::ZERO);
        p.spent(Whose::Again, 5 * MS, Duration::ZERO);
        assert_eq!(
            p.take(Whose::Again, 10 * MS, t0 + 60 * REFILL_EVERY),
            5 * MS
        );
    }

    #[test]
    fn unused_time_comes_back_and_overshoot_is_paid() {
        let t0 = Instant::now();
        let p = Patience::new(5 * MS, t0);
        let granted = p.take(Whose::Again, 5 * MS, t0);
        p.spent(Whose::Again, granted, MS);
        assert_eq!(p.take(Whose::Again, 2 * MS, t0), 2 * MS, "4 ms came back");
        p.spent(Whose::Again, 2 * MS, 3 * MS);
        assert_eq!(
            p.take(Whose::Again, 5 * MS, t0),
            MS,
            "4 - 3: the 1 ms over is paid"
        );
    }

    #[test]
    fn overshoot_past_what_was_left_is_owed() {
        // On tokio's millisecond timers, a wait granted 10 us takes 1 ms or
        // more: were that free, many tiny grants would add up to far more
        // waiting than the bucket allows.
        let t0 = Instant::now();
        let p = Patience::new(5 * MS, t0);
        let granted = p.take(Whose::Again, 5 * MS, t0);
        p.spent(Whose::Again, granted, 8 * MS);
        assert_eq!(
            p.take(Whose::Again, 5 * MS, t0),
            Duration::ZERO,
            "3 ms owed"
        );
        // Half a refill earns 2.5 ms: still 0.5 ms owed.
        assert_eq!(
            p.take(Whose::Again, 5 * MS, t0 + REFILL_EVERY / 2),
            Duration::ZERO
        );
        assert_eq!(p.take(Whose::Again, 5 * MS, t0 + REFILL_EVERY), 2 * MS);
    }

    #[test]
    fn at_most_one_grace_per_refill_over_a_long_run() {
        // Waits asked for every millisecond for 10 s: the total granted is
        // one grace to start plus one per REFILL_EVERY.
        let t0 = Instant::now();
        let p = Patience::new(5 * MS, t0);
        let total: Duration = (0..10_000)
            .map(|i| p.take(Whose::Again, 5 * MS, t0 + i * MS))
            .sum();
        let bound = 5 * MS * (1 + 20);
        assert!(total <= bound, "{total:?} > {bound:?}");
        assert!(total >= bound - MS, "{total:?}: it should refill");
    }

    #[test]
    fn no_grace_no_waiting() {
        let t0 = Instant::now();
        let p = Patience::new(Duration::ZERO, t0);
        assert_eq!(
            p.take(Whose::Again, 5 * MS, t0 + REFILL_EVERY),
            Duration::ZERO
        );
    }

    #[test]
    fn first_waits_have_a_bucket_of_their_own() {
        let t0 = Instant::now();
        let p = Patience::new(5 * MS, t0);
        assert_eq!(p.take(Whose::Again, 5 * MS, t0), 5 * MS);
        assert_eq!(p.take(Whose::Again, 5 * MS, t0), Duration::ZERO);
        // Four whole graces for first waits, however the other bucket is.
        for _ in 0..FIRST_GRACES {
            assert_eq!(p.take(Whose::First, 5 * MS, t0), 5 * MS);
        }
        assert_eq!(p.take(Whose::First, 5 * MS, t0), Duration::ZERO, "empty");
        // It refills one grace per REFILL_EVERY too, up to four.
        assert_eq!(p.take(Whose::First, 5 * MS, t0 + REFILL_EVERY), 5 * MS);
        let later = t0 + 60 * REFILL_EVERY;
        assert_eq!(p.take(Whose::First, 50 * MS, later), 20 * MS);
    }
}
