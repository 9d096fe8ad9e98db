//! One client connection on a `uring` core: its queue, its reader task and
//! its writer task.

use std::cell::{Cell, RefCell};
use std::net::{Shutdown, SocketAddr};
use std::pin::pin;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

use super::Core;
use crate::coalesce::push_wakes_writer;
use crate::engine::{CloseReason, LINE_BUDGET, READ_MIN, WRITE_BATCH, next_read_size};
use crate::line::LineSplitter;
use crate::metrics::Shard;
use crate::queue::{Admission, OutQueue};

pub(super) struct Conn {
    id: u64,
    peer: SocketAddr,
    key: Cell<usize>,
    stream: TcpStream,
    queue: RefCell<OutQueue>,
    closed: Cell<bool>,
    /// The core's idle tick when the client last sent something.
    last_active: Cell<u64>,
    /// Wakes the writer (one waiter; a permit is kept if it is busy).
    writer: Notify,
    /// Wakes publishers waiting for room in the queue.
    room: Notify,
}

impl Conn {
    pub(super) fn new(id: u64, peer: SocketAddr, stream: TcpStream, queue: OutQueue) -> Self {
        Self {
            id,
            peer,
            key: Cell::new(usize::MAX),
            stream,
            queue: RefCell::new(queue),
            closed: Cell::new(false),
            last_active: Cell::new(0),
            writer: Notify::new(),
            room: Notify::new(),
        }
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }

    pub(super) fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub(super) fn key(&self) -> usize {
        self.key.get()
    }

    pub(super) fn set_key(&self, key: usize) {
        self.key.set(key);
    }

    /// Marks the connection closed; false if it already was. Shuts the socket
    /// down both ways so in-flight reads and writes complete, and wakes every
    /// task that might be waiting on it.
    pub(super) fn mark_closed(&self) -> bool {
        if self.closed.replace(true) {
            return false;
        }
        self.queue.borrow_mut().clear();
        let _ = self.stream.shutdown(Shutdown::Both);
        self.writer.notify_one();
        self.room.notify_waiters();
        true
    }

    pub(super) fn last_active(&self) -> u64 {
        self.last_active.get()
    }

    pub(super) fn shutdown_read(&self) {
        let _ = self.stream.shutdown(Shutdown::Read);
    }

    pub(super) fn wake_writer(&self) {
        self.writer.notify_one();
    }

    /// Offers a message; see [`Admission`]. Dropping is counted here.
    pub(super) fn offer(&self, msg: &Bytes, shard: &Shard) -> Admission {
        if self.closed.get() {
            return Admission::Queued; // going away: nothing to deliver or count
        }
        let mut queue = self.queue.borrow_mut();
        let admission = queue.offer(msg, Instant::now);
        match admission {
            // Wake the writer only when the queue becomes non-empty, or
            // reaches a mark where a writer waiting to coalesce should go: a
            // busy writer comes back for the rest by itself.
            Admission::Queued if push_wakes_writer(&queue, msg.len()) => self.writer.notify_one(),
            Admission::Queued | Admission::Wait(_) => {}
            Admission::Dropped => shard.dropped(),
        }
        admission
    }

    /// Waits until the queue has room, the client is marked stalled, the
    /// connection closes, or `deadline` passes.
    pub(super) async fn wait_room(&self, deadline: Instant) {
        let mut timeout = pin!(tokio::time::sleep_until(deadline.into()));
        loop {
            let notified = pin!(self.room.notified());
            if self.closed.get() || self.queue.borrow().ready_for_retry() {
                return;
            }
            tokio::select! {
                () = notified => {}
                () = &mut timeout => return,
            }
        }
    }
}

/// Reads lines from the client and publishes them, in order.
pub(super) async fn read_loop(core: Rc<Core>, conn: Rc<Conn>) {
    let mut buf = BytesMut::with_capacity(READ_MIN);
    let mut window = READ_MIN;
    let mut splitter = LineSplitter::new(core.settings.max_line);
    loop {
        if buf.capacity() - buf.len() < window {
            // Allocates only when earlier lines still hold the old buffer,
            // which then serves all the lines of the next read.
            buf.reserve(window);
        }
        let (start, end) = (buf.len(), buf.capacity());
        let (result, slice) = conn.stream.read(buf.slice(start..end)).await;
        buf = slice.into_inner();
        let reason = match result {
            Ok(0) => Some(CloseReason::PeerClosed),
            Ok(n) => {
                window = next_read_size(window, n == end - start);
                conn.last_active.set(core.tick.get());
                None
            }
            Err(e) => {
                tracing::debug!(conn = conn.id, peer = %conn.peer, error = %e, "read failed");
                Some(CloseReason::ReadError)
            }
        };
        if let Some(reason) = reason {
            // During shutdown an EOF is our own doing: the connection stays
            // open for its writer to flush. A partial line is discarded.
            if !core.stopping.get() {
                core.close(&conn, reason);
            }
            break;
        }
        if conn.closed.get() {
            break;
        }
        let mut budget = LINE_BUDGET;
        let too_long = loop {
            match splitter.next_line(&mut buf) {
                Ok(Some(line)) => {
                    core.publish(line).await;
                    budget -= 1;
                    if budget == 0 {
                        core.outbox.borrow_mut().ring();
                        tokio::task::yield_now().await;
                        budget = LINE_BUDGET;
                    }
                }
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        // Wake the other cores for this read's lines, on every way out: a
        // client that leaves with an overlong line sends nothing more that
        // would ring for the lines before it.
        core.outbox.borrow_mut().ring();
        if too_long {
            core.shard().too_long();
            core.close(&conn, CloseReason::LineTooLong);
            break;
        }
    }
    core.reader_exited();
}

/// Writes queued messages to the client, many per write.
pub(super) async fn write_loop(core: Rc<Core>, conn: Rc<Conn>) {
    // Allocated on first use and kept, so idle clients cost nothing here.
    let mut buf: Vec<u8> = Vec::new();
    loop {
        loop {
            if conn.closed.get() {
                return;
            }
            if !conn.queue.borrow().is_empty() {
                break;
            }
            if core.flushing.get() {
                core.close(&conn, CloseReason::Shutdown);
                return;
            }
            conn.writer.notified().await;
        }
        // While the core is busy, let a short queue fill up a little more.
        while !conn.closed.get() && core.coalescer.should_wait(&conn.queue.borrow()) {
            tokio::select! {
                () = core.coalescer.next_flush() => break,
                () = conn.writer.notified() => {}
            }
        }
        if conn.closed.get() {
            return;
        }
        let messages = conn.queue.borrow_mut().take_batch(&mut buf, WRITE_BATCH);
        conn.room.notify_waiters();
        let total = buf.len();
        let mut written = 0;
        while written < total {
            let (result, slice) = conn.stream.write(buf.slice(written..)).submit().await;
            buf = slice.into_inner();
            match result {
                Ok(n) if n > 0 => written += n,
                Ok(_) | Err(_) => {
                    core.close(&conn, CloseReason::WriteError);
                    return;
                }
            }
        }
        conn.queue.borrow_mut().write_done();
        core.shard().sent(messages, total);
        buf.clear();
        if buf.capacity() > 2 * WRITE_BATCH {
            // One huge line grew the buffer; do not keep it for good.
            buf = Vec::new();
        }
    }
}
