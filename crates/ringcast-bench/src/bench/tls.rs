//! The TLS cell: what TLS costs the server per delivery. A TLS server
//! seals each line once per TLS reader, so the cost grows with the
//! fan-out, as the writes do.
//!
//! Per engine, one server with a test certificate made here (into the
//! results folder) serves TLS on `--listen` and plain TCP on
//! `--plain-listen`, in the same broadcast. Each cell, [`CLIENTS`]
//! clients of one line size at the same fixed offered load
//! ([`DELIVERIES`] per second, a load both kinds carry on 2 cores), runs
//! once over plain TCP and once over TLS (every connection, publishers
//! included), to the same server process; each row's server CPU per
//! delivery is measured as for every load cell. Engines and the two
//! kinds take turns, cell by cell and round by round.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use ringcast_load::{Plan, Rate};

use super::cell::{self, CellSpec};
use super::{Bench, fixed_rate};
use crate::row::{Engine, Scenario};

/// Clients of every cell, publishers included.
pub(crate) const CLIENTS: u64 = 100;
/// Publishers among them.
pub(crate) const PUBLISHERS: u64 = 10;
/// Deliveries per second offered in every cell, whatever the line size.
pub(crate) const DELIVERIES: u64 = 200_000;
/// The `case` of a run over plain TCP.
pub(crate) const PLAIN: &str = "plain";
/// The `case` of a run over TLS.
pub(crate) const TLS: &str = "tls";
/// The TLS servers' names end with it (`uring-tls`).
pub(crate) const SUFFIX: &str = "-tls";

/// The test certificate's files.
#[derive(Debug, Clone)]
pub(crate) struct TestCert {
    /// The certificate, which the load generator trusts as its CA.
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// Makes a self-signed certificate for `localhost` (and 127.0.0.1) and
/// writes it and its key into `dir`.
pub(crate) fn write_cert(dir: &Path) -> anyhow::Result<TestCert> {
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .context("cannot describe a test certificate")?;
    let key = rcgen::KeyPair::generate().context("cannot make a key")?;
    let cert = params
        .self_signed(&key)
        .context("cannot sign a test certificate")?;
    let files = TestCert {
        cert: dir.join("tls-cert.pem"),
        key: dir.join("tls-key.pem"),
    };
    std::fs::write(&files.cert, cert.pem())
        .with_context(|| format!("cannot write {}", files.cert.display()))?;
    std::fs::write(&files.key, key.serialize_pem())
        .with_context(|| format!("cannot write {}", files.key.display()))?;
    Ok(files)
}

/// Lines per second per publisher.
pub(crate) fn rate() -> u64 {
    fixed_rate(DELIVERIES, PUBLISHERS, CLIENTS)
}

/// The plan of one run: over TLS to `tls` trusting `ca`, or plain to
/// `plain`.
pub(crate) fn plan(
    to: SocketAddr,
    ca: Option<&Path>,
    size: u64,
    duration: Duration,
    threads: usize,
) -> anyhow::Result<Plan> {
    let per_s = NonZeroU64::new(rate()).context("a fixed rate of 0")?;
    let mut builder = Plan::builder(to)
        .clients(usize::try_from(CLIENTS)?)
        .publishers(usize::try_from(PUBLISHERS)?)
        .size(usize::try_from(size)?)
        .rate(Rate::PerSecond(per_s))
        .duration(duration)
        .threads(threads);
    if let Some(ca) = ca {
        builder = builder.tls_ca(ca);
    }
    Ok(builder.build()?)
}

/// The server flags that serve TLS with `cert` on `--listen` and plain TCP
/// beside it.
pub(crate) fn server_flags(cert: &TestCert) -> Vec<String> {
    vec![
        "--tls-cert".to_owned(),
        cert.cert.display().to_string(),
        "--tls-key".to_owned(),
        cert.key.display().to_string(),
        "--plain-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
    ]
}

pub(crate) fn run(bench: &mut Bench) -> anyhow::Result<()> {
    let cert = write_cert(&bench.out)?;
    let flags = server_flags(&cert);
    let mut servers = Vec::new();
    for engine in Engine::BOTH {
        let server = bench.start_server(engine, &format!("{engine}{SUFFIX}"), &flags)?;
        servers.push(server);
    }
    let mut order = Engine::BOTH.to_vec();
    let mut kinds = [PLAIN, TLS];
    for size in bench.s.tls_sizes.clone() {
        let rounds = bench.s.tls_rounds;
        for round in 1..=rounds {
            for &engine in &order {
                let server = crate::server::of_engine(&mut servers, engine)?;
                let plain = server.plain_addr().with_context(|| {
                    format!(
                        "the {} server reports no --plain-listen address",
                        server.name
                    )
                })?;
                for kind in kinds {
                    let (to, ca) = if kind == TLS {
                        (server.addr(), Some(cert.cert.as_path()))
                    } else {
                        (plain, None)
                    };
                    let mut label = format!("{engine} {kind} {CLIENTS}x{size}B");
                    if rounds > 1 {
                        label.push_str(&format!(" round {round}"));
                    }
                    let spec = CellSpec {
                        engine,
                        scenario: Scenario::Tls,
                        round: Some(round),
                        case: Some(kind),
                        build: None,
                        plan: plan(to, ca, size, bench.s.tls_duration, bench.s.load_threads)?,
                        label,
                        cluster: false,
                    };
                    cell::run(bench, std::slice::from_mut(server), &spec)?;
                }
            }
            // Take turns at going first, engines and kinds alike.
            order.rotate_left(1);
            kinds.rotate_left(1);
        }
    }
    for server in &mut servers {
        bench.stop_server(server)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_offers_the_deliveries() {
        assert_eq!(rate() * PUBLISHERS * CLIENTS, DELIVERIES);
    }

    #[test]
    fn the_test_certificate_is_one_the_load_generator_trusts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = write_cert(dir.path()).expect("a certificate");
        let key = std::fs::read_to_string(&cert.key).expect("key file");
        assert!(key.contains("PRIVATE KEY"), "{key}");
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let tls =
            plan(addr, Some(&cert.cert), 1024, Duration::from_secs(1), 2).expect("a plan over TLS");
        assert_eq!(tls.tls().map(|t| t.ca()), Some(cert.cert.as_path()));
        let plain = plan(addr, None, 64, Duration::from_secs(1), 2).expect("a plain plan");
        assert!(plain.tls().is_none());
        assert_eq!((plain.clients(), plain.publishers()), (100, 10));
        let flags = server_flags(&cert);
        assert_eq!(flags[0], "--tls-cert");
        assert!(flags.contains(&"--plain-listen".to_owned()));
    }
}
