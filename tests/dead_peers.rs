//! Peers that vanish without a FIN or RST (a NAT timeout, a pulled cable)
//! are removed in bounded time, on both engines: TCP keepalive finds the
//! idle ones, TCP_USER_TIMEOUT the ones with data the server sent and
//! nobody acknowledged.
//!
//! The test builds two network namespaces joined by a veth pair, runs the
//! server in one and its clients in the other, and cuts the link: from then
//! on every packet between them is lost. It needs `ip` and root (`ip
//! netns`), as CI has; without them it skips.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use common::{PATIENCE, ServerProcess, http_get, scratch_path, wait_for};

/// Two namespaces and the link between them; deleted when dropped.
struct Net {
    server: String,
    client: String,
    client_link: String,
}

/// The server's address on the link.
const SERVER_IP: &str = "10.251.0.1";

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("the ip tool (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {} (this test needs root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    fn new(tag: &str) -> Self {
        let id = format!("{}{tag}", std::process::id());
        let net = Net {
            server: format!("rc-s-{id}"),
            client: format!("rc-c-{id}"),
            client_link: format!("rcc{id}"),
        };
        let server_link = format!("rcs{id}");
        ip(&["netns", "add", &net.server]);
        ip(&["netns", "add", &net.client]);
        ip(&[
            "link",
            "add",
            &server_link,
            "type",
            "veth",
            "peer",
            "name",
            &net.client_link,
        ]);
        ip(&["link", "set", &server_link, "netns", &net.server]);
        ip(&["link", "set", &net.client_link, "netns", &net.client]);
        for (ns, link, addr) in [
            (&net.server, &server_link, format!("{SERVER_IP}/30")),
            (&net.client, &net.client_link, "10.251.0.2/30".to_owned()),
        ] {
            ip(&["-n", ns, "addr", "add", &addr, "dev", link]);
            ip(&["-n", ns, "link", "set", link, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        net
    }

    /// From now on every packet between the namespaces is lost; no side
    /// hears a FIN or a RST.
    fn cut(&self) {
        ip(&["-n", &self.client, "link", "set", &self.client_link, "down"]);
    }

    /// Runs `f` on a thread inside namespace `ns`. Sockets it opens live
    /// there, whichever thread uses them afterwards.
    fn within<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth pair with it.
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Starts the server inside `net`'s server namespace with `args`, and
/// connects `n` clients from the client namespace. Returns once the server
/// counts them.
fn serve_and_connect(net: &Net, args: &[&str], n: usize) -> (ServerProcess, Vec<TcpStream>) {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &net.server,
        env!("CARGO_BIN_EXE_ringcast"),
        "serve",
    ])
    .args(["--listen", &format!("{SERVER_IP}:0")])
    .args(["--metrics", "127.0.0.1:0", "--log", "info", "--ready-file"])
    .arg(scratch_path("ready.json"))
    .args(args)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let server = ServerProcess::spawn(cmd);
    let addr: SocketAddr = server.addr;
    let clients = Net::within(&net.client, move || {
        (0..n)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect::<Vec<_>>()
    });
    wait_connected(net, &server, n);
    (server, clients)
}

fn wait_connected(net: &Net, server: &ServerProcess, n: usize) {
    let metrics = server.metrics.clone();
    let want = format!("ringcast_connected_clients {n}");
    let ns = net.server.clone();
    wait_for(&format!("{n} clients connected"), PATIENCE, || {
        let (ns, metrics) = (ns.clone(), metrics.clone());
        let scrape = Net::within(&ns, move || http_get(&metrics, "/metrics").body);
        scrape.lines().any(|l| l == want).then_some(())
    });
}

#[test]
fn idle_peers_that_vanish_are_found_by_keepalive() {
    require_tool!("ip", "iproute2");
    if !common::root("for `ip netns`") {
        return;
    }
    for engine in ["uring", "tokio"] {
        let net = Net::new("k");
        let (server, clients) = serve_and_connect(
            &net,
            &[
                "--engine",
                engine,
                "--tcp-keepalive",
                "1s",
                "--tcp-user-timeout",
                "0",
            ],
            3,
        );
        net.cut();
        // 1 s idle, then four probes a second apart: gone in about 5 s.
        wait_connected(&net, &server, 0);
        drop(clients);
    }
}

#[test]
fn peers_that_vanish_with_data_outstanding_are_found_by_the_user_timeout() {
    require_tool!("ip", "iproute2");
    if !common::root("for `ip netns`") {
        return;
    }
    for engine in ["uring", "tokio"] {
        let net = Net::new("u");
        let (server, clients) = serve_and_connect(
            &net,
            &[
                "--engine",
                engine,
                "--tcp-keepalive",
                "0",
                "--tcp-user-timeout",
                "2s",
            ],
            2,
        );
        // A publisher on the server's side keeps sending after the cut: the
        // lines for the vanished clients go unacknowledged.
        let addr = server.addr;
        let mut publisher = Net::within(&net.server, move || TcpStream::connect(addr).unwrap());
        wait_connected(&net, &server, 3);
        net.cut();
        let line = b"into the void\n".repeat(10);
        let metrics = server.metrics.clone();
        let ns = net.server.clone();
        wait_for("the vanished clients removed", PATIENCE, || {
            std::io::Write::write_all(&mut publisher, &line).unwrap();
            let (ns, metrics) = (ns.clone(), metrics.clone());
            let scrape = Net::within(&ns, move || http_get(&metrics, "/metrics").body);
            scrape
                .lines()
                .any(|l| l == "ringcast_connected_clients 1")
                .then_some(())
        });
        drop(clients);
    }
}
