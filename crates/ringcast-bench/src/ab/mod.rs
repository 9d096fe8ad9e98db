//! `ringcast-bench ab`: two ringcast builds, old and new, under the same
//! load cells, taking turns, with the same harness and load generator as
//! `bench` (it replaces `bench-results/2026-12-02-013727-vm/ab-vs-3bfa28a.sh`).
//!
//! - [`cells`]: the cells, `CLIENTS:SIZE:RATE:DURATION`, and their plans.
//! - [`summary`]: the per-round new/old ratios and their medians.
//!
//! Per engine, both builds' servers run side by side, and each cell runs
//! `--rounds` times per build, the builds alternating and taking turns at
//! going first, so a neighbour's load on a shared machine hits both alike.
//! Every cell is a [`cell::run`](crate::bench::cell::run), as in `bench`:
//! one row of raw.csv, with the server's CPU per delivery.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::bench::cell::{self, CellSpec};
use crate::bench::{Bench, Settings, setup};
use crate::cli::{AbArgs, BenchArgs, ScenarioArg};
use crate::row::{Engine, read_rows};
use crate::say;

pub(crate) mod cells;
mod summary;

use cells::AbCell;

/// The two builds, in the order of raw.csv's `build` column.
const BUILDS: [&str; 2] = ["old", "new"];

/// Runs `ringcast-bench ab`.
pub(crate) fn run(args: &AbArgs) -> anyhow::Result<ExitCode> {
    for bin in [&args.old, &args.new] {
        anyhow::ensure!(bin.is_file(), "{} does not exist", bin.display());
    }
    let cells = if args.cells.is_empty() {
        cells::default_cells()
    } else {
        args.cells.clone()
    };
    let engines = match args.engines.concat() {
        e if e.is_empty() => Engine::BOTH.to_vec(),
        e => e,
    };
    // The full bench's settings, for what a cell needs: its retries, the
    // quiet wait and the load threads.
    let mut s = Settings::from_args(&BenchArgs {
        quick: false,
        cluster: false,
        rounds: args.rounds,
        nc_listeners: None,
        out: None,
        scenarios: vec![ScenarioArg::Matrix],
        server_bin: Some(args.new.clone()),
        textbook_bin: None,
    });
    if args.no_wait {
        s.retries = 0;
        s.quiet_budget = std::time::Duration::ZERO;
    }
    let out = args.out.clone().unwrap_or_else(|| {
        Path::new("bench-results").join(format!(
            "{}-{}-ab",
            chrono::Local::now().format("%Y-%m-%d-%H%M%S"),
            setup::short_hostname()
        ))
    });
    let header = header(args, &s, &engines, &cells);
    let steal_at_start = crate::procfs::machine_ticks()?.steal;
    let mut bench = Bench::create(s, out, args.new.clone(), None, header)?;
    let result = compare(&mut bench, args, &engines, &cells);
    let stopped_early = bench.stopped_early(result);

    let rows = read_rows(&bench.out.join("raw.csv"))?;
    let md = summary::summary(&rows, &engines, &cells, &bench.setup, &bench.problems);
    let path = bench.out.join("summary.md");
    std::fs::write(&path, &md).with_context(|| format!("cannot write {}", path.display()))?;
    let elapsed = crate::elapsed_s();
    let tail = setup::footer(&bench, steal_at_start, elapsed)?;
    bench.write_setup(&tail)?;
    println!("{md}");
    println!("results in {} (took {elapsed:.3}s)", bench.out.display());
    Ok(bench.exit_code(stopped_early))
}

/// Every engine, cell and round, both builds.
fn compare(
    bench: &mut Bench,
    args: &AbArgs,
    engines: &[Engine],
    cells: &[AbCell],
) -> anyhow::Result<()> {
    let bins: [&PathBuf; 2] = [&args.old, &args.new];
    let mut first = 0;
    for &engine in engines {
        let mut servers = Vec::new();
        for (build, bin) in BUILDS.iter().zip(bins) {
            servers.push(bench.start_server_from(
                bin,
                engine,
                &format!("{build}-{engine}"),
                &[],
            )?);
        }
        for cell in cells {
            for round in 1..=bench.s.rounds {
                for k in 0..BUILDS.len() {
                    let i = (first + k) % BUILDS.len();
                    let server = &mut servers[i];
                    let spec = CellSpec {
                        engine,
                        scenario: cell.scenario(),
                        round: Some(round),
                        case: None,
                        build: Some(BUILDS[i]),
                        plan: cell.plan(server.addr(), bench.s.load_threads)?,
                        label: format!("{engine} {} {cell} round {round}", BUILDS[i]),
                        cluster: false,
                    };
                    cell::run(bench, std::slice::from_mut(server), &spec)?;
                }
                // Take turns at going first.
                first = (first + 1) % BUILDS.len();
            }
        }
        for server in &mut servers {
            bench.stop_server(server)?;
        }
    }
    say!("A/B done");
    Ok(())
}

/// setup.txt's first lines.
fn header(args: &AbArgs, s: &Settings, engines: &[Engine], cells: &[AbCell]) -> Vec<String> {
    let mut l = vec![format!(
        "ringcast A/B, {}",
        chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    )];
    for (build, bin) in BUILDS.iter().zip([&args.old, &args.new]) {
        l.push(format!("{build}: {}", describe_bin(bin)));
    }
    l.extend(setup::machine());
    l.push(format!(
        "engines: {}; rounds: {} per cell and build, builds alternating; cells: {}",
        engines
            .iter()
            .map(|e| e.name())
            .collect::<Vec<_>>()
            .join(", "),
        s.rounds,
        cells
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    ));
    l.push(format!(
        "load generator: the ringcast-load library inside ringcast-bench (same process, this checkout), {} threads; publishers min(10, clients), 1 for flood",
        s.load_threads
    ));
    l.push(if s.quiet_budget.is_zero() {
        "--no-wait: no wait for a quiet machine, no reruns".to_owned()
    } else {
        format!(
            "waits up to {} s in all for a quiet machine; a cell during which others took more than {} cores runs again once",
            s.quiet_budget.as_secs(),
            s.busy_cores
        )
    });
    l
}

/// A binary's path, size and modification time, which tell two builds
/// apart when their paths do not.
fn describe_bin(bin: &Path) -> String {
    let meta = std::fs::metadata(bin);
    let modified = meta
        .as_ref()
        .ok()
        .and_then(|m| m.modified().ok())
        .map(|t| {
            chrono::DateTime::<chrono::Local>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        })
        .unwrap_or_else(|| "?".to_owned());
    let size = meta.map(|m| m.len()).unwrap_or(0);
    format!("{} ({size} bytes, modified {modified})", bin.display())
}
