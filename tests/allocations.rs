//! "No allocation per read, per write or per receiver in steady state", and
//! "read buffers shrink back once a burst is over", checked with a counting
//! allocator around a real server in this process.
#![allow(clippy::unwrap_used)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{PATIENCE, TestServer, wait_for};
use ringcast::EngineChoice;

struct Counting;

/// Allocations made, bytes allocated now, and the largest single one.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicU64 = AtomicU64::new(0);
static LARGEST: AtomicU64 = AtomicU64::new(0);

fn allocated(size: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    LIVE.fetch_add(size as u64, Ordering::Relaxed);
    LARGEST.fetch_max(size as u64, Ordering::Relaxed);
}

// SAFETY: forwards every call to the system allocator unchanged; it only
// counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        allocated(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        allocated(new_size);
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
    // written out, so a steady stream needs a few dozen at most (12 to 57
    // measured).
    assert!(
        allocations <= lines / 20,
        "{allocations} allocations for {lines} lines to {RECEIVERS} receivers"
    );
}

/// Has `RECEIVERS` clients each stream `bytes` of 1000-byte lines while
/// they all read; returns once every line was read by the server and has
/// left every queue (sent, or dropped for a reader that fell behind).
/// `measure` runs once the clients are connected and the stream is built,
/// just before they send.
fn stream_from_every_client(server: &TestServer, bytes: usize, measure: impl FnOnce()) {
    let line = [vec![b's'; 999], vec![b'\n']].concat();
    let stream: Arc<Vec<u8>> = Arc::new(line.repeat(bytes / line.len()));
    let total = (stream.len() / line.len() * RECEIVERS) as u64;
    let clients: Vec<TcpStream> = (0..RECEIVERS)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    server.wait_connected(RECEIVERS as u64);
    measure();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = clients
        .iter()
        .map(|c| {
            let (mut c, done) = (c.try_clone().unwrap(), Arc::clone(&done));
            c.set_read_timeout(Some(std::time::Duration::from_millis(50)))
                .unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while !done.load(Ordering::SeqCst) {
                    let _ = c.read(&mut buf);
                }
            })
        })
        .collect();
    let writers: Vec<_> = clients
        .iter()
        .map(|c| {
            let (mut c, stream) = (c.try_clone().unwrap(), Arc::clone(&stream));
            std::thread::spawn(move || c.write_all(&stream).unwrap())
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    server.wait_totals("every line read and out of the queues", |t| {
        t.received == total && t.sent + t.dropped == total * RECEIVERS as u64
    });
    done.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().unwrap();
    }
    // The clients stay connected, idle, until the server is dropped.
    std::mem::forget(clients);
}

fn read_buffers_are_bounded_and_shrink_once_idle(engine: EngineChoice) {
    const MIB: usize = 1 << 20;
    let server = TestServer::start(engine);
    let mut before = 0;
    stream_from_every_client(&server, MIB, || {
        before = LIVE.load(Ordering::SeqCst);
        LARGEST.store(0, Ordering::SeqCst);
    });
    let largest = LARGEST.load(Ordering::SeqCst);
    let idle = LIVE.load(Ordering::SeqCst).saturating_sub(before);
    eprintln!(
        "{engine:?}: largest allocation {largest} B, {idle} B held by {RECEIVERS} idle clients"
    );
    // A read takes at most a 64 KiB window; a partial line rides along.
    assert!(largest <= 64 * 1024 + 1000, "an allocation of {largest} B");
    // Beyond what it held before, an idle client keeps its queue's storage
    // (128 handles of 32 B), not the 64 KiB read buffer of the burst.
    let per_client = idle / RECEIVERS as u64;
    assert!(
        per_client <= 8 * 1024,
        "{per_client} B more per idle client after the burst"
    );
}

/// One test for both engines and both checks: the counters are
/// process-wide, so nothing else may run at the same time.
#[test]
fn allocations_per_message_and_memory_held_once_idle() {
    for engine in [EngineChoice::Uring, EngineChoice::Tokio] {
        steady_state_allocates_per_message_at_most(engine);
        read_buffers_are_bounded_and_shrink_once_idle(engine);
    }
}
