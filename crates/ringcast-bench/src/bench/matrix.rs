//! The load matrix: clients × line size, each at saturation (`--rounds`
//! times) and once at a fixed offered load, then the flood cell (one
//! publisher with no window, `--rounds` times, once with `--quick`). Every cell runs against
//! every server of the run (uring, tokio and the textbook server), which
//! take turns cell by cell, and at going first.

use std::num::NonZeroU64;

use anyhow::Context as _;
use ringcast_load::{PacedBy, Plan, Rate};

use super::cell::{self, CellSpec};
use super::{Bench, fixed_rate};
use crate::row::{Engine, Scenario};
use crate::server::Server;

/// The plan of one matrix cell against `server`.
pub(crate) fn plan(
    bench: &Bench,
    server: &Server,
    scenario: Scenario,
    clients: u64,
    size: u64,
) -> anyhow::Result<Plan> {
    let publishers = match scenario {
        // One publisher outrunning the server, not ten sharing it.
        Scenario::Flood => 1,
        _ => bench.s.publishers(clients),
    };
    let rate = match scenario {
        Scenario::Fixed => {
            let per_s = fixed_rate(bench.s.fixed_deliveries(size), publishers, clients);
            Rate::PerSecond(NonZeroU64::new(per_s).context("a fixed rate of 0")?)
        }
        _ => Rate::Max,
    };
    let mut builder = Plan::builder(server.addr())
        .clients(usize::try_from(clients)?)
        .publishers(usize::try_from(publishers)?)
        .size(usize::try_from(size)?)
        .rate(rate)
        .duration(bench.s.duration)
        .threads(bench.s.load_threads);
    if scenario == Scenario::Flood {
        builder = builder.paced_by(PacedBy::Nobody);
    }
    Ok(builder.build()?)
}

pub(crate) fn run(bench: &mut Bench, servers: &mut [Server]) -> anyhow::Result<()> {
    let mut order: Vec<Engine> = Engine::ALL
        .into_iter()
        .filter(|e| servers.iter().any(|s| s.engine == *e))
        .collect();
    let mut cells = Vec::new();
    for size in bench.s.sizes.clone() {
        for clients in bench.s.clients.clone() {
            cells.push((Scenario::Saturation, clients, size));
            cells.push((Scenario::Fixed, clients, size));
        }
    }
    cells.push((Scenario::Flood, bench.s.flood_clients, bench.s.flood_size));
    for (scenario, clients, size) in cells {
        let rounds = match scenario {
            Scenario::Fixed => 1,
            Scenario::Flood => bench.s.flood_rounds,
            _ => bench.s.rounds,
        };
        for round in 1..=rounds {
            for &engine in &order {
                let server = crate::server::of_engine(servers, engine)?;
                let mut label = format!("{engine} {} {clients}x{size}B", scenario_label(scenario));
                if rounds > 1 {
                    label.push_str(&format!(" round {round}"));
                }
                let spec = CellSpec {
                    engine,
                    scenario,
                    round: Some(round),
                    case: None,
                    build: None,
                    plan: plan(bench, server, scenario, clients, size)?,
                    label,
                    cluster: false,
                };
                cell::run(bench, std::slice::from_mut(server), &spec)?;
            }
            // Take turns at going first.
            order.rotate_left(1);
        }
    }
    Ok(())
}

/// The scenario's word in progress lines.
pub(crate) fn scenario_label(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::Fixed => "fixed",
        Scenario::Flood => "flood",
        _ => "saturation",
    }
}
