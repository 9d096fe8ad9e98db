//! The load matrix's tables in summary.md: saturation, flood and fixed
//! rate, with a column per server for each figure and uring's ratio over
//! each other server (tokio, the textbook server) beside them; and the
//! cores each server kept busy.
//!
//! Only servers with rows get columns, so a raw.csv from before the
//! textbook server, or a run without it, gives the tables it always gave.

use super::{n0, n1, n2, r2, u};
use crate::md::thousands_i;
use crate::row::{Engine, Rate, Row, Scenario};
use crate::stats::{Cell, Results, ratio};

/// A column: its heading, and its text in each cell's row.
struct Col<'a> {
    head: String,
    value: Box<dyn Fn(Cell) -> String + 'a>,
}

fn col<'a>(head: impl Into<String>, value: impl Fn(Cell) -> String + 'a) -> Col<'a> {
    Col {
        head: head.into(),
        value: Box::new(value),
    }
}

/// Writes a table of `cols`, a row per cell.
fn table(line: &mut impl FnMut(String), cells: &[Cell], cols: &[Col<'_>]) {
    let heads: Vec<&str> = cols.iter().map(|c| c.head.as_str()).collect();
    let rows = cells
        .iter()
        .map(|&c| cols.iter().map(move |col| (col.value)(c)));
    line(crate::md::table(&heads, rows, 0));
    line(String::new());
}

/// The figures of the tables, each a measure of a row.
type Measure = fn(&Row) -> Option<f64>;

fn delivered(r: &Row) -> Option<f64> {
    r.delivered_per_s
}
fn cost(r: &Row) -> Option<f64> {
    r.server_cpu_ns_per_delivery
}
fn loss(r: &Row) -> Option<f64> {
    u(r.loss)
}

/// One scenario's rows, picked as everywhere else (each server's median
/// run by delivered/s), with the servers that have any.
struct View<'a> {
    res: Results<'a>,
    scenario: Scenario,
    engines: Vec<Engine>,
}

impl<'a> View<'a> {
    fn new(res: Results<'a>, scenario: Scenario) -> Self {
        View {
            res,
            scenario,
            engines: res.engines(scenario),
        }
    }

    fn cells(&self) -> Vec<Cell> {
        self.res.cells(&[self.scenario])
    }

    /// The servers uring is compared with.
    fn baselines(&self) -> Vec<Engine> {
        if !self.engines.contains(&Engine::Uring) {
            return Vec::new();
        }
        self.engines
            .iter()
            .copied()
            .filter(|&e| e != Engine::Uring)
            .collect()
    }

    fn pick(&self, engine: Engine, cell: Cell) -> Option<&'a Row> {
        self.res.pick(self.scenario, engine, Some(cell))
    }

    fn value(&self, engine: Engine, cell: Cell, measure: Measure) -> Option<f64> {
        self.pick(engine, cell).and_then(measure)
    }

    /// Any server's median run of `cell`, for what they all share.
    fn any(&self, cell: Cell) -> Option<&'a Row> {
        self.engines.iter().find_map(|&e| self.pick(e, cell))
    }

    /// A column per server: `{server} {what}`.
    fn each(&self, what: &str, measure: Measure, show: fn(Option<f64>) -> String) -> Vec<Col<'_>> {
        self.engines
            .iter()
            .map(|&e| {
                col(format!("{e} {what}"), move |c| {
                    show(self.value(e, c, measure))
                })
            })
            .collect()
    }

    /// A column of text per server: `{server} {what}`.
    fn each_text(&self, what: &str, text: fn(&Row) -> String) -> Vec<Col<'_>> {
        self.engines
            .iter()
            .map(|&e| {
                col(format!("{e} {what}"), move |c| {
                    self.pick(e, c).map_or_else(|| "-".to_owned(), text)
                })
            })
            .collect()
    }

    /// A column per baseline: `uring/{server}{what}`, and with `rounds`
    /// the lowest and highest ratio of delivered/s of single rounds.
    fn ratios(&self, what: &str, measure: Measure, rounds: bool) -> Vec<Col<'_>> {
        let mut cols = Vec::new();
        for b in self.baselines() {
            cols.push(col(format!("uring/{b}{what}"), move |c| {
                r2(ratio(
                    self.value(Engine::Uring, c, measure),
                    self.value(b, c, measure),
                ))
            }));
            if rounds {
                cols.push(col(format!("uring/{b} per round"), move |c| {
                    self.res
                        .round_ratios(self.scenario, c, Engine::Uring, b)
                        .map_or_else(|| "-".to_owned(), |(lo, hi)| format!("{lo:.2} to {hi:.2}"))
                }));
            }
        }
        cols
    }
}

/// The saturation, flood and fixed-rate tables, and the CPU table.
pub(super) fn load_tables(res: Results<'_>, cores: usize, line: &mut impl FnMut(String)) {
    let cell_cols = || {
        vec![
            col("clients", |c: Cell| c.clients.to_string()),
            col("size B", |c: Cell| c.size.to_string()),
        ]
    };
    let cost_note = "ns/delivery is the server's CPU (utime + stime of /proc/PID/stat) over the same interval as delivered/s, over the lines delivered; uring/X ns/delivery below 1 means uring spent less per line.";

    let sat = View::new(res, Scenario::Saturation);
    if !sat.engines.is_empty() {
        let rounds = res.rounds(Scenario::Saturation);
        line("## Saturation (`--rate max`: closed loop, each publisher keeps at most `window` lines in flight, paced by every reader: the window halves on loss, so publishers settle near the highest rate every reader keeps up with)\n".into());
        if rounds > 1 {
            line(format!(
                "Each cell ran {rounds} times, servers alternating. Every column is from each server's median run by delivered/s; uring/X is the ratio of the medians, and \"per round\" the lowest and highest ratio of single rounds.\n"
            ));
        }
        line(format!("{cost_note} MB/s and the drain are in raw.csv.\n"));
        let mut cols = cell_cols();
        cols.push(col("publishers x window", |c| {
            sat.any(c).map_or_else(String::new, |r| {
                format!(
                    "{} x {}",
                    r.publishers.unwrap_or(0),
                    r.window.map_or_else(|| "-".to_owned(), |w| w.to_string())
                )
            })
        }));
        cols.extend(sat.each("delivered/s", delivered, n0));
        cols.extend(sat.ratios("", delivered, rounds > 1));
        cols.extend(sat.each("ns/delivery", cost, n0));
        cols.extend(sat.ratios(" ns/delivery", cost, false));
        cols.extend(sat.each("loss", loss, n0));
        cols.extend(sat.each("p99 ms", Row::p99_ms, n1));
        table(line, &sat.cells(), &cols);
    }

    let flood = View::new(res, Scenario::Flood);
    if !flood.engines.is_empty() {
        let rounds = res.rounds(Scenario::Flood);
        line("## Flood (one publisher at `--rate max --paced-by none`: no window, it writes as fast as its socket takes lines; open loop at full speed)\n".into());
        line(format!(
            "What a server does when one publisher outruns it: what it delivers, at what CPU per line, and what it loses (loss % = share of published x clients that never arrived). {}{cost_note} Server drops are ringcast's own count (`ringcast_messages_dropped_total`); the textbook server has no metrics. The publisher's socket buffers hold seconds of backlog, so the drain after publishing is long: a run that \"ended\" at the cap (10 s after publishing) counts lines still in those buffers as lost.\n",
            if rounds > 1 {
                format!(
                    "Each cell ran {rounds} times; every column is from each server's median run by delivered/s. "
                )
            } else {
                String::new()
            }
        ));
        let mut cols = cell_cols();
        cols.push(col("publishers", |c| {
            flood
                .any(c)
                .map_or_else(String::new, |r| r.publishers.unwrap_or(0).to_string())
        }));
        cols.extend(flood.each("delivered/s", delivered, n0));
        cols.extend(flood.ratios("", delivered, rounds > 1));
        cols.extend(flood.each("ns/delivery", cost, n0));
        cols.extend(flood.ratios(" ns/delivery", cost, false));
        cols.extend(flood.each("loss %", |r| r.loss_ratio.map(|x| x * 100.0), n1));
        cols.extend(flood.each("server drops", |r| u(r.server_dropped), n0));
        cols.extend(flood.each_text("ended", |r| {
            r.ended
                .map_or_else(|| "-".to_owned(), |e| format!("{e:?}").to_lowercase())
        }));
        table(line, &flood.cells(), &cols);
    }

    let fixed_view = View::new(res, Scenario::Fixed);
    let fixed = &fixed_view;
    if !fixed.engines.is_empty() {
        line("## Fixed offered load (open loop)\n".into());
        line(format!(
            "Every server is offered the same deliveries; {cost_note}\n"
        ));
        let rate = move |c| match fixed.any(c).and_then(|r| r.rate) {
            Some(Rate::PerSecond(n)) => n,
            _ => 0,
        };
        let pubs = move |c| fixed.any(c).and_then(|r| r.publishers).unwrap_or(0);
        let mut cols = cell_cols();
        cols.push(col("publishers x lines/s", move |c| {
            format!("{} x {}", pubs(c), rate(c))
        }));
        cols.push(col("offered deliveries/s", move |c: Cell| {
            thousands_i(pubs(c) * rate(c) * c.clients)
        }));
        cols.extend(fixed.each("delivered/s", delivered, n0));
        cols.extend(fixed.ratios("", delivered, false));
        cols.extend(fixed.each("ns/delivery", cost, n0));
        cols.extend(fixed.ratios(" ns/delivery", cost, false));
        cols.extend(fixed.each("loss", loss, n0));
        cols.extend(fixed.each("p99 ms", Row::p99_ms, n2));
        table(line, &fixed.cells(), &cols);
    }

    for (view, name) in [(&sat, "saturation"), (&flood, "flood")] {
        if view.engines.is_empty() {
            continue;
        }
        line(format!(
            "## CPU (cores busy over each {name} cell, its median run, of {cores}, over the whole cell: connecting and the drain included; others = every other process, noise if well above 0)\n"
        ));
        let mut cols = cell_cols();
        for &e in &view.engines {
            cols.push(col(format!("{e} server"), move |c| {
                r2(view.value(e, c, |r| r.server_cpu_cores))
            }));
            cols.push(col(format!("{e} generator"), move |c| {
                r2(view.value(e, c, |r| r.load_cpu_cores))
            }));
            cols.push(col(format!("{e} others"), move |c| {
                r2(view.value(e, c, |r| r.other_cpu_cores))
            }));
        }
        table(line, &view.cells(), &cols);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(engine: Engine, scenario: Scenario, round: u32, delivered: f64, ns: f64) -> Row {
        Row {
            round: Some(round),
            clients: Some(1000),
            publishers: Some(if scenario == Scenario::Flood { 1 } else { 10 }),
            size: Some(64),
            rate: Some(Rate::Max),
            window: Some(100),
            delivered_per_s: Some(delivered),
            server_cpu_ns_per_delivery: Some(ns),
            loss: Some(0),
            loss_ratio: Some(0.25),
            server_dropped: engine.is_ringcast().then_some(7),
            ended: Some(crate::row::Ended::Quiet),
            p99_us: Some(1500.0),
            ..Row::new(engine, scenario)
        }
    }

    fn render(rows: &[Row]) -> String {
        let mut md = String::new();
        load_tables(Results::new(rows), 2, &mut |s| {
            md.push_str(&s);
            md.push('\n');
        });
        crate::md::squeeze(&md)
    }

    #[test]
    fn three_servers_get_both_ratios_beside_delivered_and_cost() {
        let rows = vec![
            row(Engine::Uring, Scenario::Saturation, 1, 6e6, 200.0),
            row(Engine::Tokio, Scenario::Saturation, 1, 5e6, 250.0),
            row(Engine::Textbook, Scenario::Saturation, 1, 2e6, 800.0),
            row(Engine::Uring, Scenario::Flood, 1, 3e6, 300.0),
            row(Engine::Tokio, Scenario::Flood, 1, 2e6, 400.0),
            row(Engine::Textbook, Scenario::Flood, 1, 1e6, 600.0),
        ];
        let md = render(&rows);
        assert!(
            md.contains("| clients | size B | publishers x window | uring delivered/s | tokio delivered/s | textbook delivered/s | uring/tokio | uring/textbook | uring ns/delivery | tokio ns/delivery | textbook ns/delivery | uring/tokio ns/delivery | uring/textbook ns/delivery | uring loss |"),
            "{md}"
        );
        assert!(
            md.contains("| 1000 | 64 | 10 x 100 | 6,000,000 | 5,000,000 | 2,000,000 | 1.20 | 3.00 | 200 | 250 | 800 | 0.80 | 0.25 | 0 | 0 | 0 | 1.5 | 1.5 | 1.5 |"),
            "{md}"
        );
        assert!(md.contains("## Flood"));
        assert!(
            md.contains("| 1000 | 64 | 1 | 3,000,000 | 2,000,000 | 1,000,000 | 1.50 | 3.00 | 300 | 400 | 600 | 0.75 | 0.50 | 25.0 | 25.0 | 25.0 | 7 | 7 | - | quiet | quiet | quiet |"),
            "{md}"
        );
        assert!(md.contains("## CPU (cores busy over each flood cell"));
        assert!(!md.contains("## Fixed"), "no fixed rows");
    }

    #[test]
    fn two_servers_keep_the_two_server_table() {
        let rows = vec![
            row(Engine::Uring, Scenario::Saturation, 1, 1.2e6, 100.0),
            row(Engine::Tokio, Scenario::Saturation, 1, 1.0e6, 100.0),
            row(Engine::Uring, Scenario::Saturation, 2, 1.1e6, 100.0),
            row(Engine::Tokio, Scenario::Saturation, 2, 1.0e6, 100.0),
        ];
        let md = render(&rows);
        assert!(md.contains("Each cell ran 2 times"), "{md}");
        assert!(
            md.contains("| uring delivered/s | tokio delivered/s | uring/tokio | uring/tokio per round | uring ns/delivery |"),
            "{md}"
        );
        assert!(!md.contains("textbook"), "{md}");
        assert!(!md.contains("## Flood"));
    }
}
