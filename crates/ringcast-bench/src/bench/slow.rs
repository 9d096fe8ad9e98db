//! Slow readers: do they hold up everyone else? Per engine, 50 fast
//! readers (5 of them publishing 200-byte lines at 2,000 lines/s each) run
//! alone for a reference, then beside each kind of slow client in turn.
//! The cases are data ([`CASES`]); each names the reference it is judged
//! against (see [`crate::targets`]).
//!
//! "100 slow among 200" has 100 fast readers, twice the others' load on
//! the server, so it has its own reference of 100 fast readers alone:
//! against the 50-reader one its delivered/s would double and its p99 say
//! nothing about the slow readers.

use std::num::NonZeroU64;
use std::time::Duration;

use anyhow::Context as _;
use ringcast_load::{Plan, Rate, SlowMode, SlowReaders};

use super::Bench;
use super::cell::{self, CellSpec};
use crate::row::{Engine, Scenario};
use crate::server::Server;

/// Publishers among the fast readers.
pub(crate) const PUBLISHERS: usize = 5;
/// Lines per second per publisher.
pub(crate) const RATE: u64 = 2000;
/// Bytes per line, the newline included.
pub(crate) const SIZE: usize = 200;
/// SO_RCVBUF every slow reader asks for (Linux doubles it).
pub(crate) const RCVBUF: usize = 8192;
/// Bytes a paced slow reader asks for per read.
const READ: usize = 4096;

/// One run of the scenario.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlowCase {
    /// Its name in raw.csv's `case` column.
    pub(crate) name: &'static str,
    /// What it is, for summary.md.
    pub(crate) text: &'static str,
    /// Fast readers, publishers included.
    pub(crate) fast: usize,
    /// The slow readers beside them; none for a reference.
    pub(crate) slow: Option<SlowReaders>,
    /// The case it is compared with (a reference names itself).
    pub(crate) reference: &'static str,
}

impl SlowCase {
    pub(crate) fn is_reference(&self) -> bool {
        self.slow.is_none()
    }
}

const fn paced(count: usize, every_ms: u64) -> Option<SlowReaders> {
    Some(SlowReaders {
        count,
        mode: SlowMode::Paced {
            read: READ,
            every: Duration::from_millis(every_ms),
        },
        rcvbuf: Some(RCVBUF),
    })
}

/// Every case, in the order they run (and the tables list them).
pub(crate) const CASES: &[SlowCase] = &[
    SlowCase {
        name: "reference",
        text: "reference: 50 fast readers alone",
        fast: 50,
        slow: None,
        reference: "reference",
    },
    SlowCase {
        name: "paced-3ms",
        text: "one slow reader, 4 KiB every 3 ms",
        fast: 50,
        slow: paced(1, 3),
        reference: "reference",
    },
    SlowCase {
        name: "paced-5ms",
        text: "one slow reader, 4 KiB every 5 ms",
        fast: 50,
        slow: paced(1, 5),
        reference: "reference",
    },
    SlowCase {
        name: "paced-30ms",
        text: "one slow reader, 4 KiB every 30 ms",
        fast: 50,
        slow: paced(1, 30),
        reference: "reference",
    },
    SlowCase {
        name: "five-paced-10ms",
        text: "five slow readers, 4 KiB every 10 ms",
        fast: 50,
        slow: paced(5, 10),
        reference: "reference",
    },
    SlowCase {
        name: "pausing-200ms-every-300ms",
        text: "one reader pausing 200 ms every 300 ms",
        fast: 50,
        slow: Some(SlowReaders {
            count: 1,
            mode: SlowMode::Pausing {
                pause: Duration::from_millis(200),
                every: Duration::from_millis(300),
            },
            rcvbuf: Some(RCVBUF),
        }),
        reference: "reference",
    },
    SlowCase {
        name: "reference-100",
        text: "reference: 100 fast readers alone",
        fast: 100,
        slow: None,
        reference: "reference-100",
    },
    SlowCase {
        name: "hundred-slow-among-200",
        text: "100 slow readers (4 KiB every 10 ms) among 200",
        fast: 100,
        slow: paced(100, 10),
        reference: "reference-100",
    },
];

/// The plan of `case` against `server`.
pub(crate) fn plan(
    case: &SlowCase,
    server: &Server,
    duration: Duration,
    threads: usize,
) -> anyhow::Result<Plan> {
    let mut builder = Plan::builder(server.addr())
        .clients(case.fast)
        .publishers(PUBLISHERS)
        .size(SIZE)
        .rate(Rate::PerSecond(NonZeroU64::new(RATE).context("rate 0")?))
        .duration(duration)
        .threads(threads);
    if let Some(slow) = case.slow {
        builder = builder.slow_readers(slow);
    }
    Ok(builder.build()?)
}

pub(crate) fn run(bench: &mut Bench, servers: &mut [Server]) -> anyhow::Result<()> {
    // Case by case, both engines, taking turns at going first: each
    // engine still runs its reference first and the cases in turn.
    let mut order = Engine::BOTH.to_vec();
    for case in CASES {
        for &engine in &order {
            let server = crate::server::of_engine(servers, engine)?;
            let spec = CellSpec {
                engine,
                scenario: Scenario::SlowReaders,
                round: None,
                case: Some(case.name),
                build: None,
                plan: plan(case, server, bench.s.slow_duration, bench.s.load_threads)?,
                label: format!("{engine} slow readers {}", case.name),
                cluster: false,
            };
            cell::run(bench, std::slice::from_mut(server), &spec)?;
        }
        order.rotate_left(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_name_existing_references_with_the_same_fast_readers() {
        for case in CASES {
            let reference = CASES
                .iter()
                .find(|c| c.name == case.reference)
                .unwrap_or_else(|| panic!("{} names no case", case.reference));
            assert!(reference.is_reference(), "{}", case.name);
            assert_eq!(reference.fast, case.fast, "{}", case.name);
            // A reference runs before the cases judged against it.
            let at = |name| CASES.iter().position(|c| c.name == name);
            assert!(at(reference.name) <= at(case.name));
        }
    }

    #[test]
    fn every_case_makes_a_valid_plan() {
        for case in CASES {
            let mut builder =
                Plan::builder("127.0.0.1:9".parse::<std::net::SocketAddr>().expect("addr"))
                    .clients(case.fast)
                    .publishers(PUBLISHERS)
                    .size(SIZE)
                    .rate(Rate::PerSecond(NonZeroU64::new(RATE).expect("rate")));
            if let Some(slow) = case.slow {
                builder = builder.slow_readers(slow);
            }
            let plan = builder
                .build()
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(plan.slow_clients(), case.slow.map_or(0, |s| s.count));
        }
    }
}
