//! One client connection on a `uring` core: the runtime glue the shared
//! [`crate::engine::session`] code needs, and nothing else.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::os::fd::AsRawFd as _;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_uring::buf::BoundedBuf as _;
use tokio_uring::net::TcpStream;

use crate::engine::session::{Link, Session};
use crate::policy::inbound::Inbound;
use crate::sys::send::send_now;

pub(super) struct Conn {
    session: RefCell<Session>,
    stream: TcpStream,
    /// Wakes the writer (one waiter; a permit is kept if it is busy).
    writer: Notify,
    /// Wakes deliverers waiting for room in the queue.
    room: Notify,
}

impl Conn {
    pub(super) fn new(session: Session, stream: TcpStream) -> Self {
        Self {
            session: RefCell::new(session),
            stream,
            writer: Notify::new(),
            room: Notify::new(),
        }
    }
}

impl Link for Conn {
    fn with<R>(&self, f: impl FnOnce(&mut Session) -> R) -> R {
        f(&mut self.session.borrow_mut())
    }

    fn try_send(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        send_now(self.stream.as_raw_fd(), bufs)
    }

    fn wake_writer(&self) {
        self.writer.notify_one();
    }

    fn writer_woken(&self) -> impl Future<Output = ()> {
        self.writer.notified()
    }

    fn room(&self) -> &Notify {
        &self.room
    }

    /// Hands `rest` to the kernel through the ring: the write completes
    /// once the socket has room for some of it.
    async fn writable(&self, rest: Bytes) -> io::Result<usize> {
        let (result, _) = self.stream.write(rest).submit().await;
        match result {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            other => other,
        }
    }

    async fn read(&self, inbound: &mut Inbound, max: usize) -> io::Result<usize> {
        let buf = inbound.take();
        let start = buf.len();
        let (result, slice) = self.stream.read(buf.slice(start..start + max)).await;
        inbound.put_back(slice.into_inner());
        result
    }

    fn shutdown(&self, how: Shutdown) {
        let _ = self.stream.shutdown(how);
    }
}
