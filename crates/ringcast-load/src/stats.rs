//! Per-reader statistics and the latency percentiles drawn from them.

/// The `q` quantile (0 to 1) of sorted values, by nearest rank; `None` if
/// there are none.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// A bounded, evenly spread sample of a stream of values, without
/// randomness: keeps every `stride`-th value, and when full drops every
/// other sample and doubles the stride.
#[derive(Debug)]
pub(crate) struct Sampler {
    pub(crate) samples: Vec<u64>,
    cap: usize,
    stride: u64,
    countdown: u64,
}

impl Sampler {
    pub(crate) fn new(cap: usize) -> Self {
        let cap = cap.max(2);
        Self {
            samples: Vec::with_capacity(cap),
            cap,
            stride: 1,
            countdown: 1,
        }
    }

    pub(crate) fn offer(&mut self, value: u64) {
        self.countdown -= 1;
        if self.countdown != 0 {
            return;
        }
        if self.samples.len() == self.cap {
            let mut i = 0usize;
            self.samples.retain(|_| {
                i += 1;
                i.is_multiple_of(2)
            });
            self.stride *= 2;
        }
        self.samples.push(value);
        self.countdown = self.stride;
    }
}

/// What one reader saw.
#[derive(Debug)]
pub(crate) struct ReaderStats {
    pub(crate) delivered: u64,
    pub(crate) order_violations: u64,
    pub(crate) malformed: u64,
    pub(crate) samples: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7], 0.999), Some(7));
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&v, 0.5), Some(500));
        assert_eq!(percentile(&v, 0.99), Some(990));
        assert_eq!(percentile(&v, 0.999), Some(999));
        assert_eq!(percentile(&v, 1.0), Some(1000));
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&v, 0.99), Some(10));
        assert_eq!(percentile(&v, 0.5), Some(5));
    }

    #[test]
    fn sampler_stays_bounded_and_spread() {
        let mut s = Sampler::new(100);
        for v in 0..10_000u64 {
            s.offer(v);
        }
        assert!(s.samples.len() <= 100);
        assert!(s.samples.len() >= 50);
        // Evenly spread: the samples cover the whole stream.
        assert!(s.samples.first().is_some_and(|&v| v < 200));
        assert!(s.samples.last().is_some_and(|&v| v > 9_500));
        assert!(s.samples.windows(2).all(|w| w[0] < w[1]));
    }
}
