//! One client connection on a `uring` core: the runtime glue the shared
//! [`crate::engine::session`] code needs, and nothing else. Its sends and
//! its waits for room go through the core's send ring (see
//! [`crate::sys::sendring`]).

use std::cell::{Cell, RefCell};
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd as _, RawFd};

use tokio::sync::Notify;
use tokio_uring::buf::BoundedBuf as _;
use tokio_uring::net::TcpStream;

use crate::engine::session::{Link, Session};
use crate::policy::codec::inbound::Inbound;

pub(super) struct Conn {
    session: RefCell<Session>,
    stream: TcpStream,
    /// Wakes deliverers waiting for room in the queue.
    room: Notify,
    /// In the core's list of connections with something to send.
    pub(super) due: Cell<bool>,
    /// A wait for the socket to take more is armed on the send ring.
    pub(super) polling: Cell<bool>,
}

impl Conn {
    pub(super) fn new(session: Session, stream: TcpStream) -> Self {
        Self {
            session: RefCell::new(session),
            stream,
            room: Notify::new(),
            due: Cell::new(false),
            polling: Cell::new(false),
        }
    }

    /// The socket, for the send ring.
    pub(super) fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

impl Link for Conn {
    fn with<R>(&self, f: impl FnOnce(&mut Session) -> R) -> R {
        f(&mut self.session.borrow_mut())
    }

    fn room(&self) -> &Notify {
        &self.room
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
