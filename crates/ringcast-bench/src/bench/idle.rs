//! Idle memory: the harness opens N idle connections itself and reports
//! the server's RSS growth per connection, (VmRSS after − before) / N.

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use super::Bench;
use crate::procfs;
use crate::row::{Row, Scenario};
use crate::say;
use crate::server::Server;

/// How long opening every connection may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn run(bench: &mut Bench, server: &mut Server) -> anyhow::Result<()> {
    let n = bench.s.idle_clients;
    server.check_alive()?;
    // Let whatever the start or an earlier scenario left settle.
    thread::sleep(Duration::from_millis(500));
    let before = procfs::rss_kib(server.pid())?;
    let deadline = Instant::now() + OPEN_TIMEOUT;
    let mut conns = Vec::with_capacity(n as usize);
    let mut failed = None;
    for i in 0..n {
        if Instant::now() > deadline {
            failed = Some(format!("only {i} open after {} s", OPEN_TIMEOUT.as_secs()));
            break;
        }
        match TcpStream::connect_timeout(&server.addr(), CONNECT_TIMEOUT) {
            Ok(c) => conns.push(c),
            Err(e) => {
                failed = Some(format!("connection {i}: {e}"));
                break;
            }
        }
    }
    if let Some(why) = failed {
        bench.problem(format!(
            "{}: could not open {n} idle connections ({why})",
            server.name
        ));
        drop(conns);
        return bench.wait_disconnected(server);
    }
    if let Err(e) = server.wait_for(
        "ringcast_connected_clients",
        u64::from(n),
        Duration::from_secs(60),
    ) {
        bench.problem(format!(
            "{}: the server did not register all {n} idle clients ({e:#})",
            server.name
        ));
    }
    thread::sleep(Duration::from_secs(1));
    let after = procfs::rss_kib(server.pid())?;
    drop(conns);
    let per = bytes_per_conn(before, after, n);
    bench.record(&Row {
        clients: Some(u64::from(n)),
        rss_before_kb: Some(before),
        rss_after_kb: Some(after),
        bytes_per_conn: Some(per),
        ..Row::new(server.engine, Scenario::Idle)
    })?;
    say!(
        "{} idle: RSS {before} -> {after} KiB for {n} connections = {per} B each",
        server.name
    );
    bench.wait_disconnected(server)
}

/// (after − before) KiB over `n` connections, in bytes each.
fn bytes_per_conn(before_kib: u64, after_kib: u64, n: u32) -> i64 {
    let grown =
        i64::try_from(after_kib).unwrap_or(i64::MAX) - i64::try_from(before_kib).unwrap_or(0);
    grown * 1024 / i64::from(n.max(1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_per_conn_is_growth_over_count() {
        assert_eq!(super::bytes_per_conn(6420, 63_084, 10_000), 5802);
        assert_eq!(super::bytes_per_conn(100, 90, 10), -1024, "RSS may shrink");
    }
}
