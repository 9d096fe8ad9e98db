//! Connections: what readers and publishers do with one, plain or TLS
//! ([`Conn`]); opening them, writing to them against a deadline, and the
//! error for one the server closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Connections opened concurrently.
const CONNECT_BATCH: usize = 128;
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client's connection, as the readers, the publishers and the slow
/// readers use it: tokio's [`TcpStream`] itself for plain TCP, or a
/// [`TlsConn`](crate::tls::TlsConn). The tasks are generic over it, so
/// the plain path calls tokio directly, as it did before TLS. Shared by
/// reference between a reader and a publisher on the same connection.
pub(crate) trait Conn: Send + Sync + Sized + 'static {
    /// What opening one takes besides a connected socket.
    type Setup: Clone + Send + Sync + 'static;

    /// Makes a connection of this kind of the connected `tcp`.
    fn open(tcp: TcpStream, setup: &Self::Setup) -> impl Future<Output = io::Result<Self>> + Send;

    /// The socket underneath.
    fn tcp(&self) -> &TcpStream;

    /// Waits until [`try_read`](Conn::try_read) may have bytes.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// Reads what has arrived: 0 when the server closed, `WouldBlock` if
    /// nothing has.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;

    /// Waits until [`try_write`](Conn::try_write) may take bytes.
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// Takes what it can of `buf` without waiting; `WouldBlock` if nothing.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;

    /// Hands the kernel what `try_write` took but kept; `WouldBlock` while
    /// some is left. Plain TCP keeps nothing.
    fn try_flush(&self) -> io::Result<()>;
}

impl Conn for TcpStream {
    type Setup = ();

    async fn open(tcp: TcpStream, _: &()) -> io::Result<Self> {
        Ok(tcp)
    }

    #[inline]
    fn tcp(&self) -> &TcpStream {
        self
    }

    #[inline]
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        TcpStream::readable(self)
    }

    #[inline]
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }

    #[inline]
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        TcpStream::writable(self)
    }

    #[inline]
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }

    #[inline]
    fn try_flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Opens a connection for each client in `clients`, client `i` to
/// `target_of(i)`, [`CONNECT_BATCH`] at a time, and makes each a
/// `C` with `setup` (for TLS: the handshake). With `rcvbuf`, each asks for
/// that receive buffer before it connects.
pub(crate) async fn connect_all<C: Conn>(
    target_of: impl Fn(usize) -> SocketAddr,
    clients: Range<usize>,
    rcvbuf: Option<usize>,
    setup: &C::Setup,
) -> anyhow::Result<Vec<Arc<C>>> {
    let mut streams = Vec::with_capacity(clients.len());
    for from in clients.clone().step_by(CONNECT_BATCH) {
        let to = (from + CONNECT_BATCH).min(clients.end);
        let mut batch = JoinSet::new();
        for client in from..to {
            let addr = target_of(client);
            let setup = setup.clone();
            batch.spawn(async move { (client, open::<C>(client, addr, rcvbuf, &setup).await) });
        }
        let mut got: Vec<Option<C>> = (from..to).map(|_| None).collect();
        let mut failed: Option<(usize, anyhow::Error)> = None;
        while let Some(done) = batch.join_next().await {
            let (client, result) = done.map_err(|e| anyhow!("a connect task failed: {e}"))?;
            match result {
                Ok(stream) => got[client - from] = Some(stream),
                Err(e) => {
                    if failed.as_ref().is_none_or(|(first, _)| client < *first) {
                        failed = Some((client, e));
                    }
                }
            }
        }
        if let Some((_, e)) = failed {
            return Err(e);
        }
        for stream in got {
            streams.push(Arc::new(stream.context("a connect task vanished")?));
        }
    }
    Ok(streams)
}

/// Opens one connection and makes it a `C`.
async fn open<C: Conn>(
    client: usize,
    addr: SocketAddr,
    rcvbuf: Option<usize>,
    setup: &C::Setup,
) -> anyhow::Result<C> {
    let tcp = connect(client, addr, rcvbuf).await?;
    match tokio::time::timeout(CONNECT_TIMEOUT, C::open(tcp, setup)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => bail!("TLS handshake of client {client} with {addr} failed: {e}"),
        Err(_) => bail!(
            "TLS handshake of client {client} with {addr} timed out after {}",
            humantime::format_duration(CONNECT_TIMEOUT)
        ),
    }
}

/// Opens one connection, with a receive buffer of `rcvbuf` bytes if given.
async fn connect(
    client: usize,
    addr: SocketAddr,
    rcvbuf: Option<usize>,
) -> anyhow::Result<TcpStream> {
    let socket = socket(addr, rcvbuf)
        .with_context(|| format!("cannot open a socket for client {client}"))?;
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr)).await {
        Err(_) => bail!(
            "cannot connect client {client} to {addr}: timed out after {}",
            humantime::format_duration(CONNECT_TIMEOUT)
        ),
        Ok(Err(e)) => {
            let hint = if e.raw_os_error() == Some(24) {
                " (raise the open-file limit, e.g. `ulimit -n 65536`)"
            } else {
                ""
            };
            bail!("cannot connect client {client} to {addr}: {e}{hint}");
        }
        Ok(Ok(stream)) => stream,
    };
    stream
        .set_nodelay(true)
        .with_context(|| format!("cannot set TCP_NODELAY on client {client}"))?;
    Ok(stream)
}

/// A socket for `addr`, not yet connected. The receive buffer has to be
/// set before connecting: the window scale is agreed in the handshake, so
/// a buffer shrunk afterwards would not shrink the window the server sees.
fn socket(addr: SocketAddr, rcvbuf: Option<usize>) -> io::Result<TcpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(bytes) = rcvbuf {
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.set_nonblocking(true)?;
    Ok(TcpSocket::from_std_stream(socket.into()))
}

/// The receive buffer the kernel gave `stream` (on Linux twice what was
/// asked for, and at least its minimum).
pub(crate) fn rcvbuf(stream: &impl Conn) -> io::Result<usize> {
    SockRef::from(stream.tcp()).recv_buffer_size()
}

/// The error for a connection the server closed, or that failed, mid-run.
pub(crate) fn closed(client: usize, error: Option<io::Error>) -> anyhow::Error {
    match error {
        None => anyhow!("server closed connection of client {client} during the run"),
        Some(e) => anyhow!("server closed connection of client {client} during the run: {e}"),
    }
}

/// Writes `buf` unless `deadline` passes first; returns the bytes written.
/// Over TLS, the bytes written have all reached the kernel, unless the
/// deadline came first.
pub(crate) async fn write_until<C: Conn>(
    stream: &C,
    buf: &[u8],
    deadline: Instant,
) -> io::Result<usize> {
    let mut off = 0;
    while off < buf.len() {
        match stream.try_write(&buf[off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::select! {
                    ready = stream.writable() => ready?,
                    _ = tokio::time::sleep_until(deadline) => return Ok(off),
                }
            }
            Err(e) => return Err(e),
        }
    }
    loop {
        match stream.try_flush() {
            Ok(()) => return Ok(off),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::select! {
                    ready = stream.writable() => ready?,
                    _ = tokio::time::sleep_until(deadline) => return Ok(off),
                }
            }
            Err(e) => return Err(e),
        }
    }
}
