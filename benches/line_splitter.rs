//! `LineSplitter` throughput: 1 MiB of fixed-size lines, split off a read
//! buffer one line at a time, as a connection's reader does.

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ringcast::internals::LineSplitter;
use std::hint::black_box;

/// Bytes of input per iteration.
const INPUT: usize = 1 << 20;

/// `INPUT` bytes (rounded down to whole lines) of `size`-byte lines.
fn lines(size: usize) -> Vec<u8> {
    let mut line = vec![b'x'; size];
    line[size - 1] = b'\n';
    line.repeat(INPUT / size)
}

fn split(c: &mut Criterion) {
    let mut group = c.benchmark_group("line_splitter");
    for size in [64usize, 1024] {
        let input = lines(size);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(format!("{size}B_lines"), |b| {
            b.iter_batched_ref(
                || BytesMut::from(&input[..]),
                |buf| {
                    let mut splitter = LineSplitter::new(65536);
                    let mut n = 0usize;
                    while let Ok(Some(line)) = splitter.next_line(buf) {
                        n += line.len();
                    }
                    black_box(n)
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, split);
criterion_main!(benches);
