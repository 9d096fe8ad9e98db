//! `ringcast-bench`: the benchmark and soak harness of ringcast.
//!
//! `scripts/bench.sh` and `scripts/soak.sh` build the release binaries and
//! run `ringcast-bench bench` and `ringcast-bench soak`; `ringcast-bench
//! ab` compares two builds. `--help` on each subcommand explains every
//! scenario, cell and property.
//!
//! Layout, one concern per module:
//!
//! - [`cli`]: the command line.
//! - [`children`]: child processes that die with the harness, whatever
//!   way it ends.
//! - [`server`]: starting `ringcast serve` (or the textbook server),
//!   reading its ready file, stopping it.
//! - [`procfs`]: `/proc` reads (the procfs crate): process and machine
//!   CPU ticks, RSS, descriptors.
//! - [`sample`]: CPU over an interval, the quiet-machine wait, RSS sampling.
//! - [`track`]: a server's CPU over a load run's measured interval, known
//!   only once the run is over.
//! - [`metrics`]: scraping and parsing the server's Prometheus text.
//! - [`md`]: numbers and markdown tables for summary.md.
//! - [`row`]: the one row type of `raw.csv`.
//! - [`stats`]: medians and per-round ratio ranges over typed rows.
//! - [`targets`]: the targets, data in `targets.toml`, and their
//!   evaluation.
//! - [`summary`]: the text of `summary.md`.
//! - [`chart`]: the SVG charts.
//! - [`bench`]: the benchmark's scenarios.
//! - [`ab`]: two builds under the same cells.
//! - [`soak`]: the soak test.

mod ab;
mod bench;
mod chart;
mod children;
mod cli;
mod md;
mod metrics;
mod procfs;
mod row;
mod sample;
mod server;
mod soak;
mod stats;
mod summary;
mod targets;
mod track;

use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Instant;

use clap::Parser as _;

/// When the harness started, for the time stamps of [`say!`].
static START: OnceLock<Instant> = OnceLock::new();

/// Seconds since the harness started.
pub(crate) fn elapsed_s() -> f64 {
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// A progress line on stderr, stamped with the time since the start.
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("[{:7.3}s] {}", $crate::elapsed_s(), format_args!($($arg)*))
    };
}
pub(crate) use say;

fn main() -> ExitCode {
    START.get_or_init(Instant::now);
    let cli = cli::Cli::parse();
    if let Err(e) = children::kill_on_signal() {
        eprintln!("ringcast-bench: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        cli::Command::Bench(args) => bench::run(&args),
        cli::Command::Ab(args) => ab::run(&args),
        cli::Command::Soak(args) => soak::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringcast-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
