//! One client connection on the `tokio` engine.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use socket2::SockRef;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::Hub;
use crate::coalesce::push_wakes_writer;
use crate::engine::{CloseReason, LINE_BUDGET, READ_MIN, WRITE_BATCH, next_read_size};
use crate::line::LineSplitter;
use crate::metrics::Shard;
use crate::queue::{Admission, OutQueue};

struct State {
    queue: OutQueue,
    closed: bool,
}

pub(super) struct Conn {
    id: u64,
    peer: SocketAddr,
    key: AtomicUsize,
    /// The hub's idle tick when the client last sent something.
    last_active: AtomicU64,
    stream: TcpStream,
    state: Mutex<State>,
    writer: Notify,
    room: Notify,
}

impl Conn {
    pub(super) fn new(id: u64, peer: SocketAddr, stream: TcpStream, queue: OutQueue) -> Self {
        Self {
            id,
            peer,
            key: AtomicUsize::new(usize::MAX),
            last_active: AtomicU64::new(0),
            stream,
            state: Mutex::new(State {
                queue,
                closed: false,
            }),
            writer: Notify::new(),
            room: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }

    pub(super) fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub(super) fn key(&self) -> usize {
        self.key.load(Ordering::Relaxed)
    }

    pub(super) fn set_key(&self, key: usize) {
        self.key.store(key, Ordering::Relaxed);
    }

    /// Marks the connection closed; false if it already was.
    pub(super) fn mark_closed(&self) -> bool {
        {
            let mut state = self.state();
            if state.closed {
                return false;
            }
            state.closed = true;
            state.queue.clear();
        }
        let _ = SockRef::from(&self.stream).shutdown(Shutdown::Both);
        self.writer.notify_one();
        self.room.notify_waiters();
        true
    }

    pub(super) fn last_active(&self) -> u64 {
        self.last_active.load(Ordering::Relaxed)
    }

    pub(super) fn shutdown_read(&self) {
        let _ = SockRef::from(&self.stream).shutdown(Shutdown::Read);
    }

    pub(super) fn wake_writer(&self) {
        self.writer.notify_one();
    }

    pub(super) fn offer(&self, msg: &Bytes, shard: &Shard) -> Admission {
        let mut state = self.state();
        if state.closed {
            return Admission::Queued;
        }
        let admission = state.queue.offer(msg, Instant::now);
        let wake = admission == Admission::Queued && push_wakes_writer(&state.queue, msg.len());
        drop(state);
        match admission {
            Admission::Queued if wake => self.writer.notify_one(),
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
            {
                let state = self.state();
                if state.closed || state.queue.ready_for_retry() {
                    return;
                }
            }
            tokio::select! {
                () = notified => {}
                () = &mut timeout => return,
            }
        }
    }
}

pub(super) async fn read_loop(hub: Arc<Hub>, conn: Arc<Conn>) {
    let mut buf = BytesMut::with_capacity(READ_MIN);
    let mut window = READ_MIN;
    let mut splitter = LineSplitter::new(hub.max_line);
    'read: loop {
        if buf.capacity() - buf.len() < window {
            buf.reserve(window);
        }
        let spare = buf.capacity() - buf.len();
        let result = match conn.stream.readable().await {
            Ok(()) => conn.stream.try_read_buf(&mut buf),
            Err(e) => Err(e),
        };
        let reason = match result {
            Ok(0) => Some(CloseReason::PeerClosed),
            Ok(n) => {
                window = next_read_size(window, n == spare);
                conn.last_active
                    .store(hub.tick.load(Ordering::Relaxed), Ordering::Relaxed);
                None
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::debug!(conn = conn.id, peer = %conn.peer, error = %e, "read failed");
                Some(CloseReason::ReadError)
            }
        };
        if let Some(reason) = reason {
            if !hub.stopping.load(Ordering::SeqCst) {
                hub.close(&conn, reason);
            }
            break;
        }
        let mut budget = LINE_BUDGET;
        loop {
            match splitter.next_line(&mut buf) {
                Ok(Some(line)) => {
                    hub.publish(line).await;
                    budget -= 1;
                    if budget == 0 {
                        tokio::task::yield_now().await;
                        budget = LINE_BUDGET;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    hub.shard().too_long();
                    hub.close(&conn, CloseReason::LineTooLong);
                    break 'read;
                }
            }
        }
        if conn.state().closed {
            break;
        }
    }
    hub.reader_exited();
}

pub(super) async fn write_loop(hub: Arc<Hub>, conn: Arc<Conn>) {
    let mut buf: Vec<u8> = Vec::new();
    // A flush came while this writer waited to coalesce: write what is queued.
    let mut flush_due = false;
    loop {
        let messages = loop {
            let wait_for_flush = {
                let mut state = conn.state();
                if state.closed {
                    return;
                }
                if !state.queue.is_empty() {
                    // While the runtime is busy, let a short queue fill up a
                    // little more before writing it.
                    if flush_due || !hub.coalescer.should_wait(&state.queue) {
                        break state.queue.take_batch(&mut buf, WRITE_BATCH);
                    }
                    true
                } else if hub.flushing.load(Ordering::SeqCst) {
                    drop(state);
                    hub.close(&conn, CloseReason::Shutdown);
                    return;
                } else {
                    false
                }
            };
            if wait_for_flush {
                tokio::select! {
                    () = hub.coalescer.next_flush() => flush_due = true,
                    () = conn.writer.notified() => {}
                }
            } else {
                conn.writer.notified().await;
            }
        };
        flush_due = false;
        conn.room.notify_waiters();
        let mut written = 0;
        while written < buf.len() {
            match conn.stream.try_write(&buf[written..]) {
                Ok(n) if n > 0 => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if conn.stream.writable().await.is_err() {
                        hub.close(&conn, CloseReason::WriteError);
                        return;
                    }
                }
                Ok(_) | Err(_) => {
                    hub.close(&conn, CloseReason::WriteError);
                    return;
                }
            }
        }
        conn.state().queue.write_done();
        hub.shard().sent(messages, buf.len());
        buf.clear();
        if buf.capacity() > 2 * WRITE_BATCH {
            buf = Vec::new();
        }
    }
}
