//! Draws delivered/s against clients, one line per engine, from the
//! `raw.csv` that `scripts/bench.sh` writes.
//!
//! ```text
//! cargo run --release --example bench_chart -- RAW_CSV OUT_SVG [SIZE [SCENARIO]]
//! ```
//!
//! Plots the rows of `SCENARIO` (default `saturation`) with line size
//! `SIZE` (default 64). A cell that ran several rounds is plotted at its
//! median, as `summary.md` reports it.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use plotters::prelude::*;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [csv, svg, rest @ ..] = args.as_slice() else {
        bail!("usage: bench_chart RAW_CSV OUT_SVG [SIZE [SCENARIO]]");
    };
    let size = rest.first().map_or("64", String::as_str);
    let scenario = rest.get(1).map_or("saturation", String::as_str);

    let text = std::fs::read_to_string(csv).with_context(|| format!("cannot read {csv}"))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty CSV")?.split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("{csv} has no column {name:?}"))
    };
    let (engine, scen, clients, sz, rate) = (
        col("engine")?,
        col("scenario")?,
        col("clients")?,
        col("size")?,
        col("delivered_per_s")?,
    );
    // engine → (clients, delivered/s), sorted by clients.
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        if get(scen) != scenario || get(sz) != size {
            continue;
        }
        let (Ok(c), Ok(r)) = (get(clients).parse::<f64>(), get(rate).parse::<f64>()) else {
            continue;
        };
        series
            .entry(get(engine).to_owned())
            .or_default()
            .push((c, r));
    }
    if series.is_empty() {
        bail!("{csv} has no {scenario} rows with size {size}");
    }
    for points in series.values_mut() {
        *points = medians(std::mem::take(points));
    }
    let all = || series.values().flatten();
    let x_max = all().map(|p| p.0).fold(10.0, f64::max) * 1.5;
    let x_min = all().map(|p| p.0).fold(f64::INFINITY, f64::min) / 1.5;
    let y_max = all().map(|p| p.1).fold(1.0, f64::max) * 1.15;

    let root = SVGBackend::new(svg, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("ringcast: delivered/s vs clients ({scenario}, {size}-byte lines)"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("clients")
        .y_desc("delivered lines/s (millions)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{:.1}", y / 1e6))
        .draw()?;
    let colors = [RED, BLUE, GREEN, MAGENTA];
    for (i, (name, points)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// One point per x: the median y of the points at that x (the lower one of
/// an even count, as `summary.md` picks), sorted by x.
fn medians(mut points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    points
        .chunk_by(|a, b| a.0 == b.0)
        .map(|same_x| same_x[(same_x.len() - 1) / 2])
        .collect()
}
