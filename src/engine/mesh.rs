//! Cross-core fan-out: a full mesh of bounded single-producer,
//! single-consumer rings, one per ordered pair of members, with doorbells.
//! The members are `uring`'s cores and, with `--cluster`, the NATS bridge.
//!
//! Core `i` pushes each message it reads onto ring `i → j` for every other
//! member `j`. Each ring is FIFO, so one sender's messages reach every core
//! in the order they were read. A full ring never loses a message:
//! [`Outbox::push`] waits on a [`Doorbell`] for room, which stops reading
//! from the publishing connection until that core catches up. The wait is
//! on a core, never on a client: delivery to clients never waits.
//!
//! Doorbells follow the "wake only a sleeper" rule (glommio's
//! `should_notify`): a consumer sets `parked` before it sleeps and producers
//! notify only if they see it, so a busy core is never interrupted and a
//! batch of messages costs one wake-up at most.

// Public for the benches and the fuzz target (the `internals` feature).
#![cfg_attr(not(feature = "internals"), allow(unreachable_pub))]

use std::cell::{Cell, RefCell};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

use tokio::sync::Notify;

/// Lines each cross-core ring holds before the publisher must wait,
/// however they are grouped into runs.
///
/// This is how far one core may run ahead of another, and every line
/// waiting in a ring is late for all of that core's clients: five client
/// queues deep absorbs a burst, and no more
/// (docs/decisions/0011-cross-core-ring-depth-512.md).
pub const RING_CAPACITY: usize = 512;

/// What a ring's capacity counts: a run weighs its lines.
pub trait Weight {
    /// How much of a ring's capacity this takes (at least 1).
    fn weight(&self) -> usize;
}

impl Weight for crate::policy::run::Run {
    fn weight(&self) -> usize {
        (self.lines as usize).max(1)
    }
}

impl Weight for bytes::Bytes {
    fn weight(&self) -> usize {
        1
    }
}

/// The weight in one ring: added by its producer, taken off by its
/// consumer.
type Load = Arc<CachePadded<AtomicUsize>>;
/// Wakes a core that went to sleep waiting for something.
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    parking: parking::Parking,
    notify: Notify,
}

impl Doorbell {
    /// Waits until `ready()` holds, sleeping until a [`ring`](Self::ring) if it
    /// does not hold yet.
    ///
    /// `ready` is evaluated after the waiter has registered, so a ring that
    /// lands between the check and the sleep is never lost.
    pub(crate) async fn wait_until(&self, ready: impl Fn() -> bool) {
        loop {
            // A Notified future receives notify_waiters() from creation on.
            let notified = pin!(self.notify.notified());
            self.parking.park();
            if ready() {
                return;
            }
            notified.await;
            if ready() {
                return;
            }
        }
    }

    /// Wakes the waiters if any are asleep. Call after making the awaited
    /// condition true (pushing or popping); it costs one fence and a load
    /// when nobody sleeps.
    pub(crate) fn ring(&self) {
        if self.parking.should_wake() {
            self.notify.notify_waiters();
        }
    }
}

/// The "wake only a sleeper" protocol, apart from how a sleeper sleeps, so
/// that a loom model checks this very code (`RUSTFLAGS="--cfg
/// ringcast_loom" cargo test --lib loom`).
mod parking {
    #[cfg(ringcast_loom)]
    use loom::sync::atomic::{AtomicBool, Ordering, fence};
    #[cfg(not(ringcast_loom))]
    use std::sync::atomic::{AtomicBool, Ordering, fence};

    use crossbeam_utils::CachePadded;

    #[derive(Debug, Default)]
    pub(super) struct Parking {
        parked: CachePadded<AtomicBool>,
    }

    impl Parking {
        /// Announces a sleeper; the sleeper checks its condition next.
        ///
        /// The fence orders the store before the condition's loads, which
        /// are only Acquire (the rings' own): with the fence in
        /// [`should_wake`](Self::should_wake), either the sleeper sees the
        /// waker's change or the waker sees `parked`. A SeqCst store alone
        /// lets those loads move before it, and a wake-up be lost.
        pub(super) fn park(&self) {
            self.parked.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
        }

        /// After making the condition true: whether a sleeper must be woken.
        pub(super) fn should_wake(&self) -> bool {
            fence(Ordering::SeqCst);
            self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::SeqCst)
        }

        #[cfg(test)]
        pub(super) fn is_parked(&self) -> bool {
            self.parked.load(Ordering::SeqCst)
        }
    }

    /// A sleeper and a producer around a one-slot ring, in every order loom
    /// can find: if the sleeper finds the ring empty and sleeps, the
    /// producer must see it and wake it.
    #[cfg(all(test, ringcast_loom))]
    mod loom_model {
        use loom::sync::Arc;
        use loom::sync::atomic::{AtomicBool, Ordering};

        use super::Parking;

        #[test]
        fn a_wake_up_is_never_lost() {
            loom::model(|| {
                let parking = Arc::new(Parking::default());
                // The ring's slot: filled with Release, read with Acquire,
                // as rtrb publishes and reads its indices.
                let slot = Arc::new(AtomicBool::new(false));
                let producer = {
                    let (parking, slot) = (Arc::clone(&parking), Arc::clone(&slot));
                    loom::thread::spawn(move || {
                        slot.store(true, Ordering::Release);
                        parking.should_wake()
                    })
                };
                parking.park();
                let sleeps = !slot.load(Ordering::Acquire);
                let woken = producer.join().expect("producer");
                assert!(
                    !sleeps || woken,
                    "the sleeper found the ring empty and nobody woke it"
                );
            });
        }
    }
}

/// Bells shared by every member: `data[j]` wakes member `j` when its
/// inbound rings get messages; `space[i]` wakes member `i` when its
/// outbound rings get room.
#[derive(Debug)]
struct Bells {
    data: Box<[Doorbell]>,
    space: Box<[Doorbell]>,
}

/// A member's sending side: one producer per other member. It belongs to
/// one thread; its methods take `&self` so that the tasks of a core can
/// share it, and none holds a borrow across a wait.
#[derive(Debug)]
pub struct Outbox<T> {
    me: usize,
    rings: Vec<Option<RefCell<rtrb::Producer<T>>>>,
    /// The weight in each ring.
    loads: Vec<Option<Load>>,
    /// The most weight a ring holds.
    capacity: usize,
    /// Rings pushed to since the last [`ring`](Self::ring).
    dirty: Vec<Cell<bool>>,
    bells: Arc<Bells>,
}

/// A member's receiving side: one consumer per other member. Dropping it
/// wakes every producer waiting for room in its rings.
#[derive(Debug)]
pub struct Inbox<T> {
    me: usize,
    rings: Vec<Option<rtrb::Consumer<T>>>,
    /// The weight in each ring.
    loads: Vec<Option<Load>>,
    bells: Arc<Bells>,
}

/// What became of a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// It is in the ring.
    Queued,
    /// The ring's consumer has gone (a member that exited): nothing will
    /// read it, and the caller should count it as dropped.
    Abandoned,
}

/// Builds the mesh for `members` members, each ring holding `capacity` of
/// weight (see `Weight`); a message heavier than that still goes into an
/// empty ring. Element `i` of the result belongs to member `i`.
pub fn mesh<T: Weight>(members: usize, capacity: usize) -> Vec<(Outbox<T>, Inbox<T>)> {
    let bells = Arc::new(Bells {
        data: (0..members).map(|_| Doorbell::default()).collect(),
        space: (0..members).map(|_| Doorbell::default()).collect(),
    });
    let mut producers: Vec<Vec<Option<RefCell<rtrb::Producer<T>>>>> = (0..members)
        .map(|_| (0..members).map(|_| None).collect())
        .collect();
    let mut consumers: Vec<Vec<Option<rtrb::Consumer<T>>>> = (0..members)
        .map(|_| (0..members).map(|_| None).collect())
        .collect();
    let mut out_loads: Vec<Vec<Option<Load>>> = (0..members)
        .map(|_| (0..members).map(|_| None).collect())
        .collect();
    let mut in_loads = out_loads.clone();
    for from in 0..members {
        for to in (0..members).filter(|&to| to != from) {
            // Every message weighs at least 1: `capacity` slots are enough.
            let (p, c) = rtrb::RingBuffer::new(capacity.max(1));
            producers[from][to] = Some(RefCell::new(p));
            consumers[to][from] = Some(c);
            let load = Load::default();
            out_loads[from][to] = Some(Arc::clone(&load));
            in_loads[to][from] = Some(load);
        }
    }
    producers
        .into_iter()
        .zip(consumers)
        .zip(out_loads.into_iter().zip(in_loads))
        .enumerate()
        .map(|(me, ((out, inb), (out_loads, in_loads)))| {
            (
                Outbox {
                    me,
                    dirty: (0..members).map(|_| Cell::new(false)).collect(),
                    rings: out,
                    loads: out_loads,
                    capacity: capacity.max(1),
                    bells: Arc::clone(&bells),
                },
                Inbox {
                    me,
                    rings: inb,
                    loads: in_loads,
                    bells: Arc::clone(&bells),
                },
            )
        })
        .collect()
}

impl<T: Weight> Outbox<T> {
    /// The other members, in order.
    pub fn peers(&self) -> impl Iterator<Item = usize> + use<T> {
        let me = self.me;
        (0..self.rings.len()).filter(move |&c| c != me)
    }

    /// Pushes `msg` towards member `to`, waiting for room if its ring is
    /// full (and waking the members it pushed to before it sleeps). The
    /// consumer is woken at the next [`ring`](Self::ring). Returns whether
    /// it had to wait, and what became of the message.
    pub async fn push(&self, to: usize, msg: T) -> (Pushed, bool) {
        let mut msg = msg;
        let mut waited = false;
        loop {
            let weight = msg.weight();
            match self.try_push(to, msg) {
                Ok(pushed) => return (pushed, waited),
                Err(back) => msg = back,
            }
            self.ring();
            self.bells.space[self.me]
                .wait_until(|| self.has_room(to, weight))
                .await;
            waited = true;
        }
    }

    fn try_push(&self, to: usize, msg: T) -> Result<Pushed, T> {
        let (Some(ring), Some(load)) = (
            self.rings.get(to).and_then(Option::as_ref),
            self.loads.get(to).and_then(Option::as_ref),
        ) else {
            return Ok(Pushed::Queued); // no ring to ourselves
        };
        let mut ring = ring.borrow_mut();
        if ring.is_abandoned() {
            return Ok(Pushed::Abandoned);
        }
        let weight = msg.weight();
        if !fits(load.load(Ordering::Acquire), weight, self.capacity) {
            return Err(msg);
        }
        // Counted before it goes in, so that the consumer never takes off
        // weight not yet added.
        load.fetch_add(weight, Ordering::Release);
        if let Err(rtrb::PushError::Full(msg)) = ring.push(msg) {
            load.fetch_sub(weight, Ordering::Release);
            return Err(msg);
        }
        self.dirty[to].set(true);
        Ok(Pushed::Queued)
    }

    /// True if the ring towards `to` has room for `weight` more, or no
    /// consumer any more.
    fn has_room(&self, to: usize, weight: usize) -> bool {
        let (Some(ring), Some(load)) = (
            self.rings.get(to).and_then(Option::as_ref),
            self.loads.get(to).and_then(Option::as_ref),
        ) else {
            return true;
        };
        let ring = ring.borrow();
        ring.is_abandoned()
            || (!ring.is_full() && fits(load.load(Ordering::Acquire), weight, self.capacity))
    }

    /// Wakes every member that was sent something since the last ring and
    /// is asleep.
    pub fn ring(&self) {
        for (member, dirty) in self.dirty.iter().enumerate() {
            if dirty.replace(false) {
                self.bells.data[member].ring();
            }
        }
    }

    /// Wakes `member`'s inbox even if nothing was sent, so it re-checks its
    /// stop condition.
    pub fn wake(&self, member: usize) {
        self.bells.data[member].ring();
    }
}

impl<T: Weight> Inbox<T> {
    /// Pops the oldest message from member `from`'s ring.
    pub fn pop_from(&mut self, from: usize) -> Option<T> {
        let msg = self
            .rings
            .get_mut(from)
            .and_then(Option::as_mut)?
            .pop()
            .ok()?;
        if let Some(load) = self.loads.get(from).and_then(Option::as_ref) {
            load.fetch_sub(msg.weight(), Ordering::Release);
        }
        Some(msg)
    }

    /// Tells member `from` its ring towards us has room again.
    pub fn release(&self, from: usize) {
        self.bells.space[from].ring();
    }

    /// The members that send to us, in order.
    pub fn peers(&self) -> impl Iterator<Item = usize> + use<T> {
        let me = self.me;
        (0..self.rings.len()).filter(move |&c| c != me)
    }

    /// True when some ring holds a message.
    pub fn has_pending(&self) -> bool {
        self.rings.iter().flatten().any(|r| !r.is_empty())
    }

    /// Sleeps until some ring holds a message or `stop()` holds.
    pub async fn wait_or(&self, stop: impl Fn() -> bool) {
        self.bells.data[self.me]
            .wait_until(|| stop() || self.has_pending())
            .await;
    }
}

/// Whether `weight` more fits in a ring holding `load` of `capacity`: it
/// does if there is room, or if the ring is empty (a run heavier than a
/// ring still goes, alone).
fn fits(load: usize, weight: usize, capacity: usize) -> bool {
    load == 0 || load + weight <= capacity
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        // Our rings are abandoned now: a producer waiting for room in one
        // would otherwise sleep for good.
        self.rings.clear();
        for from in 0..self.bells.space.len() {
            self.bells.space[from].ring();
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    #[test]
    fn every_core_gets_every_message_in_order_without_loss() {
        const N: u64 = 200_000;
        let mut links = mesh::<Bytes>(2, 64);
        let (_, mut inbox) = links.pop().expect("core 1");
        let (outbox, _) = links.pop().expect("core 0");
        let producer = std::thread::spawn(move || {
            runtime().block_on(async move {
                for i in 0..N {
                    let msg = Bytes::copy_from_slice(&i.to_le_bytes());
                    assert_eq!(outbox.push(1, msg).await.0, Pushed::Queued);
                    if i % 7 == 0 {
                        outbox.ring();
                    }
                }
                outbox.ring();
            })
        });
        let consumer = std::thread::spawn(move || {
            runtime().block_on(async move {
                let mut next = 0u64;
                while next < N {
                    while let Some(m) = inbox.pop_from(0) {
                        let got = u64::from_le_bytes(m[..].try_into().expect("8 bytes"));
                        assert_eq!(got, next);
                        next += 1;
                    }
                    inbox.release(0);
                    if next < N {
                        inbox.wait_or(|| false).await;
                    }
                }
                next
            })
        });
        producer.join().expect("producer");
        assert_eq!(consumer.join().expect("consumer"), N);
    }

    #[test]
    fn a_ring_holds_its_capacity_in_lines_whatever_the_runs() {
        use crate::policy::run::Run;
        let run = |lines: u32| Run {
            bytes: Bytes::from("x\n".repeat(lines as usize)),
            lines,
        };
        let mut links = mesh::<Run>(2, 512);
        let (_, mut inbox) = links.pop().expect("member 1");
        let (outbox, _) = links.pop().expect("member 0");
        // Eight runs of 64 lines fill 512; a ninth does not fit.
        for _ in 0..8 {
            assert_eq!(outbox.try_push(1, run(64)).ok(), Some(Pushed::Queued));
        }
        assert!(outbox.try_push(1, run(1)).is_err(), "full in lines");
        assert!(!outbox.has_room(1, 1));
        // Taking one run out makes room for 64 lines.
        assert_eq!(inbox.pop_from(0).map(|r| r.lines), Some(64));
        assert!(outbox.has_room(1, 64) && !outbox.has_room(1, 65));
        // A run heavier than a whole ring goes into an empty one, alone.
        while inbox.pop_from(0).is_some() {}
        assert_eq!(outbox.try_push(1, run(600)).ok(), Some(Pushed::Queued));
        assert!(outbox.try_push(1, run(1)).is_err());
    }

    #[test]
    fn a_producer_waiting_on_a_ring_whose_consumer_leaves_is_woken() {
        let mut links = mesh::<Bytes>(2, 1);
        let (_, inbox) = links.pop().expect("member 1");
        let (outbox, _) = links.pop().expect("member 0");
        let bells = Arc::clone(&inbox.bells);
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let first = outbox.push(1, Bytes::from_static(b"a\n")).await;
                // The ring is full now: this one waits until the consumer
                // has gone, then is told nobody will read it.
                let second = outbox.push(1, Bytes::from_static(b"b\n")).await;
                let _ = done.send((first, second));
            });
        });
        // Wait until the producer sleeps on the full ring.
        while !bells.space[0].parking.is_parked() {
            std::thread::yield_now();
        }
        drop(inbox);
        let (first, second) = result
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the producer was never woken");
        assert_eq!(first, (Pushed::Queued, false));
        assert_eq!(second, (Pushed::Abandoned, true));
    }
}
