//! One client connection on the `tokio` engine: the runtime glue the
//! shared [`crate::engine::session`] code needs, and nothing else.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::os::fd::AsRawFd as _;
use std::sync::Mutex;

use bytes::BufMut as _;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::engine::session::{Link, Session};
use crate::policy::codec::inbound::Inbound;
use crate::sys::send::send_now;

pub(super) struct Conn {
    session: Mutex<Session>,
    stream: TcpStream,
    writer: Notify,
    /// Wakes deliverers waiting for room in the queue.
    room: Notify,
}

impl Conn {
    pub(super) fn new(session: Session, stream: TcpStream) -> Self {
        Self {
            session: Mutex::new(session),
            stream,
            writer: Notify::new(),
            room: Notify::new(),
        }
    }
}

impl Conn {
    /// Sends without blocking, through tokio, so that a refused send
    /// clears the socket's readiness and [`writable`](Self::writable)
    /// waits for the next edge.
    pub(super) fn try_send(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.stream.try_io(Interest::WRITABLE, || {
            send_now(self.stream.as_raw_fd(), bufs)
        })
    }

    /// Wakes the writer (a permit is kept if it is not waiting).
    pub(super) fn wake_writer(&self) {
        self.writer.notify_one();
    }

    /// Resolves when the writer is woken.
    pub(super) fn writer_woken(&self) -> impl Future<Output = ()> {
        self.writer.notified()
    }

    /// Waits for epoll to report the socket writable; sends nothing.
    pub(super) async fn writable(&self) -> io::Result<()> {
        self.stream.writable().await
    }
}

impl Link for Conn {
    fn with<R>(&self, f: impl FnOnce(&mut Session) -> R) -> R {
        f(&mut self.session.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn room(&self) -> &Notify {
        &self.room
    }

    async fn read(&self, inbound: &mut Inbound, max: usize) -> io::Result<usize> {
        loop {
            self.stream.readable().await?;
            match self.stream.try_read_buf(&mut inbound.buffer().limit(max)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }

    fn shutdown(&self, how: Shutdown) {
        let _ = SockRef::from(&self.stream).shutdown(how);
    }
}
