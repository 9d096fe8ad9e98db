//! `ringcast-bench soak`: each engine in turn under churn, load and a
//! stalled client, then a controlled phase for the counters, then
//! SIGTERM; one PASS/FAIL line per property (see `--help`), exit status 1
//! if any FAIL.
//!
//! - [`churn`]: the short-lived connections.
//! - [`phase`]: the counters' controlled phase.

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ringcast_load::{Plan, Rate};
use socket2::{Domain, Socket, Type};

use crate::cli::SoakArgs;
use crate::procfs;
use crate::row::Engine;
use crate::sample::RssSampler;
use crate::server::Server;

mod churn;
mod phase;

/// Every number of a soak, from the flags.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) engines: Vec<Engine>,
    /// The main phase per engine.
    pub(crate) main: Duration,
    pub(crate) churn: u32,
    /// Lines each publisher of the controlled phase sends.
    pub(crate) phase_lines: u32,
    pub(crate) sample_every: Duration,
    pub(crate) load_clients: usize,
    pub(crate) load_publishers: usize,
    pub(crate) load_rate: u64,
    /// Clients of the controlled phase, and how many of them publish.
    pub(crate) k: usize,
    pub(crate) k_publishers: usize,
    pub(crate) load_threads: usize,
}

impl Settings {
    pub(crate) fn from_args(args: &SoakArgs) -> Self {
        let quick = args.quick;
        let engines = args.engines.concat();
        Settings {
            engines: if engines.is_empty() {
                Engine::BOTH.to_vec()
            } else {
                engines
            },
            // With start, checks and the controlled phase, about 30 s per
            // engine with --quick.
            main: if quick {
                Duration::from_secs(18)
            } else {
                Duration::from_secs(u64::from(args.minutes) * 60)
            },
            churn: if quick { 2000 } else { 10_000 },
            phase_lines: if quick { 500 } else { 5000 },
            sample_every: Duration::from_secs(if quick { 1 } else { 5 }),
            load_clients: 50,
            load_publishers: 5,
            load_rate: 200,
            k: 20,
            k_publishers: 4,
            load_threads: 2,
        }
    }
}

/// The PASS/FAIL lines, and whether any failed.
#[derive(Debug, Default)]
struct Results {
    failed: bool,
}

impl Results {
    fn result(&mut self, engine: Engine, property: &str, ok: bool, detail: &str) {
        let head = if ok { "PASS" } else { "FAIL" };
        println!("{head} {:<6} {property:<9} {detail}", engine.name());
        self.failed |= !ok;
    }
}

/// Runs `ringcast-bench soak`.
pub(crate) fn run(args: &SoakArgs) -> anyhow::Result<ExitCode> {
    let s = Settings::from_args(args);
    let bin = crate::cli::server_bin(args.server_bin.as_ref())?;
    let scratch = tempfile::Builder::new()
        .prefix("ringcast-soak.")
        .tempdir()
        .context("cannot create a scratch folder")?;
    crate::children::remove_on_signal(scratch.path().to_owned());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(s.load_threads)
        .enable_all()
        .build()
        .context("cannot start the load generator's runtime")?;
    let mut results = Results::default();
    for &engine in &s.engines {
        soak_engine(&s, engine, &bin, scratch.path(), &rt, &mut results)?;
    }
    if results.failed {
        println!("soak: FAILED");
        Ok(ExitCode::FAILURE)
    } else {
        println!("soak: all properties held");
        Ok(ExitCode::SUCCESS)
    }
}

/// Polls `ok` every 100 ms for `timeout` at most; whether it held.
fn wait_until(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// A client with a tiny receive buffer that never reads.
fn stalled_client(server: &Server) -> anyhow::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_recv_buffer_size(4096)?;
    socket.connect_timeout(&server.addr().into(), Duration::from_secs(5))?;
    Ok(socket)
}

/// The rss property: the last sample at most 1.2 × the sample at 25% of
/// the run + 8 MiB; the detail either way.
fn rss_flat(samples: &[u64], start_kib: u64) -> (bool, String) {
    let n = samples.len();
    if n < 4 {
        return (false, format!("only {n} RSS samples"));
    }
    let quarter = samples[n / 4];
    let last = samples[n - 1];
    let limit = quarter * 12 / 10 + 8192;
    let peak = samples.iter().copied().max().unwrap_or(0);
    (
        last <= limit,
        format!(
            "{n} samples: start {start_kib} KiB, at 25% {quarter} KiB, last {last} KiB (limit {limit} KiB), peak {peak} KiB"
        ),
    )
}

fn soak_engine(
    s: &Settings,
    engine: Engine,
    bin: &std::path::Path,
    scratch: &std::path::Path,
    rt: &tokio::runtime::Runtime,
    results: &mut Results,
) -> anyhow::Result<()> {
    println!(
        "== {engine}: {}s main phase, {} churn cycles, then a controlled phase of {} clients",
        s.main.as_secs(),
        s.churn,
        s.k
    );
    let log = scratch.join(format!("server-{engine}.log"));
    let mut server = match Server::start(bin, engine, engine.name(), &[], &log, scratch) {
        Ok(server) => server,
        Err(e) => {
            results.result(
                engine,
                "engine",
                false,
                &format!("server did not start: {e:#}"),
            );
            return Ok(());
        }
    };
    let named = server.ready.engine == engine.name();
    results.result(
        engine,
        "engine",
        named,
        &format!(
            "ready file names engine {:?}; serving on {}, metrics on {}",
            server.ready.engine,
            server.addr(),
            server
                .metrics_addr()
                .map_or_else(|| "none".to_owned(), |a| a.to_string())
        ),
    );
    let pid = server.pid();
    let fds_start = procfs::fd_count(pid)?;
    let rss_start = procfs::rss_kib(pid)?;
    println!("   start: {fds_start} descriptors, RSS {rss_start} KiB");

    // Main phase: load, churn and a stalled client at once, RSS sampled.
    let sampler = RssSampler::start(pid, s.sample_every, s.main + Duration::from_secs(15))?;
    let stalled = stalled_client(&server).context("the stalled client cannot connect")?;
    let addr = server.addr();
    let (cycles, over) = (s.churn, s.main);
    let churner = thread::Builder::new()
        .name("churn".into())
        .spawn(move || churn::run(addr, cycles, over, 7))
        .context("cannot start churn")?;
    let plan = Plan::builder(addr)
        .clients(s.load_clients)
        .publishers(s.load_publishers)
        .rate(Rate::PerSecond(
            std::num::NonZeroU64::new(s.load_rate).context("rate 0")?,
        ))
        .duration(s.main)
        .threads(s.load_threads)
        .build()?;
    let limit = s.main + Duration::from_secs(60);
    let load = rt.block_on(async { tokio::time::timeout(limit, ringcast_load::run(&plan)).await });
    let churned = churner.join().ok();
    // The stalled client leaves with unread data: its kernel sends RST.
    let _ = stalled.set_linger(Some(Duration::ZERO));
    drop(stalled);
    let samples = sampler.finish();

    match load {
        Ok(Ok(r)) => {
            let ok = r.loss == 0 && r.order_violations == 0 && r.malformed == 0 && r.published > 0;
            results.result(
                engine,
                "delivery",
                ok,
                &format!(
                    "published {}, delivered {} to {} readers, loss {}, order_violations {}, malformed {}, ended {}",
                    r.published, r.delivered, s.load_clients, r.loss, r.order_violations, r.malformed, r.ended
                ),
            );
        }
        Ok(Err(e)) => results.result(
            engine,
            "delivery",
            false,
            &format!("the load run failed: {e:#}"),
        ),
        Err(_) => results.result(
            engine,
            "delivery",
            false,
            &format!("the load run gave no report after {} s", limit.as_secs()),
        ),
    }
    match churned {
        Some(c) => results.result(
            engine,
            "churn",
            c.ok(),
            &format!("churn: {} cycles, {} failed connects", c.cycles, c.failures),
        ),
        None => results.result(engine, "churn", false, "the churn thread panicked"),
    }
    let dropped = server
        .scrape()
        .and_then(|m| m.count("ringcast_messages_dropped_total"));
    match dropped {
        Ok(d) => results.result(
            engine,
            "stalled",
            d > 0,
            &format!("{d} messages dropped for the stalled client (and churners), none for the fast readers"),
        ),
        Err(e) => results.result(engine, "stalled", false, &format!("{e:#}")),
    }

    // Everyone has left: the gauge and the descriptors come back.
    let gauge = |m: &crate::metrics::Metrics| m.get("ringcast_connected_clients");
    if wait_until(Duration::from_secs(10), || {
        server.scrape().ok().as_ref().and_then(gauge) == Some(0.0)
    }) {
        let accepted = server
            .scrape()
            .ok()
            .and_then(|m| m.get("ringcast_connections_accepted_total"))
            .unwrap_or(0.0);
        results.result(
            engine,
            "gauge",
            true,
            &format!("connected_clients back to 0 ({accepted} accepted in all)"),
        );
    } else {
        let now = server.scrape().ok().as_ref().and_then(gauge);
        results.result(
            engine,
            "gauge",
            false,
            &format!("connected_clients is {now:?} after everyone left"),
        );
    }
    if wait_until(Duration::from_secs(10), || {
        procfs::fd_count(pid).is_ok_and(|n| n <= fds_start)
    }) {
        let n = procfs::fd_count(pid).unwrap_or(0);
        results.result(
            engine,
            "fds",
            true,
            &format!("{n} descriptors, {fds_start} at start"),
        );
    } else {
        let n = procfs::fd_count(pid).unwrap_or(0);
        results.result(
            engine,
            "fds",
            false,
            &format!(
                "{n} descriptors after 10 s, {fds_start} at start: {}",
                procfs::fd_kinds(pid)
            ),
        );
    }
    let (ok, detail) = rss_flat(&samples, rss_start);
    results.result(engine, "rss", ok, &detail);

    // Controlled phase: K clients, nothing else connected.
    match phase::run(&server, s.k, s.k_publishers, s.phase_lines) {
        Ok(detail) => results.result(engine, "counters", true, &detail),
        Err(detail) => results.result(engine, "counters", false, &detail),
    }

    // Clean exit on SIGTERM.
    match server.stop(Duration::from_secs(10))? {
        Some(status) => results.result(
            engine,
            "exit",
            status.success(),
            &format!("SIGTERM: {status}"),
        ),
        None => results.result(engine, "exit", false, "still running 10 s after SIGTERM"),
    }
    if let Some(line) = server.log_line("panicked") {
        results.result(engine, "panic", false, &line);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_flat_against_the_quarter_sample() {
        let (ok, detail) = rss_flat(
            &[1000, 20_000, 21_000, 22_000, 23_000, 24_000, 25_000, 32_000],
            900,
        );
        // Quarter: index 2 = 21,000; limit 25,200 + 8,192 = 33,392.
        assert!(ok, "{detail}");
        assert!(
            detail.contains("at 25% 21000 KiB, last 32000 KiB (limit 33392 KiB), peak 32000 KiB")
        );
        let (ok, _) = rss_flat(&[1000, 20_000, 21_000, 22_000, 23_000, 40_000], 900);
        assert!(!ok);
        let (ok, detail) = rss_flat(&[1, 2, 3], 1);
        assert!(!ok);
        assert_eq!(detail, "only 3 RSS samples");
    }

    #[test]
    fn quick_settings() {
        let args = SoakArgs {
            minutes: 10,
            quick: true,
            engines: vec![vec![Engine::Tokio]],
            server_bin: None,
        };
        let s = Settings::from_args(&args);
        assert_eq!(s.main, Duration::from_secs(18));
        assert_eq!(s.engines, [Engine::Tokio]);
        assert_eq!(s.churn, 2000);
        let s = Settings::from_args(&SoakArgs {
            quick: false,
            engines: Vec::new(),
            ..args
        });
        assert_eq!(s.main, Duration::from_secs(600));
        assert_eq!(s.engines, Engine::BOTH);
    }
}
