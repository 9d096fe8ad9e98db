//! One load cell: a [`Plan`] run by the ringcast-load library against one
//! server (or both nodes of a cluster), with the servers' CPU and
//! counters over it, written as one row; run again once if other
//! processes took the CPU during it (not with `--quick`).
//!
//! CPU is read twice over. Over the whole cell (connect, warm-up,
//! publishing, drain, the quiet that ends a lossy run) for the cores the
//! server, the generator and everything else kept busy, and the retry; and
//! the server's alone over the measured interval of delivered/s (start of
//! publishing to last delivery; [`crate::track`]), for its CPU per
//! delivery.

use std::fmt::Write as _;
use std::time::Duration;

use ringcast_load::Plan;

use super::Bench;
use crate::md::thousands;
use crate::row::{Ended, Engine, Row, Scenario};
use crate::sample::{CpuSnapshot, CpuUse};
use crate::say;
use crate::server::Server;
use crate::track::CpuTrack;

/// Beyond its publishing duration, a run gets this long (connect, warm
/// up, drain) before it counts as failed.
const RUN_SLACK: Duration = Duration::from_secs(60);

/// What a cell runs and how its row is labelled.
pub(crate) struct CellSpec {
    pub(crate) engine: Engine,
    pub(crate) scenario: Scenario,
    pub(crate) round: Option<u32>,
    /// Slow readers: the case's name.
    pub(crate) case: Option<&'static str>,
    /// `ab`: `old` or `new`.
    pub(crate) build: Option<&'static str>,
    pub(crate) plan: Plan,
    /// For the progress lines: `uring saturation 10x64B round 2`.
    pub(crate) label: String,
    /// Count the cluster bridges' drops too.
    pub(crate) cluster: bool,
}

/// The servers' counters this harness reads around a cell, summed over
/// the servers; `None` where a server does not report one (the textbook
/// server has no metrics, and an old build fewer counters).
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    dropped: Option<u64>,
    episodes: Option<u64>,
}

fn counters(servers: &[Server], cluster: bool) -> anyhow::Result<Counters> {
    let mut c = Counters {
        dropped: Some(0),
        episodes: Some(0),
    };
    for server in servers {
        if server.metrics_addr().is_none() {
            return Ok(Counters::default());
        }
        let m = server.scrape()?;
        let count = |name| m.get(name).map(|v| v.max(0.0).round() as u64);
        let mut dropped = count("ringcast_messages_dropped_total");
        if cluster {
            dropped = dropped
                .zip(count("ringcast_cluster_dropped_total"))
                .map(|(a, b)| a + b);
        }
        let add = |sum: Option<u64>, v: Option<u64>| sum.zip(v).map(|(a, b)| a + b);
        c.dropped = add(c.dropped, dropped);
        c.episodes = add(c.episodes, count("ringcast_slow_client_episodes_total"));
    }
    Ok(c)
}

fn check_alive(servers: &mut [Server]) -> anyhow::Result<()> {
    for server in servers {
        server.check_alive()?;
    }
    Ok(())
}

/// Runs one cell against `servers` and records its row.
pub(crate) fn run(
    bench: &mut Bench,
    servers: &mut [Server],
    spec: &CellSpec,
) -> anyhow::Result<()> {
    let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
    let retries = bench.s.retries;
    for attempt in 0..=retries {
        bench.wait_quiet()?;
        check_alive(servers)?;
        let c0 = counters(servers, spec.cluster)?;
        let cpu0 = CpuSnapshot::take(&pids)?;
        let track = CpuTrack::start(&pids)?;
        let limit = spec.plan.duration() + RUN_SLACK;
        let result = bench
            .rt
            .block_on(async { tokio::time::timeout(limit, ringcast_load::run(&spec.plan)).await });
        check_alive(servers)?;
        let samples = track.finish()?;
        let cpu1 = CpuSnapshot::take(&pids)?;
        let c1 = counters(servers, spec.cluster)?;
        let cpu = CpuUse::between(&cpu0, &cpu1, bench.clk_tck);
        let delta = |f: fn(&Counters) -> Option<u64>| Some(f(&c1)?.saturating_sub(f(&c0)?));
        let mut row = Row {
            round: spec.round,
            case: spec.case.map(str::to_owned),
            build: spec.build.map(str::to_owned),
            server_dropped: delta(|c| c.dropped),
            server_slow_episodes: delta(|c| c.episodes),
            ..Row::new(spec.engine, spec.scenario)
        }
        .with_cpu(&cpu);
        let report = match result {
            Ok(Ok(report)) => report,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => format!("{e:#}"),
                    _ => format!("no report after {} s", limit.as_secs()),
                };
                bench.problem(format!("{}: the load run failed: {why}", spec.label));
                row.clients = Some(spec.plan.clients() as u64);
                row.publishers = Some(spec.plan.publishers() as u64);
                row.size = Some(spec.plan.size() as u64);
                row.rate = Some(spec.plan.rate().into());
                row.slow_clients = spec.plan.slow().map(|s| s.count as u64);
                row.ended = Some(Ended::Error);
                bench.record(&row)?;
                break;
            }
        };
        let mut row = row.with_report(&report);
        if let Some(server_s) =
            samples.cpu_s(report.measured_from, report.measured_to, bench.clk_tck)
        {
            row = row.with_measured_cpu(server_s);
        }
        if attempt < retries && cpu.other_cores > bench.s.busy_cores {
            say!(
                "{}: other processes used {:.2} cores during the cell ({} deliveries/s); running it again",
                spec.label,
                cpu.other_cores,
                thousands(report.delivered_per_s)
            );
            for server in servers.iter_mut() {
                bench.wait_disconnected(server)?;
            }
            continue;
        }
        say!("{}: {}", spec.label, describe(&row));
        bench.record(&row)?;
        break;
    }
    for server in servers.iter_mut() {
        bench.wait_disconnected(server)?;
    }
    Ok(())
}

/// The progress line of a cell's row.
fn describe(r: &Row) -> String {
    let mut s = format!(
        "{} deliveries/s, server {} ns/delivery, {:.1} MB/s, loss {}, p99 {:.1} ms, drain {:.2} s, ended {:?}, window {}, generator {:.2} cores, server {:.2} cores, others {:.2} cores, server drops {}",
        thousands(r.delivered_per_s.unwrap_or(0.0)),
        r.server_cpu_ns_per_delivery
            .map_or_else(|| "-".to_owned(), |ns| format!("{ns:.0}")),
        r.mb_per_s.unwrap_or(0.0),
        r.loss.unwrap_or(0),
        r.p99_ms().unwrap_or(0.0),
        r.drain_s.unwrap_or(0.0),
        r.ended.unwrap_or(Ended::Error),
        r.window.map_or_else(|| "-".to_owned(), |w| w.to_string()),
        r.load_cpu_cores.unwrap_or(0.0),
        r.server_cpu_cores.unwrap_or(0.0),
        r.other_cpu_cores.unwrap_or(0.0),
        r.server_dropped
            .map_or_else(|| "-".to_owned(), |d| d.to_string()),
    );
    if let Some(n) = r.slow_clients {
        let _ = write!(
            s,
            "; {n} slow readers got {} of {} lines, {} disconnected; slow episodes {}",
            r.slow_received.unwrap_or(0),
            r.slow_expected.unwrap_or(0),
            r.slow_disconnected.unwrap_or(0),
            r.server_slow_episodes.unwrap_or(0),
        );
    }
    s
}
