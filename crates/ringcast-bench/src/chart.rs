//! The SVG charts: delivered/s against clients, one line per server, from
//! the saturation rows of one line size. A cell that ran several rounds
//! is drawn at its median run, the one summary.md reports.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use plotters::prelude::*;

use crate::row::{Engine, Row, Scenario};
use crate::stats::Results;

/// The points of each engine: (clients, delivered/s of the median run),
/// sorted by clients.
pub(crate) fn series(
    rows: &[Row],
    scenario: Scenario,
    size: u64,
) -> BTreeMap<Engine, Vec<(f64, f64)>> {
    let res = Results::new(rows);
    let mut out = BTreeMap::new();
    for cell in res.cells(&[scenario]) {
        if cell.size != size {
            continue;
        }
        for engine in Engine::ALL {
            let point = res
                .pick(scenario, engine, Some(cell))
                .and_then(|r| r.delivered_per_s);
            if let Some(rate) = point {
                out.entry(engine)
                    .or_insert_with(Vec::new)
                    .push((cell.clients as f64, rate));
            }
        }
    }
    out
}

/// Draws the saturation chart of `size`-byte lines into `svg`.
pub(crate) fn draw(rows: &[Row], size: u64, svg: &Path) -> anyhow::Result<()> {
    let scenario = Scenario::Saturation;
    let series = series(rows, scenario, size);
    if series.is_empty() {
        bail!("no saturation rows with size {size}");
    }
    // plotters' errors borrow the backend; keep their text only.
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw {}: {e}", svg.display());
    let all = || series.values().flatten();
    let x_max = all().map(|p| p.0).fold(10.0, f64::max) * 1.5;
    let x_min = all().map(|p| p.0).fold(f64::INFINITY, f64::min) / 1.5;
    let y_max = all().map(|p| p.1).fold(1.0, f64::max) * 1.15;

    let root = SVGBackend::new(svg, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("ringcast: delivered/s vs clients (saturation, {size}-byte lines)"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("clients")
        .y_desc("delivered lines/s (millions)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{:.1}", y / 1e6))
        .draw()
        .map_err(|e| err(&e))?;
    let colors = [RED, BLUE, GREEN];
    for (i, (engine, points)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(engine.name())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The chart's file name for `size`-byte lines, as the older runs named
/// them.
pub(crate) fn file_name(size: u64) -> String {
    if size == 64 {
        "delivered_vs_clients.svg".to_owned()
    } else {
        format!("delivered_vs_clients_{size}.svg")
    }
}

/// Draws every chart the rows have data for into `dir`; the files drawn.
pub(crate) fn draw_all(rows: &[Row], dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut sizes: Vec<u64> = rows
        .iter()
        .filter(|r| r.scenario == Scenario::Saturation)
        .filter_map(|r| r.size)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut drawn = Vec::new();
    for size in sizes {
        let name = file_name(size);
        draw(rows, size, &dir.join(&name)).with_context(|| format!("chart {name}"))?;
        drawn.push(name);
    }
    Ok(drawn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sat(engine: Engine, clients: u64, size: u64, rate: f64) -> Row {
        Row {
            clients: Some(clients),
            size: Some(size),
            delivered_per_s: Some(rate),
            ..Row::new(engine, Scenario::Saturation)
        }
    }

    #[test]
    fn series_are_medians_per_engine_sorted_by_clients() {
        let rows = vec![
            sat(Engine::Uring, 1000, 64, 9e6),
            sat(Engine::Uring, 10, 64, 3e6),
            sat(Engine::Uring, 10, 64, 1e6),
            sat(Engine::Uring, 10, 64, 2e6),
            sat(Engine::Tokio, 10, 64, 1.5e6),
            sat(Engine::Tokio, 10, 1024, 7e6),
            sat(Engine::Textbook, 1000, 64, 3e6),
        ];
        let s = series(&rows, Scenario::Saturation, 64);
        assert_eq!(s[&Engine::Uring], [(10.0, 2e6), (1000.0, 9e6)]);
        assert_eq!(s[&Engine::Tokio], [(10.0, 1.5e6)]);
        assert_eq!(s[&Engine::Textbook], [(1000.0, 3e6)]);
    }

    #[test]
    fn draws_an_svg() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows = vec![
            sat(Engine::Uring, 10, 64, 3e6),
            sat(Engine::Tokio, 10, 64, 2e6),
            sat(Engine::Uring, 1000, 64, 9e6),
            sat(Engine::Tokio, 1000, 64, 6e6),
            sat(Engine::Uring, 10, 1024, 1e6),
        ];
        let drawn = draw_all(&rows, dir.path()).expect("draws");
        assert_eq!(
            drawn,
            ["delivered_vs_clients.svg", "delivered_vs_clients_1024.svg"]
        );
        let svg = std::fs::read_to_string(dir.path().join(&drawn[0])).expect("written");
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("uring") && svg.contains("tokio"));
        assert!(draw(&[], 64, &dir.path().join("x.svg")).is_err());
    }
}
