//! `OutQueue`: the cost of queueing a message for one client and of the
//! writer taking it out again, per message.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast::queue::{Admission, OutQueue};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The server's default queue length.
const CAPACITY: usize = 100;
/// The writer's batch budget, in bytes.
const BATCH_BYTES: usize = 64 * 1024;

fn queue(c: &mut Criterion) {
    let msg = Bytes::from(vec![b'x'; 64]);
    let now = Instant::now();
    let mut group = c.benchmark_group("out_queue");

    // One message in, one out: a client that keeps up.
    group.throughput(Throughput::Elements(1));
    group.bench_function("offer_take_1", |b| {
        let mut q = OutQueue::new(CAPACITY, Duration::from_millis(50));
        let mut out = Vec::with_capacity(BATCH_BYTES);
        b.iter(|| {
            let admitted = q.offer(black_box(&msg), || now);
            debug_assert_eq!(admitted, Admission::Queued);
            out.clear();
            black_box(q.take_batch(&mut out, BATCH_BYTES));
        });
    });

    // Fill the queue, then take it all in one batch: a burst.
    group.throughput(Throughput::Elements(CAPACITY as u64));
    group.bench_function(format!("offer_{CAPACITY}_take_batch"), |b| {
        let mut q = OutQueue::new(CAPACITY, Duration::from_millis(50));
        let mut out = Vec::with_capacity(BATCH_BYTES);
        b.iter(|| {
            for _ in 0..CAPACITY {
                black_box(q.offer(&msg, || now));
            }
            out.clear();
            black_box(q.take_batch(&mut out, BATCH_BYTES));
        });
    });

    // A stalled client: the queue is full and every offer is dropped.
    group.throughput(Throughput::Elements(1));
    group.bench_function("offer_dropped", |b| {
        let mut q = OutQueue::new(CAPACITY, Duration::ZERO);
        while q.offer(&msg, || now) == Admission::Queued {}
        b.iter(|| black_box(q.offer(black_box(&msg), || now)));
    });
    group.finish();
}

criterion_group!(benches, queue);
criterion_main!(benches);
