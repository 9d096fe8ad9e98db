//! The servers' CPU over an interval known only afterwards: the measured
//! interval of a load run, from the start of publishing to the last
//! delivery, which the load generator reports when it is done.
//!
//! A thread reads the servers' clock ticks ([`procfs::pid_ticks`], utime +
//! stime) every [`EVERY`] while the run goes on; the ticks at an instant
//! are interpolated between the samples either side of it. So the CPU
//! reported beside delivered/s is over the same interval, and leaves out
//! connecting and warming up 1,000 clients, and the 2 s of quiet that end
//! a run with loss. Its error is about a tick at either end (1/`CLK_TCK`,
//! 10 ms), which the kernel's own accounting has too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::procfs;

/// How often the servers' ticks are read: about a tick, so interpolation
/// adds little to the tick's own resolution. Reading /proc/PID/stat costs
/// some µs, nothing beside a server's load.
const EVERY: Duration = Duration::from_millis(10);

/// Clock ticks summed over some processes, at instants in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Samples(Vec<(Instant, u64)>);

impl Samples {
    /// The ticks at `at`, interpolated between the samples around it;
    /// `None` outside the samples.
    pub(crate) fn ticks_at(&self, at: Instant) -> Option<f64> {
        let after = self.0.iter().position(|&(t, _)| t >= at)?;
        let (t1, k1) = self.0[after];
        if t1 == at {
            return Some(k1 as f64);
        }
        let (t0, k0) = *self.0.get(after.checked_sub(1)?)?;
        let span = t1.duration_since(t0).as_secs_f64();
        let part = at.duration_since(t0).as_secs_f64() / span;
        Some(k0 as f64 + (k1 as f64 - k0 as f64) * part)
    }

    /// Seconds of CPU from `from` to `to`, at `clk_tck` ticks a second;
    /// `None` if either is outside the samples.
    pub(crate) fn cpu_s(&self, from: Instant, to: Instant, clk_tck: u64) -> Option<f64> {
        let ticks = self.ticks_at(to)? - self.ticks_at(from)?;
        Some(ticks.max(0.0) / clk_tck.max(1) as f64)
    }
}

/// The sampling thread.
pub(crate) struct CpuTrack {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<Samples>>>,
}

impl CpuTrack {
    /// Starts reading the ticks of `pids`, summed (both nodes of a
    /// cluster); the first sample is taken before this returns, so any
    /// instant after it is covered once [`finish`](Self::finish) has
    /// taken the last.
    pub(crate) fn start(pids: &[u32]) -> anyhow::Result<Self> {
        let pids = pids.to_vec();
        let read = move || -> anyhow::Result<(Instant, u64)> {
            let mut ticks = 0;
            for &pid in &pids {
                ticks += procfs::pid_ticks(pid)?;
            }
            Ok((Instant::now(), ticks))
        };
        let first = read()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("cpu-track".into())
            .spawn(move || {
                let mut samples = vec![first];
                loop {
                    // One more sample after the stop, so the end is
                    // covered.
                    let last = flag.load(Ordering::Acquire);
                    samples.push(read()?);
                    if last {
                        return Ok(Samples(samples));
                    }
                    thread::sleep(EVERY);
                }
            })
            .context("cannot start the CPU sampler")?;
        Ok(CpuTrack {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops it; the samples, the last taken now.
    pub(crate) fn finish(mut self) -> anyhow::Result<Samples> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .context("the CPU sampler was already stopped")?
            .join()
            .map_err(|_| anyhow::anyhow!("the CPU sampler panicked"))?
    }
}

impl Drop for CpuTrack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_interpolated_between_samples() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let s = Samples(vec![(at(0), 100), (at(10), 110), (at(30), 150)]);
        assert_eq!(s.ticks_at(at(0)), Some(100.0));
        assert_eq!(s.ticks_at(at(5)), Some(105.0));
        assert_eq!(s.ticks_at(at(10)), Some(110.0));
        assert_eq!(s.ticks_at(at(20)), Some(130.0));
        assert_eq!(s.ticks_at(at(30)), Some(150.0));
        assert_eq!(s.ticks_at(at(31)), None, "after the last sample");
        assert_eq!(s.ticks_at(t0 - Duration::from_millis(1)), None, "before");
        // 45 ticks from 5 ms to 25 ms, at 100 a second.
        let cpu = s.cpu_s(at(5), at(25), 100).expect("covered");
        assert!((cpu - 0.35).abs() < 1e-9, "{cpu}");
        assert_eq!(s.cpu_s(at(5), at(40), 100), None);
        assert_eq!(Samples::default().ticks_at(t0), None);
    }

    #[test]
    fn the_track_covers_the_interval_between_start_and_finish() {
        let track = CpuTrack::start(&[std::process::id()]).expect("starts");
        let from = Instant::now();
        // Some CPU of this process to see.
        let spin = from + Duration::from_millis(50);
        let mut x = 0u64;
        while Instant::now() < spin {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let to = Instant::now();
        let samples = track.finish().expect("samples");
        assert!(samples.0.len() >= 2);
        assert!(samples.0.windows(2).all(|w| w[0] <= w[1]), "in order");
        let cpu = samples.cpu_s(from, to, procfs::clk_tck()).expect("covered");
        assert!((0.0..1.0).contains(&cpu), "{cpu}");
    }
}
