//! Queries over typed rows: the runs of a cell, the median run, the range
//! of per-round ratios. The summary, the targets and the charts all pick
//! rows through here, so they agree on which run stands for a cell.

use crate::row::{Engine, Row, Scenario};

/// A cell of the load matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Cell {
    pub(crate) clients: u64,
    pub(crate) size: u64,
}

impl Cell {
    /// Whether `row` is of this cell.
    pub(crate) fn holds(self, row: &Row) -> bool {
        row.clients == Some(self.clients) && row.size == Some(self.size)
    }
}

/// The index of the median of `n` sorted items: the lower middle one of an
/// even count, so it is always one of the runs.
pub(crate) fn median_index(n: usize) -> Option<usize> {
    n.checked_sub(1).map(|last| last / 2)
}

/// `a / b`, if both are known and `b` is not 0.
pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// The rows of one run, queried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Results<'a> {
    rows: &'a [Row],
}

impl<'a> Results<'a> {
    pub(crate) fn new(rows: &'a [Row]) -> Self {
        Results { rows }
    }

    /// Every row.
    pub(crate) fn rows(&self) -> &'a [Row] {
        self.rows
    }

    /// The rows of `scenario` and `engine`, of `cell` if given.
    pub(crate) fn runs(
        &self,
        scenario: Scenario,
        engine: Engine,
        cell: Option<Cell>,
    ) -> Vec<&'a Row> {
        self.rows
            .iter()
            .filter(|r| r.scenario == scenario && r.engine == engine)
            .filter(|r| cell.is_none_or(|c| c.holds(r)))
            .collect()
    }

    /// The median run by delivered/s of `scenario`, `engine` and `cell`.
    pub(crate) fn pick(
        &self,
        scenario: Scenario,
        engine: Engine,
        cell: Option<Cell>,
    ) -> Option<&'a Row> {
        median_run(self.runs(scenario, engine, cell))
    }

    /// The median run of one slow-reader case of `engine`.
    pub(crate) fn case(&self, engine: Engine, case: &str) -> Option<&'a Row> {
        self.pick_case(Scenario::SlowReaders, engine, None, case)
    }

    /// The median run by delivered/s of one case of `scenario`, `engine`
    /// and `cell`.
    pub(crate) fn pick_case(
        &self,
        scenario: Scenario,
        engine: Engine,
        cell: Option<Cell>,
        case: &str,
    ) -> Option<&'a Row> {
        median_run(
            self.runs(scenario, engine, cell)
                .into_iter()
                .filter(|r| r.case.as_deref() == Some(case))
                .collect(),
        )
    }

    /// The lowest and highest `a`/`b` ratio of delivered/s over the rounds
    /// both servers ran of `cell`; `None` with fewer than 2.
    pub(crate) fn round_ratios(
        &self,
        scenario: Scenario,
        cell: Cell,
        a: Engine,
        b: Engine,
    ) -> Option<(f64, f64)> {
        let by_round = |engine| {
            self.runs(scenario, engine, Some(cell))
                .into_iter()
                .filter_map(|r| Some((r.round, r.delivered_per_s?)))
                .collect::<Vec<_>>()
        };
        let (of_a, of_b) = (by_round(a), by_round(b));
        let mut ratios: Vec<f64> = of_a
            .iter()
            .filter_map(|(round, x)| {
                let y = of_b.iter().find(|(r, _)| r == round)?.1;
                ratio(Some(*x), Some(y))
            })
            .collect();
        if ratios.len() < 2 {
            return None;
        }
        ratios.sort_by(f64::total_cmp);
        Some((*ratios.first()?, *ratios.last()?))
    }

    /// The servers with rows of `scenario`, in table order.
    pub(crate) fn engines(&self, scenario: Scenario) -> Vec<Engine> {
        Engine::ALL
            .into_iter()
            .filter(|&e| {
                self.rows
                    .iter()
                    .any(|r| r.scenario == scenario && r.engine == e)
            })
            .collect()
    }

    /// The cells of `scenarios`, sorted by clients then size.
    pub(crate) fn cells(&self, scenarios: &[Scenario]) -> Vec<Cell> {
        let mut cells: Vec<Cell> = self
            .rows
            .iter()
            .filter(|r| scenarios.contains(&r.scenario))
            .filter_map(|r| {
                Some(Cell {
                    clients: r.clients?,
                    size: r.size?,
                })
            })
            .collect();
        cells.sort();
        cells.dedup();
        cells
    }

    /// The most rounds any cell of `scenario` ran.
    pub(crate) fn rounds(&self, scenario: Scenario) -> u32 {
        self.rows
            .iter()
            .filter(|r| r.scenario == scenario)
            .map(|r| r.round.unwrap_or(1))
            .max()
            .unwrap_or(1)
    }
}

/// The median of `runs` by delivered/s; a run without one counts as 0.
fn median_run(mut runs: Vec<&Row>) -> Option<&Row> {
    runs.sort_by(|a, b| {
        a.delivered_per_s
            .unwrap_or(0.0)
            .total_cmp(&b.delivered_per_s.unwrap_or(0.0))
    });
    runs.get(median_index(runs.len())?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sat(engine: Engine, round: u32, clients: u64, rate: f64) -> Row {
        Row {
            round: Some(round),
            clients: Some(clients),
            size: Some(64),
            delivered_per_s: Some(rate),
            ..Row::new(engine, Scenario::Saturation)
        }
    }

    #[test]
    fn medians_take_the_lower_middle() {
        let rows: Vec<Row> = [9.0, 1.0, 4.0, 7.0]
            .into_iter()
            .map(|r| sat(Engine::Uring, 1, 10, r))
            .collect();
        let rate = |rows: &[Row]| median_run(rows.iter().collect()).and_then(|r| r.delivered_per_s);
        assert_eq!(rate(&rows), Some(4.0), "the lower middle of 4");
        assert_eq!(rate(&rows[..3]), Some(4.0));
        assert_eq!(rate(&rows[..1]), Some(9.0));
        assert_eq!(rate(&[]), None);
        assert_eq!(median_index(0), None);
        assert_eq!(median_index(4), Some(1));
    }

    #[test]
    fn pick_is_the_median_run_by_delivered() {
        let rows = vec![
            sat(Engine::Uring, 1, 10, 300.0),
            sat(Engine::Uring, 2, 10, 100.0),
            sat(Engine::Uring, 3, 10, 200.0),
            sat(Engine::Uring, 1, 1000, 50.0),
            sat(Engine::Tokio, 1, 10, 150.0),
        ];
        let res = Results::new(&rows);
        let cell = Cell {
            clients: 10,
            size: 64,
        };
        let median = res
            .pick(Scenario::Saturation, Engine::Uring, Some(cell))
            .expect("some");
        assert_eq!(median.round, Some(3));
        assert_eq!(res.runs(Scenario::Saturation, Engine::Uring, None).len(), 4);
        assert!(
            res.pick(Scenario::Fixed, Engine::Uring, Some(cell))
                .is_none()
        );
        assert_eq!(res.rounds(Scenario::Saturation), 3);
        assert_eq!(
            res.engines(Scenario::Saturation),
            [Engine::Uring, Engine::Tokio]
        );
        assert!(res.engines(Scenario::Flood).is_empty());
        assert_eq!(
            res.cells(&[Scenario::Saturation]),
            [
                cell,
                Cell {
                    clients: 1000,
                    size: 64
                }
            ]
        );
    }

    #[test]
    fn round_ratios_pair_rounds_and_need_two() {
        let rows = vec![
            sat(Engine::Uring, 1, 10, 120.0),
            sat(Engine::Tokio, 1, 10, 100.0),
            sat(Engine::Uring, 2, 10, 90.0),
            sat(Engine::Tokio, 2, 10, 100.0),
            sat(Engine::Uring, 3, 10, 150.0),
            sat(Engine::Tokio, 3, 10, 100.0),
            // A round tokio never ran does not count.
            sat(Engine::Uring, 4, 10, 1000.0),
            sat(Engine::Uring, 1, 1000, 10.0),
            sat(Engine::Tokio, 1, 1000, 10.0),
        ];
        let res = Results::new(&rows);
        let ten = Cell {
            clients: 10,
            size: 64,
        };
        let (lo, hi) = res
            .round_ratios(Scenario::Saturation, ten, Engine::Uring, Engine::Tokio)
            .expect("three rounds");
        assert!((lo - 0.9).abs() < 1e-9 && (hi - 1.5).abs() < 1e-9);
        // The other way round, the inverse.
        let (lo, hi) = res
            .round_ratios(Scenario::Saturation, ten, Engine::Tokio, Engine::Uring)
            .expect("three rounds");
        assert!((lo - 1.0 / 1.5).abs() < 1e-9 && (hi - 1.0 / 0.9).abs() < 1e-9);
        let one = Cell {
            clients: 1000,
            size: 64,
        };
        assert_eq!(
            res.round_ratios(Scenario::Saturation, one, Engine::Uring, Engine::Tokio),
            None
        );
        assert_eq!(
            res.round_ratios(Scenario::Saturation, ten, Engine::Uring, Engine::Textbook),
            None,
            "no textbook rows"
        );
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
    }
}
