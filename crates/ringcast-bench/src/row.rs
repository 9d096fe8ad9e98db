//! The one row type of `raw.csv`: every scenario writes a [`Row`], with
//! the columns that do not apply to it empty, and the summary and the
//! charts read `raw.csv` back into the same type.

use std::fmt;
use std::fs::File;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sample::CpuUse;

/// A server the harness measures: an engine of `ringcast serve`, or the
/// textbook tokio server of `examples/textbook.rs`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Engine {
    /// io_uring, one runtime per core: the product. (The default only so
    /// that [`Row`] can derive `Default`; every row names its engine.)
    #[default]
    Uring,
    /// tokio on epoll: the baseline.
    Tokio,
    /// Not ringcast: `examples/textbook.rs`, what a user would write on
    /// tokio (a task pair and a channel of 100 lines per client); the
    /// second baseline, in the load matrix only.
    Textbook,
}

impl Engine {
    /// ringcast's two engines, in the order the tables show them.
    pub(crate) const BOTH: [Engine; 2] = [Engine::Uring, Engine::Tokio];
    /// Every server, in the order the tables show them.
    pub(crate) const ALL: [Engine; 3] = [Engine::Uring, Engine::Tokio, Engine::Textbook];

    /// The name `--engine` takes (`textbook` for the textbook server).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Engine::Uring => "uring",
            Engine::Tokio => "tokio",
            Engine::Textbook => "textbook",
        }
    }

    /// Whether it is an engine of `ringcast serve`.
    pub(crate) fn is_ringcast(self) -> bool {
        self != Engine::Textbook
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a row measured. The names are those of the older raw.csv files.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub(crate) enum Scenario {
    /// Server RSS per idle connection.
    #[default]
    #[serde(rename = "idle")]
    Idle,
    /// Real `nc` listeners and publishers.
    #[serde(rename = "nc_swarm")]
    NcSwarm,
    /// The load matrix at `--rate max`.
    #[serde(rename = "saturation")]
    Saturation,
    /// One publisher at `--rate max --paced-by none`: no window, as fast
    /// as its socket takes lines.
    #[serde(rename = "flood")]
    Flood,
    /// The load matrix at a fixed offered load.
    #[serde(rename = "fixed")]
    Fixed,
    /// Fast readers with slow ones beside them (or alone: the reference).
    #[serde(rename = "slow_readers")]
    SlowReaders,
    /// The TLS cell: the same fixed load over plain TCP and over TLS
    /// (`case` `plain` or `tls`), to the same server.
    #[serde(rename = "tls")]
    Tls,
    /// Cluster: every client on node A.
    #[serde(rename = "cluster-single")]
    ClusterSingle,
    /// Cluster: clients spread over nodes A and B.
    #[serde(rename = "cluster-cross")]
    ClusterCross,
}

/// Why a load run stopped reading, or that it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Ended {
    /// Every line reached every fast reader.
    Complete,
    /// Nothing arrived for 2 s.
    Quiet,
    /// Still arriving 10 s after publishing stopped.
    Cap,
    /// The run failed; the problem is in summary.md.
    Error,
}

impl From<ringcast_load::Ended> for Ended {
    fn from(e: ringcast_load::Ended) -> Self {
        match e {
            ringcast_load::Ended::Complete => Ended::Complete,
            ringcast_load::Ended::Quiet => Ended::Quiet,
            ringcast_load::Ended::Cap => Ended::Cap,
        }
    }
}

/// Lines per second per publisher: `max` or a number, as `ringcast load
/// --rate` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rate {
    /// Closed loop.
    Max,
    /// Open loop at this many lines per second per publisher.
    PerSecond(u64),
}

impl From<ringcast_load::Rate> for Rate {
    fn from(r: ringcast_load::Rate) -> Self {
        match r {
            ringcast_load::Rate::Max => Rate::Max,
            ringcast_load::Rate::PerSecond(n) => Rate::PerSecond(n.get()),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Rate::Max => s.serialize_str("max"),
            Rate::PerSecond(n) => s.serialize_u64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Rate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`max` or lines per second")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Rate, E> {
                Ok(Rate::PerSecond(n))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Rate, E> {
                if s == "max" {
                    return Ok(Rate::Max);
                }
                s.parse().map(Rate::PerSecond).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// One row of raw.csv: one engine × scenario × cell × round. Every field
/// but the engine and the scenario is empty where it does not apply.
///
/// Latencies are in µs, rates per second, CPU in seconds or cores over the
/// cell's wall time (`wall_s`), the same for server, generator and
/// machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Row {
    pub(crate) engine: Engine,
    pub(crate) scenario: Scenario,
    /// `ringcast-bench ab`: which binary, `old` or `new`.
    pub(crate) build: Option<String>,
    /// Slow readers: which case (`reference`, `paced-3ms`, ...); the TLS
    /// cell: `plain` or `tls`.
    pub(crate) case: Option<String>,
    /// Saturation: which of the `--rounds` runs, from 1.
    pub(crate) round: Option<u32>,
    /// Fast readers (publishers included); listeners; idle connections.
    pub(crate) clients: Option<u64>,
    pub(crate) publishers: Option<u64>,
    /// Bytes per line, the newline included.
    pub(crate) size: Option<u64>,
    pub(crate) rate: Option<Rate>,
    /// Lines in flight per publisher at `max`.
    pub(crate) window: Option<u64>,
    /// How long the publishers published.
    pub(crate) duration_s: Option<f64>,
    pub(crate) published: Option<u64>,
    /// Lines received, summed over the fast readers (or listeners).
    pub(crate) delivered: Option<u64>,
    /// published × clients.
    pub(crate) expected: Option<u64>,
    pub(crate) loss: Option<u64>,
    pub(crate) loss_ratio: Option<f64>,
    /// Over the measured interval: publishing start to last delivery.
    pub(crate) delivered_per_s: Option<f64>,
    /// `server_cpu_measured_s` in ns over `delivered`: what the server
    /// spent per line it delivered.
    pub(crate) server_cpu_ns_per_delivery: Option<f64>,
    /// The server's CPU (utime + stime of /proc/PID/stat) over the measured
    /// interval of `delivered_per_s`, in seconds; see [`crate::track`].
    pub(crate) server_cpu_measured_s: Option<f64>,
    pub(crate) mb_per_s: Option<f64>,
    /// Over the publishing duration alone.
    pub(crate) publish_delivered_per_s: Option<f64>,
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
    pub(crate) p999_us: Option<f64>,
    /// Publishing start to last delivery; the swarm: until every listener
    /// had every line.
    pub(crate) elapsed_s: Option<f64>,
    pub(crate) drain_s: Option<f64>,
    pub(crate) ended: Option<Ended>,
    pub(crate) order_violations: Option<u64>,
    pub(crate) malformed: Option<u64>,
    /// Fixed rate: lines due that were never written.
    pub(crate) unsent: Option<u64>,
    pub(crate) published_min: Option<u64>,
    pub(crate) published_max: Option<u64>,
    /// At `max`, who had to have a line before it stopped counting as in
    /// flight (`every-reader` or `own-connection`).
    pub(crate) paced_by: Option<String>,
    /// Times a publisher gave its lines in flight up (see
    /// `ringcast_load::Report::window_resets`).
    pub(crate) window_resets: Option<u64>,
    /// Times a publisher's window was cut in half on loss.
    pub(crate) window_cuts: Option<u64>,
    /// Lines sent beyond a window to show a loss at the tail.
    pub(crate) window_probes: Option<u64>,
    /// The smallest and largest publisher's window at the end.
    pub(crate) window_end_min: Option<u64>,
    pub(crate) window_end_max: Option<u64>,
    /// The cell's wall time, which every CPU figure is over.
    pub(crate) wall_s: Option<f64>,
    pub(crate) load_cpu_s: Option<f64>,
    pub(crate) load_cpu_cores: Option<f64>,
    pub(crate) server_cpu_s: Option<f64>,
    pub(crate) server_cpu_cores: Option<f64>,
    pub(crate) machine_cpu_cores: Option<f64>,
    pub(crate) other_cpu_cores: Option<f64>,
    /// Δ ringcast_messages_dropped_total over the cell (cluster: plus
    /// ringcast_cluster_dropped_total, both nodes).
    pub(crate) server_dropped: Option<u64>,
    /// Δ ringcast_slow_client_episodes_total over the cell.
    pub(crate) server_slow_episodes: Option<u64>,
    /// Slow readers beside the fast ones.
    pub(crate) slow_clients: Option<u64>,
    /// Lines received, summed over the slow readers.
    pub(crate) slow_received: Option<u64>,
    /// published × slow readers.
    pub(crate) slow_expected: Option<u64>,
    pub(crate) slow_loss: Option<u64>,
    pub(crate) slow_loss_ratio: Option<f64>,
    pub(crate) slow_order_violations: Option<u64>,
    /// Slow readers the server disconnected.
    pub(crate) slow_disconnected: Option<u64>,
    /// The swarm: lines each listener should have.
    pub(crate) lines_expected: Option<u64>,
    pub(crate) lines_min: Option<u64>,
    pub(crate) lines_max: Option<u64>,
    /// The swarm: every listener had every line, in order, nothing else.
    pub(crate) content_ok: Option<bool>,
    pub(crate) rss_before_kb: Option<u64>,
    pub(crate) rss_after_kb: Option<u64>,
    /// (after − before) / connections; negative if RSS shrank.
    pub(crate) bytes_per_conn: Option<i64>,
}

impl Row {
    /// An empty row of `engine` and `scenario`.
    pub(crate) fn new(engine: Engine, scenario: Scenario) -> Self {
        Row {
            engine,
            scenario,
            ..Row::default()
        }
    }

    /// Fills in what a load run reported.
    pub(crate) fn with_report(mut self, r: &ringcast_load::Report) -> Self {
        self.clients = Some(r.clients as u64);
        self.publishers = Some(r.publishers as u64);
        self.size = Some(r.size as u64);
        self.rate = Some(r.rate.into());
        self.window = r.window.map(|w| w as u64);
        self.duration_s = Some(r.duration_s);
        self.published = Some(r.published);
        self.delivered = Some(r.delivered);
        self.expected = Some(r.expected);
        self.loss = Some(r.loss);
        self.loss_ratio = Some(r.loss_ratio);
        self.delivered_per_s = Some(r.delivered_per_s);
        self.mb_per_s = Some(r.mb_per_s);
        self.publish_delivered_per_s = Some(r.publish_delivered_per_s);
        self.p50_us = r.latency_us.p50;
        self.p99_us = r.latency_us.p99;
        self.p999_us = r.latency_us.p999;
        self.elapsed_s = Some(r.elapsed_s);
        self.drain_s = Some(r.drain_s);
        self.ended = Some(r.ended.into());
        self.order_violations = Some(r.order_violations);
        self.malformed = Some(r.malformed);
        self.unsent = Some(r.unsent);
        self.published_min = Some(r.published_min);
        self.published_max = Some(r.published_max);
        self.paced_by = r.paced_by.map(|p| p.to_string());
        self.window_resets = Some(r.window_resets);
        self.window_cuts = Some(r.window_cuts);
        self.window_probes = Some(r.window_probes);
        self.window_end_min = Some(r.window_end_min);
        self.window_end_max = Some(r.window_end_max);
        if let Some(s) = &r.slow {
            self.slow_clients = Some(s.clients as u64);
            self.slow_received = Some(s.received);
            self.slow_expected = Some(s.expected_per_client.saturating_mul(s.clients as u64));
            self.slow_loss = Some(s.loss);
            self.slow_loss_ratio = Some(s.loss_ratio);
            self.slow_order_violations = Some(s.order_violations);
            self.slow_disconnected = Some(s.disconnected as u64);
        }
        self
    }

    /// Fills in the CPU a cell used.
    pub(crate) fn with_cpu(mut self, cpu: &CpuUse) -> Self {
        self.wall_s = Some(cpu.wall_s);
        self.load_cpu_s = Some(cpu.generator_s);
        self.load_cpu_cores = Some(cpu.generator_cores);
        self.server_cpu_s = Some(cpu.server_s);
        self.server_cpu_cores = Some(cpu.server_cores);
        self.machine_cpu_cores = Some(cpu.machine_cores);
        self.other_cpu_cores = Some(cpu.other_cores);
        self
    }

    /// Fills in the server's CPU over the measured interval, and per
    /// delivery (none without a delivery).
    pub(crate) fn with_measured_cpu(mut self, server_s: f64) -> Self {
        self.server_cpu_measured_s = Some(server_s);
        self.server_cpu_ns_per_delivery = self
            .delivered
            .filter(|&d| d > 0)
            .map(|d| server_s * 1e9 / d as f64);
        self
    }

    /// p99 in milliseconds.
    pub(crate) fn p99_ms(&self) -> Option<f64> {
        self.p99_us.map(|us| us / 1000.0)
    }
}

/// raw.csv, written a row at a time and flushed after each, so a run that
/// stops early keeps what it measured.
pub(crate) struct RawCsv {
    writer: csv::Writer<File>,
}

impl RawCsv {
    /// Creates `path` (the header is written with the first row).
    pub(crate) fn create(path: &Path) -> anyhow::Result<Self> {
        let writer = csv::Writer::from_path(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(RawCsv { writer })
    }

    /// Appends `row`.
    pub(crate) fn append(&mut self, row: &Row) -> anyhow::Result<()> {
        self.writer
            .serialize(row)
            .context("cannot write a row of raw.csv")?;
        self.writer.flush().context("cannot write raw.csv")
    }
}

/// Every row of a raw.csv written by [`RawCsv`]; none if it does not
/// exist yet.
pub(crate) fn read_rows(path: &Path) -> anyhow::Result<Vec<Row>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    reader
        .deserialize()
        .enumerate()
        .map(|(i, row)| row.with_context(|| format!("{} row {}", path.display(), i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_rows() -> Vec<Row> {
        vec![
            Row {
                clients: Some(10_000),
                rss_before_kb: Some(6420),
                rss_after_kb: Some(63_084),
                bytes_per_conn: Some(5802),
                ..Row::new(Engine::Uring, Scenario::Idle)
            },
            Row {
                round: Some(2),
                clients: Some(1000),
                publishers: Some(10),
                size: Some(64),
                rate: Some(Rate::Max),
                window: Some(100),
                delivered_per_s: Some(9_204_379.25),
                p99_us: Some(585_000.0),
                ended: Some(Ended::Complete),
                other_cpu_cores: Some(0.08),
                ..Row::new(Engine::Tokio, Scenario::Saturation)
            },
            Row {
                case: Some("paced-3ms".into()),
                rate: Some(Rate::PerSecond(2000)),
                slow_clients: Some(1),
                slow_loss_ratio: Some(0.5),
                ended: Some(Ended::Error),
                ..Row::new(Engine::Uring, Scenario::SlowReaders)
            },
            Row {
                content_ok: Some(false),
                lines_min: Some(6000),
                ..Row::new(Engine::Tokio, Scenario::NcSwarm)
            },
            Row::new(Engine::Uring, Scenario::ClusterCross),
            Row {
                build: Some("new".into()),
                delivered: Some(2_000_000),
                ..Row::new(Engine::Textbook, Scenario::Flood)
            }
            .with_measured_cpu(0.5),
        ]
    }

    #[test]
    fn cpu_per_delivery_is_the_measured_cpu_over_deliveries() {
        let row = Row {
            delivered: Some(4_000_000),
            ..Row::new(Engine::Uring, Scenario::Saturation)
        }
        .with_measured_cpu(1.5);
        assert_eq!(row.server_cpu_measured_s, Some(1.5));
        assert_eq!(row.server_cpu_ns_per_delivery, Some(375.0));
        let none = Row {
            delivered: Some(0),
            ..Row::new(Engine::Uring, Scenario::Saturation)
        }
        .with_measured_cpu(1.5);
        assert_eq!(none.server_cpu_ns_per_delivery, None, "nothing delivered");
    }

    #[test]
    fn rows_round_trip_through_csv() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raw.csv");
        let mut raw = RawCsv::create(&path).expect("create");
        for row in sample_rows() {
            raw.append(&row).expect("append");
        }
        drop(raw);
        assert_eq!(read_rows(&path).expect("read"), sample_rows());
        let text = std::fs::read_to_string(&path).expect("text");
        let header = text.lines().next().expect("header");
        assert!(header.starts_with("engine,scenario,build,case,round,clients,"));
        assert!(
            header.contains(",delivered_per_s,server_cpu_ns_per_delivery,server_cpu_measured_s,")
        );
        assert!(text.contains("tokio,saturation,,,2,1000,10,64,max,100,"));
        assert!(text.contains("uring,slow_readers,,paced-3ms,,,,,2000,"));
        assert!(text.contains("textbook,flood,new,"));
        assert!(text.contains("uring,cluster-cross,"));
    }

    #[test]
    fn a_missing_file_has_no_rows() {
        assert!(
            read_rows(Path::new("/nonexistent/raw.csv"))
                .expect("no error")
                .is_empty()
        );
    }
}
