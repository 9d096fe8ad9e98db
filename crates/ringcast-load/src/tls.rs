//! `--tls`: connections over TLS, with rustls driven here on tokio's
//! readiness, as the plain path drives its sockets.
//!
//! A [`TlsConn`] is a TCP stream and a rustls client connection behind a
//! mutex, held only for the synchronous rustls calls and never across an
//! await: the reader task and, on a publisher's connection, the publisher
//! task share it as they share a plain [`TcpStream`]. So the readers, the
//! publishers and the slow readers run the same code over both, through
//! [`Conn`]; the plain one stays tokio's stream itself.
//!
//! - Reading: decrypted bytes are served from rustls's buffer first; only
//!   when it is empty does a read take TLS bytes from the socket, one
//!   `read_tls` at a time, until a record gives plaintext or the socket
//!   has nothing more. Plaintext left over (a read smaller than a record)
//!   makes [`Conn::readable`] ready at once.
//! - Writing: bytes are sealed into records at once (rustls keeps at most
//!   64 KiB of them), and handed to the kernel as far as it takes them;
//!   what it refused goes first on the next write, or on
//!   [`Conn::try_flush`], which `write_until` calls after the last bytes.
//!
//! The server's certificate is checked against the CA file of `--tls-ca`
//! only, for the name [`SERVER_NAME`].

use std::fmt;
use std::io::{self, IoSlice, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use tokio::net::TcpStream;

use crate::conn::Conn;

/// The name the server's certificate has to be valid for.
pub const SERVER_NAME: &str = "localhost";

/// Whom a TLS run trusts: the certificates of a CA file, and the client
/// configuration made of them. Two are equal when they come from the same
/// file.
#[derive(Clone)]
pub struct TlsTrust {
    ca: PathBuf,
    config: Arc<ClientConfig>,
}

impl TlsTrust {
    /// Reads every certificate of the PEM file `ca`; the error says what
    /// is wrong with it.
    pub fn from_ca_file(ca: &Path) -> Result<Self, String> {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{}: not a PEM certificate: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: a certificate rustls cannot use: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{} holds no certificate", ca.display()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("no TLS version to offer: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsTrust {
            ca: ca.to_owned(),
            config: Arc::new(config),
        })
    }

    /// The CA file.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    pub(crate) fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }
}

impl PartialEq for TlsTrust {
    fn eq(&self, other: &Self) -> bool {
        self.ca == other.ca
    }
}

impl fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTrust").field("ca", &self.ca).finish()
    }
}

/// One client connection over TLS.
pub(crate) struct TlsConn {
    tcp: TcpStream,
    tls: Mutex<ClientConnection>,
    /// rustls holds decrypted bytes not read yet.
    buffered: AtomicBool,
}

/// tokio's stream as the blocking `Read` and `Write` rustls drives:
/// `WouldBlock` when the socket has nothing or takes nothing.
struct Io<'a>(&'a TcpStream);

impl io::Read for Io<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl io::Write for Io<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A rustls error as an I/O error.
fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Hands the kernel every sealed byte; `WouldBlock` if it takes not all.
fn flush(tls: &mut ClientConnection, tcp: &TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        if tls.write_tls(&mut Io(tcp))? == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

/// Runs the handshake on `tcp` to its end.
async fn handshake(tcp: &TcpStream, tls: &mut ClientConnection) -> io::Result<()> {
    loop {
        match flush(tls, tcp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tcp.writable().await?;
                continue;
            }
            Err(e) => return Err(e),
        }
        if !tls.is_handshaking() {
            return Ok(());
        }
        if !tls.wants_read() {
            return Err(io::Error::other("the TLS handshake stalled"));
        }
        match tls.read_tls(&mut Io(tcp)) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            Ok(_) => {
                if let Err(e) = tls.process_new_packets() {
                    // Tell the server why, if it listens.
                    let _ = tls.write_tls(&mut Io(tcp));
                    return Err(invalid(e));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.readable().await?,
            Err(e) => return Err(e),
        }
    }
}

impl TlsConn {
    fn lock(&self) -> MutexGuard<'_, ClientConnection> {
        self.tls.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Conn for TlsConn {
    type Setup = TlsTrust;

    async fn open(tcp: TcpStream, trust: &TlsTrust) -> io::Result<Self> {
        let name = ServerName::try_from(SERVER_NAME).map_err(io::Error::other)?;
        let mut tls = ClientConnection::new(trust.config(), name).map_err(invalid)?;
        handshake(&tcp, &mut tls).await?;
        // The handshake may have brought application data along.
        let buffered = tls
            .process_new_packets()
            .map_err(invalid)?
            .plaintext_bytes_to_read()
            > 0;
        Ok(TlsConn {
            tcp,
            tls: Mutex::new(tls),
            buffered: AtomicBool::new(buffered),
        })
    }

    fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    async fn readable(&self) -> io::Result<()> {
        if self.buffered.load(Ordering::Acquire) {
            return Ok(());
        }
        self.tcp.readable().await
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut tls = self.lock();
        let read = loop {
            match tls.reader().read(buf) {
                // 0: the server sent close_notify.
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Nothing decrypted: more from the socket (WouldBlock if none).
            if tls.read_tls(&mut Io(&self.tcp))? == 0 {
                return Ok(0);
            }
            tls.process_new_packets().map_err(invalid)?;
        };
        let state = tls.process_new_packets().map_err(invalid)?;
        self.buffered
            .store(state.plaintext_bytes_to_read() > 0, Ordering::Release);
        if state.tls_bytes_to_write() > 0 {
            // A reply rustls owes (a key update): sent when the socket
            // takes it, or with the next write.
            let _ = flush(&mut tls, &self.tcp);
        }
        Ok(read)
    }

    async fn writable(&self) -> io::Result<()> {
        self.tcp.writable().await
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut tls = self.lock();
        // What was sealed before goes first.
        flush(&mut tls, &self.tcp)?;
        let n = tls.writer().write(buf)?;
        match flush(&mut tls, &self.tcp) {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
            Err(e) => Err(e),
        }
    }

    fn try_flush(&self) -> io::Result<()> {
        flush(&mut self.lock(), &self.tcp)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::net::TcpListener;
    use std::time::Duration;

    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection, StreamOwned};

    use super::*;

    /// A TLS server for one client: it sends `bytes` in one write, then
    /// nothing more until the client closes. Returns its address and the
    /// CA file to trust, in `dir`.
    fn one_shot_server(dir: &Path, bytes: Vec<u8>) -> (std::net::SocketAddr, PathBuf) {
        let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()]).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.pem()).expect("write ca");
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .expect("server config");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let (sock, _) = listener.accept().expect("accept");
            let tls = ServerConnection::new(Arc::new(config)).expect("server conn");
            let mut stream = StreamOwned::new(tls, sock);
            stream.write_all(&bytes).expect("write");
            stream.flush().expect("flush");
            // Until the client goes.
            let _ = stream.read(&mut [0u8; 1]);
        });
        (addr, ca)
    }

    #[tokio::test]
    async fn bytes_left_in_rustls_are_read_without_more_from_the_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sent: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let (addr, ca) = one_shot_server(dir.path(), sent.clone());
        let trust = TlsTrust::from_ca_file(&ca).expect("ca");
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let conn = TlsConn::open(tcp, &trust).await.expect("handshake");
        // Reads much smaller than the record: most of it stays in rustls
        // after each, and nothing more comes on the socket.
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while got.len() < sent.len() {
            let stuck = || format!("stuck after {} of {} bytes", got.len(), sent.len());
            assert!(tokio::time::Instant::now() < deadline, "{}", stuck());
            tokio::time::timeout_at(deadline, conn.readable())
                .await
                .unwrap_or_else(|_| panic!("{}", stuck()))
                .expect("readable");
            match conn.try_read(&mut buf) {
                Ok(0) => panic!("closed after {} bytes", got.len()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, sent);
    }
}
