//! `ab`'s summary.md: per engine and cell, the rounds paired (old and new
//! of the same round), the new/old ratio of each pair, and their median,
//! for delivered/s and for the server's CPU per delivery.

use std::fmt::Write as _;

use super::cells::AbCell;
use crate::md::{table, thousands};
use crate::row::{Engine, Row};
use crate::stats::ratio;

/// The median of `values`: the middle one, or the mean of the middle two.
pub(crate) fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// The old and new rows of each round both builds ran of `cell` on
/// `engine`, by round.
pub(crate) fn pairs<'a>(rows: &'a [Row], engine: Engine, cell: &AbCell) -> Vec<(&'a Row, &'a Row)> {
    let of = |build: &'static str| {
        rows.iter()
            .filter(move |r| r.engine == engine && cell.holds(r))
            .filter(move |r| r.build.as_deref() == Some(build))
    };
    let mut pairs: Vec<(&Row, &Row)> = of("old")
        .filter_map(|old| Some((old, of("new").find(|new| new.round == old.round)?)))
        .collect();
    pairs.sort_by_key(|(old, _)| old.round);
    pairs
}

/// new/old of `measure` in each pair, and their median.
pub(crate) fn ratios(
    pairs: &[(&Row, &Row)],
    measure: fn(&Row) -> Option<f64>,
) -> (Vec<Option<f64>>, Option<f64>) {
    let each: Vec<Option<f64>> = pairs
        .iter()
        .map(|(old, new)| ratio(measure(new), measure(old)))
        .collect();
    let median = median(each.iter().flatten().copied().collect());
    (each, median)
}

fn r2(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// The values of one build's rounds, in round order, joined.
fn per_round(values: impl Iterator<Item = Option<f64>>, show: fn(f64) -> String) -> String {
    values
        .map(|v| v.map_or_else(|| "-".to_owned(), show))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// summary.md of an A/B run.
pub(crate) fn summary(
    rows: &[Row],
    engines: &[Engine],
    cells: &[AbCell],
    setup: &[String],
    problems: &[String],
) -> String {
    let mut md = String::new();
    let mut line = |s: String| {
        md.push_str(&s);
        md.push('\n');
    };
    line("# ringcast A/B summary\n".into());
    for l in setup
        .iter()
        .filter(|l| l.starts_with("old:") || l.starts_with("new:"))
    {
        line(format!("- {l}"));
    }
    line(String::new());
    line("Both builds side by side, one engine at a time, taking turns cell by cell and at going first, under this harness's load generator; see setup.txt. Delivered/s counts every line every client received, from the start of publishing to the last delivery. Server ns/delivery is the server's CPU (utime + stime, /proc/PID/stat) over that same interval, over the lines delivered. \"new/old\" is one round's new build over the same round's old build; the median is over the rounds (the mean of the middle two for an even count). Old and new columns list each round, in order.\n".into());
    let head = [
        "engine",
        "cell",
        "old delivered/s",
        "new delivered/s",
        "new/old per round",
        "median new/old",
        "old ns/delivery",
        "new ns/delivery",
        "new/old per round",
        "median new/old",
        "old loss",
        "new loss",
        "old / new p99 ms",
    ];
    let mut table_rows = Vec::new();
    let millions = |v: f64| format!("{:.2}M", v / 1e6);
    let ns = |v: f64| format!("{v:.0}");
    let whole = |v: f64| thousands(v);
    let ms = |v: f64| format!("{v:.1}");
    for &engine in engines {
        for cell in cells {
            let pairs = pairs(rows, engine, cell);
            if pairs.is_empty() {
                continue;
            }
            let (delivered, delivered_median) = ratios(&pairs, |r| r.delivered_per_s);
            let (cost, cost_median) = ratios(&pairs, |r| r.server_cpu_ns_per_delivery);
            let olds = || pairs.iter().map(|(o, _)| *o);
            let news = || pairs.iter().map(|(_, n)| *n);
            let loss = |r: &Row| r.loss.map(|l| l as f64);
            let mut p99 = per_round(olds().map(Row::p99_ms), ms);
            let _ = write!(p99, " / {}", per_round(news().map(Row::p99_ms), ms));
            table_rows.push([
                engine.to_string(),
                cell.text(),
                per_round(olds().map(|r| r.delivered_per_s), millions),
                per_round(news().map(|r| r.delivered_per_s), millions),
                delivered
                    .into_iter()
                    .map(r2)
                    .collect::<Vec<_>>()
                    .join(" / "),
                format!("**{}**", r2(delivered_median)),
                per_round(olds().map(|r| r.server_cpu_ns_per_delivery), ns),
                per_round(news().map(|r| r.server_cpu_ns_per_delivery), ns),
                cost.into_iter().map(r2).collect::<Vec<_>>().join(" / "),
                format!("**{}**", r2(cost_median)),
                per_round(olds().map(loss), whole),
                per_round(news().map(loss), whole),
                p99,
            ]);
        }
    }
    line(table(&head, table_rows, 2));
    line(String::new());
    line("Above 1 in delivered/s, the new build delivered more; below 1 in ns/delivery, it spent less CPU per line. One round's ratio on a shared 2-core VM moves by 20 % or more (docs/benchmarks.md): read the medians, with the rounds beside them.".into());
    crate::summary::problems_section(problems, &mut line);
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::{Rate, Scenario};

    fn row(build: &str, round: u32, delivered_per_s: f64, ns: f64) -> Row {
        Row {
            build: Some(build.to_owned()),
            round: Some(round),
            clients: Some(1000),
            size: Some(64),
            rate: Some(Rate::Max),
            duration_s: Some(3.0),
            delivered_per_s: Some(delivered_per_s),
            server_cpu_ns_per_delivery: Some(ns),
            loss: Some(round.into()),
            p99_us: Some(2500.0),
            ..Row::new(Engine::Uring, Scenario::Saturation)
        }
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![7.0]), Some(7.0));
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn rounds_pair_by_number_and_ratios_are_new_over_old() {
        let rows = vec![
            row("old", 1, 4e6, 400.0),
            row("new", 1, 5e6, 300.0),
            row("new", 2, 6e6, 300.0),
            row("old", 2, 5e6, 400.0),
            row("old", 3, 5e6, 500.0),
            // Round 3 of the new build never ran: no pair.
        ];
        let cell: AbCell = "1000:64:max:3s".parse().expect("cell");
        let pairs = pairs(&rows, Engine::Uring, &cell);
        assert_eq!(pairs.len(), 2);
        let (each, med) = ratios(&pairs, |r| r.delivered_per_s);
        assert_eq!(each, [Some(1.25), Some(1.2)]);
        assert!((med.expect("median") - 1.225).abs() < 1e-9);
        let (each, med) = ratios(&pairs, |r| r.server_cpu_ns_per_delivery);
        assert_eq!(each, [Some(0.75), Some(0.75)]);
        assert_eq!(med, Some(0.75));
        assert!(super::pairs(&rows, Engine::Tokio, &cell).is_empty());
    }

    #[test]
    fn the_summary_has_a_line_per_engine_and_cell() {
        let rows = vec![row("old", 1, 4e6, 400.0), row("new", 1, 5e6, 300.0)];
        let cells: Vec<AbCell> = ["1000:64:max:3s", "10:64:max:3s"]
            .iter()
            .map(|c| c.parse().expect("cell"))
            .collect();
        let setup = ["old: /a/ringcast".to_owned(), "new: /b/ringcast".to_owned()];
        let md = crate::md::squeeze(&summary(
            &rows,
            &[Engine::Uring, Engine::Tokio],
            &cells,
            &setup,
            &[],
        ));
        assert!(
            md.contains("- old: /a/ringcast\n- new: /b/ringcast"),
            "{md}"
        );
        assert!(
            md.contains(
                "| uring | 1000 x 64 B saturation, 3s | 4.00M | 5.00M | 1.25 | **1.25** | 400 | 300 | 0.75 | **0.75** | 1 | 1 | 2.5 / 2.5 |"
            ),
            "{md}"
        );
        assert!(!md.contains("10 x 64 B"), "no rows, no line");
        assert!(!md.contains("| tokio |"));
        assert!(!md.contains("Problems"));
    }
}
