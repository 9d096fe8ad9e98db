//! The command line: `ringcast-bench bench`, `ringcast-bench ab` and
//! `ringcast-bench soak`. Only the options and their help; what they mean
//! in numbers is in [`crate::bench::Settings`], [`crate::ab`] and
//! [`crate::soak::Settings`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::ab::cells::AbCell;
use crate::row::Engine;

/// Benchmarks and soak tests of ringcast's two engines on this machine,
/// on loopback only. `scripts/bench.sh` and `scripts/soak.sh` build the
/// release binaries and run these.
#[derive(Debug, Parser)]
#[command(name = "ringcast-bench", version, about)]
pub(crate) struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Benchmark the uring and tokio engines side by side, with the
    /// textbook tokio server as a second baseline.
    #[command(long_about = BENCH_ABOUT)]
    Bench(BenchArgs),
    /// A/B: two ringcast builds taking turns under the same load cells.
    #[command(long_about = AB_ABOUT)]
    Ab(AbArgs),
    /// Soak test each engine: churn, load, a stalled client, counters.
    #[command(long_about = SOAK_ABOUT)]
    Soak(SoakArgs),
}

const BENCH_ABOUT: &str = "\
Benchmark the uring and tokio engines side by side, with a textbook tokio \
server (examples/textbook.rs) as a second baseline in the load matrix.

Starts `ringcast serve` for each engine, and the textbook server, on free \
loopback ports (all run side by side; an idle server costs nothing; ports \
are read from --ready-file), then for each engine:

  1. idle memory: opens 10,000 idle connections (2,000 with --quick) and \
reports the server's resident memory per connection, (VmRSS after - \
before) / N;
  2. netcat swarm: N `nc` listeners (--nc-listeners) and 3 `nc` \
publishers piping 2,000 lines each (500 with --quick); the time until \
every listener has every line, complete and in order;
  3. load matrix (the ringcast-load library), against the textbook server \
too: clients {10,100,1000} x line size {64,1024} ({10,1000} x 64 with \
--quick), at saturation (rate max, closed loop paced by every reader: each \
publisher keeps a window of lines in flight that halves when a reader \
finds lines missing and grows back while none are, so publishers settle \
near the highest rate every reader keeps up with; \
docs/decisions/0029) and at a fixed offered load of \
1,000,000 deliveries/s for 64-byte lines (250,000/s for 1024-byte lines) \
that every server should carry without loss; then the flood cell: 1000 \
clients x 64 B, one publisher with no window at all (--paced-by none), \
as fast as its socket takes lines, so the server sets the pace and drops \
what it cannot deliver (most of that cell is the drain after publishing; \
a run that reaches the generator's cap, 10 s after publishing, counts \
the lines still buffered as lost). The servers take turns cell by cell. \
Each saturation and flood cell runs --rounds times (the flood cell once \
with --quick: its drain makes it the longest); the summary reports \
each server's median run, the uring/tokio and uring/textbook ratios, and \
the range of the per-round ratios: one run's ratio moves by 20 % or more. \
Every load cell also reports the server's CPU per delivery: its CPU \
(utime + stime, /proc/PID/stat) over the interval delivered/s is \
measured over (start of publishing to last delivery), over the lines \
delivered;
  4. slow readers: 50 fast readers and 5 publishers at 2,000 lines/s each, \
200-byte lines, for 4 s (1 s with --quick); first alone (the reference), \
then beside one slow client (8 KiB SO_RCVBUF) reading 4 KiB every 3 ms, \
every 5 ms, every 30 ms; five such clients every 10 ms; one client that \
pauses 200 ms every 300 ms; and 100 slow clients (every 10 ms) beside 100 \
fast readers, against a reference of 100 fast readers alone. Targets: \
fast readers lose nothing and see no order violation, deliver at least \
0.95 x the reference's delivered/s, and keep p99 <= 2 x the reference's + \
2 ms;
  5. TLS: what TLS costs the server per delivery (a line is sealed once \
per TLS reader). A server per engine with a test certificate made into \
the results folder (tls-cert.pem; `--tls-cert --tls-key --plain-listen`), \
100 clients x {64,1024} B (64 with --quick), 10 publishers at a fixed \
200,000 deliveries/s in all, for 5 s (0.5 s with --quick), --rounds \
times (once with --quick): each run once over plain TCP (its \
--plain-listen) and once over TLS (every client, `ringcast load --tls`). \
The summary gives delivered/s and the server's CPU per delivery of each, \
and their TLS/plain ratios;

then stops the servers with SIGTERM and checks they exit 0. Idle memory, \
the swarm, the slow readers and TLS run uring and tokio only: they read \
ringcast's metrics, judge its slow-reader policy or need TLS.

On a shared machine, the full run waits (2 minutes at most in all) for \
other processes to go quiet before each cell, and runs a cell again once if \
they took more than 0.3 cores during it; raw.csv records what they took \
(other_cpu_cores). --quick does neither.

Results go to bench-results/<date>-<host>/ (or --out): setup.txt, raw.csv \
(one row per server x scenario x round), summary.md (printed at the end, \
with uring/tokio and uring/textbook ratio columns and the targets of \
crates/ringcast-bench/src/targets.toml, which are reported, not enforced) \
and SVG charts of delivered/s against clients. Exits 1 if \
something went wrong during the run (listed in summary.md), 0 otherwise.

--cluster runs, instead of all that, a single-node vs cross-node \
comparison: it starts its own nats-server on a loopback port and two \
`ringcast serve --engine uring --cluster nats://...` nodes, A and B, waits \
until both report ringcast_cluster_connected 1, then runs clients \
{100,1000} x 64 B with 10 publishers, at a fixed offered load (1,000,000 \
deliveries/s) and at saturation, each cell twice: cluster-single (every \
client on node A) and cluster-cross (client i on node i mod 2, so half of \
every line's deliveries cross NATS). Combine with --quick for shorter \
cells.

Needs nc (netcat-openbsd), the textbook example (cargo build --release \
--examples); for --cluster, nats-server. This help is where the scenarios \
are described; scripts/bench.sh, docs/benchmarks.md and the README point \
here.";

const AB_ABOUT: &str = "\
A/B of two ringcast builds: the same load cells against both, taking turns.

For each engine (--engines), starts `OLD serve --engine E` and `NEW serve \
--engine E` side by side on loopback (a build without --ready-file gets \
ports picked for it), then runs every cell --rounds times, the builds \
taking turns, and at going first, round by round. The load generator is \
this harness's own, for both builds.

A cell is CLIENTS:SIZE:RATE:DURATION, e.g. 1000:64:max:3s. RATE is `max` \
(saturation, min(10, clients) publishers paced by every reader), lines/s \
per publisher (a fixed rate, min(10, clients) publishers), or `flood` (one \
publisher, no window: --paced-by none).

Results go to bench-results/<date>-<host>-ab/ (or --out): setup.txt, \
raw.csv (one row per engine x cell x round x build, the columns of \
`bench`'s raw.csv and `build`), and summary.md (printed at the end): per \
engine and cell, the per-round new/old ratios of delivered/s and of the \
server's CPU per delivery, and their median. Exits 1 if something went \
wrong during the run (listed in summary.md).

Like the full bench, it waits (2 minutes at most in all) for other \
processes to go quiet before each cell, and runs a cell again once if \
they took more than 0.3 cores during it; --no-wait does neither.";

const SOAK_ABOUT: &str = "\
Soak test each engine in turn on loopback.

Starts `ringcast serve --engine E` with /metrics on, records its \
descriptor count and RSS, then runs at once for --minutes (18 s with \
--quick): churn (10,000 short connections, 2,000 with --quick, each \
closing cleanly or by reset, some after reading a little); load (50 \
clients, 5 publishers at 200 lines/s, every client checking per-publisher \
order); one stalled client (small SO_RCVBUF, never reads); RSS sampled \
every 5 s (1 s with --quick). Then a controlled phase for the counters, \
and SIGTERM.

One PASS/FAIL line per property; exit status 1 if any FAIL:
  engine    the ready file names the engine asked for
  delivery  loss 0, order_violations 0, malformed 0
  churn     every churn connect succeeded (at most 1% may fail)
  stalled   the stalled client really stalled: messages were dropped
  gauge     ringcast_connected_clients returns to 0 once everyone left
  fds       the server's descriptor count returns to its start (10 s)
  rss       last sample <= 1.2 x the sample at 25% of the run + 8 MiB
  counters  with nothing else connected, K = 20 clients that all read \
everything, 4 of them publishing N lines each: Δsent + Δdropped == \
Δreceived x K and Δreceived == 4 x N (polled for up to 5 s, as a writer \
counts its last write after it completes)
  exit      SIGTERM makes the server exit 0
  panic     (only if) the server's log shows a panic";

/// `ringcast-bench bench` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    /// A smoke test for CI: shorter cells, fewer clients and sizes, no
    /// waiting for a quiet machine, no reruns.
    #[arg(long)]
    pub(crate) quick: bool,

    /// Single node vs cross-node on two clustered uring nodes, instead of
    /// the engine comparison (needs nats-server).
    #[arg(long)]
    pub(crate) cluster: bool,

    /// Runs of each saturation cell, engines alternating (ignored by
    /// --cluster).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rounds: u32,

    /// `nc` listeners in the netcat swarm [default: 100, 20 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) nc_listeners: Option<u32>,

    /// Where the results go [default: bench-results/<date>-<host>, with
    /// -quick and -cluster suffixes].
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,

    /// Only these scenarios of the engine comparison, comma-separated
    /// (e.g. `slow-readers`) [default: all].
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        conflicts_with = "cluster"
    )]
    pub(crate) scenarios: Vec<ScenarioArg>,

    /// The `ringcast` binary to serve with [default: `ringcast` beside this
    /// program].
    #[arg(long, value_name = "PATH")]
    pub(crate) server_bin: Option<PathBuf>,

    /// The textbook server, built from examples/textbook.rs [default:
    /// `examples/textbook` beside this program].
    #[arg(long, value_name = "PATH")]
    pub(crate) textbook_bin: Option<PathBuf>,
}

/// `ringcast-bench ab` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct AbArgs {
    /// The old build's `ringcast` binary.
    #[arg(long, value_name = "BIN")]
    pub(crate) old: PathBuf,

    /// The new build's `ringcast` binary.
    #[arg(long, value_name = "BIN")]
    pub(crate) new: PathBuf,

    /// Runs of each cell per build.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rounds: u32,

    /// Cells as CLIENTS:SIZE:RATE:DURATION, separated by commas or spaces
    /// [default: 1000:64:max:3s 100:64:max:3s 10:64:max:3s 10:1024:max:3s
    /// 100:1024:max:3s 1000:1024:max:3s 1000:64:100:3s 1000:64:flood:3s].
    #[arg(long, value_name = "CELL", value_delimiter = ',', num_args = 1..)]
    pub(crate) cells: Vec<AbCell>,

    /// Engines, separated by commas or spaces [default: uring,tokio].
    #[arg(long, value_name = "LIST", value_delimiter = ',', num_args = 1.., value_parser = parse_engines)]
    pub(crate) engines: Vec<Vec<Engine>>,

    /// Where the results go [default: bench-results/<date>-<host>-ab].
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,

    /// Neither wait for a quiet machine nor run busy cells again.
    #[arg(long)]
    pub(crate) no_wait: bool,
}

/// The scenarios `--scenarios` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ScenarioArg {
    /// Idle memory.
    Idle,
    /// The netcat swarm.
    Swarm,
    /// The load matrix, saturation and fixed load.
    Matrix,
    /// Slow readers beside fast ones.
    SlowReaders,
    /// The same fixed load over plain TCP and over TLS.
    Tls,
}

/// `ringcast-bench soak` options.
#[derive(Debug, Clone, Args)]
pub(crate) struct SoakArgs {
    /// Minutes of the main phase per engine.
    #[arg(long, value_name = "M", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) minutes: u32,

    /// About a minute for both engines: an 18 s main phase, fewer churn
    /// cycles and phase lines, RSS sampled every second.
    #[arg(long)]
    pub(crate) quick: bool,

    /// Engines to soak, in order, separated by commas or spaces
    /// (`uring`, `tokio`, `"uring tokio"`) [default: uring then tokio].
    #[arg(long, value_name = "LIST", value_delimiter = ',', num_args = 1.., value_parser = parse_engines)]
    pub(crate) engines: Vec<Vec<Engine>>,

    /// The `ringcast` binary to serve with [default: `ringcast` beside this
    /// program].
    #[arg(long, value_name = "PATH")]
    pub(crate) server_bin: Option<PathBuf>,
}

/// One `--engines` value, which soak.sh passes as one word with spaces
/// ("uring tokio"), as it always has.
fn parse_engines(s: &str) -> Result<Vec<Engine>, String> {
    s.split_whitespace()
        .map(|e| match e {
            "uring" => Ok(Engine::Uring),
            "tokio" => Ok(Engine::Tokio),
            other => Err(format!("{other:?} is not an engine (uring or tokio)")),
        })
        .collect()
}

/// The textbook server: the one given, or the example cargo built beside
/// this program.
pub(crate) fn textbook_bin(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    if let Some(path) = given {
        return Ok(path.clone());
    }
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let bin = me.with_file_name("examples").join("textbook");
    anyhow::ensure!(
        bin.is_file(),
        "{} does not exist; build it (cargo build --release --examples) or pass --textbook-bin",
        bin.display()
    );
    Ok(bin)
}

/// The `ringcast` binary: the one given, or the one cargo built beside
/// this program.
pub(crate) fn server_bin(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    if let Some(path) = given {
        return Ok(path.clone());
    }
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let bin = me.with_file_name("ringcast");
    anyhow::ensure!(
        bin.is_file(),
        "{} does not exist; build it (cargo build --release --workspace) or pass --server-bin",
        bin.display()
    );
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_parse_with_spaces_or_commas() {
        let cli = Cli::try_parse_from(["ringcast-bench", "soak", "--engines", "uring tokio"])
            .expect("parses");
        let Command::Soak(args) = cli.command else {
            panic!("not soak")
        };
        assert_eq!(args.engines.concat(), [Engine::Uring, Engine::Tokio]);
        let cli = Cli::try_parse_from(["ringcast-bench", "soak", "--engines", "tokio,uring"])
            .expect("parses");
        let Command::Soak(args) = cli.command else {
            panic!("not soak")
        };
        assert_eq!(args.engines.concat(), [Engine::Tokio, Engine::Uring]);
        assert!(Cli::try_parse_from(["ringcast-bench", "soak", "--engines", "epoll"]).is_err());
    }

    #[test]
    fn bench_flags_parse() {
        let cli = Cli::try_parse_from([
            "ringcast-bench",
            "bench",
            "--quick",
            "--rounds",
            "2",
            "--nc-listeners",
            "5",
            "--out",
            "/tmp/x",
            "--scenarios",
            "idle,slow-readers,tls",
        ])
        .expect("parses");
        let Command::Bench(args) = cli.command else {
            panic!("not bench")
        };
        assert!(args.quick);
        assert_eq!(args.rounds, 2);
        assert_eq!(args.nc_listeners, Some(5));
        assert_eq!(
            args.scenarios,
            [
                ScenarioArg::Idle,
                ScenarioArg::SlowReaders,
                ScenarioArg::Tls
            ]
        );
        assert!(Cli::try_parse_from(["ringcast-bench", "bench", "--rounds", "0"]).is_err());
    }

    #[test]
    fn ab_flags_parse() {
        let cli = Cli::try_parse_from([
            "ringcast-bench",
            "ab",
            "--old",
            "/a/ringcast",
            "--new",
            "/b/ringcast",
            "--rounds",
            "1",
            "--cells",
            "1000:64:max:3s,10:1024:100:1s",
            "1000:64:flood:2s",
            "--engines",
            "uring",
        ])
        .expect("parses");
        let Command::Ab(args) = cli.command else {
            panic!("not ab")
        };
        assert_eq!(args.rounds, 1);
        assert_eq!(args.old, PathBuf::from("/a/ringcast"));
        let cells: Vec<String> = args.cells.iter().map(ToString::to_string).collect();
        assert_eq!(
            cells,
            ["1000:64:max:3s", "10:1024:100:1s", "1000:64:flood:2s"]
        );
        assert_eq!(args.engines.concat(), [Engine::Uring]);
        assert!(!args.no_wait);
        assert!(
            Cli::try_parse_from([
                "ringcast-bench",
                "ab",
                "--old",
                "a",
                "--new",
                "b",
                "--cells",
                "10:64"
            ])
            .is_err(),
            "a cell has four parts"
        );
        assert!(
            Cli::try_parse_from(["ringcast-bench", "ab", "--new", "b"]).is_err(),
            "--old is needed"
        );
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
