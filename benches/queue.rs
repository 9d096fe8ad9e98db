//! `Outbound`: what offering messages to one client costs, and handing its
//! queue to the kernel, per message. The socket is a stand-in that takes
//! everything (or nothing), so the figures are the policy's own. Run with
//! `cargo bench --features internals --bench queue`.

use std::hint::black_box;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast::internals::{Kind, Outbound, Outcome, Step};

/// The server's default queue length.
const CAPACITY: usize = 100;
/// The server's default grace.
const GRACE: Duration = Duration::from_millis(5);

/// A socket that takes every byte offered.
fn takes_all(bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
    Ok(bufs.iter().map(|b| b.len()).sum())
}

/// A socket whose buffer is full.
fn refuses(_: &[IoSlice<'_>]) -> std::io::Result<usize> {
    Err(std::io::ErrorKind::WouldBlock.into())
}

/// `n` lines of 64 bytes, as one run.
fn run_of(n: usize) -> Bytes {
    Bytes::from([vec![b'x'; 63], vec![b'\n']].concat().repeat(n))
}

fn outbound(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("outbound");

    // One line in, one send: a client that keeps up with a slow flow.
    let line = run_of(1);
    group.throughput(Throughput::Elements(1));
    group.bench_function("offer_flush_1", |b| {
        let mut q = Outbound::new(CAPACITY, GRACE);
        b.iter(|| {
            let offered = q.offer(black_box(&line), 1, Kind::Lines, || now);
            debug_assert!(matches!(offered.next, Step::Idle | Step::Wake));
            let _ = black_box(q.flush(takes_all));
        });
    });

    // A queue's worth of lines one by one, then one send: a burst of
    // lines from many reads.
    group.throughput(Throughput::Elements(CAPACITY as u64));
    group.bench_function(format!("offer_{CAPACITY}_lines_flush"), |b| {
        let mut q = Outbound::new(CAPACITY, GRACE);
        b.iter(|| {
            for _ in 0..CAPACITY {
                let _ = black_box(q.offer(&line, 1, Kind::Lines, || now));
            }
            let _ = black_box(q.flush(takes_all));
        });
    });

    // One read's 64 lines as one run, then one send: the unit of fan-out.
    let run = run_of(64);
    group.throughput(Throughput::Elements(64));
    group.bench_function("offer_run_64_flush", |b| {
        let mut q = Outbound::new(CAPACITY, GRACE);
        b.iter(|| {
            let _ = black_box(q.offer(black_box(&run), 64, Kind::Lines, || now));
            let _ = black_box(q.flush(takes_all));
        });
    });

    // A slow client: the allowance is full and every offer is dropped.
    group.throughput(Throughput::Elements(1));
    group.bench_function("offer_dropped", |b| {
        let mut q = Outbound::new(CAPACITY, Duration::ZERO);
        while matches!(
            q.offer(&line, 1, Kind::Lines, || now),
            Outcome { took: 1, .. }
        ) {}
        let _ = black_box(q.flush(refuses));
        b.iter(|| black_box(q.offer(black_box(&line), 1, Kind::Lines, || now)));
    });
    group.finish();
}

criterion_group!(benches, outbound);
criterion_main!(benches);
