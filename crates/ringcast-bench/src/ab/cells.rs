//! `ab`'s cells, `CLIENTS:SIZE:RATE:DURATION` as the A/B script of
//! `bench-results/2026-12-02-013727-vm` took them, and the plan of each.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Duration;

use ringcast_load::{PacedBy, Plan, Rate};

use crate::row::{self, Row, Scenario};

/// Publishers of a saturation or fixed cell: min(clients, this), as in
/// the load matrix.
const MAX_PUBLISHERS: u64 = 10;

/// The cells `ab` runs without `--cells`: the load matrix's saturation
/// cells, the fixed rate nearest its target, and the flood cell.
pub(crate) const DEFAULT_CELLS: &[&str] = &[
    "1000:64:max:3s",
    "100:64:max:3s",
    "10:64:max:3s",
    "10:1024:max:3s",
    "100:1024:max:3s",
    "1000:1024:max:3s",
    "1000:64:100:3s",
    "1000:64:flood:3s",
];

/// How a cell's publishers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CellRate {
    /// Saturation: `--rate max`, paced by every reader.
    Max,
    /// One publisher, `--rate max --paced-by none`.
    Flood,
    /// Lines per second per publisher.
    PerSecond(NonZeroU64),
}

/// One cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AbCell {
    pub(crate) clients: u64,
    /// Bytes per line, the newline included.
    pub(crate) size: u64,
    pub(crate) rate: CellRate,
    pub(crate) duration: Duration,
}

impl FromStr for AbCell {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let &[clients, size, rate, duration] = parts.as_slice() else {
            return Err(format!(
                "{s:?} is not CLIENTS:SIZE:RATE:DURATION (e.g. 1000:64:max:3s)"
            ));
        };
        let number = |what: &str, v: &str| {
            v.parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{s:?}: {what} {v:?} is not a whole number above 0"))
        };
        let rate = match rate {
            "max" => CellRate::Max,
            "flood" => CellRate::Flood,
            n => CellRate::PerSecond(
                NonZeroU64::new(number("RATE (max, flood or lines/s)", n)?)
                    .ok_or_else(|| format!("{s:?}: a rate of 0"))?,
            ),
        };
        let duration = humantime::parse_duration(duration)
            .map_err(|e| format!("{s:?}: DURATION {duration:?}: {e}"))?;
        if duration.is_zero() {
            return Err(format!("{s:?}: DURATION must be longer than zero"));
        }
        Ok(AbCell {
            clients: number("CLIENTS", clients)?,
            size: number("SIZE", size)?,
            rate,
            duration,
        })
    }
}

impl fmt::Display for AbCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.clients, self.size)?;
        match self.rate {
            CellRate::Max => f.write_str("max")?,
            CellRate::Flood => f.write_str("flood")?,
            CellRate::PerSecond(n) => write!(f, "{n}")?,
        }
        write!(f, ":{}", humantime::format_duration(self.duration))
    }
}

impl AbCell {
    /// The scenario its rows are of.
    pub(crate) fn scenario(&self) -> Scenario {
        match self.rate {
            CellRate::Max => Scenario::Saturation,
            CellRate::Flood => Scenario::Flood,
            CellRate::PerSecond(_) => Scenario::Fixed,
        }
    }

    pub(crate) fn publishers(&self) -> u64 {
        match self.rate {
            CellRate::Flood => 1,
            _ => self.clients.min(MAX_PUBLISHERS),
        }
    }

    /// Whether `row` measured this cell.
    pub(crate) fn holds(&self, row: &Row) -> bool {
        let rate = match self.rate {
            CellRate::PerSecond(n) => row::Rate::PerSecond(n.get()),
            _ => row::Rate::Max,
        };
        row.scenario == self.scenario()
            && row.clients == Some(self.clients)
            && row.size == Some(self.size)
            && row.rate == Some(rate)
            && row
                .duration_s
                .is_some_and(|d| (d - self.duration.as_secs_f64()).abs() < 1e-6)
    }

    /// Its plan against `addr`, on `threads` load threads.
    pub(crate) fn plan(&self, addr: SocketAddr, threads: usize) -> anyhow::Result<Plan> {
        let mut builder = Plan::builder(addr)
            .clients(usize::try_from(self.clients)?)
            .publishers(usize::try_from(self.publishers())?)
            .size(usize::try_from(self.size)?)
            .duration(self.duration)
            .threads(threads)
            .rate(match self.rate {
                CellRate::PerSecond(n) => Rate::PerSecond(n),
                _ => Rate::Max,
            });
        if self.rate == CellRate::Flood {
            builder = builder.paced_by(PacedBy::Nobody);
        }
        Ok(builder.build()?)
    }

    /// For tables: `1000 x 64 B saturation, 3s`.
    pub(crate) fn text(&self) -> String {
        let what = match self.rate {
            CellRate::Max => "saturation".to_owned(),
            CellRate::Flood => "flood".to_owned(),
            CellRate::PerSecond(n) => format!("fixed {} x {n}/s", self.publishers()),
        };
        format!(
            "{} x {} B {what}, {}",
            self.clients,
            self.size,
            humantime::format_duration(self.duration)
        )
    }
}

/// [`DEFAULT_CELLS`], parsed.
pub(crate) fn default_cells() -> Vec<AbCell> {
    DEFAULT_CELLS
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(s: &str) -> AbCell {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn cells_parse_and_print_back() {
        let c = cell("1000:64:max:3s");
        assert_eq!(
            c,
            AbCell {
                clients: 1000,
                size: 64,
                rate: CellRate::Max,
                duration: Duration::from_secs(3)
            }
        );
        assert_eq!(c.scenario(), Scenario::Saturation);
        assert_eq!(c.publishers(), 10);
        let fixed = cell("1000:64:100:500ms");
        assert_eq!(
            fixed.rate,
            CellRate::PerSecond(NonZeroU64::MIN.saturating_add(99))
        );
        assert_eq!(fixed.scenario(), Scenario::Fixed);
        assert_eq!(fixed.to_string(), "1000:64:100:500ms");
        assert_eq!(fixed.text(), "1000 x 64 B fixed 10 x 100/s, 500ms");
        let flood = cell("1000:64:flood:3s");
        assert_eq!((flood.scenario(), flood.publishers()), (Scenario::Flood, 1));
        assert_eq!(cell("3:1024:max:1s").publishers(), 3);
        for bad in [
            "1000:64:max",
            "0:64:max:3s",
            "10:x:max:3s",
            "10:64:0:3s",
            "10:64:fast:3s",
            "10:64:max:0s",
            "10:64:max:3",
        ] {
            assert!(bad.parse::<AbCell>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn every_default_cell_parses_and_plans() {
        assert_eq!(default_cells().len(), DEFAULT_CELLS.len());
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        for c in default_cells() {
            let plan = c.plan(addr, 2).unwrap_or_else(|e| panic!("{c}: {e}"));
            assert_eq!(plan.publishers() as u64, c.publishers());
            let flood = c.rate == CellRate::Flood;
            assert_eq!(plan.paced_by() == PacedBy::Nobody, flood, "{c}");
        }
    }

    #[test]
    fn a_cell_holds_its_own_rows_only() {
        let c = cell("1000:64:max:3s");
        let row = Row {
            clients: Some(1000),
            size: Some(64),
            rate: Some(row::Rate::Max),
            duration_s: Some(3.0),
            ..Row::new(crate::row::Engine::Uring, Scenario::Saturation)
        };
        assert!(c.holds(&row));
        assert!(!cell("1000:64:max:2s").holds(&row), "another duration");
        assert!(!cell("1000:64:flood:3s").holds(&row), "another scenario");
        assert!(!cell("100:64:max:3s").holds(&row));
    }
}
