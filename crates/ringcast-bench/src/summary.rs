//! summary.md, from typed rows: one table per scenario with uring/tokio
//! (and in the load matrix uring/textbook) ratio columns, the slow
//! readers' tables, the targets and the problems of the run; or, for
//! `--cluster`, the single vs cross-node table. The load matrix's tables
//! are in [`tables`].

use crate::bench::slow::CASES;
use crate::md::{decimal, table, thousands, thousands_i};
use crate::row::{Engine, Rate, Row, Scenario};
use crate::stats::{Results, ratio};
use crate::targets::Verdict;

mod tables;

/// A cell of a table: `-` for nothing.
fn cell(v: Option<f64>, show: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".to_owned(), show)
}

fn n0(v: Option<f64>) -> String {
    cell(v, thousands)
}
fn n1(v: Option<f64>) -> String {
    cell(v, |v| decimal(v, 1))
}
fn n2(v: Option<f64>) -> String {
    cell(v, |v| decimal(v, 2))
}
fn r2(v: Option<f64>) -> String {
    cell(v, |v| format!("{v:.2}"))
}
fn u(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

/// summary.md of the engine comparison, and the targets' verdicts (which
/// it lists too).
pub(crate) fn engines(rows: &[Row], problems: &[String], cores: usize) -> (String, Vec<Verdict>) {
    let res = Results::new(rows);
    let mut md = String::new();
    let mut line = |s: String| {
        md.push_str(&s);
        md.push('\n');
    };
    line("# ringcast benchmark summary\n".into());
    line("Both engines on the same machine, server and load generator sharing its cores; see setup.txt. The load matrix (saturation, flood, fixed rate) also runs the textbook server, `examples/textbook.rs`: tokio with a reader and a writer task per client, a channel of 100 lines each, lines dropped when it is full. Idle memory, the netcat swarm, the slow readers and TLS run uring and tokio only.\n".into());
    line("Delivered/s counts every line every client received, over the measured interval: from the start of publishing to the last delivery (so any drain after the publishing duration is included). Server ns/delivery is the server's CPU (utime + stime, /proc/PID/stat) over that same interval, over the same lines. Loss = published x clients - delivered. p99 is send-to-receive latency.\n".into());

    tables::load_tables(res, cores, &mut line);

    let (ur, tr) = (
        res.pick(Scenario::NcSwarm, Engine::Uring, None),
        res.pick(Scenario::NcSwarm, Engine::Tokio, None),
    );
    if let Some(any) = ur.or(tr) {
        line(
            "## Netcat swarm (time until every listener has every line; lower is better)\n".into(),
        );
        let g = |r: Option<&Row>| r.and_then(|r| r.elapsed_s);
        let mm = |r: Option<&Row>| {
            r.map_or_else(
                || "-".to_owned(),
                |r| format!("{}/{}", r.lines_min.unwrap_or(0), r.lines_max.unwrap_or(0)),
            )
        };
        let yes = |r: Option<&Row>| match r.and_then(|r| r.content_ok) {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let pubs = any.publishers.unwrap_or(1).max(1);
        let head = [
            "listeners",
            "publishers x lines",
            "uring s",
            "tokio s",
            "uring/tokio",
            "uring lines min/max",
            "tokio lines min/max",
            "complete and in order (u/t)",
        ];
        let row = [
            any.clients.unwrap_or(0).to_string(),
            format!("{pubs} x {}", any.lines_expected.unwrap_or(0) / pubs),
            r2(g(ur)),
            r2(g(tr)),
            r2(ratio(g(ur), g(tr))),
            mm(ur),
            mm(tr),
            format!("{}/{}", yes(ur), yes(tr)),
        ];
        line(table(&head, [row], 0));
        line(String::new());
    }

    let (ur, tr) = (
        res.pick(Scenario::Idle, Engine::Uring, None),
        res.pick(Scenario::Idle, Engine::Tokio, None),
    );
    if let Some(any) = ur.or(tr) {
        line("## Idle memory (server VmRSS growth per idle connection; lower is better)\n".into());
        let g = |r: Option<&Row>| r.and_then(|r| r.bytes_per_conn).map(|b| b as f64);
        let ba = |r: Option<&Row>| {
            r.map_or_else(
                || "-".to_owned(),
                |r| {
                    format!(
                        "{}/{}",
                        r.rss_before_kb.unwrap_or(0),
                        r.rss_after_kb.unwrap_or(0)
                    )
                },
            )
        };
        let head = [
            "idle clients",
            "uring B/conn",
            "tokio B/conn",
            "uring/tokio",
            "uring RSS before/after KiB",
            "tokio RSS before/after KiB",
        ];
        let row = [
            any.clients.unwrap_or(0).to_string(),
            n0(g(ur)),
            n0(g(tr)),
            r2(ratio(g(ur), g(tr))),
            ba(ur),
            ba(tr),
        ];
        line(table(&head, [row], 0));
        line(String::new());
    }

    slow_readers(&res, &mut line);
    tls(&res, &mut line);

    let verdicts = crate::targets::evaluate(&res);
    line("## Targets\n".into());
    line("Reported, not enforced.\n".into());
    for v in &verdicts {
        line(format!("- {}", v.line));
    }
    problems_section(problems, &mut line);
    (md, verdicts)
}

/// The slow readers: one table per engine, each case beside its reference.
fn slow_readers(res: &Results<'_>, line: &mut impl FnMut(String)) {
    if res
        .rows()
        .iter()
        .all(|r| r.scenario != Scenario::SlowReaders)
    {
        return;
    }
    line("## Slow readers (fast readers beside slow ones, against a reference run with nothing else; uring and tokio only)\n".into());
    let any = res
        .rows()
        .iter()
        .find(|r| r.scenario == Scenario::SlowReaders);
    if let Some(r) = any {
        let per_s = match r.rate {
            Some(Rate::PerSecond(n)) => n.to_string(),
            _ => "-".into(),
        };
        line(format!(
            "{} publishers at {per_s} lines/s each, {}-byte lines, {} s per run; the fast readers are the publishers and the other clients; every slow reader asks for an 8 KiB SO_RCVBUF. \"vs ref\" is the case over its reference (the reference run of as many fast readers, nothing else). Slow loss counts lines still queued for them when the fast readers were done. Dropped and episodes are the server's counters over the run; server ns/delivery is its CPU over the measured interval per line delivered to the fast readers.\n",
            r.publishers.unwrap_or(0),
            r.size.unwrap_or(0),
            r.duration_s
                .map_or_else(|| "-".to_owned(), |d| format!("{d}")),
        ));
    }
    for engine in Engine::BOTH {
        if res.runs(Scenario::SlowReaders, engine, None).is_empty() {
            continue;
        }
        line(format!("### {engine}\n"));
        let head = [
            "case",
            "fast readers",
            "slow readers",
            "fast delivered/s",
            "ref delivered/s",
            "vs ref",
            "fast loss",
            "order violations",
            "fast p50 ms",
            "fast p99 ms",
            "ref p99 ms",
            "p99 vs ref",
            "slow received / expected",
            "slow loss %",
            "slow disconnected",
            "server dropped",
            "slow episodes",
            "server ns/delivery",
        ];
        let mut rows = Vec::new();
        for case in CASES {
            let Some(r) = res.case(engine, case.name) else {
                continue;
            };
            let reference = res.case(engine, case.reference);
            let g = |r: Option<&Row>, f: fn(&Row) -> Option<f64>| r.and_then(f);
            let received = match (r.slow_received, r.slow_expected) {
                (Some(a), Some(b)) => format!("{} / {}", thousands_i(a), thousands_i(b)),
                _ => "-".into(),
            };
            rows.push([
                case.text.to_owned(),
                r.clients.unwrap_or(0).to_string(),
                r.slow_clients.unwrap_or(0).to_string(),
                n0(r.delivered_per_s),
                n0(g(reference, |r| r.delivered_per_s)),
                r2(ratio(
                    r.delivered_per_s,
                    g(reference, |r| r.delivered_per_s),
                )),
                n0(u(r.loss)),
                n0(u(r.order_violations)),
                n2(r.p50_us.map(|us| us / 1000.0)),
                n2(r.p99_ms()),
                n2(g(reference, Row::p99_ms)),
                r2(ratio(r.p99_ms(), g(reference, Row::p99_ms))),
                received,
                n1(r.slow_loss_ratio.map(|x| x * 100.0)),
                n0(u(r.slow_disconnected)),
                n0(u(r.server_dropped)),
                n0(u(r.server_slow_episodes)),
                n0(r.server_cpu_ns_per_delivery),
            ]);
        }
        line(table(&head, rows, 1));
        line(String::new());
    }
}

/// The TLS cell: per engine and line size, the plain run beside the TLS
/// run, and their ratios.
fn tls(res: &Results<'_>, line: &mut impl FnMut(String)) {
    use crate::bench::tls::{PLAIN, TLS};
    let cells = res.cells(&[Scenario::Tls]);
    let Some(any) = res.rows().iter().find(|r| r.scenario == Scenario::Tls) else {
        return;
    };
    line("## TLS against plain TCP (the same fixed load to the same server, once over plain TCP and once with every client over TLS; uring and tokio only)\n".into());
    let (pubs, per_s) = match (any.publishers, any.rate) {
        (Some(p), Some(Rate::PerSecond(n))) => (p, n),
        _ => (0, 0),
    };
    let rounds = res.rounds(Scenario::Tls);
    line(format!(
        "{} clients, {pubs} publishers x {per_s} lines/s: {} deliveries/s offered, {} s per run{}. A TLS server seals each line once per TLS reader: TLS/plain ns/delivery is what that costs the server per delivery against plain TCP. ns/delivery is the server's CPU (utime + stime of /proc/PID/stat) over the same interval as delivered/s, over the lines delivered; the load generator, which decrypts as many lines as the server seals, runs on the same cores.\n",
        any.clients.unwrap_or(0),
        thousands_i(pubs * per_s * any.clients.unwrap_or(0)),
        any.duration_s
            .map_or_else(|| "-".to_owned(), |d| format!("{d}")),
        if rounds > 1 {
            format!(
                ", {rounds} times each; every column is from each kind's median run by delivered/s"
            )
        } else {
            String::new()
        },
    ));
    let head = [
        "server",
        "size B",
        "plain delivered/s",
        "TLS delivered/s",
        "TLS/plain delivered/s",
        "plain ns/delivery",
        "TLS ns/delivery",
        "TLS/plain ns/delivery",
        "plain loss",
        "TLS loss",
        "plain p99 ms",
        "TLS p99 ms",
    ];
    let mut rows = Vec::new();
    for engine in Engine::BOTH {
        for &c in &cells {
            let plain = res.pick_case(Scenario::Tls, engine, Some(c), PLAIN);
            let tls = res.pick_case(Scenario::Tls, engine, Some(c), TLS);
            if plain.is_none() && tls.is_none() {
                continue;
            }
            let g = |r: Option<&Row>, f: fn(&Row) -> Option<f64>| r.and_then(f);
            let delivered = |r: &Row| r.delivered_per_s;
            let cost = |r: &Row| r.server_cpu_ns_per_delivery;
            rows.push([
                engine.to_string(),
                c.size.to_string(),
                n0(g(plain, delivered)),
                n0(g(tls, delivered)),
                r2(ratio(g(tls, delivered), g(plain, delivered))),
                n0(g(plain, cost)),
                n0(g(tls, cost)),
                r2(ratio(g(tls, cost), g(plain, cost))),
                n0(g(plain, |r| u(r.loss))),
                n0(g(tls, |r| u(r.loss))),
                n2(g(plain, Row::p99_ms)),
                n2(g(tls, Row::p99_ms)),
            ]);
        }
    }
    line(table(&head, rows, 1));
    line(String::new());
}

/// The problems of a run, if any.
pub(crate) fn problems_section(problems: &[String], line: &mut impl FnMut(String)) {
    if problems.is_empty() {
        return;
    }
    line("\n## Problems during the run\n".into());
    for p in problems {
        line(format!("- {p}"));
    }
}

/// summary.md of a `--cluster` run: single node vs cross-node.
pub(crate) fn cluster(rows: &[Row], problems: &[String]) -> String {
    let mut md = String::new();
    let mut line = |s: String| {
        md.push_str(&s);
        md.push('\n');
    };
    line("# ringcast benchmark summary: cluster\n".into());
    line("Two `ringcast serve --engine uring --cluster nats://...` nodes, A and B, sharing lines through one local nats-server, on the same machine as the load generator; see setup.txt.\n".into());
    line("## Cluster: single node vs cross-node\n".into());
    line("single: every client on node A (node B receives the lines through NATS but has no clients). cross: client i on node i mod 2, so publishers and readers are split over the nodes and half of every line's deliveries cross NATS. Delivered/s and loss count every client (published x clients expected), p99 is send-to-receive latency; cross/single > 1 for delivered/s and < 1 for p99 means cross-node is better. Server CPU and drops are summed over both nodes (drops include lines a bridge could not forward).\n".into());
    let head = [
        "load",
        "clients x 64 B",
        "publishers x lines/s",
        "offered deliveries/s",
        "single delivered/s",
        "cross delivered/s",
        "cross/single",
        "single loss",
        "cross loss",
        "single p99 ms",
        "cross p99 ms",
        "p99 cross/single",
        "server cores single/cross",
        "drops single/cross",
    ];
    let mut table_rows = Vec::new();
    let mut clients: Vec<u64> = rows
        .iter()
        .filter(|r| matches!(r.scenario, Scenario::ClusterSingle | Scenario::ClusterCross))
        .filter_map(|r| r.clients)
        .collect();
    clients.sort_unstable();
    clients.dedup();
    let find = |scenario: Scenario, clients: u64, fixed: bool| {
        rows.iter().find(|r| {
            r.scenario == scenario
                && r.clients == Some(clients)
                && matches!(r.rate, Some(Rate::PerSecond(_))) == fixed
        })
    };
    for fixed in [true, false] {
        for &c in &clients {
            let (a, b) = (
                find(Scenario::ClusterSingle, c, fixed),
                find(Scenario::ClusterCross, c, fixed),
            );
            let Some(any) = a.or(b) else { continue };
            let g = |r: Option<&Row>, f: fn(&Row) -> Option<f64>| r.and_then(f);
            let pubs = any.publishers.unwrap_or(0);
            let (rate, offered) = match any.rate {
                Some(Rate::PerSecond(n)) if fixed => (n.to_string(), thousands_i(pubs * n * c)),
                _ => (
                    format!(
                        "max (window {})",
                        any.window.map_or_else(|| "-".to_owned(), |w| w.to_string())
                    ),
                    "max".to_owned(),
                ),
            };
            let drops = |r: Option<&Row>| {
                r.and_then(|r| r.server_dropped)
                    .map_or_else(|| "-".to_owned(), |d| d.to_string())
            };
            table_rows.push([
                if fixed { "fixed" } else { "saturation" }.to_owned(),
                c.to_string(),
                format!("{pubs} x {rate}"),
                offered,
                n0(g(a, |r| r.delivered_per_s)),
                n0(g(b, |r| r.delivered_per_s)),
                r2(ratio(
                    g(b, |r| r.delivered_per_s),
                    g(a, |r| r.delivered_per_s),
                )),
                n0(g(a, |r| u(r.loss))),
                n0(g(b, |r| u(r.loss))),
                n2(g(a, Row::p99_ms)),
                n2(g(b, Row::p99_ms)),
                r2(ratio(g(b, Row::p99_ms), g(a, Row::p99_ms))),
                format!(
                    "{}/{}",
                    r2(g(a, |r| r.server_cpu_cores)),
                    r2(g(b, |r| r.server_cpu_cores))
                ),
                format!("{}/{}", drops(a), drops(b)),
            ]);
        }
    }
    line(table(&head, table_rows, 1));
    problems_section(problems, &mut line);
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::md::squeeze;

    fn sat(engine: Engine, round: u32, rate: f64) -> Row {
        Row {
            round: Some(round),
            clients: Some(10),
            publishers: Some(10),
            size: Some(64),
            rate: Some(Rate::Max),
            window: Some(1000),
            delivered_per_s: Some(rate),
            p99_us: Some(26_600.0),
            loss: Some(0),
            ..Row::new(engine, Scenario::Saturation)
        }
    }

    #[test]
    fn engine_summary_has_ratios_rounds_and_targets() {
        let rows = vec![
            sat(Engine::Uring, 1, 1.2e6),
            sat(Engine::Tokio, 1, 1.0e6),
            sat(Engine::Uring, 2, 1.1e6),
            sat(Engine::Tokio, 2, 1.0e6),
            Row {
                case: Some("reference".into()),
                clients: Some(50),
                publishers: Some(5),
                size: Some(200),
                rate: Some(Rate::PerSecond(2000)),
                duration_s: Some(4.0),
                delivered_per_s: Some(500_000.0),
                p99_us: Some(2000.0),
                loss: Some(0),
                order_violations: Some(0),
                ..Row::new(Engine::Uring, Scenario::SlowReaders)
            },
            Row {
                case: Some("paced-3ms".into()),
                clients: Some(50),
                slow_clients: Some(1),
                delivered_per_s: Some(490_000.0),
                p99_us: Some(3000.0),
                loss: Some(0),
                order_violations: Some(0),
                slow_received: Some(500),
                slow_expected: Some(40_000),
                slow_loss_ratio: Some(0.9875),
                server_dropped: Some(39_500),
                server_slow_episodes: Some(3),
                ..Row::new(Engine::Uring, Scenario::SlowReaders)
            },
        ];
        let (md, verdicts) = engines(&rows, &["something broke".to_owned()], 2);
        let md = squeeze(&md);
        assert!(md.contains("Each cell ran 2 times"), "{md}");
        assert!(
            md.contains("| 10 | 64 | 10 x 1000 | 1,100,000 | 1,000,000 | 1.10 | 1.10 to 1.20 |"),
            "{md}"
        );
        assert!(md.contains("### uring"));
        assert!(!md.contains("### tokio"), "no tokio slow rows");
        assert!(
            md.contains(
                "| one slow reader, 4 KiB every 3 ms | 50 | 1 | 490,000 | 500,000 | 0.98 | 0 | 0 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 500 / 40,000 | 98.8 | - | 39,500 | 3 |"),
            "{md}"
        );
        assert!(md.contains("## Targets"));
        assert!(
            md.contains("- PASS: uring: fast readers' p99 <= 2 x the reference run's + 2 ms"),
            "{md}"
        );
        assert!(md.contains("## Problems during the run\n\n- something broke"));
        assert!(!verdicts.is_empty());
        assert!(!md.contains("## Fixed offered load"), "no fixed rows");
    }

    #[test]
    fn tls_table_puts_each_engines_tls_run_beside_its_plain_one() {
        let row = |engine, case: &str, size, delivered, ns| Row {
            case: Some(case.to_owned()),
            round: Some(1),
            clients: Some(100),
            publishers: Some(10),
            size: Some(size),
            rate: Some(Rate::PerSecond(200)),
            duration_s: Some(5.0),
            delivered_per_s: Some(delivered),
            server_cpu_ns_per_delivery: Some(ns),
            loss: Some(0),
            p99_us: Some(1500.0),
            ..Row::new(engine, Scenario::Tls)
        };
        let rows = vec![
            row(Engine::Uring, "plain", 64, 200_000.0, 400.0),
            row(Engine::Uring, "tls", 64, 199_000.0, 1000.0),
            row(Engine::Tokio, "tls", 1024, 198_000.0, 2000.0),
            row(Engine::Tokio, "plain", 1024, 200_000.0, 500.0),
        ];
        let (md, _) = engines(&rows, &[], 2);
        let md = squeeze(&md);
        assert!(md.contains("## TLS against plain TCP"), "{md}");
        assert!(
            md.contains("100 clients, 10 publishers x 200 lines/s: 200,000 deliveries/s offered, 5 s per run."),
            "{md}"
        );
        assert!(
            md.contains("| uring | 64 | 200,000 | 199,000 | 0.99 | 400 | 1,000 | 2.50 | 0 | 0 | 1.50 | 1.50 |"),
            "{md}"
        );
        assert!(
            md.contains("| tokio | 1024 | 200,000 | 198,000 | 0.99 | 500 | 2,000 | 4.00 |"),
            "{md}"
        );
        assert!(!md.contains("| uring | 1024 |"), "no uring rows of 1 KiB");
        let (md, _) = engines(&rows[..0], &[], 2);
        assert!(!md.contains("## TLS"), "no section without TLS rows");
    }

    #[test]
    fn cluster_summary_pairs_single_and_cross() {
        let row = |scenario, rate, delivered| Row {
            clients: Some(100),
            publishers: Some(10),
            size: Some(64),
            rate: Some(rate),
            delivered_per_s: Some(delivered),
            p99_us: Some(2000.0),
            loss: Some(0),
            server_dropped: Some(0),
            ..Row::new(Engine::Uring, scenario)
        };
        let rows = vec![
            row(Scenario::ClusterSingle, Rate::PerSecond(1000), 1e6),
            row(Scenario::ClusterCross, Rate::PerSecond(1000), 0.9e6),
            row(Scenario::ClusterSingle, Rate::Max, 2e6),
        ];
        let md = squeeze(&cluster(&rows, &[]));
        assert!(
            md.contains("| fixed | 100 | 10 x 1000 | 1,000,000 | 1,000,000 | 900,000 | 0.90 |"),
            "{md}"
        );
        assert!(
            md.contains("| saturation | 100 | 10 x max (window -) | max | 2,000,000 | - | - |"),
            "{md}"
        );
        assert!(!md.contains("Problems"));
    }
}
