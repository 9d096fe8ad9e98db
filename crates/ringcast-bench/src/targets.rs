//! The targets: data in `targets.toml`, judged by [`evaluate`] into one
//! PASS/FAIL line each. Targets are reported, not enforced: a FAIL does
//! not change the exit status.
//!
//! A target looks at one engine's figure, or the ratio of two engines',
//! in one or several cells or slow-reader cases. One with several passes
//! when every one of them does, and its line names those that did not.

use serde::Deserialize;

use crate::bench::slow::CASES;
use crate::md::{thousands, thousands_i};
use crate::row::{Engine, Row, Scenario};
use crate::stats::{Cell, Results, ratio};

/// One target, as `targets.toml` writes it (its header says what each
/// field means).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Target {
    pub(crate) name: String,
    text: String,
    engine: Engine,
    over: Option<Engine>,
    scenario: Scenario,
    only: Option<(u64, u64)>,
    but: Option<(u64, u64)>,
    measure: Measure,
    want: Cmp,
    bound: f64,
    times_reference: Option<f64>,
    min_duration_s: Option<f64>,
}

/// Every target, in the order summary.md lists them.
pub(crate) fn targets() -> Vec<Target> {
    #[derive(Deserialize)]
    struct File {
        target: Vec<Target>,
    }
    let file: File = toml::from_str(include_str!("targets.toml"))
        .expect("targets.toml is valid: a test reads it");
    file.target
}

/// A figure of a row.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Measure {
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
#[derive(Debug, Clone, Copy, Deserialize)]
enum Cmp {
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "<=")]
    AtMost,
    #[serde(rename = "<")]
    Below,
    #[serde(rename = "=")]
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
    pub(crate) name: String,
    pub(crate) outcome: Outcome,
    /// `PASS: text: detail`.
    pub(crate) line: String,
}

/// One cell or case a target looked at: its label, value and bound, and
/// whether it ran too short to judge.
struct Check {
    label: String,
    value: Option<f64>,
    bound: Option<f64>,
    short: bool,
}

/// Evaluates every target that has rows to look at; a target whose
/// scenario did not run gives no line.
pub(crate) fn evaluate(results: &Results<'_>) -> Vec<Verdict> {
    targets()
        .iter()
        .filter_map(|t| {
            let checks = checks(t, results);
            (!checks.is_empty()).then(|| verdict(t, &checks))
        })
        .collect()
}

/// What target `t` looks at in `results`.
fn checks(t: &Target, results: &Results<'_>) -> Vec<Check> {
    let short = |rows: &[Option<&Row>]| {
        let min = t.min_duration_s.unwrap_or(0.0);
        rows.iter()
            .flatten()
            .any(|r| r.duration_s.is_some_and(|d| d < min))
    };
    let scenario = serde_json::to_value(t.scenario).unwrap_or_default();
    let scenario = scenario.as_str().unwrap_or_default();
    if t.scenario == Scenario::SlowReaders {
        let cases = CASES.iter().filter(|c| !c.is_reference());
        return cases
            .filter_map(|case| {
                let r = results.case(t.engine, case.name)?;
                let reference = results.case(t.engine, case.reference);
                let bound = match t.times_reference {
                    None => Some(t.bound),
                    Some(times) => reference
                        .and_then(|r| t.measure.of(r))
                        .map(|v| times * v + t.bound),
                };
                Some(Check {
                    label: case.name.to_owned(),
                    value: t.measure.of(r),
                    bound,
                    short: short(&[Some(r), reference]),
                })
            })
            .collect();
    }
    let cells = results.cells(&[t.scenario]);
    // A scenario without cells, such as idle memory: its one median run.
    let cells: Vec<Option<Cell>> = if cells.is_empty() && t.over.is_none() {
        vec![None]
    } else {
        cells.into_iter().map(Some).collect()
    };
    let wanted = |c: Cell| {
        let c = (c.clients, c.size);
        t.only.is_none_or(|o| o == c) && t.but.is_none_or(|b| b != c)
    };
    cells
        .into_iter()
        .filter(|c| c.is_none_or(wanted))
        .filter_map(|cell| {
            let r = results.pick(t.scenario, t.engine, cell)?;
            let (value, other) = match t.over {
                None => (t.measure.of(r), None),
                Some(over) => {
                    let o = results.pick(t.scenario, over, cell)?;
                    (ratio(t.measure.of(r), t.measure.of(o)), Some(o))
                }
            };
            let mut label = match (cell, r.clients) {
                (Some(c), _) => format!("{scenario} {}x{}B", c.clients, c.size),
                (None, Some(n)) => format!("{} connections", thousands_i(n)),
                (None, None) => scenario.to_owned(),
            };
            if let (Some(c), Some(over)) = (cell, t.over)
                && let Some((lo, hi)) = results.round_ratios(t.scenario, c, t.engine, over)
            {
                label.push_str(&format!(", single rounds {lo:.2} to {hi:.2}"));
            }
            Some(Check {
                label,
                value,
                bound: Some(t.bound),
                short: short(&[Some(r), other]),
            })
        })
        .collect()
}

/// The PASS/FAIL line of target `t` over its checks.
fn verdict(t: &Target, checks: &[Check]) -> Verdict {
    let show = |v: Option<f64>| match (v, t.over) {
        (None, _) => "no value".to_owned(),
        (Some(v), Some(_)) => format!("{v:.2}x"),
        (Some(v), None) => t.measure.show(v),
    };
    let want = |b: f64| format!("{} {}", t.want.sign(), show(Some(b)));
    let describe = |c: &Check| match c.bound {
        Some(b) => format!("{}: {} (want {})", c.label, show(c.value), want(b)),
        None => format!(
            "{}: {} (no reference to compare with)",
            c.label,
            show(c.value)
        ),
    };
    let ok = |c: &Check| match (c.value, c.bound) {
        (Some(v), Some(b)) => t.want.holds(v, b),
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
    let same_bound = checks.windows(2).all(|w| w[0].bound == w[1].bound);
    let detail = if checks.len() == 1 {
        checks.iter().map(describe).collect::<String>()
    } else if failing.is_empty() {
        // Every one held: the values, and the bound once if it is the same
        // for all.
        let values = checks
            .iter()
            .map(|c| match c.bound {
                Some(b) if !same_bound => format!("{} {} ({})", c.label, show(c.value), want(b)),
                _ => format!("{} {}", c.label, show(c.value)),
            })
            .collect::<Vec<_>>()
            .join(", ");
        match checks.first().and_then(|c| c.bound) {
            Some(b) if same_bound => {
                format!("all {} held (want {}): {values}", checks.len(), want(b))
            }
            _ => format!("all {} held: {values}", checks.len()),
        }
    } else {
        let missed: Vec<String> = failing.iter().map(|c| describe(c)).collect();
        format!(
            "{} of {} missed: {}",
            failing.len(),
            checks.len(),
            missed.join("; ")
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
        name: t.name.clone(),
        outcome,
        line: format!("{head}: {}: {detail}", t.text),
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
        let targets = targets();
        assert_eq!(targets.len(), 15);
        let mut names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), targets.len());
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
