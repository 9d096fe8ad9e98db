//! TLS for the tests: a certificate made for the test, and a rustls client
//! that trusts only it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConnection, StreamOwned};

use super::scratch_path;

/// A self-signed certificate for `localhost` and 127.0.0.1, in PEM files
/// removed when dropped.
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    cert_pem: String,
    /// SHA-256 of the public key, base64: what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    pub spki_sha256: String,
}

impl TestCert {
    pub fn new() -> Self {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ringcast test");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (cert_path, key_path) = (scratch_path("cert.pem"), scratch_path("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
        use base64::Engine as _;
        Self {
            cert: cert_path,
            key: key_path,
            cert_pem: cert.pem(),
            spki_sha256: base64::engine::general_purpose::STANDARD.encode(digest.as_ref()),
        }
    }

    /// The TLS part of a server configuration with this certificate.
    pub fn config(&self) -> ringcast::config::TlsConfig {
        ringcast::config::TlsConfig {
            cert: self.cert.clone(),
            key: self.key.clone(),
            plain_listen: None,
            plain_ws: None,
        }
    }

    /// Writes this certificate's files over `cert` and `key`.
    pub fn copy_to(&self, cert: &Path, key: &Path) {
        std::fs::copy(&self.cert, cert).unwrap();
        std::fs::copy(&self.key, key).unwrap();
    }

    /// A client configuration that trusts this certificate only.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// Connects and completes the handshake, or returns why not.
    pub fn try_connect(&self, addr: SocketAddr) -> std::io::Result<TlsClient> {
        self.handshake(TcpStream::connect(addr)?)
    }

    /// Connects with a small kernel receive buffer (a reader that falls
    /// behind soon), and completes the handshake.
    pub fn connect_small_rcvbuf(&self, addr: SocketAddr) -> TlsClient {
        let tcp = super::Client::connect_small_rcvbuf(addr).stream;
        self.handshake(tcp).expect("a TLS handshake")
    }

    fn handshake(&self, tcp: TcpStream) -> std::io::Result<TlsClient> {
        tcp.set_read_timeout(Some(super::PATIENCE))?;
        let conn = ClientConnection::new(
            self.client_config(),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsClient { stream })
    }

    /// Connects and completes the handshake.
    pub fn connect(&self, addr: SocketAddr) -> TlsClient {
        self.try_connect(addr).expect("a TLS handshake")
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cert);
        let _ = std::fs::remove_file(&self.key);
    }
}

/// A line client over TLS.
pub struct TlsClient {
    pub stream: StreamOwned<ClientConnection, TcpStream>,
}

impl TlsClient {
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// Reads exactly `n` lines, newlines included.
    pub fn read_lines(&mut self, n: usize) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while lines.len() < n {
            self.stream.read_exact(&mut byte).expect("a line over TLS");
            line.push(byte[0]);
            if byte[0] == b'\n' {
                lines.push(std::mem::take(&mut line));
            }
        }
        lines
    }
}
