//! A certificate for tests, and a client that trusts it.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use rustls::ClientConnection;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;

use super::Certs;

/// A certificate for `localhost`, written to files in a fresh directory.
pub(crate) struct TestCert {
    pub(crate) dir: std::path::PathBuf,
    cert_pem: String,
}

impl TestCert {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ringcast-tls-{}-{name}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a certificate");
        let cert_pem = made.cert.pem();
        std::fs::write(dir.join("cert.pem"), &cert_pem).expect("write");
        std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).expect("write");
        Self { dir, cert_pem }
    }

    pub(crate) fn cert(&self) -> std::path::PathBuf {
        self.dir.join("cert.pem")
    }

    pub(crate) fn key(&self) -> std::path::PathBuf {
        self.dir.join("key.pem")
    }

    pub(crate) fn certs(&self) -> Certs {
        Certs::load(&self.cert(), &self.key()).expect("a good pair")
    }

    /// A client that trusts this certificate only.
    pub(crate) fn client(&self) -> ClientConnection {
        let mut roots = rustls::RootCertStore::empty();
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("pem");
        roots.add(der).expect("a root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").expect("name"),
        )
        .expect("a client")
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
