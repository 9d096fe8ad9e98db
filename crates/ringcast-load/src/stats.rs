//! What one reader counts, and the latency percentiles drawn from all of
//! them.
//!
//! Every reader records each delivery's latency in a histogram of its own
//! (no lock, nothing shared on the hot path), and the run merges them once
//! at the end. The histograms keep 3 significant digits: a percentile is
//! exact up to 2,048 µs and within 0.1% above, whatever the number of
//! deliveries, where sorted samples had to be thinned to bound memory.

use hdrhistogram::{CreationError, Histogram};
use serde::Serialize;

/// Significant decimal digits every latency keeps.
const SIGFIG: u8 = 3;

/// One reader's latencies, in microseconds. Counts are `u32`, which halves
/// the memory of the thousands of these a large run holds; one bucket
/// saturates rather than wraps past 4 billion deliveries, and the merged
/// histogram counts in `u64`.
#[derive(Debug)]
pub(crate) struct Recorder(Histogram<u32>);

impl Recorder {
    pub(crate) fn new() -> Result<Self, CreationError> {
        // Auto-resizing: a reader whose latencies stay low never pays for
        // the buckets of seconds.
        Histogram::new(SIGFIG).map(Recorder)
    }

    /// Records one delivery that took `ns` nanoseconds.
    pub(crate) fn record_ns(&mut self, ns: u64) {
        let us = ns / 1000;
        // Only a value past u64::MAX / 2 can fail to fit, and no 48-bit
        // timestamp difference is that large; clamp rather than lose it.
        if self.0.record(us).is_err() {
            self.0.saturating_record(us);
        }
    }
}

/// Every reader's latencies merged.
#[derive(Debug)]
pub(crate) struct Latencies(Histogram<u64>);

impl Latencies {
    pub(crate) fn new() -> Result<Self, CreationError> {
        Histogram::new(SIGFIG).map(Latencies)
    }

    /// Adds one reader's latencies.
    pub(crate) fn add(&mut self, reader: &Recorder) {
        for v in reader.0.iter_recorded() {
            let value = v.value_iterated_to();
            let count = v.count_at_value().into();
            if self.0.record_n(value, count).is_err() {
                self.0.saturating_record_n(value, count);
            }
        }
    }

    /// The percentiles the report shows.
    pub(crate) fn summary(&self) -> Latency {
        let h = &self.0;
        let at = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64);
        Latency {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: (!h.is_empty()).then(|| h.max() as f64),
            mean: (!h.is_empty()).then(|| h.mean()),
            samples: h.len(),
        }
    }
}

/// Latency percentiles, in microseconds; `None` when nothing was
/// delivered. Each is the highest value the histogram cannot tell apart
/// from it, within 0.1%.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p999: Option<f64>,
    /// The slowest delivery.
    pub max: Option<f64>,
    /// The mean.
    pub mean: Option<f64>,
    /// How many deliveries were recorded: every one counted, no longer a
    /// sample.
    pub samples: u64,
}

/// What one reader saw.
#[derive(Debug)]
pub(crate) struct ReaderStats {
    pub(crate) delivered: u64,
    pub(crate) order_violations: u64,
    pub(crate) malformed: u64,
    pub(crate) latency: Recorder,
}

/// The fewest, the median and the most of some counts; the median of an
/// even number of them is the lower middle one, so it is always one of
/// the counts. `None` for no counts.
pub(crate) fn spread(mut counts: Vec<u64>) -> Option<(u64, u64, u64)> {
    counts.sort_unstable();
    let median = *counts.get(counts.len().checked_sub(1)? / 2)?;
    Some((*counts.first()?, median, *counts.last()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_min_median_max() {
        assert_eq!(spread(Vec::new()), None);
        assert_eq!(spread(vec![5]), Some((5, 5, 5)));
        assert_eq!(spread(vec![9, 1, 4]), Some((1, 4, 9)));
        assert_eq!(spread(vec![9, 1, 4, 7]), Some((1, 4, 9)), "lower middle");
    }

    /// The summary of these latencies, given in µs, recorded by `readers`
    /// readers in turn.
    fn summary(us: impl IntoIterator<Item = u64>, readers: usize) -> Latency {
        let mut recorders: Vec<Recorder> = (0..readers)
            .map(|_| Recorder::new().expect("histogram"))
            .collect();
        for (i, v) in us.into_iter().enumerate() {
            recorders[i % readers].record_ns(v * 1000);
        }
        let mut all = Latencies::new().expect("histogram");
        for r in &recorders {
            all.add(r);
        }
        all.summary()
    }

    #[test]
    fn no_deliveries_no_percentiles() {
        let l = summary([], 1);
        assert_eq!((l.p50, l.p99, l.max, l.samples), (None, None, None, 0));
    }

    #[test]
    fn small_latencies_are_exact() {
        let l = summary(1..=1000, 1);
        assert_eq!(l.p50, Some(500.0));
        assert_eq!(l.p90, Some(900.0));
        assert_eq!(l.p99, Some(990.0));
        assert_eq!(l.p999, Some(999.0));
        assert_eq!(l.max, Some(1000.0));
        assert_eq!(l.mean, Some(500.5));
        assert_eq!(l.samples, 1000);
        assert_eq!(summary([7], 1).p999, Some(7.0));
        // The nearest-rank answers the sorted samples gave, kept.
        let l = summary(1..=10, 1);
        assert_eq!((l.p50, l.p99), (Some(5.0), Some(10.0)));
    }

    #[test]
    fn large_latencies_keep_three_digits() {
        // 1 µs to 1 s: the percentiles land within 0.1% of the exact ranks.
        let l = summary(1..=1_000_000, 1);
        let near = |got: Option<f64>, want: f64| {
            let got = got.expect("recorded");
            assert!(
                (got - want).abs() <= want / 1000.0,
                "{got} is not within 0.1% of {want}"
            );
        };
        near(l.p50, 500_000.0);
        near(l.p90, 900_000.0);
        near(l.p99, 990_000.0);
        near(l.p999, 999_000.0);
        near(l.max, 1_000_000.0);
        assert_eq!(l.samples, 1_000_000);
    }

    #[test]
    fn merging_readers_loses_nothing() {
        let values = || (0..10_000u64).map(|i| (i * 7919) % 50_000);
        assert_eq!(summary(values(), 1), summary(values(), 7));
    }

    #[test]
    fn sub_microsecond_deliveries_count_as_zero() {
        let mut r = Recorder::new().expect("histogram");
        r.record_ns(999);
        let mut all = Latencies::new().expect("histogram");
        all.add(&r);
        assert_eq!(all.summary().max, Some(0.0));
        assert_eq!(all.summary().samples, 1);
    }
}
