//! TLS for line and WebSocket clients, with rustls. No I/O: rustls's
//! buffered connection reads and writes byte slices, so both engines run
//! it on their own buffers, and the session code that decides what to send
//! is the same for TLS clients as for plain ones.
//!
//! # Certificates
//!
//! [`Certs`] holds the server's certificate chain and key, read from PEM
//! files at start (a bad file is a configuration error) and again on
//! [`Certs::reload`] (SIGHUP): a bad new file keeps the old certificate.
//! Connections made after a reload use the new one.
//!
//! # The allowance
//!
//! A TLS client's queue and drops follow the same rules as a plain
//! client's (see [`crate::policy::send::outbound`]). The one difference is where
//! a message is when it leaves the queue: it is sealed into at most one
//! record of [`SEAL_BYTES`] ([`Tls::seal`]), and that ciphertext is handed
//! to the kernel; no more is taken from the queue until all of it
//! has gone. So a TLS client holds `--queue` messages, plus one record on
//! its way to the kernel, plus its kernel send buffer; messages are counted
//! as sent when the kernel has taken the last byte of their record, and
//! the kernel refusing ciphertext is what makes the allowance full.

use std::io::{self, BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConnection;

use crate::policy::send::outbound::{Outbound, SendBuf, Sent};

/// Most bytes of the queue one seal takes: one full TLS record.
pub(crate) const SEAL_BYTES: usize = 16 * 1024;

/// The server's certificate and key, and the files they come from.
#[derive(Debug)]
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl Certs {
    /// Reads the certificate chain and key from PEM files. The message
    /// of the error says which file is wrong and why.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        let config = server_config(cert, key)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// Reads the files again. On success, new connections use the new
    /// certificate; on failure, the old one stays and the error says why.
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// A new connection's TLS state, with the current certificate.
    pub(crate) fn accept(&self) -> Result<Tls, rustls::Error> {
        let config = Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()));
        Ok(Tls::new(ServerConnection::new(config)?))
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{} has no PEM certificate (-----BEGIN CERTIFICATE-----)",
            cert.display()
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "the certificate {} and the key {} do not make a usable pair: {e}",
                cert.display(),
                key.display()
            )
        })
}

/// What the queue's bytes sealed into the record on its way count for,
/// once the kernel has taken all of it.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    /// Messages and bytes of the queue it holds.
    pub(crate) sent: Sent,
}

/// What a read of ciphertext gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Input {
    /// This many bytes of plaintext were added to the buffer.
    Plain(usize),
    /// The client closed the TLS session (`close_notify`).
    Closed,
    /// More ciphertext is needed.
    Need,
}

/// One connection's TLS state. See the module documentation.
#[derive(Debug)]
pub(crate) struct Tls {
    conn: ServerConnection,
    /// Ciphertext on its way to the kernel, from `taken` on.
    wire: Bytes,
    taken: usize,
    /// Where the next ciphertext is written; its allocation comes back
    /// once the kernel has taken `wire`.
    spare: BytesMut,
    carried: Carried,
    /// Messages left the queue for a record since the last
    /// [`sealed_since`](Self::sealed_since).
    fresh: bool,
    /// The handshake completed, and the reader heard of it.
    established: bool,
}

impl Tls {
    fn new(conn: ServerConnection) -> Self {
        Self {
            conn,
            wire: Bytes::new(),
            taken: 0,
            spare: BytesMut::new(),
            carried: Carried::default(),
            fresh: false,
            established: false,
        }
    }

    /// True while ciphertext waits to go to the kernel, or rustls has some
    /// to write (handshake messages, alerts, tickets).
    pub(crate) fn has_output(&self) -> bool {
        self.taken < self.wire.len() || self.conn.wants_write()
    }

    /// True while the record on its way holds bytes of the queue: a
    /// message offered meanwhile cannot be sent before it.
    fn sending(&self) -> bool {
        self.taken < self.wire.len()
    }

    /// Unless a record is still on its way: seals up to [`SEAL_BYTES`] of
    /// `out`'s queue (once the handshake is done), taking them off the
    /// queue, and puts it with whatever else rustls has to send into the
    /// ciphertext [`fill`](Self::fill) hands out.
    pub(crate) fn seal(&mut self, out: &mut Outbound) {
        if self.sending() {
            return;
        }
        if !self.conn.is_handshaking() && !out.is_empty() {
            thread_local! {
                static PLAIN: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
            }
            PLAIN.with_borrow_mut(|plain| {
                plain.clear();
                out.fill(&mut Copied {
                    plain,
                    room: SEAL_BYTES,
                });
                // rustls takes all of it: its buffer is empty and the
                // limit (64 KiB) is above one seal.
                let took = self.conn.writer().write(plain).unwrap_or(0);
                // Off the queue, but not sent: nothing ends before the
                // kernel has taken the record.
                let sent = out.take(took).sent;
                self.fresh |= sent.messages > 0;
                self.carried.sent = sent;
            });
        }
        if self.conn.wants_write() {
            let mut writer = (&mut self.spare).writer();
            while self.conn.wants_write() {
                // Writing into memory does not fail.
                if self.conn.write_tls(&mut writer).is_err() {
                    break;
                }
            }
            self.wire = self.spare.split().freeze();
            self.taken = 0;
        }
    }

    /// True if messages left the queue for a record since it was last
    /// asked: a deliverer waiting for room may offer again.
    pub(crate) fn sealed_since(&mut self) -> bool {
        std::mem::take(&mut self.fresh)
    }

    /// Messages sealed in the record on its way: the kernel has not
    /// taken all of them yet.
    pub(crate) fn sealed(&self) -> usize {
        if self.sending() {
            self.carried.sent.messages
        } else {
            0
        }
    }

    /// Puts the ciphertext on its way into `out`; returns its length.
    pub(crate) fn fill<'a>(&'a self, out: &mut impl SendBuf<'a>) -> usize {
        if !self.sending() {
            return 0;
        }
        out.refer(&self.wire, self.taken);
        self.wire.len() - self.taken
    }

    /// The kernel took `n` bytes of the ciphertext. Returns what the
    /// record counts for if that was the last of it.
    pub(crate) fn took(&mut self, n: usize) -> Option<Carried> {
        self.taken = (self.taken + n).min(self.wire.len());
        if self.sending() {
            return None;
        }
        // The allocation is written again once `wire` is let go.
        self.wire = Bytes::new();
        self.taken = 0;
        Some(std::mem::take(&mut self.carried))
    }

    /// Nothing is left to send: lets the ciphertext buffer go, so that an
    /// idle client holds none (a busy one keeps reusing it).
    pub(crate) fn rest(&mut self) {
        if !self.has_output() {
            self.spare = BytesMut::new();
        }
    }

    /// Decrypts what `cipher` holds and moves up to `max` bytes of
    /// plaintext onto the end of `plain`. An error is the client's: a
    /// broken record, a failed handshake.
    pub(crate) fn read(
        &mut self,
        cipher: &mut BytesMut,
        plain: &mut BytesMut,
        max: usize,
    ) -> io::Result<Input> {
        loop {
            let mut reader = self.conn.reader();
            match reader.fill_buf() {
                Ok([]) => return Ok(Input::Closed),
                Ok(buf) => {
                    let n = buf.len().min(max);
                    plain.extend_from_slice(&buf[..n]);
                    reader.consume(n);
                    return Ok(Input::Plain(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if cipher.is_empty() {
                return Ok(Input::Need);
            }
            let n = self.conn.read_tls(&mut &cipher[..])?;
            cipher.advance(n);
            self.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }

    /// True once, when the handshake has just completed.
    pub(crate) fn just_established(&mut self) -> bool {
        if self.established || self.conn.is_handshaking() {
            return false;
        }
        self.established = true;
        true
    }

    /// Drops what waits to be sent (the connection is closing).
    pub(crate) fn clear(&mut self) {
        self.wire = Bytes::new();
        self.taken = 0;
        self.carried = Carried::default();
    }
}

/// A [`SendBuf`] that copies up to `room` bytes of the queue into one
/// buffer, for sealing.
struct Copied<'p> {
    plain: &'p mut Vec<u8>,
    room: usize,
}

impl<'a> SendBuf<'a> for Copied<'_> {
    fn copy(&mut self, part: &[u8]) {
        let n = part.len().min(self.room);
        self.plain.extend_from_slice(&part[..n]);
        self.room -= n;
    }

    fn refer(&mut self, bytes: &'a Bytes, start: usize) {
        self.copy(&bytes[start..]);
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
