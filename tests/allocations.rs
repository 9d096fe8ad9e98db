//! "No allocation per read, per write or per receiver in steady state",
//! checked with a counting allocator around a real server in this process.
#![allow(clippy::unwrap_used)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{PATIENCE, TestServer, wait_for};
use ringcast::EngineChoice;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; it only
// counts allocations.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const RECEIVERS: usize = 20;
const LINE: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef012345678901234\n";

/// Allocations the server makes while `lines` lines, written one per
/// syscall, reach `RECEIVERS` clients.
fn allocations_for(publisher: &mut TcpStream, counts: &[Arc<AtomicU64>], lines: u64) -> u64 {
    let start: Vec<u64> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..lines {
        publisher.write_all(LINE).unwrap();
    }
    wait_for("every line at every receiver", PATIENCE, || {
        counts
            .iter()
            .zip(&start)
            .all(|(c, s)| c.load(Ordering::SeqCst) - s >= lines)
            .then_some(())
    });
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

fn steady_state_allocates_per_message_at_most(engine: EngineChoice) {
    let server = TestServer::start(engine);
    let mut publisher = TcpStream::connect(server.addr).unwrap();
    publisher.set_nodelay(true).unwrap();
    let counts: Vec<Arc<AtomicU64>> = (0..RECEIVERS)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    for count in &counts {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        let count = Arc::clone(count);
        // Readers count newlines in a fixed buffer: they allocate nothing.
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let lines = buf[..n].iter().filter(|&&b| b == b'\n').count();
                count.fetch_add(lines as u64, Ordering::SeqCst);
            }
        });
    }
    server.wait_connected(RECEIVERS as u64 + 1);
    // Warm up: queues, buffers and task state reach their working size.
    allocations_for(&mut publisher, &counts, 500);
    let lines = 2000;
    let allocations = allocations_for(&mut publisher, &counts, lines);
    let deliveries = lines * RECEIVERS as u64;
    eprintln!("{engine:?}: {allocations} allocations for {lines} lines, {deliveries} deliveries");
    // One allocation per receiver or per write would be 40,000; one per line
    // read would be 2,000. Reads reuse their buffer once earlier lines are
    // written out, so a steady stream needs only a handful.
    assert!(
        allocations <= lines / 4,
        "{allocations} allocations for {lines} lines to {RECEIVERS} receivers"
    );
}

/// One test for both engines: the allocation counter is process-wide, so
/// the two must not run at the same time.
#[test]
fn steady_state_allocates_nothing_per_read_write_or_receiver() {
    steady_state_allocates_per_message_at_most(EngineChoice::Uring);
    steady_state_allocates_per_message_at_most(EngineChoice::Tokio);
}
