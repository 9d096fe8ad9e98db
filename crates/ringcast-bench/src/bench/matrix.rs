//! The load matrix: clients × line size, each at saturation (`--rounds`
//! times) and once at a fixed offered load; the engines take turns cell
//! by cell, and at going first.

use std::num::NonZeroU64;

use anyhow::Context as _;
use ringcast_load::{Plan, Rate};

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
    let publishers = bench.s.publishers(clients);
    let rate = match scenario {
        Scenario::Fixed => {
            let per_s = fixed_rate(bench.s.fixed_deliveries(size), publishers, clients);
            Rate::PerSecond(NonZeroU64::new(per_s).context("a fixed rate of 0")?)
        }
        _ => Rate::Max,
    };
    Ok(Plan::builder(server.addr())
        .clients(usize::try_from(clients)?)
        .publishers(usize::try_from(publishers)?)
        .size(usize::try_from(size)?)
        .rate(rate)
        .duration(bench.s.duration)
        .threads(bench.s.load_threads)
        .build()?)
}

pub(crate) fn run(bench: &mut Bench, servers: &mut [Server]) -> anyhow::Result<()> {
    let mut order = Engine::BOTH.to_vec();
    for size in bench.s.sizes.clone() {
        for clients in bench.s.clients.clone() {
            for scenario in [Scenario::Saturation, Scenario::Fixed] {
                let rounds = if scenario == Scenario::Saturation {
                    bench.s.rounds
                } else {
                    1
                };
                for round in 1..=rounds {
                    for &engine in &order {
                        let i = servers
                            .iter()
                            .position(|s| s.engine == engine)
                            .context("no server of that engine")?;
                        let server = &mut servers[i];
                        let name = if scenario == Scenario::Fixed {
                            "fixed"
                        } else {
                            "saturation"
                        };
                        let mut label = format!("{engine} {name} {clients}x{size}B");
                        if rounds > 1 {
                            label.push_str(&format!(" round {round}"));
                        }
                        let spec = CellSpec {
                            engine,
                            scenario,
                            round: Some(round),
                            case: None,
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
        }
    }
    Ok(())
}
