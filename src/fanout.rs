//! Cross-core fan-out: a full mesh of bounded single-producer,
//! single-consumer rings, one per ordered pair of cores, with doorbells.
//!
//! Core `i` pushes each message it reads onto ring `i → j` for every other
//! core `j`. Each ring is FIFO, so one sender's messages reach every core in
//! the order they were read. A full ring never loses a message: the
//! publisher waits on its [`Doorbell`] for room, which stops reading from the
//! publishing connection until the consumer catches up.
//!
//! The mesh also counts, per ring, the tasks waiting for room in it
//! ([`SpaceWaiter::wait_for_room`], [`Inbox::senders_waiting`]): a consumer
//! learns how many publishers on the other core its pace is holding back.
//!
//! Doorbells follow the "wake only a sleeper" rule (glommio's
//! `should_notify`): a consumer sets `parked` before it sleeps and producers
//! notify only if they see it, so a busy core is never interrupted and a
//! batch of messages costs one wake-up at most.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};

use bytes::Bytes;
use crossbeam_utils::CachePadded;
use tokio::sync::Notify;

/// Wakes a core that went to sleep waiting for something.
#[derive(Debug, Default)]
pub struct Doorbell {
    parked: CachePadded<AtomicBool>,
    notify: Notify,
}

impl Doorbell {
    /// Waits until `ready()` holds, sleeping until a [`ring`](Self::ring) if it
    /// does not hold yet.
    ///
    /// `ready` is evaluated after the waiter has registered, so a ring that
    /// lands between the check and the sleep is never lost.
    pub async fn wait_until(&self, ready: impl Fn() -> bool) {
        loop {
            // A Notified future receives notify_waiters() from creation on.
            let notified = pin!(self.notify.notified());
            self.parked.store(true, Ordering::SeqCst);
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
    pub fn ring(&self) {
        // Pairs with the SeqCst store in wait_until: either the waiter sees
        // our change in `ready()`, or we see `parked`.
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::SeqCst) {
            self.notify.notify_waiters();
        }
    }
}

/// Bells shared by every core: `data[j]` wakes core `j` when its inbound
/// rings get messages; `space[i]` wakes core `i` when its outbound rings
/// get room.
#[derive(Debug)]
struct Bells {
    data: Box<[Doorbell]>,
    space: Box<[Doorbell]>,
    /// `waiting[from * cores + to]`: tasks on core `from` waiting for room
    /// in the ring `from → to`.
    waiting: Box<[CachePadded<AtomicUsize>]>,
}

impl Bells {
    fn waiting(&self, from: usize, to: usize) -> &AtomicUsize {
        &self.waiting[from * self.data.len() + to]
    }
}

/// A core's sending side: one producer per other core.
#[derive(Debug)]
pub struct Outbox {
    me: usize,
    rings: Vec<Option<rtrb::Producer<Bytes>>>,
    dirty: Vec<bool>,
    bells: Arc<Bells>,
}

/// A core's receiving side: one consumer per other core.
#[derive(Debug)]
pub struct Inbox {
    me: usize,
    rings: Vec<Option<rtrb::Consumer<Bytes>>>,
    bells: Arc<Bells>,
}

/// Builds the mesh for `cores` cores, each ring holding `capacity` messages.
/// Element `i` of the result belongs to core `i`.
pub fn mesh(cores: usize, capacity: usize) -> Vec<(Outbox, Inbox)> {
    let bells = Arc::new(Bells {
        data: (0..cores).map(|_| Doorbell::default()).collect(),
        space: (0..cores).map(|_| Doorbell::default()).collect(),
        waiting: (0..cores * cores).map(|_| CachePadded::default()).collect(),
    });
    let mut producers: Vec<Vec<Option<rtrb::Producer<Bytes>>>> = (0..cores)
        .map(|_| (0..cores).map(|_| None).collect())
        .collect();
    let mut consumers: Vec<Vec<Option<rtrb::Consumer<Bytes>>>> = (0..cores)
        .map(|_| (0..cores).map(|_| None).collect())
        .collect();
    for from in 0..cores {
        for to in (0..cores).filter(|&to| to != from) {
            let (p, c) = rtrb::RingBuffer::new(capacity);
            producers[from][to] = Some(p);
            consumers[to][from] = Some(c);
        }
    }
    producers
        .into_iter()
        .zip(consumers)
        .enumerate()
        .map(|(me, (out, inb))| {
            (
                Outbox {
                    me,
                    dirty: vec![false; cores],
                    rings: out,
                    bells: Arc::clone(&bells),
                },
                Inbox {
                    me,
                    rings: inb,
                    bells: Arc::clone(&bells),
                },
            )
        })
        .collect()
}

impl Outbox {
    /// The other cores, in order.
    pub fn peers(&self) -> impl Iterator<Item = usize> + use<> {
        let me = self.me;
        (0..self.rings.len()).filter(move |&c| c != me)
    }

    /// Pushes `msg` towards core `to`, or hands it back if that ring is full.
    /// The consumer is not woken until [`ring`](Self::ring). A ring whose
    /// consumer has gone (the cluster bridge after shutdown) takes nothing.
    pub fn try_push(&mut self, to: usize, msg: Bytes) -> Result<(), Bytes> {
        let Some(ring) = self.rings.get_mut(to).and_then(Option::as_mut) else {
            return Ok(()); // no ring to ourselves
        };
        if ring.is_abandoned() {
            return Ok(());
        }
        ring.push(msg).map_err(|rtrb::PushError::Full(m)| m)?;
        self.dirty[to] = true;
        Ok(())
    }

    /// True if the ring towards `to` has room for one more message.
    pub fn has_room(&self, to: usize) -> bool {
        self.rings
            .get(to)
            .and_then(Option::as_ref)
            .is_none_or(|r| !r.is_full() || r.is_abandoned())
    }

    /// Wakes every core that was sent something since the last ring and is
    /// asleep.
    pub fn ring(&mut self) {
        for (core, dirty) in self.dirty.iter_mut().enumerate() {
            if std::mem::take(dirty) {
                self.bells.data[core].ring();
            }
        }
    }

    /// A handle this core's tasks wait on for room in its outbound rings.
    pub fn space_waiter(&self) -> SpaceWaiter {
        SpaceWaiter {
            bells: Arc::clone(&self.bells),
            me: self.me,
        }
    }

    /// Wakes `core`'s inbox even if nothing was sent, so it re-checks its
    /// stop condition.
    pub fn wake(&self, core: usize) {
        self.bells.data[core].ring();
    }
}

/// Where a core waits for room in its outbound rings.
#[derive(Debug, Clone)]
pub struct SpaceWaiter {
    bells: Arc<Bells>,
    me: usize,
}

impl SpaceWaiter {
    /// Sleeps until `ready()` holds; consumers ring after they pop.
    pub async fn wait_until(&self, ready: impl Fn() -> bool) {
        self.bells.space[self.me].wait_until(ready).await;
    }

    /// Sleeps until the ring towards core `to` has room (`has_room()`),
    /// counted meanwhile among that ring's [`Inbox::senders_waiting`].
    pub async fn wait_for_room(&self, to: usize, has_room: impl Fn() -> bool) {
        let waiting = self.bells.waiting(self.me, to);
        waiting.fetch_add(1, Ordering::Relaxed);
        // Counted down even if the wait is dropped half way.
        let _counted = Decrement(waiting);
        self.wait_until(has_room).await;
    }
}

/// Takes one off a count when dropped.
struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Inbox {
    /// Pops the oldest message from core `from`'s ring.
    pub fn pop_from(&mut self, from: usize) -> Option<Bytes> {
        self.rings
            .get_mut(from)
            .and_then(Option::as_mut)?
            .pop()
            .ok()
    }

    /// How many tasks on core `from` are waiting for room in its ring
    /// towards us (see [`SpaceWaiter::wait_for_room`]).
    pub fn senders_waiting(&self, from: usize) -> usize {
        self.bells.waiting(from, self.me).load(Ordering::Relaxed)
    }

    /// Tells core `from` its ring towards us has room again.
    pub fn release(&self, from: usize) {
        self.bells.space[from].ring();
    }

    /// The cores that send to us, in order.
    pub fn peers(&self) -> impl Iterator<Item = usize> + use<> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_waiting_for_room_are_counted_until_they_get_it_or_give_up() {
        let mut links = mesh(2, 1);
        let (_, mut inbox) = links.pop().expect("core 1");
        let (mut outbox, _) = links.pop().expect("core 0");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            outbox
                .try_push(1, Bytes::from_static(b"a\n"))
                .expect("room for one");
            assert!(outbox.try_push(1, Bytes::from_static(b"b\n")).is_err());
            let outbox = std::sync::Arc::new(std::sync::Mutex::new(outbox));
            let has_room = {
                let outbox = std::sync::Arc::clone(&outbox);
                move || outbox.lock().expect("outbox").has_room(1)
            };
            let waiter = outbox.lock().expect("outbox").space_waiter();
            let blocked = {
                let (waiter, has_room) = (waiter.clone(), has_room.clone());
                tokio::spawn(async move { waiter.wait_for_room(1, has_room).await })
            };
            let gives_up = {
                let (waiter, has_room) = (waiter.clone(), has_room.clone());
                tokio::spawn(async move { waiter.wait_for_room(1, has_room).await })
            };
            tokio::task::yield_now().await;
            assert_eq!(inbox.senders_waiting(0), 2, "both wait for room");
            assert_eq!(inbox.senders_waiting(1), 0, "nothing waits the other way");
            gives_up.abort();
            assert!(gives_up.await.is_err_and(|e| e.is_cancelled()));
            assert_eq!(
                inbox.senders_waiting(0),
                1,
                "a dropped wait is counted down"
            );
            assert!(inbox.pop_from(0).is_some());
            inbox.release(0);
            blocked.await.expect("woken once there is room");
            assert_eq!(inbox.senders_waiting(0), 0);
        });
    }

    #[test]
    fn every_core_gets_every_message_in_order_without_loss() {
        const N: u64 = 200_000;
        let mut links = mesh(2, 64);
        let (_, mut inbox) = links.pop().expect("core 1");
        let (mut outbox, _) = links.pop().expect("core 0");
        let rt = || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
        };
        let producer = std::thread::spawn(move || {
            rt().block_on(async move {
                for i in 0..N {
                    let mut msg = Bytes::copy_from_slice(&i.to_le_bytes());
                    loop {
                        match outbox.try_push(1, msg) {
                            Ok(()) => break,
                            Err(m) => {
                                msg = m;
                                outbox.ring();
                                let waiter = outbox.space_waiter();
                                waiter.wait_until(|| outbox.has_room(1)).await;
                            }
                        }
                    }
                    if i % 7 == 0 {
                        outbox.ring();
                    }
                }
                outbox.ring();
            })
        });
        let consumer = std::thread::spawn(move || {
            rt().block_on(async move {
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
}
