//! A core's writer: every queue the core has to send goes to the kernel
//! through the core's send ring, many connections to one submission.
//!
//! Deliveries mark connections due ([`Flusher::mark`]). The flusher task
//! wakes at the first, lets the tasks that were ready with it run (readers
//! and drainers that queue more in the same round), then sends every due
//! queue at once ([`Flusher::send`]). While the core delivers more than
//! `--coalesce-above` deliveries a second (lines × receivers), it waits instead for the coalescer's
//! next tick (`--coalesce`), so that what piles up goes out in one send per
//! connection; a queue that fills goes at once, from its delivery, with the
//! others that filled in that delivery
//! ([`crate::engine::session::Host::send_now`]), and a socket that took
//! more after refusing cuts the wait short. A quiet core sends a line as
//! soon as it is delivered.
//!
//! Every answer is settled by the shared policy; a socket that refuses
//! gets a poll for room, whose reports mark the connection due again. That
//! poll is multishot and stays armed until the connection closes (see
//! [`crate::sys::sendring`] for why): a connection arms at most one, the
//! first time its socket refuses.

use std::cell::{Cell, RefCell};
use std::ops::Deref;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Notify;

use super::Core;
use super::conn::Conn;
use crate::engine::lifecycle::notified_until;
use crate::engine::session::{self, Host as _, Link as _, Next};
use crate::policy::send::coalesce::{Timer, TokioTimer};
use crate::sys::sendring::{self, SendRing};
use crate::sys::timer::FlushTimer;

/// One core's writer. See the module documentation.
pub(super) struct Flusher {
    ring: Rc<RefCell<SendRing>>,
    /// Roster keys of connections marked due since the last round.
    due: RefCell<Vec<usize>>,
    /// Wakes the flusher task when the first connection becomes due.
    wanted: Notify,
    /// A socket that refused took more: its queue goes without waiting
    /// for the coalescing tick.
    urgent: Cell<bool>,
    /// Ends the flusher's wait for the coalescing tick.
    urged: Notify,
    /// Wakes the poll reaper when a poll is armed.
    armed: Notify,
    /// Polls of closed connections, to remove once the ring is free (a
    /// connection may close while a batch is being answered).
    cancels: RefCell<Vec<u64>>,
    scratch: RefCell<Scratch>,
}

/// What one round of sends keeps track of, reused from round to round.
#[derive(Default)]
struct Scratch {
    /// Each send of the batch: the connection's index, and the bytes offered.
    sends: Vec<(usize, usize)>,
    /// Connections to look at again once the batch is answered.
    after: Vec<usize>,
    /// What the polls reported: token, and whether the poll ended.
    woken: Vec<(u64, bool)>,
}

impl Flusher {
    pub(super) fn new(ring: SendRing) -> Self {
        Self {
            ring: Rc::new(RefCell::new(ring)),
            due: RefCell::new(Vec::new()),
            wanted: Notify::new(),
            urgent: Cell::new(false),
            urged: Notify::new(),
            armed: Notify::new(),
            cancels: RefCell::new(Vec::new()),
            scratch: RefCell::new(Scratch::default()),
        }
    }

    /// `conn` has something to send, or a state to look at: it goes in the
    /// next round.
    pub(super) fn mark(&self, conn: &Conn) {
        if conn.due.replace(true) {
            return;
        }
        let mut due = self.due.borrow_mut();
        due.push(conn.with(|s| s.key()));
        if due.len() == 1 {
            self.wanted.notify_one();
        }
    }

    /// Hands the queue of each of `conns[i]`, for `i` in `which`, to the
    /// kernel, in one submission (or one per megabyte of copies), and
    /// settles the answers: each connection then has sent everything, is
    /// marked due for more, waits for room, or is closed. Each connection
    /// at most once: twice in one batch, its queue would be sent twice.
    pub(super) fn send<L: Deref<Target = Conn>>(
        &self,
        core: &Core,
        conns: &[L],
        which: impl Iterator<Item = usize>,
    ) {
        let cx = core.cx();
        let draining = core.draining();
        let mut scratch = self.scratch.borrow_mut();
        let Scratch {
            sends,
            after,
            woken,
        } = &mut *scratch;
        after.clear();
        let mut which = which.peekable();
        while which.peek().is_some() {
            sends.clear();
            let mut ring = self.ring.borrow_mut();
            let mut batch = ring.batch();
            // A core holds about a megabyte of copies for its sends at once.
            while batch.copied() < sendring::BATCH_COPIES {
                let Some(i) = which.next() else { break };
                let conn = &conns[i];
                conn.due.set(false);
                if conn.with(|s| s.next(draining, &cx, |_| false)) == Next::Send {
                    let mut offered = 0;
                    batch.add(conn.fd(), |job| {
                        offered = conn.with(|s| s.fill(job));
                        offered
                    });
                    sends.push((i, offered));
                } else {
                    after.push(i);
                }
            }
            let results = batch.submit();
            for (&(i, offered), result) in sends.iter().zip(results.iter_mut()) {
                let result = std::mem::replace(result, Ok(0));
                let conn = &conns[i];
                let turn = conn.with(|s| s.sent(result, offered, &cx));
                if session::settled(core, conn, turn) {
                    after.push(i);
                }
            }
        }
        // What each connection does next, now that the kernel has answered.
        let mut armed = false;
        for &i in after.iter() {
            let conn = &conns[i];
            match conn.with(|s| s.next(draining, &cx, |_| false)) {
                // The send took all it was offered and more is queued.
                Next::Send => self.mark(conn),
                Next::Writable { .. } => armed |= self.poll(conn),
                Next::Close(reason) => session::finish(core, conn, reason),
                Next::Sleep | Next::Exit | Next::Coalesce => {}
            }
        }
        let mut ring = self.ring.borrow_mut();
        if armed {
            ring.submit();
            self.armed.notify_one();
        }
        self.submit_cancels(&mut ring);
        ring.take_woken(woken);
        let broken = ring.broken();
        drop(ring);
        self.wake_polled(core, woken);
        if let Some(why) = broken {
            core.fail(why);
        }
    }

    /// Arms a poll for room on `conn`'s socket, unless one is armed;
    /// returns whether it armed one. The poll reports each time room frees,
    /// until the connection closes.
    fn poll(&self, conn: &Conn) -> bool {
        if conn.polling.replace(true) {
            return false;
        }
        let token = conn.with(|s| poll_token(s.key(), s.id()));
        self.ring.borrow_mut().poll_writable(conn.fd(), token);
        true
    }

    /// A connection is closing: its poll, if any, is removed, so that the
    /// kernel lets go of its socket.
    pub(super) fn forget(&self, core: &Core, conn: &Conn) {
        if !conn.polling.replace(false) {
            return;
        }
        let token = conn.with(|s| poll_token(s.key(), s.id()));
        self.cancels.borrow_mut().push(token);
        // Inside a round the ring or the scratch is busy: the round's end
        // removes it, and takes what other polls reported meanwhile.
        let (Ok(mut scratch), Ok(mut ring)) =
            (self.scratch.try_borrow_mut(), self.ring.try_borrow_mut())
        else {
            return;
        };
        self.submit_cancels(&mut ring);
        // The submission may have taken another connection's report: it
        // is acted on here, or it would be lost (the ring's descriptor
        // says nothing more about it).
        ring.take_woken(&mut scratch.woken);
        drop(ring);
        self.wake_polled(core, &mut scratch.woken);
    }

    fn submit_cancels(&self, ring: &mut SendRing) {
        let mut cancels = self.cancels.borrow_mut();
        if cancels.is_empty() {
            return;
        }
        for token in cancels.drain(..) {
            ring.cancel_poll(token);
        }
        ring.submit();
    }

    /// Takes what the polls reported and marks their connections due: the
    /// socket may take more.
    fn reap(&self, core: &Core) {
        let mut scratch = self.scratch.borrow_mut();
        let mut ring = self.ring.borrow_mut();
        ring.submit();
        ring.take_woken(&mut scratch.woken);
        let broken = ring.broken();
        drop(ring);
        if let Some(why) = broken {
            core.fail(why);
        }
        self.wake_polled(core, &mut scratch.woken);
    }

    fn wake_polled(&self, core: &Core, woken: &mut Vec<(u64, bool)>) {
        for (token, ended) in woken.drain(..) {
            let key = (token >> 32) as usize;
            let Some(conn) = core.conns.borrow().get(key).cloned() else {
                continue;
            };
            // A poll of a connection that left, whose key was taken again.
            if conn.with(|s| poll_token(s.key(), s.id())) != token {
                continue;
            }
            if ended {
                // Armed again the next time the socket refuses.
                conn.polling.set(false);
            }
            // A report while the queue is not blocked is old news.
            if conn.with(|s| s.is_blocked()) {
                conn.with(|s| s.writable());
                self.mark(&conn);
                // It was behind, and a deliverer may be holding a line for
                // it: it does not wait for the coalescing tick.
                if !self.urgent.replace(true) {
                    self.urged.notify_one();
                }
            }
        }
    }
}

/// Names a connection in a poll's completion: its roster key, and the low
/// bits of its id, so that a completion for a connection that has left is
/// never taken for the one that got its key.
fn poll_token(key: usize, id: u64) -> u64 {
    ((key as u64) << 32 | (id & 0xffff_ffff)) & !(0b11 << 62)
}

/// Sends, round after round, what the core's deliveries queued.
pub(super) async fn flush_forever(core: Rc<Core>) {
    let mut conns: Vec<Rc<Conn>> = Vec::new();
    loop {
        notified_until(&core.flusher.wanted, || {
            !core.flusher.due.borrow().is_empty()
        })
        .await;
        let coalescer = core.coalescer();
        if !core.flusher.urgent.get() && coalescer.enabled() && coalescer.is_busy_now() {
            // Busy: what arrives until the next flush goes out with this
            // round. A queue that fills meanwhile goes at once, from its
            // delivery, and one whose socket took more after refusing
            // cuts the wait short (decision 0032).
            tokio::select! {
                () = coalescer.next_flush() => {}
                () = core.flusher.urged.notified() => {}
            }
        } else {
            // The tasks that were ready with this one run first: what they
            // queue goes out in this round.
            tokio::task::yield_now().await;
        }
        core.flusher.urgent.set(false);
        {
            let mut due = core.flusher.due.borrow_mut();
            let roster = core.conns.borrow();
            // A key may be stale (its connection left, or was sent since
            // it was marked) or listed twice: a connection goes once, and
            // only while it is marked due. Twice in one batch, its queue
            // would be sent twice.
            conns.extend(
                due.drain(..)
                    .filter_map(|key| roster.get(key))
                    .filter(|conn| conn.due.replace(false))
                    .cloned(),
            );
        }
        core.flusher.send(&core, &conns, 0..conns.len());
        conns.clear();
    }
}

/// Reaps what the polls for room report while any is armed, waking on the
/// send ring's descriptor (as tokio-uring does on its own ring's). Reports
/// that come while the core is busy are taken by the flusher's
/// submissions anyway.
pub(super) async fn reap_polls_forever(core: Rc<Core>) {
    let fd = sendring::watch(Rc::clone(&core.flusher.ring))
        .inspect_err(|e| {
            tracing::warn!(error = %e, core = core.state.core, "cannot wait on the send ring; polling it every millisecond instead");
        })
        .ok();
    loop {
        notified_until(&core.flusher.armed, || {
            core.flusher.ring.borrow().armed() > 0
        })
        .await;
        match &fd {
            Some(fd) => match fd.readable().await {
                Ok(mut ready) => ready.clear_ready(),
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            },
            None => tokio::time::sleep(Duration::from_millis(1)).await,
        }
        core.flusher.reap(&core);
    }
}

/// The coalescing timer on io_uring: a timerfd, read through tokio-uring's
/// ring.
pub(super) struct UringTimer {
    timer: FlushTimer,
    file: tokio_uring::fs::File,
    buf: Option<Vec<u8>>,
}

impl UringTimer {
    pub(super) fn new() -> std::io::Result<Self> {
        let timer = FlushTimer::new(false)?;
        let fd = timer.fd().try_clone_to_owned()?;
        Ok(Self {
            timer,
            file: tokio_uring::fs::File::from_std(std::fs::File::from(fd)),
            buf: Some(vec![0; 8]),
        })
    }
}

impl Timer for UringTimer {
    async fn sleep(&mut self, after: Duration) {
        let buf = self.buf.take().unwrap_or_else(|| vec![0; 8]);
        if self.timer.arm(after).is_ok() {
            // The read completes when the timer expires.
            let (result, buf) = self.file.read_at(buf, 0).await;
            self.buf = Some(buf);
            if result.is_ok() {
                return;
            }
        }
        TokioTimer.sleep(after).await;
    }
}

/// During the drain, closes connections whose socket has taken nothing for
/// the drain's stall time; the others close as their queues empty.
pub(super) async fn close_stalled(core: Rc<Core>) {
    let every = (core.state.settings.drain_stall / 4).max(Duration::from_millis(1));
    while !core.conns.borrow().is_empty() {
        tokio::time::sleep(every).await;
        let conns = core.conns.borrow_mut().snapshot();
        let (cx, draining) = (core.cx(), core.draining());
        for conn in conns.iter() {
            if let Next::Close(reason) = conn.with(|s| s.next(draining, &cx, |_| false)) {
                session::close(&*core, conn, reason);
            }
        }
    }
}
