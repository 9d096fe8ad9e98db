//! The targets, as data in one table ([`TARGETS`]), and their evaluation
//! into one PASS/FAIL line each. Targets are reported, not enforced: a
//! FAIL does not change the exit status.
//!
//! A target names what it looks at (a [`Subject`]: a ratio of the
//! engines, or one engine's figure, in one or several cells or slow-reader
//! cases), how it compares ([`Cmp`]) and with what ([`Bound`]). One with
//! several cells passes when every one of them does, and its line names
//! those that did not.

use std::fmt::Write as _;

use crate::bench::slow::CASES;
use crate::row::{Engine, Row, Scenario};
use crate::stats::{Cell, Results, ratio};
use crate::summary::{thousands, thousands_i};

/// One target.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    /// A short identifier.
    pub(crate) name: &'static str,
    /// What it looks at.
    pub(crate) subject: Subject,
    /// How the value compares with the bound.
    pub(crate) cmp: Cmp,
    /// What it compares with.
    pub(crate) bound: Bound,
    /// What it asks, for people.
    pub(crate) text: &'static str,
    /// Not judged when a cell it looks at ran shorter than this: the
    /// first second of a run has the highest latencies.
    pub(crate) min_duration_s: Option<f64>,
}

/// What a target looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject {
    /// uring's median run over tokio's, in each selected cell.
    EngineRatio {
        scenario: Scenario,
        cells: Cells,
        measure: Measure,
    },
    /// One engine's median run, in each selected cell (all of them for a
    /// scenario without cells, such as idle memory).
    Value {
        engine: Engine,
        scenario: Scenario,
        cells: Cells,
        measure: Measure,
    },
    /// Each slow-reader case of one engine but the references, against
    /// its own reference when the bound is [`Bound::Reference`].
    SlowCases { engine: Engine, measure: Measure },
}

/// Which cells of the load matrix.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cells {
    All,
    One(Cell),
    AllBut(Cell),
}

impl Cells {
    fn holds(self, cell: Cell) -> bool {
        match self {
            Cells::All => true,
            Cells::One(c) => c == cell,
            Cells::AllBut(c) => c != cell,
        }
    }
}

/// A figure of a row.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Measure {
    DeliveredPerS,
    Loss,
    OrderViolations,
    P99Ms,
    BytesPerConn,
}

impl Measure {
    fn of(self, row: &Row) -> Option<f64> {
        match self {
            Measure::DeliveredPerS => row.delivered_per_s,
            Measure::Loss => row.loss.map(|v| v as f64),
            Measure::OrderViolations => row.order_violations.map(|v| v as f64),
            Measure::P99Ms => row.p99_ms(),
            Measure::BytesPerConn => row.bytes_per_conn.map(|v| v as f64),
        }
    }

    fn show(self, v: f64) -> String {
        match self {
            Measure::DeliveredPerS => format!("{}/s", thousands(v)),
            Measure::Loss | Measure::OrderViolations => thousands(v),
            Measure::P99Ms => format!("{v:.2} ms"),
            Measure::BytesPerConn => format!("{} B", thousands(v)),
        }
    }
}

/// How a value compares with its bound.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmp {
    AtLeast,
    AtMost,
    Below,
    Equals,
}

impl Cmp {
    fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Cmp::AtLeast => value >= bound,
            Cmp::AtMost => value <= bound,
            Cmp::Below => value < bound,
            Cmp::Equals => value == bound,
        }
    }

    fn sign(self) -> &'static str {
        match self {
            Cmp::AtLeast => ">=",
            Cmp::AtMost => "<=",
            Cmp::Below => "<",
            Cmp::Equals => "=",
        }
    }
}

/// What a value is compared with.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bound {
    Fixed(f64),
    /// `times` × the reference run's value + `plus` (slow readers).
    Reference {
        times: f64,
        plus: f64,
    },
}

const C1000X64: Cell = Cell {
    clients: 1000,
    size: 64,
};

/// Every target, in the order summary.md lists them.
pub(crate) const TARGETS: &[Target] = &[
    Target {
        name: "uring-1000x64-saturation",
        subject: Subject::EngineRatio {
            scenario: Scenario::Saturation,
            cells: Cells::One(C1000X64),
            measure: Measure::DeliveredPerS,
        },
        cmp: Cmp::AtLeast,
        bound: Bound::Fixed(1.25),
        text: "uring >= 1.25x tokio delivered/s at 1000 clients x 64 B saturation",
        min_duration_s: None,
    },
    Target {
        name: "uring-not-behind-saturation",
        subject: Subject::EngineRatio {
            scenario: Scenario::Saturation,
            cells: Cells::AllBut(C1000X64),
            measure: Measure::DeliveredPerS,
        },
        cmp: Cmp::AtLeast,
        bound: Bound::Fixed(1.0),
        text: "uring >= tokio delivered/s in every other saturation cell",
        min_duration_s: None,
    },
    Target {
        name: "uring-not-behind-fixed",
        subject: Subject::EngineRatio {
            scenario: Scenario::Fixed,
            cells: Cells::All,
            measure: Measure::DeliveredPerS,
        },
        cmp: Cmp::AtLeast,
        // A fixed cell delivers what is offered: within 1% is a tie.
        bound: Bound::Fixed(0.99),
        text: "uring >= tokio delivered/s in every fixed-rate cell (within 1%)",
        min_duration_s: None,
    },
    Target {
        name: "uring-fixed-1000x64-loss",
        subject: Subject::Value {
            engine: Engine::Uring,
            scenario: Scenario::Fixed,
            cells: Cells::One(C1000X64),
            measure: Measure::Loss,
        },
        cmp: Cmp::Equals,
        bound: Bound::Fixed(0.0),
        text: "uring at 1,000,000 deliveries/s (1000 clients x 64 B): loss 0",
        min_duration_s: Some(5.0),
    },
    Target {
        name: "uring-fixed-1000x64-p99",
        subject: Subject::Value {
            engine: Engine::Uring,
            scenario: Scenario::Fixed,
            cells: Cells::One(C1000X64),
            measure: Measure::P99Ms,
        },
        cmp: Cmp::Below,
        bound: Bound::Fixed(20.0),
        text: "uring at 1,000,000 deliveries/s (1000 clients x 64 B): p99 < 20 ms",
        min_duration_s: Some(5.0),
    },
    Target {
        name: "uring-idle-memory",
        subject: Subject::Value {
            engine: Engine::Uring,
            scenario: Scenario::Idle,
            cells: Cells::All,
            measure: Measure::BytesPerConn,
        },
        cmp: Cmp::AtMost,
        bound: Bound::Fixed(8192.0),
        text: "uring: <= 8192 B of server RSS per idle connection",
        min_duration_s: None,
    },
    Target {
        name: "tokio-idle-memory",
        subject: Subject::Value {
            engine: Engine::Tokio,
            scenario: Scenario::Idle,
            cells: Cells::All,
            measure: Measure::BytesPerConn,
        },
        cmp: Cmp::AtMost,
        bound: Bound::Fixed(8192.0),
        text: "tokio: <= 8192 B of server RSS per idle connection",
        min_duration_s: None,
    },
    Target {
        name: "uring-slow-loss",
        subject: Subject::SlowCases {
            engine: Engine::Uring,
            measure: Measure::Loss,
        },
        cmp: Cmp::Equals,
        bound: Bound::Fixed(0.0),
        text: "uring: fast readers lose nothing beside slow readers",
        min_duration_s: None,
    },
    Target {
        name: "uring-slow-order",
        subject: Subject::SlowCases {
            engine: Engine::Uring,
            measure: Measure::OrderViolations,
        },
        cmp: Cmp::Equals,
        bound: Bound::Fixed(0.0),
        text: "uring: no order violation at the fast readers beside slow readers",
        min_duration_s: None,
    },
    Target {
        name: "uring-slow-delivered",
        subject: Subject::SlowCases {
            engine: Engine::Uring,
            measure: Measure::DeliveredPerS,
        },
        cmp: Cmp::AtLeast,
        bound: Bound::Reference {
            times: 0.95,
            plus: 0.0,
        },
        text: "uring: fast readers' delivered/s >= 0.95 x the reference run's beside slow readers",
        min_duration_s: None,
    },
    Target {
        name: "uring-slow-p99",
        subject: Subject::SlowCases {
            engine: Engine::Uring,
            measure: Measure::P99Ms,
        },
        cmp: Cmp::AtMost,
        bound: Bound::Reference {
            times: 2.0,
            plus: 2.0,
        },
        text: "uring: fast readers' p99 <= 2 x the reference run's + 2 ms beside slow readers",
        min_duration_s: None,
    },
    Target {
        name: "tokio-slow-loss",
        subject: Subject::SlowCases {
            engine: Engine::Tokio,
            measure: Measure::Loss,
        },
        cmp: Cmp::Equals,
        bound: Bound::Fixed(0.0),
        text: "tokio: fast readers lose nothing beside slow readers",
        min_duration_s: None,
    },
    Target {
        name: "tokio-slow-order",
        subject: Subject::SlowCases {
            engine: Engine::Tokio,
            measure: Measure::OrderViolations,
        },
        cmp: Cmp::Equals,
        bound: Bound::Fixed(0.0),
        text: "tokio: no order violation at the fast readers beside slow readers",
        min_duration_s: None,
    },
    Target {
        name: "tokio-slow-delivered",
        subject: Subject::SlowCases {
            engine: Engine::Tokio,
            measure: Measure::DeliveredPerS,
        },
        cmp: Cmp::AtLeast,
        bound: Bound::Reference {
            times: 0.95,
            plus: 0.0,
        },
        text: "tokio: fast readers' delivered/s >= 0.95 x the reference run's beside slow readers",
        min_duration_s: None,
    },
    Target {
        name: "tokio-slow-p99",
        subject: Subject::SlowCases {
            engine: Engine::Tokio,
            measure: Measure::P99Ms,
        },
        cmp: Cmp::AtMost,
        bound: Bound::Reference {
            times: 2.0,
            plus: 2.0,
        },
        text: "tokio: fast readers' p99 <= 2 x the reference run's + 2 ms beside slow readers",
        min_duration_s: None,
    },
];

/// A target's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Pass,
    Fail,
    /// A cell was too short to judge it (`--quick`); reported all the same.
    NotJudged,
}

/// One evaluated target.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub(crate) name: &'static str,
    pub(crate) outcome: Outcome,
    /// `PASS: text: detail`.
    pub(crate) line: String,
}

/// One cell or case a target looked at.
struct Check {
    label: String,
    value: Option<f64>,
    bound: Option<f64>,
    /// The cell ran shorter than the target's `min_duration_s`.
    short: bool,
}

/// Evaluates every target of [`TARGETS`] that has rows to look at; a
/// target whose scenario did not run gives no line.
pub(crate) fn evaluate(results: &Results<'_>) -> Vec<Verdict> {
    TARGETS
        .iter()
        .filter_map(|t| evaluate_one(t, results))
        .collect()
}

fn evaluate_one(target: &Target, results: &Results<'_>) -> Option<Verdict> {
    let short = |rows: &[Option<&Row>]| {
        target.min_duration_s.is_some_and(|min| {
            rows.iter()
                .flatten()
                .any(|r| r.duration_s.is_some_and(|d| d < min))
        })
    };
    let fixed = |bound: Bound| match bound {
        Bound::Fixed(b) => Some(b),
        Bound::Reference { .. } => None,
    };
    let mut checks = Vec::new();
    let mut unit = Unit::Ratio;
    match target.subject {
        Subject::EngineRatio {
            scenario,
            cells,
            measure,
        } => {
            for cell in results.cells(&[scenario]) {
                if !cells.holds(cell) {
                    continue;
                }
                let u = results.pick(scenario, Engine::Uring, Some(cell));
                let t = results.pick(scenario, Engine::Tokio, Some(cell));
                let (Some(u), Some(t)) = (u, t) else { continue };
                let mut label = format!(
                    "{} {}x{}B",
                    scenario_name(scenario),
                    cell.clients,
                    cell.size
                );
                if let Some((lo, hi)) =
                    results.round_ratios(scenario, cell, Engine::Uring, Engine::Tokio)
                {
                    let _ = write!(label, ", single rounds {lo:.2} to {hi:.2}");
                }
                checks.push(Check {
                    label,
                    value: ratio(measure.of(u), measure.of(t)),
                    bound: fixed(target.bound),
                    short: short(&[Some(u), Some(t)]),
                });
            }
        }
        Subject::Value {
            engine,
            scenario,
            cells,
            measure,
        } => {
            unit = Unit::Of(measure);
            let cell_list = results.cells(&[scenario]);
            if cell_list.is_empty() {
                // A scenario without cells: its one median run.
                if let Some(r) = results.pick(scenario, engine, None) {
                    let label = match r.clients {
                        Some(n) => format!("{} connections", thousands_i(n)),
                        None => scenario_name(scenario).to_owned(),
                    };
                    checks.push(Check {
                        label,
                        value: measure.of(r),
                        bound: fixed(target.bound),
                        short: short(&[Some(r)]),
                    });
                }
            }
            for cell in cell_list {
                if !cells.holds(cell) {
                    continue;
                }
                let Some(r) = results.pick(scenario, engine, Some(cell)) else {
                    continue;
                };
                checks.push(Check {
                    label: format!(
                        "{} {}x{}B",
                        scenario_name(scenario),
                        cell.clients,
                        cell.size
                    ),
                    value: measure.of(r),
                    bound: fixed(target.bound),
                    short: short(&[Some(r)]),
                });
            }
        }
        Subject::SlowCases { engine, measure } => {
            unit = Unit::Of(measure);
            for case in CASES.iter().filter(|c| !c.is_reference()) {
                let Some(r) = results.case(engine, case.name) else {
                    continue;
                };
                let reference = results.case(engine, case.reference);
                let bound = match target.bound {
                    Bound::Fixed(b) => Some(b),
                    Bound::Reference { times, plus } => reference
                        .and_then(|r| measure.of(r))
                        .map(|v| times * v + plus),
                };
                checks.push(Check {
                    label: case.name.to_owned(),
                    value: measure.of(r),
                    bound,
                    short: short(&[Some(r), reference]),
                });
            }
        }
    }
    if checks.is_empty() {
        return None;
    }
    Some(verdict(target, &checks, unit))
}

/// How a target's values read: a ratio of the engines, or a measure.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Ratio,
    Of(Measure),
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Ratio => format!("{v:.2}x"),
            Unit::Of(m) => m.show(v),
        }
    }
}

fn verdict(target: &Target, checks: &[Check], unit: Unit) -> Verdict {
    let describe = |c: &Check| {
        let value = c
            .value
            .map_or_else(|| "no value".to_owned(), |v| unit.show(v));
        match c.bound {
            Some(b) => format!(
                "{}: {value} (want {} {})",
                c.label,
                target.cmp.sign(),
                unit.show(b)
            ),
            None => format!("{}: {value} (no reference to compare with)", c.label),
        }
    };
    let ok = |c: &Check| match (c.value, c.bound) {
        (Some(v), Some(b)) => target.cmp.holds(v, b),
        _ => false,
    };
    let failing: Vec<&Check> = checks.iter().filter(|c| !ok(c)).collect();
    let outcome = if checks.iter().any(|c| c.short) {
        Outcome::NotJudged
    } else if failing.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail
    };
    let detail = if checks.len() == 1 {
        checks.iter().map(describe).collect::<String>()
    } else if failing.is_empty() {
        // Every one held: the values, and the bound once if it is the same
        // for all.
        let same_bound = checks.windows(2).all(|w| w[0].bound == w[1].bound);
        let values = checks
            .iter()
            .map(|c| {
                let value = c
                    .value
                    .map_or_else(|| "no value".to_owned(), |v| unit.show(v));
                match c.bound {
                    Some(b) if !same_bound => {
                        format!(
                            "{} {value} ({} {})",
                            c.label,
                            target.cmp.sign(),
                            unit.show(b)
                        )
                    }
                    _ => format!("{} {value}", c.label),
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        match checks.first().and_then(|c| c.bound) {
            Some(b) if same_bound => format!(
                "all {} held (want {} {}): {values}",
                checks.len(),
                target.cmp.sign(),
                unit.show(b)
            ),
            _ => format!("all {} held: {values}", checks.len()),
        }
    } else {
        format!(
            "{} of {} missed: {}",
            failing.len(),
            checks.len(),
            failing
                .iter()
                .map(|c| describe(c))
                .collect::<Vec<_>>()
                .join("; ")
        )
    };
    let head = match outcome {
        Outcome::Pass => "PASS",
        Outcome::Fail => "FAIL",
        Outcome::NotJudged => {
            "NOT JUDGED (cells shorter than 5 s, where the start of a run weighs on the figures; the full run judges it)"
        }
    };
    Verdict {
        name: target.name,
        outcome,
        line: format!("{head}: {}: {detail}", target.text),
    }
}

fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Idle => "idle",
        Scenario::NcSwarm => "nc_swarm",
        Scenario::Saturation => "saturation",
        Scenario::Flood => "flood",
        Scenario::Fixed => "fixed",
        Scenario::SlowReaders => "slow_readers",
        Scenario::Tls => "tls",
        Scenario::ClusterSingle => "cluster-single",
        Scenario::ClusterCross => "cluster-cross",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::Rate;

    fn load(engine: Engine, scenario: Scenario, clients: u64, rate: f64) -> Row {
        Row {
            clients: Some(clients),
            size: Some(64),
            rate: Some(Rate::Max),
            round: Some(1),
            duration_s: Some(5.0),
            delivered_per_s: Some(rate),
            loss: Some(0),
            order_violations: Some(0),
            p99_us: Some(10_000.0),
            ..Row::new(engine, scenario)
        }
    }

    fn slow(engine: Engine, case: &str, rate: f64, p99_ms: f64, loss: u64) -> Row {
        Row {
            case: Some(case.to_owned()),
            clients: Some(50),
            duration_s: Some(4.0),
            delivered_per_s: Some(rate),
            p99_us: Some(p99_ms * 1000.0),
            loss: Some(loss),
            order_violations: Some(0),
            ..Row::new(engine, Scenario::SlowReaders)
        }
    }

    fn find<'a>(verdicts: &'a [Verdict], name: &str) -> Option<&'a Verdict> {
        verdicts.iter().find(|v| v.name == name)
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TARGETS.len());
    }

    #[test]
    fn engine_ratios_pass_and_fail() {
        let rows = vec![
            load(Engine::Uring, Scenario::Saturation, 1000, 140.0),
            load(Engine::Tokio, Scenario::Saturation, 1000, 100.0),
            load(Engine::Uring, Scenario::Saturation, 10, 99.0),
            load(Engine::Tokio, Scenario::Saturation, 10, 100.0),
            load(Engine::Uring, Scenario::Saturation, 100, 120.0),
            load(Engine::Tokio, Scenario::Saturation, 100, 100.0),
        ];
        let v = evaluate(&Results::new(&rows));
        let first = find(&v, "uring-1000x64-saturation").expect("judged");
        assert_eq!(first.outcome, Outcome::Pass);
        assert!(
            first.line.contains("1.40x (want >= 1.25x)"),
            "{}",
            first.line
        );
        let rest = find(&v, "uring-not-behind-saturation").expect("judged");
        assert_eq!(rest.outcome, Outcome::Fail);
        assert!(
            rest.line
                .contains("1 of 2 missed: saturation 10x64B: 0.99x"),
            "{}",
            rest.line
        );
        // No fixed, idle or slow rows: those targets say nothing.
        assert!(find(&v, "uring-not-behind-fixed").is_none());
        assert!(find(&v, "uring-idle-memory").is_none());
        assert!(find(&v, "uring-slow-loss").is_none());
    }

    #[test]
    fn short_cells_are_not_judged() {
        let mut u = load(Engine::Uring, Scenario::Fixed, 1000, 1e6);
        u.p99_us = Some(30_000.0);
        u.duration_s = Some(1.0);
        let rows = vec![u.clone()];
        let v = evaluate(&Results::new(&rows));
        let p99 = find(&v, "uring-fixed-1000x64-p99").expect("reported");
        assert_eq!(p99.outcome, Outcome::NotJudged);
        u.duration_s = Some(5.0);
        let rows = vec![u];
        let v = evaluate(&Results::new(&rows));
        let p99 = find(&v, "uring-fixed-1000x64-p99").expect("judged");
        assert_eq!(p99.outcome, Outcome::Fail);
        assert!(
            p99.line.contains("30.00 ms (want < 20.00 ms)"),
            "{}",
            p99.line
        );
    }

    #[test]
    fn idle_memory_is_judged_per_engine() {
        let rows = vec![
            Row {
                clients: Some(10_000),
                bytes_per_conn: Some(5801),
                ..Row::new(Engine::Uring, Scenario::Idle)
            },
            Row {
                clients: Some(10_000),
                bytes_per_conn: Some(9000),
                ..Row::new(Engine::Tokio, Scenario::Idle)
            },
        ];
        let v = evaluate(&Results::new(&rows));
        assert_eq!(
            find(&v, "uring-idle-memory").map(|v| v.outcome),
            Some(Outcome::Pass)
        );
        let tokio = find(&v, "tokio-idle-memory").expect("judged");
        assert_eq!(tokio.outcome, Outcome::Fail);
        assert!(
            tokio.line.contains("10,000 connections: 9,000 B"),
            "{}",
            tokio.line
        );
    }

    #[test]
    fn slow_cases_compare_with_their_own_reference() {
        let rows = vec![
            slow(Engine::Uring, "reference", 500_000.0, 3.0, 0),
            slow(Engine::Uring, "paced-3ms", 480_000.0, 7.9, 0),
            slow(Engine::Uring, "paced-30ms", 470_000.0, 8.1, 2),
            slow(Engine::Uring, "reference-100", 1_000_000.0, 5.0, 0),
            slow(Engine::Uring, "hundred-slow-among-200", 940_000.0, 11.0, 0),
        ];
        let v = evaluate(&Results::new(&rows));
        let delivered = find(&v, "uring-slow-delivered").expect("judged");
        // 0.95 x 500,000 = 475,000: paced-30ms misses; hundred-slow-among-200 is
        // against reference-100's 1,000,000, so 940,000 misses too.
        assert_eq!(delivered.outcome, Outcome::Fail);
        assert!(
            delivered.line.contains("2 of 3 missed"),
            "{}",
            delivered.line
        );
        assert!(
            delivered
                .line
                .contains("hundred-slow-among-200: 940,000/s (want >= 950,000/s)")
        );
        let p99 = find(&v, "uring-slow-p99").expect("judged");
        // 2 x 3 + 2 = 8 ms: paced-30ms's 8.1 misses; 2 x 5 + 2 = 12 holds.
        assert_eq!(p99.outcome, Outcome::Fail);
        assert!(
            p99.line
                .contains("1 of 3 missed: paced-30ms: 8.10 ms (want <= 8.00 ms)")
        );
        let loss = find(&v, "uring-slow-loss").expect("judged");
        assert_eq!(loss.outcome, Outcome::Fail);
        let order = find(&v, "uring-slow-order").expect("judged");
        assert_eq!(order.outcome, Outcome::Pass);
        assert!(
            order.line.ends_with(
                "all 3 held (want = 0): paced-3ms 0, paced-30ms 0, hundred-slow-among-200 0"
            ),
            "{}",
            order.line
        );
        assert!(find(&v, "tokio-slow-loss").is_none());
    }

    #[test]
    fn a_case_without_its_reference_fails() {
        let rows = vec![slow(Engine::Tokio, "paced-5ms", 1.0, 1.0, 0)];
        let v = evaluate(&Results::new(&rows));
        let d = find(&v, "tokio-slow-delivered").expect("judged");
        assert_eq!(d.outcome, Outcome::Fail);
        assert!(d.line.contains("no reference"), "{}", d.line);
        // A fixed bound needs no reference.
        assert_eq!(
            find(&v, "tokio-slow-loss").map(|v| v.outcome),
            Some(Outcome::Pass)
        );
    }
}
