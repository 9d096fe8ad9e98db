//! `--tls`: every connection of a run over TLS, against a small TLS
//! broadcast server made here with rustls and a certificate made for the
//! test.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringcast_load::{Plan, Rate, Report, SlowMode, SlowReaders};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

/// A self-signed certificate for `localhost`, in PEM files of a folder
/// removed when dropped.
struct TestCert {
    dir: tempfile::TempDir,
    cert_pem: String,
    key_pem: String,
}

impl TestCert {
    fn new() -> Self {
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let dir = tempfile::tempdir().expect("temp dir");
        let test = TestCert {
            dir,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(test.ca(), &test.cert_pem).expect("write cert");
        test
    }

    /// The certificate's file: the one CA a client trusts.
    fn ca(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        let cert = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("cert pem");
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key pem");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .expect("server config"),
        )
    }
}

/// A TLS server that writes every line any client sends to every client,
/// itself included. One thread per connection, which both reads (with a
/// short timeout) and writes what the others sent it.
fn tls_broadcast_server(cert: &TestCert) -> SocketAddr {
    let config = cert.server_config();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let outboxes: Arc<Mutex<Vec<Sender<Vec<u8>>>>> = Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (tx, rx) = mpsc::channel();
            outboxes.lock().expect("lock").push(tx);
            let config = Arc::clone(&config);
            let outboxes = Arc::clone(&outboxes);
            std::thread::spawn(move || {
                let _ = serve(stream, config, &outboxes, &rx);
            });
        }
    });
    addr
}

fn serve(
    mut sock: TcpStream,
    config: Arc<ServerConfig>,
    outboxes: &Mutex<Vec<Sender<Vec<u8>>>>,
    inbox: &Receiver<Vec<u8>>,
) -> io::Result<()> {
    let mut tls = ServerConnection::new(config).map_err(io::Error::other)?;
    while tls.is_handshaking() {
        tls.complete_io(&mut sock)?;
    }
    sock.set_read_timeout(Some(Duration::from_millis(2)))?;
    let mut partial = Vec::new();
    let mut plain = vec![0u8; 64 * 1024];
    loop {
        match tls.read_tls(&mut sock) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                tls.process_new_packets().map_err(io::Error::other)?;
                loop {
                    match tls.reader().read(&mut plain) {
                        Ok(0) => return Ok(()),
                        Ok(n) => partial.extend_from_slice(&plain[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                if let Some(end) = partial.iter().rposition(|&b| b == b'\n') {
                    let lines: Vec<u8> = partial.drain(..=end).collect();
                    for outbox in outboxes.lock().expect("lock").iter() {
                        let _ = outbox.send(lines.clone());
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
        while let Ok(lines) = inbox.try_recv() {
            tls.writer().write_all(&lines)?;
            while tls.wants_write() {
                tls.write_tls(&mut sock)?;
            }
        }
    }
}

/// Runs `plan` on a runtime of its own.
fn run(plan: &Plan) -> anyhow::Result<Report> {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(ringcast_load::run(plan))
}

fn rate(per_s: u64) -> Rate {
    Rate::PerSecond(NonZeroU64::new(per_s).expect("not zero"))
}

#[test]
fn every_line_reaches_every_client_over_tls() {
    let cert = TestCert::new();
    let plan = Plan::builder(tls_broadcast_server(&cert))
        .clients(6)
        .publishers(2)
        .size(200)
        .rate(rate(500))
        .duration(Duration::from_millis(600))
        .tls_ca(cert.ca())
        .build()
        .expect("plan");
    assert!(plan.tls().is_some());
    let report = run(&plan).expect("a run over TLS");
    assert!(report.tls, "the report says it ran over TLS");
    assert!(report.published >= 300, "published {}", report.published);
    assert_eq!(report.delivered, report.published * 6, "{report}");
    assert_eq!(
        (report.loss, report.order_violations, report.malformed),
        (0, 0, 0)
    );
}

#[test]
fn the_closed_loop_and_slow_readers_run_over_tls() {
    let cert = TestCert::new();
    let plan = Plan::builder(tls_broadcast_server(&cert))
        .clients(4)
        .publishers(2)
        .size(64)
        .rate(Rate::Max)
        .window(50)
        .duration(Duration::from_millis(500))
        .slow_readers(SlowReaders {
            count: 2,
            mode: SlowMode::Paced {
                read: 1024,
                every: Duration::from_millis(5),
            },
            rcvbuf: None,
        })
        .tls_ca(cert.ca())
        .build()
        .expect("plan");
    let report = run(&plan).expect("a run over TLS");
    assert!(report.published > 0);
    assert_eq!(report.loss, 0, "{report}");
    let slow = report.slow.as_ref().expect("slow readers reported");
    assert!(slow.received > 0, "{report}");
    assert_eq!(slow.order_violations, 0);
}

#[test]
fn a_server_the_ca_does_not_vouch_for_is_refused() {
    let server_cert = TestCert::new();
    let other = TestCert::new();
    let plan = Plan::builder(tls_broadcast_server(&server_cert))
        .clients(2)
        .duration(Duration::from_millis(200))
        .tls_ca(other.ca())
        .build()
        .expect("plan");
    let e = format!("{:#}", run(&plan).expect_err("an untrusted certificate"));
    assert!(e.contains("TLS handshake"), "{e}");
    assert!(e.contains("certificate"), "{e}");
}

#[test]
fn a_plain_run_against_a_plain_server_says_so() {
    // The same server, without TLS: the plain path, and `tls` false.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let Ok((mut a, _)) = listener.accept() else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = a.read(&mut buf) {
            if n == 0 || a.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    let plan = Plan::builder(addr)
        .clients(1)
        .rate(rate(200))
        .duration(Duration::from_millis(200))
        .build()
        .expect("plan");
    assert!(plan.tls().is_none());
    let report = run(&plan).expect("a plain run");
    assert!(!report.tls);
    assert_eq!(report.loss, 0);
}
