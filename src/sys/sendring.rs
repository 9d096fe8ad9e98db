//! The `uring` engine's send ring: a second io_uring per core, beside
//! tokio-uring's own, that carries a core's sends and its waits for
//! writable sockets.
//!
//! tokio-uring's ring is private and submits only when its runtime parks.
//! This one is driven by hand, with the `io-uring` crate:
//!
//! - **Sends go together.** A [`Batch`] collects one send per connection
//!   and submits them all with one `io_uring_enter`. Each is a
//!   `MSG_DONTWAIT` send, which the kernel issues at once and completes with
//!   what the socket took, or `EAGAIN`: never parked to retry later. So
//!   [`Batch::submit`] returns every answer before it returns, and the
//!   policy decides on the socket's real answer, as it would after a
//!   `sendmsg(2)`.
//! - **Waiting for room moves no bytes.** [`SendRing::poll_writable`] arms
//!   a multishot `POLL_ADD` for `POLLOUT`; a completion only says the
//!   socket may have room, and the next send goes through the policy like
//!   any other. Multishot, because it reports edges, as epoll's
//!   edge-triggered mode does: a one-shot poll looks at the socket's state
//!   when armed, and io_uring always reports `EPOLLRDHUP`, so on a socket
//!   shut for reading a one-shot poll for room completes at once, every
//!   time, however full the socket is. A multishot poll stays armed until
//!   [`SendRing::cancel_poll`] (or the ring) ends it; it holds its own
//!   reference to the socket until then.
//!
//! # Memory safety
//!
//! This is the crate's one module of hand-written `unsafe` for io_uring
//! (and for registering the ring's descriptor with tokio's epoll,
//! [`watch`]).
//! A submission points the kernel at memory: the bytes to send, the iovec
//! array and the `msghdr` of a vectored send. Everything a send points at
//! is owned by the ring itself (a copy in its arena, or a clone of the
//! queued `Bytes` handle), and is released only once every send of the
//! batch has been answered. A poll points at nothing.
//!
//! If `io_uring_enter` fails for a reason other than a retry, sends of the
//! batch may sit in the submission queue, and the kernel would take them at
//! the next submission: the ring is then **broken** for good. Its batch's
//! storage is kept for the ring's life (the ring's descriptor is closed
//! first when it drops, and the kernel discards what it never took), the
//! sends not answered fail, and the ring submits nothing more: a send is
//! never made twice, and never reaches a descriptor reused since. The
//! engine stops the core ([`SendRing::broken`]).

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::io::{self, Write as _};
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use bytes::Bytes;
use io_uring::{IoUring, opcode, squeue, types};
use nix::libc;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::policy::send::outbound::SendBuf;

/// Submission entries of a send ring: a batch bigger than this goes in
/// chunks of it.
pub(crate) const SEND_ENTRIES: u32 = 1024;

/// Marks a completion as a poll's; a send's user data is its index in the
/// batch.
const POLL: u64 = 1 << 63;
/// Under [`POLL`], marks the completion of a poll's removal.
const REMOVE: u64 = 1 << 62;
/// Bytes of copies a batch should hold at most: a caller starts another
/// batch past this ([`Batch::copied`]), so the arena stays near it.
pub(crate) const BATCH_COPIES: usize = 1 << 20;
/// Bytes the arena keeps between batches: a batch holds at most
/// [`BATCH_COPIES`] and one more send's copy.
const ARENA_KEEP: usize = 2 * BATCH_COPIES;
/// Entries each list of a [`Store`] keeps between batches. A batch of
/// vectored sends to many clients has no copies to bound it, so its lists
/// grow with the clients (about 100 B per piece); past this they are given
/// back once it is answered.
const LIST_KEEP: usize = 4 * SEND_ENTRIES as usize;

/// One core's send ring. See the module documentation.
pub(crate) struct SendRing {
    ring: IoUring,
    /// Storage of the batch being built or in flight.
    store: Store,
    /// Why the ring broke, if it did; see the module documentation.
    broken: Option<io::ErrorKind>,
    /// The storage of the batch whose submission broke the ring, kept for
    /// the ring's life: the kernel may still read it.
    stuck: Option<Store>,
    /// The answer to each send of the last batch, in order.
    results: Vec<io::Result<usize>>,
    /// Polls that reported, not yet taken: token, and whether the poll
    /// ended (it must be armed again to report more).
    woken: Vec<(u64, bool)>,
    /// Polls armed and not yet ended.
    armed: usize,
    /// Polls to arm (fd, token) or remove (no fd), not yet in the
    /// submission queue.
    to_push: Vec<(Option<RawFd>, u64)>,
}

/// What the sends of one batch point at.
#[derive(Default)]
struct Store {
    /// Bytes copied for gathered sends.
    arena: Vec<u8>,
    /// Handles of queued bytes that vectored sends refer to.
    held: Vec<Bytes>,
    /// Each piece: a range of the arena, or a held handle from an offset.
    pieces: Vec<Piece>,
    /// Each send: its socket and its pieces.
    jobs: Vec<(RawFd, Range<usize>)>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::msghdr>,
}

enum Piece {
    Arena(Range<usize>),
    Held(usize, usize),
}

impl Store {
    /// Once a batch is answered: lets go of its handles at once, and gives
    /// back what a big batch grew beyond what the next one likely needs.
    fn let_go(&mut self) {
        fn trim<T>(list: &mut Vec<T>, keep: usize) {
            if list.capacity() > keep {
                list.clear();
                list.shrink_to(keep);
            }
        }
        self.held.clear();
        trim(&mut self.held, LIST_KEEP);
        trim(&mut self.arena, ARENA_KEEP);
        trim(&mut self.pieces, LIST_KEEP);
        trim(&mut self.jobs, LIST_KEEP);
        trim(&mut self.iovecs, LIST_KEEP);
        trim(&mut self.msgs, LIST_KEEP);
    }

    fn clear(&mut self) {
        self.arena.clear();
        self.held.clear();
        self.pieces.clear();
        self.jobs.clear();
        self.iovecs.clear();
        self.msgs.clear();
    }
}

impl SendRing {
    /// A ring with [`SEND_ENTRIES`] entries. Plain: registered files and
    /// the task-run setup flags measured no better (decision 0033).
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            ring: IoUring::builder()
                .setup_cqsize(SEND_ENTRIES * 4)
                .build(SEND_ENTRIES)?,
            store: Store::default(),
            broken: None,
            stuck: None,
            results: Vec::new(),
            woken: Vec::new(),
            armed: 0,
            to_push: Vec::new(),
        })
    }

    /// Starts a batch of sends.
    pub(crate) fn batch(&mut self) -> Batch<'_> {
        // A broken ring's batch storage is in `stuck`; this one is ours.
        self.store.clear();
        Batch { ring: self }
    }

    /// Arms a multishot poll for `fd` to take more: `token` (below 2^62)
    /// comes back from [`take_woken`](Self::take_woken) each time the
    /// socket frees room (or changes state), until the poll ends.
    /// Submitted with the next batch or [`submit`](Self::submit).
    pub(crate) fn poll_writable(&mut self, fd: RawFd, token: u64) {
        self.to_push.push((Some(fd), token & !(POLL | REMOVE)));
        self.armed += 1;
    }

    /// Ends the poll armed with `token`: the kernel lets go of the socket.
    /// Its last report still comes back, as ended.
    pub(crate) fn cancel_poll(&mut self, token: u64) {
        self.to_push.push((None, token & !(POLL | REMOVE)));
    }

    /// Polls armed and not yet ended.
    pub(crate) fn armed(&self) -> usize {
        self.armed
    }

    /// Why the ring broke, if it did: it submits nothing more, and every
    /// send fails. See the module documentation.
    pub(crate) fn broken(&self) -> Option<io::ErrorKind> {
        self.broken
    }

    /// Submits the polls to arm or remove, all of them, and takes the
    /// completions there are, without waiting. What the polls reported is
    /// then in [`take_woken`](Self::take_woken).
    pub(crate) fn submit(&mut self) {
        loop {
            if self.broken.is_some() {
                return;
            }
            self.push_polls();
            if let Err(e) = self.ring.submit()
                && !retry(&e)
            {
                self.break_down(&e);
                return;
            }
            self.reap(&mut 0);
            if self.to_push.is_empty() {
                return;
            }
        }
    }

    /// `io_uring_enter` failed for good: see the module documentation.
    fn break_down(&mut self, e: &io::Error) {
        tracing::error!(error = %e, "io_uring submission of the send ring failed; this core stops");
        self.broken = Some(e.kind());
        self.stuck = Some(std::mem::take(&mut self.store));
    }

    /// Moves what the polls reported into `into`: each token, and whether
    /// that poll ended.
    pub(crate) fn take_woken(&mut self, into: &mut Vec<(u64, bool)>) {
        into.append(&mut self.woken);
    }

    /// Pushes the polls to arm or remove into the submission queue, as far
    /// as there is room, in the order they were asked for.
    fn push_polls(&mut self) {
        let mut pushed = 0;
        for &(fd, token) in &self.to_push {
            let entry = match fd {
                Some(fd) => opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
                    .multi(true)
                    .build()
                    .user_data(POLL | token),
                None => opcode::PollRemove::new(POLL | token)
                    .build()
                    .user_data(POLL | REMOVE | token),
            };
            // SAFETY: a poll and its removal point at no memory of ours; the
            // kernel holds its own reference to the socket.
            if unsafe { self.ring.submission().push(&entry) }.is_err() {
                break;
            }
            pushed += 1;
        }
        self.to_push.drain(..pushed);
    }

    /// Takes every completion there is: a send's answer into `results`
    /// (counting it in `answered`), a poll's token into `woken`.
    fn reap(&mut self, answered: &mut usize) {
        for cqe in self.ring.completion() {
            let data = cqe.user_data();
            if data & POLL != 0 {
                if data & REMOVE == 0 {
                    // A poll reports room, or a change of state; one that
                    // has ended (removed, or cut off) must be armed again.
                    let ended = !io_uring::cqueue::more(cqe.flags());
                    if ended {
                        self.armed = self.armed.saturating_sub(1);
                    }
                    self.woken.push((data & !POLL, ended));
                }
                continue;
            }
            // A batch returns only once every send of it is answered, and
            // a broken ring submits no other: the index is this batch's.
            if let Some(slot) = usize::try_from(data)
                .ok()
                .and_then(|i| self.results.get_mut(i))
            {
                *slot = if cqe.result() >= 0 {
                    Ok(cqe.result() as usize)
                } else {
                    Err(io::Error::from_raw_os_error(-cqe.result()))
                };
                *answered += 1;
            }
        }
    }

    /// Builds the iovecs and message headers of every send of the batch,
    /// once the arena no longer moves.
    fn point_sends(&mut self) {
        let store = &mut self.store;
        store.iovecs.clear();
        store.msgs.clear();
        for (_, pieces) in &store.jobs {
            for piece in &store.pieces[pieces.clone()] {
                let part: &[u8] = match piece {
                    Piece::Arena(range) => &store.arena[range.clone()],
                    Piece::Held(i, start) => &store.held[*i][*start..],
                };
                store.iovecs.push(libc::iovec {
                    iov_base: part.as_ptr().cast_mut().cast(),
                    iov_len: part.len(),
                });
            }
        }
        let base = store.iovecs.as_mut_ptr();
        for (_, pieces) in &store.jobs {
            // SAFETY: an all-zero msghdr is a valid empty one.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            // SAFETY: `pieces` is a range of `iovecs`, which holds one
            // entry per piece, in order, so the pointer stays inside it.
            msg.msg_iov = unsafe { base.add(pieces.start) };
            msg.msg_iovlen = pieces.len() as _;
            store.msgs.push(msg);
        }
    }

    /// The submission entry of send `i`: a plain send of one piece, or a
    /// vectored one.
    fn entry(&self, i: usize) -> squeue::Entry {
        let store = &self.store;
        let (fd, pieces) = &store.jobs[i];
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        let entry = match pieces.len() {
            0 => opcode::Send::new(types::Fd(*fd), std::ptr::null(), 0)
                .flags(flags)
                .build(),
            1 => {
                let iov = &store.iovecs[pieces.start];
                opcode::Send::new(
                    types::Fd(*fd),
                    iov.iov_base.cast(),
                    u32::try_from(iov.iov_len).unwrap_or(u32::MAX),
                )
                .flags(flags)
                .build()
            }
            _ => opcode::SendMsg::new(types::Fd(*fd), &raw const store.msgs[i])
                .flags(flags as u32)
                .build(),
        };
        entry.user_data(i as u64)
    }
}

/// Checks that the kernel has what a send ring needs beyond io_uring
/// itself: multishot polls (Linux 5.13). Without them a poll for room would
/// end at every report, and a socket shut for reading would be polled in a
/// loop; the engine is then not offered.
pub(crate) fn probe() -> io::Result<()> {
    let mut ring = SendRing::new()?;
    let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    // An empty socket has room: the poll reports at once.
    ring.poll_writable(a.as_raw_fd(), 1);
    ring.submit();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let mut woken = Vec::new();
    while woken.is_empty() {
        if std::time::Instant::now() >= deadline {
            return Err(io::Error::other("an io_uring poll never reported"));
        }
        std::thread::yield_now();
        ring.submit();
        ring.take_woken(&mut woken);
    }
    ring.cancel_poll(1);
    ring.submit();
    if woken[0].1 {
        return Err(io::Error::other(
            "io_uring has no multishot polls (Linux 5.13 or later needed)",
        ));
    }
    sends_are_answered_at_once(&mut ring)
}

/// Checks what the module rests on: a `MSG_DONTWAIT` send to a full socket
/// is answered with `EAGAIN` at once, not parked until the socket has room
/// (which would hold the core in [`Batch::submit`] for as long as a client
/// does not read). A kernel that parks it still answers once the peer
/// closes, which a watchdog does after a second.
fn sends_are_answered_at_once(ring: &mut SendRing) -> io::Result<()> {
    let (full, peer) = std::os::unix::net::UnixStream::pair()?;
    full.set_nonblocking(true)?;
    let chunk = [0u8; 4096];
    while (&full).write(&chunk).is_ok() {}
    let (done, watching) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let _ = watching.recv_timeout(std::time::Duration::from_secs(1));
        drop(peer);
    });
    let started = std::time::Instant::now();
    let mut batch = ring.batch();
    batch.add(full.as_raw_fd(), |job| {
        job.copy(&chunk[..1]);
        1
    });
    let answer = batch.submit()[0]
        .as_ref()
        .map(|n| *n)
        .map_err(io::Error::kind);
    let waited = started.elapsed();
    let _ = done.send(());
    let _ = watchdog.join();
    match answer {
        Err(io::ErrorKind::WouldBlock) if waited < std::time::Duration::from_secs(1) => Ok(()),
        other => Err(io::Error::other(format!(
            "an io_uring send to a full socket was not answered at once ({other:?} after {waited:?}): this kernel parks MSG_DONTWAIT sends; a newer one is needed"
        ))),
    }
}

/// Errors of `io_uring_enter` after which the submission is simply made
/// again.
fn retry(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
}

impl AsRawFd for SendRing {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// The ring's descriptor, registered with the runtime's epoll: readable
/// while completions wait to be reaped. Holding the ring keeps the
/// descriptor open for as long as the registration lives.
pub(crate) struct Watched(Rc<RefCell<SendRing>>);

impl AsRawFd for Watched {
    fn as_raw_fd(&self) -> RawFd {
        self.0.borrow().as_raw_fd()
    }
}

/// Registers `ring`'s descriptor with the running tokio runtime's epoll,
/// so that a task can sleep until the ring has completions (as
/// tokio-uring does for its own ring). tokio made registering a raw
/// descriptor unsafe: it cannot check the descriptor's lifetime.
pub(crate) fn watch(ring: Rc<RefCell<SendRing>>) -> io::Result<AsyncFd<Watched>> {
    // SAFETY: `register_with_interest` needs the descriptor to stay open,
    // and to be the one `as_raw_fd` returns, while the AsyncFd lives.
    // `Watched` holds the ring, which owns the descriptor, never replaces
    // it, and closes it only when dropped: after the AsyncFd, which holds
    // this reference, is gone.
    unsafe { AsyncFd::register_with_interest(Watched(ring), Interest::READABLE) }
        .map_err(io::Error::from)
}

/// The sends of one round, built one connection at a time, then submitted
/// together.
pub(crate) struct Batch<'r> {
    ring: &'r mut SendRing,
}

impl<'r> Batch<'r> {
    /// Adds a send to `fd` of what `fill` puts into the buffer it is given
    /// (see [`SendBuf`]); `fill` returns how many bytes that is. Returns
    /// the send's index in the batch.
    pub(crate) fn add(&mut self, fd: RawFd, fill: impl FnOnce(&mut Job<'_>) -> usize) -> usize {
        let first = self.ring.store.pieces.len();
        fill(&mut Job {
            store: &mut self.ring.store,
        });
        let store = &mut self.ring.store;
        store.jobs.push((fd, first..store.pieces.len()));
        store.jobs.len() - 1
    }

    /// Bytes copied into the batch so far.
    pub(crate) fn copied(&self) -> usize {
        self.ring.store.arena.len()
    }

    /// Submits every send of the batch, with the polls armed since the last
    /// submission, and returns the kernel's answer to each, in the order
    /// they were added. Every answer is in before it returns: the sends do
    /// not wait for room. On a broken ring, every send fails.
    pub(crate) fn submit(self) -> &'r mut [io::Result<usize>] {
        let ring = self.ring;
        let count = ring.store.jobs.len();
        ring.results.clear();
        if let Some(kind) = ring.broken {
            ring.results.resize_with(count, || Err(kind.into()));
            return &mut ring.results;
        }
        ring.results
            .resize_with(count, || Err(io::ErrorKind::Interrupted.into()));
        if count == 0 {
            ring.submit();
            return &mut ring.results;
        }
        ring.point_sends();
        let (mut pushed, mut answered) = (0, 0);
        while answered < count {
            // As many sends as the submission queue takes.
            let before = pushed;
            while pushed < count {
                let entry = ring.entry(pushed);
                // SAFETY: the entry points into `ring.store` (see
                // `point_sends`), which is neither changed nor freed until
                // every send of the batch has been answered, below, or is
                // kept in `stuck` until then if the submission fails.
                if unsafe { ring.ring.submission().push(&entry) }.is_err() {
                    break;
                }
                pushed += 1;
            }
            ring.push_polls();
            let want = (pushed - before).max(1);
            if let Err(e) = ring.ring.submit_and_wait(want)
                && !retry(&e)
            {
                // Sends of this batch may sit in the submission queue: the
                // ring is broken, and the sends not answered fail.
                ring.reap(&mut answered);
                ring.break_down(&e);
                for result in &mut ring.results {
                    if result
                        .as_ref()
                        .is_err_and(|r| r.kind() == io::ErrorKind::Interrupted)
                    {
                        *result = Err(e.kind().into());
                    }
                }
                return &mut ring.results;
            }
            ring.reap(&mut answered);
        }
        // Every send is answered: the handles go now, not with the next
        // batch, and a big batch's storage is given back.
        ring.store.let_go();
        &mut ring.results
    }
}

/// The buffer of one send of a [`Batch`].
pub(crate) struct Job<'s> {
    store: &'s mut Store,
}

impl<'a> SendBuf<'a> for Job<'_> {
    fn copy(&mut self, part: &[u8]) {
        let store = &mut *self.store;
        let start = store.arena.len();
        store.arena.extend_from_slice(part);
        // Consecutive copies of one send make one piece. (A piece before
        // this send's first belongs to another send.)
        let first_of_send = store.jobs.last().map_or(0, |(_, p)| p.end);
        if store.pieces.len() > first_of_send
            && let Some(Piece::Arena(range)) = store.pieces.last_mut()
            && range.end == start
        {
            range.end = store.arena.len();
            return;
        }
        store.pieces.push(Piece::Arena(start..store.arena.len()));
    }

    fn refer(&mut self, bytes: &'a Bytes, start: usize) {
        let store = &mut *self.store;
        store.held.push(bytes.clone());
        store.pieces.push(Piece::Held(store.held.len() - 1, start));
    }
}

#[cfg(test)]
mod tests;
