//! Cross-core ring throughput: messages per second from one pinned thread
//! to another through the uring engine's mesh, at its ring size, with its
//! doorbells (the consumer sleeps when its rings are empty, the producer
//! when its ring is full). Run with
//! `cargo bench --features internals --bench ring`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast::internals::{Inbox, Outbox, RING_BATCH, RING_CAPACITY, mesh};

/// Messages the producer pushes between rings of the consumer's doorbell:
/// the engine rings once per run, and a run holds up to 64 lines. (The
/// consumer frees room every [`RING_BATCH`] messages, as the engine's
/// drainer does: 256 since the bench took the engine's constant; figures
/// from runs before that, with 64, are not comparable.)
const RING_EVERY: u64 = 64;
/// Messages per measured iteration.
const PER_ITER: u64 = 10_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("current-thread runtime")
}

fn pin(core: Option<core_affinity::CoreId>) {
    if let Some(id) = core {
        core_affinity::set_for_current(id);
    }
}

/// Sends `n` messages from core 0 to core 1; returns the time from the
/// first push to the last pop.
fn transfer(
    n: u64,
    outbox: Outbox<Bytes>,
    inbox: Inbox<Bytes>,
    cores: [Option<core_affinity::CoreId>; 2],
) -> Duration {
    let msg = Bytes::from(vec![b'x'; 64]);
    let start = Instant::now();
    let producer = std::thread::spawn(move || {
        pin(cores[0]);
        runtime().block_on(async move {
            for i in 0..n {
                outbox.push(1, msg.clone()).await;
                if i % RING_EVERY == 0 {
                    outbox.ring();
                }
            }
            outbox.ring();
        });
    });
    let consumer = std::thread::spawn(move || {
        pin(cores[1]);
        let mut inbox = inbox;
        runtime().block_on(async move {
            let mut got = 0u64;
            while got < n {
                let mut taken = 0;
                while let Some(m) = inbox.pop_from(0) {
                    drop(m);
                    got += 1;
                    taken += 1;
                    if taken == RING_BATCH {
                        inbox.release(0);
                        taken = 0;
                    }
                }
                inbox.release(0);
                if got < n {
                    inbox.wait_or(|| false).await;
                }
            }
        });
        start.elapsed()
    });
    producer.join().expect("producer thread");
    consumer.join().expect("consumer thread")
}

fn ring(c: &mut Criterion) {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    let cores = [ids.first().copied(), ids.get(1).copied()];
    let mut group = c.benchmark_group("fanout_ring");
    group.throughput(Throughput::Elements(PER_ITER));
    group.bench_function("core0_to_core1_64B", |b| {
        b.iter_custom(|iters| {
            let mut links = mesh::<Bytes>(2, RING_CAPACITY);
            let (_, inbox) = links.pop().expect("core 1");
            let (outbox, _) = links.pop().expect("core 0");
            transfer(iters * PER_ITER, outbox, inbox, cores)
        });
    });
    group.finish();
}

criterion_group!(benches, ring);
criterion_main!(benches);
