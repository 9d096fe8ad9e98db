//! `--cluster`: single node vs cross-node, on two uring nodes sharing a
//! nats-server of the harness's own on a loopback port. It runs instead of
//! the engine comparison.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ringcast_load::{Plan, Rate, Targets};
use serde::Deserialize;

use super::cell::{self, CellSpec};
use super::{Bench, fixed_rate};
use crate::children::ChildGuard;
use crate::row::{Engine, Scenario};
use crate::say;
use crate::server::{Server, tail};

/// How long nats-server has to write its ports file.
const NATS_START: Duration = Duration::from_secs(15);
/// How long each node has to join the cluster.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// nats-server on PATH, or where Debian puts it (/usr/sbin, which may not
/// be on PATH).
pub(crate) fn find_nats_server() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .context("--cluster needs nats-server, which is not installed; install it: apt-get install -y nats-server")
}

/// What nats-server's `--ports_file_dir` file holds (the part read here):
/// `{"nats":["nats://127.0.0.1:PORT"], "monitoring": [...], ...}`.
#[derive(Debug, Deserialize)]
struct NatsPorts {
    /// The client URLs.
    #[serde(default)]
    nats: Vec<String>,
}

/// The client URL in the text of a nats-server ports file.
fn parse_nats_ports(text: &str) -> anyhow::Result<String> {
    let ports: NatsPorts = serde_json::from_str(text).context("not a nats-server ports file")?;
    ports
        .nats
        .into_iter()
        .find(|u| u.starts_with("nats://127.0.0.1:"))
        .context("no loopback client URL in the ports file")
}

/// Starts nats-server on a kernel-chosen loopback port, logging to `log`
/// and writing its ports file into `ports_dir`; its URL.
fn spawn_nats(path: &Path, log: &Path, ports_dir: &Path) -> anyhow::Result<(ChildGuard, String)> {
    std::fs::create_dir_all(ports_dir)?;
    let mut cmd = Command::new(path);
    cmd.args(["-a", "127.0.0.1", "-p", "-1", "--ports_file_dir"])
        .arg(ports_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(log)
                .with_context(|| format!("cannot create {}", log.display()))?,
        );
    let mut nats = ChildGuard::spawn(&mut cmd, "nats-server")?;
    // The file is named after the executable and the pid.
    let suffix = format!("_{}.ports", nats.pid());
    let deadline = Instant::now() + NATS_START;
    let url = loop {
        if let Some(status) = nats.try_status()? {
            bail!(
                "nats-server exited at start ({status}); its log: {}",
                tail(log, 10)
            );
        }
        let file = std::fs::read_dir(ports_dir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(&suffix));
        if let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok())
            && let Ok(url) = parse_nats_ports(&text)
        {
            break url;
        }
        if Instant::now() >= deadline {
            bail!(
                "nats-server wrote no ports file in {} s; its log: {}",
                NATS_START.as_secs(),
                tail(log, 10)
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    Ok((nats, url))
}

/// Starts nats-server for the run and notes it in setup.txt.
fn start_nats(bench: &mut Bench, path: &Path) -> anyhow::Result<(ChildGuard, String)> {
    let log = bench.out.join("nats-server.log");
    let ports_dir = bench.scratch.path().join("nats-ports");
    let (nats, url) = spawn_nats(path, &log, &ports_dir)?;
    let version = Command::new(path)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    bench.setup.push(format!(
        "nats-server: pid {}, {url} ({version})",
        nats.pid()
    ));
    say!("nats-server up on {url}");
    Ok((nats, url))
}

pub(crate) fn run(bench: &mut Bench, nats_path: &Path) -> anyhow::Result<()> {
    let (mut nats, url) = start_nats(bench, nats_path)?;
    let mut nodes = Vec::new();
    for (name, id) in [("a", "bench-a"), ("b", "bench-b")] {
        let extra = [
            "--cluster".to_owned(),
            url.clone(),
            "--node-id".to_owned(),
            id.to_owned(),
        ];
        nodes.push(bench.start_server(Engine::Uring, name, &extra)?);
    }
    for node in &nodes {
        if let Err(e) = node.wait_for("ringcast_cluster_connected", 1, JOIN_TIMEOUT) {
            bail!(
                "node {} did not join the cluster ({e:#}); its log ends: {}",
                node.name,
                node.log_tail(5)
            );
        }
    }
    say!("both nodes report ringcast_cluster_connected 1");
    let mut order = [Scenario::ClusterSingle, Scenario::ClusterCross];
    for fixed in [true, false] {
        for clients in bench.s.cluster_clients.clone() {
            for &mode in &order {
                let spec = spec(bench, &nodes, mode, fixed, clients)?;
                cell::run(bench, &mut nodes, &spec)?;
            }
            // Take turns at going first.
            order.rotate_left(1);
        }
    }
    for node in &mut nodes {
        bench.stop_server(node)?;
    }
    if nats.terminate(Duration::from_secs(5))?.is_none() {
        nats.kill();
    }
    Ok(())
}

fn spec(
    bench: &Bench,
    nodes: &[Server],
    mode: Scenario,
    fixed: bool,
    clients: u64,
) -> anyhow::Result<CellSpec> {
    let publishers = bench.s.publishers(clients);
    let rate = if fixed {
        let per_s = fixed_rate(bench.s.fixed_deliveries_64, publishers, clients);
        Rate::PerSecond(NonZeroU64::new(per_s).context("a fixed rate of 0")?)
    } else {
        Rate::Max
    };
    let addrs = match mode {
        Scenario::ClusterCross => nodes.iter().map(Server::addr).collect(),
        _ => nodes.iter().take(1).map(Server::addr).collect(),
    };
    let targets = Targets::new(addrs).context("no node")?;
    let plan = Plan::builder(targets)
        .clients(usize::try_from(clients)?)
        .publishers(usize::try_from(publishers)?)
        .size(64)
        .rate(rate)
        .duration(bench.s.duration)
        .threads(bench.s.load_threads)
        .build()?;
    let name = if mode == Scenario::ClusterCross {
        "cluster-cross"
    } else {
        "cluster-single"
    };
    Ok(CellSpec {
        engine: Engine::Uring,
        scenario: mode,
        round: None,
        case: None,
        build: None,
        plan,
        label: format!(
            "{name} {} {clients}x64B",
            if fixed { "fixed" } else { "saturation" }
        ),
        cluster: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_files_give_the_client_url() {
        // What nats-server 2.9 writes.
        let text = r#"{"nats":["nats://127.0.0.1:33947"]}"#;
        assert_eq!(
            parse_nats_ports(text).expect("parses"),
            "nats://127.0.0.1:33947"
        );
        let text = r#"{"nats":["nats://127.0.0.1:41234"],"monitoring":["http://127.0.0.1:8222"]}"#;
        assert_eq!(
            parse_nats_ports(text).expect("parses"),
            "nats://127.0.0.1:41234"
        );
        assert!(parse_nats_ports(r#"{"nats":[]}"#).is_err());
        assert!(parse_nats_ports(r#"{"monitoring":["http://127.0.0.1:8222"]}"#).is_err());
        assert!(parse_nats_ports("").is_err());
    }

    /// The real nats-server, where it is installed (CI installs it): its
    /// ports file is found and read, and the URL accepts connections.
    #[test]
    fn nats_server_starts_and_says_where() {
        let Ok(path) = find_nats_server() else {
            let line = "nats_server_starts_and_says_where needs `nats-server` (Debian package nats-server)";
            // As the server's tests do: CI never skips, and the line goes
            // straight to stderr, which the harness does not capture.
            assert!(
                std::env::var_os("RINGCAST_TEST_REQUIRE_TOOLS").is_none_or(|v| v != "1"),
                "{line}, which is missing (RINGCAST_TEST_REQUIRE_TOOLS=1)"
            );
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("skipped: {line}\n").as_bytes(),
            );
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut nats, url) =
            spawn_nats(&path, &dir.path().join("log"), &dir.path().join("ports")).expect("starts");
        let addr: std::net::SocketAddr = url
            .strip_prefix("nats://")
            .expect("a nats URL")
            .parse()
            .expect("an address");
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("accepts");
        nats.kill();
    }
}
