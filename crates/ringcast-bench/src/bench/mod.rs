//! `ringcast-bench bench`: the settings, the run folder, the order of the
//! scenarios, and the end of the run. What each scenario runs and
//! measures is described once, in `--help` ([`crate::cli`]'s
//! `BENCH_ABOUT`). Each scenario has its own module:
//!
//! - [`idle`]: RSS per idle connection.
//! - [`swarm`]: the netcat swarm, real `nc` processes.
//! - [`matrix`]: clients × size, at saturation and at a fixed load, and
//!   the flood cell; against uring, tokio and the textbook server.
//! - [`slow`]: fast readers beside slow ones.
//! - [`tls`]: the same fixed load over plain TCP and over TLS.
//! - [`cluster`]: single node vs cross-node (`--cluster`).
//! - [`cell`]: one load run against one or more servers, with its CPU,
//!   counters and retry, shared by the last three and by `ab`.
//! - [`setup`]: the text of setup.txt.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::cli::{BenchArgs, ScenarioArg};
use crate::procfs;
use crate::row::{Engine, RawCsv, Row, read_rows};
use crate::sample::QuietWait;
use crate::say;
use crate::server::{Server, ServerGone};

pub(crate) mod cell;
mod cluster;
mod idle;
pub(crate) mod matrix;
pub(crate) mod setup;
pub(crate) mod slow;
mod swarm;
pub(crate) mod tls;

/// Every number a run uses, from the flags.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) quick: bool,
    pub(crate) cluster: bool,
    /// Runs of each saturation cell.
    pub(crate) rounds: u32,
    pub(crate) scenarios: Vec<ScenarioArg>,
    /// Load matrix: clients and line sizes.
    pub(crate) clients: Vec<u64>,
    pub(crate) sizes: Vec<u64>,
    /// Publishing time of a matrix or cluster cell.
    pub(crate) duration: Duration,
    /// Publishing time of a slow-readers run.
    pub(crate) slow_duration: Duration,
    pub(crate) idle_clients: u32,
    pub(crate) nc_listeners: u32,
    pub(crate) nc_publishers: u32,
    pub(crate) nc_lines: u32,
    /// How long the swarm's listeners have to get every line.
    pub(crate) swarm_timeout: Duration,
    /// A cell during which other processes used more than this many cores
    /// runs again, up to `retries` times.
    pub(crate) busy_cores: f64,
    pub(crate) retries: u32,
    /// The most the run waits for a quiet machine, over the whole run.
    pub(crate) quiet_budget: Duration,
    /// Worker threads of the load generator's runtime.
    pub(crate) load_threads: usize,
    /// Publishers per cell: min(clients, this).
    pub(crate) max_publishers: u64,
    /// Fixed-rate cells offer this many deliveries per second in total
    /// (publishers × lines/s × clients), whatever the number of clients.
    pub(crate) fixed_deliveries_64: u64,
    pub(crate) fixed_deliveries_1024: u64,
    /// `--cluster`: clients per cell, all 64-byte lines.
    pub(crate) cluster_clients: Vec<u64>,
    /// The flood cell: one publisher, no window, this many clients and
    /// bytes per line, this many times.
    pub(crate) flood_clients: u64,
    pub(crate) flood_size: u64,
    pub(crate) flood_rounds: u32,
    /// The TLS cell: line sizes, publishing time and runs of each cell,
    /// each run once over plain TCP and once over TLS.
    pub(crate) tls_sizes: Vec<u64>,
    pub(crate) tls_duration: Duration,
    pub(crate) tls_rounds: u32,
}

impl Settings {
    pub(crate) fn from_args(args: &BenchArgs) -> Self {
        let quick = args.quick;
        Settings {
            quick,
            cluster: args.cluster,
            rounds: args.rounds,
            scenarios: args.scenarios.clone(),
            clients: if quick {
                vec![10, 1000]
            } else {
                vec![10, 100, 1000]
            },
            sizes: if quick { vec![64] } else { vec![64, 1024] },
            duration: Duration::from_secs(if quick { 1 } else { 5 }),
            slow_duration: Duration::from_secs(if quick { 1 } else { 4 }),
            idle_clients: if quick { 2000 } else { 10_000 },
            nc_listeners: args.nc_listeners.unwrap_or(if quick { 20 } else { 100 }),
            nc_publishers: 3,
            nc_lines: if quick { 500 } else { 2000 },
            swarm_timeout: Duration::from_secs(if quick { 20 } else { 60 }),
            busy_cores: 0.3,
            // --quick is a smoke test: it neither waits nor reruns.
            retries: if quick { 0 } else { 1 },
            quiet_budget: Duration::from_secs(if quick { 0 } else { 120 }),
            load_threads: 2,
            max_publishers: 10,
            fixed_deliveries_64: 1_000_000,
            fixed_deliveries_1024: 250_000,
            cluster_clients: vec![100, 1000],
            flood_clients: 1000,
            flood_size: 64,
            // Its drain (seconds of backlog in socket buffers) makes it the
            // longest cell; a smoke test plays it once.
            flood_rounds: if quick { 1 } else { args.rounds },
            tls_sizes: if quick { vec![64] } else { vec![64, 1024] },
            tls_duration: if quick {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(5)
            },
            tls_rounds: if quick { 1 } else { args.rounds },
        }
    }

    /// Whether `scenario` is to run (all of them unless `--scenarios`).
    pub(crate) fn runs(&self, scenario: ScenarioArg) -> bool {
        self.scenarios.is_empty() || self.scenarios.contains(&scenario)
    }

    /// Publishers of a cell of `clients`.
    pub(crate) fn publishers(&self, clients: u64) -> u64 {
        clients.min(self.max_publishers)
    }

    /// Total deliveries per second a fixed cell of `size`-byte lines
    /// offers.
    pub(crate) fn fixed_deliveries(&self, size: u64) -> u64 {
        if size > 64 {
            self.fixed_deliveries_1024
        } else {
            self.fixed_deliveries_64
        }
    }
}

/// Lines per second per publisher that offer `total` deliveries per
/// second with `publishers` publishers and `clients` readers; at least 1.
pub(crate) fn fixed_rate(total: u64, publishers: u64, clients: u64) -> u64 {
    (total / publishers.max(1).saturating_mul(clients.max(1))).max(1)
}

/// What a run shares across its scenarios.
pub(crate) struct Bench {
    pub(crate) s: Settings,
    /// The run folder.
    pub(crate) out: PathBuf,
    /// Scratch files, removed at the end.
    pub(crate) scratch: tempfile::TempDir,
    raw: RawCsv,
    /// What went wrong, for summary.md; any makes the exit status 1.
    pub(crate) problems: Vec<String>,
    pub(crate) quiet: QuietWait,
    pub(crate) clk_tck: u64,
    /// The load generator's runtime.
    pub(crate) rt: tokio::runtime::Runtime,
    /// The `ringcast` binary.
    pub(crate) bin: PathBuf,
    /// The textbook server (`examples/textbook.rs`), if this run uses it.
    pub(crate) textbook_bin: Option<PathBuf>,
    /// Lines for setup.txt, written at the end (and on an early stop).
    pub(crate) setup: Vec<String>,
}

impl Bench {
    /// Records a problem: said now, listed in summary.md, exit status 1.
    pub(crate) fn problem(&mut self, text: impl Into<String>) {
        let text = text.into();
        say!("PROBLEM: {text}");
        self.problems.push(text);
    }

    /// Writes setup.txt: what is known so far, and `tail`.
    pub(crate) fn write_setup(&self, tail: &[String]) -> anyhow::Result<()> {
        let path = self.out.join("setup.txt");
        let mut text = self.setup.join("\n") + "\n";
        for line in tail {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Appends a row to raw.csv.
    pub(crate) fn record(&mut self, row: &Row) -> anyhow::Result<()> {
        self.raw.append(row)
    }

    /// Waits for a quiet machine, within the run's budget.
    pub(crate) fn wait_quiet(&mut self) -> anyhow::Result<()> {
        self.quiet.wait()
    }

    /// Where server `name`'s log goes.
    pub(crate) fn log_path(&self, name: &str) -> PathBuf {
        self.out.join(format!("server-{name}.log"))
    }

    /// Starts a server and notes it in setup.txt.
    pub(crate) fn start_server(
        &mut self,
        engine: Engine,
        name: &str,
        extra: &[String],
    ) -> anyhow::Result<Server> {
        let bin = if engine.is_ringcast() {
            self.bin.clone()
        } else {
            self.textbook_bin
                .clone()
                .context("the textbook server's binary is not known to this run")?
        };
        self.start_server_from(&bin, engine, name, extra)
    }

    /// Starts a server from `bin` and notes it in setup.txt.
    pub(crate) fn start_server_from(
        &mut self,
        bin: &Path,
        engine: Engine,
        name: &str,
        extra: &[String],
    ) -> anyhow::Result<Server> {
        let log = self.log_path(name);
        let server = Server::start(bin, engine, name, extra, &log, self.scratch.path())?;
        let what = if !engine.is_ringcast() {
            format!("textbook server ({})", server.command)
        } else if name == engine.name() {
            format!("engine {engine}")
        } else if name.ends_with(tls::SUFFIX) {
            format!("{name} (engine {engine}, {})", extra.join(" "))
        } else if extra.is_empty() {
            format!("{name} (engine {engine}, {})", server.command)
        } else {
            format!("node {name} (engine {engine}, {})", extra.join(" "))
        };
        let serving = server
            .log_line("serving")
            .map(|l| {
                l.split_once("serving")
                    .map_or(l.clone(), |(_, s)| format!("serving{s}"))
            })
            .unwrap_or_default();
        if engine.is_ringcast() && self.setup.iter().all(|l| !l.starts_with("server: ")) {
            self.setup.push(format!(
                "server: {} (defaults for everything else)",
                server
                    .command
                    .replace(&format!("--engine {engine}"), "--engine ENGINE")
            ));
        }
        let metrics = server
            .metrics_addr()
            .map_or_else(|| "none".to_owned(), |a| a.to_string());
        self.setup.push(format!(
            "{what}: pid {}, {}, metrics {metrics}, log: {serving}",
            server.pid(),
            server.addr(),
        ));
        say!(
            "{name} server up on {} (metrics {metrics}, pid {})",
            server.addr(),
            server.pid()
        );
        Ok(server)
    }

    /// Waits until `server` has seen every client leave; a problem if not
    /// within 30 s.
    pub(crate) fn wait_disconnected(&mut self, server: &mut Server) -> anyhow::Result<()> {
        server.check_alive()?;
        if let Err(e) = server.wait_disconnected(Duration::from_secs(30)) {
            self.problem(format!(
                "{}: clients still connected 30 s after they closed ({e:#})",
                server.name
            ));
        }
        Ok(())
    }

    /// Stops `server` with SIGTERM; a problem unless it exits 0 within
    /// 20 s.
    pub(crate) fn stop_server(&mut self, server: &mut Server) -> anyhow::Result<()> {
        server.check_alive()?;
        match server.stop(Duration::from_secs(20))? {
            None => self.problem(format!(
                "{} server still running 20 s after SIGTERM; killed",
                server.name
            )),
            Some(status) if status.success() => {
                say!("{} server stopped, exit status 0", server.name)
            }
            Some(status) => self.problem(format!(
                "{} server exited with {status} after SIGTERM (see server-{}.log)",
                server.name, server.name
            )),
        }
        Ok(())
    }
}

/// Runs `ringcast-bench bench`.
pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let s = Settings::from_args(args);
    let bin = crate::cli::server_bin(args.server_bin.as_ref())?;
    // The textbook server is in the load matrix only.
    let textbook_bin = if !s.cluster && s.runs(ScenarioArg::Matrix) {
        Some(crate::cli::textbook_bin(args.textbook_bin.as_ref())?)
    } else {
        None
    };
    let needs_nc = !s.cluster && s.runs(ScenarioArg::Swarm);
    if needs_nc {
        check_netcat()?;
    }
    let nats = if s.cluster {
        Some(cluster::find_nats_server()?)
    } else {
        None
    };
    let (fd_got, fd_hard) = raise_fd_limit(&s)?;

    let stamp = {
        let mut stamp = format!(
            "{}-{}",
            chrono::Local::now().format("%Y-%m-%d-%H%M%S"),
            setup::short_hostname()
        );
        if s.quick {
            stamp.push_str("-quick");
        }
        if s.cluster {
            stamp.push_str("-cluster");
        }
        stamp
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("bench-results").join(stamp));
    let steal_at_start = procfs::machine_ticks()?.steal;
    let setup = setup::header(
        &s,
        &bin,
        textbook_bin.as_deref(),
        fd_got,
        fd_hard,
        procfs::clk_tck(),
    );
    let mut bench = Bench::create(s, out, bin, textbook_bin, setup)?;

    let result = if bench.s.cluster {
        cluster::run(
            &mut bench,
            nats.as_deref().unwrap_or(Path::new("nats-server")),
        )
    } else {
        compare_engines(&mut bench)
    };
    let stopped_early = bench.stopped_early(result);
    finish(&mut bench, steal_at_start)?;
    Ok(bench.exit_code(stopped_early))
}

impl Bench {
    /// The run folder `out` (created), its raw.csv and scratch folder, and
    /// the load generator's runtime; setup.txt written with `setup` so
    /// far, so that a run stopped by a signal still says what it ran on.
    pub(crate) fn create(
        s: Settings,
        out: PathBuf,
        bin: PathBuf,
        textbook_bin: Option<PathBuf>,
        setup: Vec<String>,
    ) -> anyhow::Result<Bench> {
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        let scratch = tempfile::Builder::new()
            .prefix("ringcast-bench.")
            .tempdir()
            .context("cannot create a scratch folder")?;
        crate::children::remove_on_signal(scratch.path().to_owned());
        let clk_tck = procfs::clk_tck();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(s.load_threads)
            .enable_all()
            .build()
            .context("cannot start the load generator's runtime")?;
        let bench = Bench {
            raw: RawCsv::create(&out.join("raw.csv"))?,
            quiet: QuietWait::new(s.busy_cores, s.quiet_budget, clk_tck),
            setup,
            s,
            out,
            scratch,
            problems: Vec::new(),
            clk_tck,
            rt,
            bin,
            textbook_bin,
        };
        say!("results go to {}", bench.out.display());
        bench.write_setup(&[])?;
        Ok(bench)
    }

    /// A problem for a run that stopped early (`result`'s error), or
    /// nothing; whether it stopped.
    pub(crate) fn stopped_early(&mut self, result: anyhow::Result<()>) -> bool {
        match result {
            Ok(()) => false,
            Err(e) => match e.downcast::<ServerGone>() {
                Ok(gone) => {
                    self.problem(gone.0);
                    true
                }
                Err(e) => {
                    // Whatever was measured is still written down.
                    self.problem(format!("the run stopped: {e:#}"));
                    true
                }
            },
        }
    }

    /// The exit status, saying why it is not 0.
    pub(crate) fn exit_code(&self, stopped_early: bool) -> ExitCode {
        if stopped_early {
            eprintln!(
                "ringcast-bench: stopped early; partial results in {}",
                self.out.display()
            );
        }
        if self.problems.is_empty() {
            ExitCode::SUCCESS
        } else {
            eprintln!("ringcast-bench: problems during the run (listed in summary.md)");
            ExitCode::FAILURE
        }
    }
}

/// Both engines side by side, every scenario of the engine comparison.
fn compare_engines(bench: &mut Bench) -> anyhow::Result<()> {
    // The servers run side by side (an idle one costs nothing) and the
    // cells alternate between them, so a neighbour's load on a shared
    // machine hits every server alike. The textbook server is a baseline
    // for the load matrix only: the other scenarios read ringcast's
    // metrics, or judge its slow-reader policy.
    let mut servers = Vec::new();
    for engine in Engine::BOTH {
        servers.push(bench.start_server(engine, engine.name(), &[])?);
    }
    if bench.s.runs(ScenarioArg::Matrix) {
        servers.push(bench.start_server(Engine::Textbook, Engine::Textbook.name(), &[])?);
    }
    if bench.s.runs(ScenarioArg::Idle) {
        for server in servers.iter_mut().filter(|s| s.engine.is_ringcast()) {
            idle::run(bench, server)?;
        }
    }
    if bench.s.runs(ScenarioArg::Swarm) {
        let inputs = swarm::Inputs::write(bench)?;
        for server in servers.iter_mut().filter(|s| s.engine.is_ringcast()) {
            swarm::run(bench, server, &inputs)?;
        }
    }
    if bench.s.runs(ScenarioArg::Matrix) {
        matrix::run(bench, &mut servers)?;
    }
    if bench.s.runs(ScenarioArg::SlowReaders) {
        slow::run(bench, &mut servers)?;
    }
    if bench.s.runs(ScenarioArg::Tls) {
        tls::run(bench)?;
    }
    for server in &mut servers {
        bench.stop_server(server)?;
    }
    Ok(())
}

/// Charts, summary.md and the end of setup.txt; prints the summary.
pub(crate) fn finish(bench: &mut Bench, steal_at_start: u64) -> anyhow::Result<()> {
    let rows = read_rows(&bench.out.join("raw.csv"))?;
    let summary = if bench.s.cluster {
        crate::summary::cluster(&rows, &bench.problems)
    } else {
        match crate::chart::draw_all(&rows, &bench.out) {
            Ok(drawn) if !drawn.is_empty() => say!("charts: {}", drawn.join(", ")),
            Ok(_) => {}
            Err(e) => bench.problem(format!("could not draw the charts: {e:#}")),
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (md, verdicts) = crate::summary::engines(&rows, &bench.problems, cores);
        for v in &verdicts {
            say!("{}", v.line);
        }
        md
    };
    let summary_path = bench.out.join("summary.md");
    std::fs::write(&summary_path, &summary)
        .with_context(|| format!("cannot write {}", summary_path.display()))?;
    let elapsed = crate::elapsed_s();
    let tail = setup::footer(bench, steal_at_start, elapsed)?;
    bench.write_setup(&tail)?;
    println!("{summary}");
    println!("results in {} (took {elapsed:.3}s)", bench.out.display());
    Ok(())
}

/// The swarm needs OpenBSD netcat: others differ in how they treat stdin
/// and EOF.
fn check_netcat() -> anyhow::Result<()> {
    let out = std::process::Command::new("nc").arg("-h").output();
    match out {
        Ok(o)
            if String::from_utf8_lossy(&o.stderr).contains("OpenBSD")
                || String::from_utf8_lossy(&o.stdout).contains("OpenBSD") =>
        {
            Ok(())
        }
        _ => bail!("needs OpenBSD netcat (nc); install it: apt-get install -y netcat-openbsd"),
    }
}

/// Every connection is a file descriptor, in the server and in the
/// harness: raises the soft limit as far as needed (children inherit it).
/// Returns the limit got and the hard limit.
fn raise_fd_limit(s: &Settings) -> anyhow::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let needed = (u64::from(s.idle_clients) + 1000).max(3000);
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).context("cannot read the open-files limit")?;
    let want = hard.min(30_000).max(soft);
    if want > soft {
        // Not fatal here: the check below says what is missing.
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
    }
    let (got, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).context("cannot read the open-files limit")?;
    if got < needed {
        bail!(
            "the open-files limit is {got} (hard limit {hard}) but this run needs {needed}; raise the hard limit (e.g. in /etc/security/limits.conf, or run as root) and retry"
        );
    }
    Ok((got, hard))
}

#[cfg(test)]
mod tests;
