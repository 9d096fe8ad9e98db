//! Sampling over time: the CPU a cell used, the wait for a quiet machine,
//! and a process's RSS every few seconds. All from [`crate::procfs`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::procfs;

/// Clock ticks at one moment: the servers', this process's (the load
/// generator runs in it), and the machine's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSnapshot {
    at: Instant,
    servers: u64,
    generator: u64,
    machine: u64,
}

impl CpuSnapshot {
    /// Now, for the servers `pids` (summed: both nodes of a cluster).
    pub(crate) fn take(pids: &[u32]) -> anyhow::Result<Self> {
        let mut servers = 0;
        for &pid in pids {
            servers += procfs::pid_ticks(pid)?;
        }
        Ok(CpuSnapshot {
            at: Instant::now(),
            servers,
            generator: procfs::self_ticks()?,
            machine: procfs::machine_ticks()?.busy,
        })
    }
}

/// The CPU used between two snapshots, all over the same wall time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CpuUse {
    pub(crate) wall_s: f64,
    pub(crate) server_s: f64,
    pub(crate) generator_s: f64,
    pub(crate) server_cores: f64,
    pub(crate) generator_cores: f64,
    pub(crate) machine_cores: f64,
    /// Machine minus server minus generator, never below 0: every other
    /// process, and the hypervisor's steal. Noise if well above 0.
    pub(crate) other_cores: f64,
}

impl CpuUse {
    /// From `before` to `after`, with `clk_tck` ticks per second.
    pub(crate) fn between(before: &CpuSnapshot, after: &CpuSnapshot, clk_tck: u64) -> Self {
        let wall = after
            .at
            .saturating_duration_since(before.at)
            .as_secs_f64()
            .max(1e-9);
        Self::from_ticks(
            wall,
            after.servers.saturating_sub(before.servers),
            after.generator.saturating_sub(before.generator),
            after.machine.saturating_sub(before.machine),
            clk_tck,
        )
    }

    /// From tick counts over `wall_s` seconds.
    fn from_ticks(wall_s: f64, server: u64, generator: u64, machine: u64, clk_tck: u64) -> Self {
        let hz = clk_tck.max(1) as f64;
        let (server_s, generator_s, machine_s) = (
            server as f64 / hz,
            generator as f64 / hz,
            machine as f64 / hz,
        );
        CpuUse {
            wall_s,
            server_s,
            generator_s,
            server_cores: server_s / wall_s,
            generator_cores: generator_s / wall_s,
            machine_cores: machine_s / wall_s,
            other_cores: ((machine_s - server_s - generator_s) / wall_s).max(0.0),
        }
    }
}

/// Cores the whole machine kept busy over the next `period`.
pub(crate) fn busy_cores(period: Duration, clk_tck: u64) -> anyhow::Result<f64> {
    let t0 = procfs::machine_ticks()?.busy;
    let start = Instant::now();
    thread::sleep(period);
    let t1 = procfs::machine_ticks()?.busy;
    let wall = start.elapsed().as_secs_f64().max(1e-9);
    Ok(t1.saturating_sub(t0) as f64 / clk_tck.max(1) as f64 / wall)
}

/// Waits for other processes to leave the machine, within a budget for
/// the whole run, so that a neighbour's compile does not land in a cell.
#[derive(Debug)]
pub(crate) struct QuietWait {
    /// Below this many busy cores the machine counts as quiet.
    pub(crate) busy_cores: f64,
    /// The most it may wait over the whole run.
    pub(crate) budget: Duration,
    /// What it has waited so far.
    pub(crate) waited: Duration,
    clk_tck: u64,
}

impl QuietWait {
    pub(crate) fn new(busy_cores: f64, budget: Duration, clk_tck: u64) -> Self {
        QuietWait {
            busy_cores,
            budget,
            waited: Duration::ZERO,
            clk_tck,
        }
    }

    /// Waits, within what is left of the budget, until fewer than
    /// `busy_cores` are busy; does nothing with no budget (`--quick`).
    pub(crate) fn wait(&mut self) -> anyhow::Result<()> {
        if self.budget.is_zero() {
            return Ok(());
        }
        let start = Instant::now();
        loop {
            let busy = busy_cores(Duration::from_millis(500), self.clk_tck)?;
            if busy < self.busy_cores {
                break;
            }
            if self.waited + start.elapsed() >= self.budget {
                crate::say!(
                    "machine busy ({busy:.2} cores in use by other processes); no waiting budget left, going on"
                );
                break;
            }
            crate::say!("machine busy ({busy:.2} cores in use by other processes); waiting");
            thread::sleep(Duration::from_secs(2));
        }
        self.waited += start.elapsed();
        Ok(())
    }
}

/// A thread that reads a process's RSS every `every` until stopped, or
/// for `limit` at most.
pub(crate) struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<u64>>>,
}

impl RssSampler {
    /// Starts sampling process `pid`.
    pub(crate) fn start(pid: u32, every: Duration, limit: Duration) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("rss".into())
            .spawn(move || {
                let end = Instant::now() + limit;
                let mut samples = Vec::new();
                while Instant::now() < end && !flag.load(Ordering::Relaxed) {
                    match procfs::rss_kib(pid) {
                        Ok(kib) => samples.push(kib),
                        Err(_) => break, // the process is gone
                    }
                    // Sleep in small steps, so a stop is seen at once.
                    let next = Instant::now() + every;
                    while Instant::now() < next && !flag.load(Ordering::Relaxed) {
                        thread::sleep(Duration::from_millis(50));
                    }
                }
                samples
            })
            .context("cannot start the RSS sampler")?;
        Ok(RssSampler {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops it and returns the samples, in KiB, oldest first.
    pub(crate) fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_use_divides_by_wall_time_and_clamps_others() {
        let u = CpuUse::from_ticks(2.0, 220, 140, 380, 100);
        assert_eq!(u.server_s, 2.2);
        assert_eq!(u.generator_s, 1.4);
        assert!((u.server_cores - 1.1).abs() < 1e-9);
        assert!((u.generator_cores - 0.7).abs() < 1e-9);
        assert!((u.machine_cores - 1.9).abs() < 1e-9);
        assert!((u.other_cores - 0.1).abs() < 1e-9);
        // Ticks are sampled at different moments: others never go below 0.
        let u = CpuUse::from_ticks(1.0, 100, 100, 150, 100);
        assert_eq!(u.other_cores, 0.0);
    }

    #[test]
    fn rss_sampler_samples_and_stops() {
        let s = RssSampler::start(
            std::process::id(),
            Duration::from_millis(10),
            Duration::from_secs(5),
        )
        .expect("starts");
        thread::sleep(Duration::from_millis(100));
        let samples = s.finish();
        assert!(!samples.is_empty());
        assert!(samples.iter().all(|&k| k > 0));
    }
}
