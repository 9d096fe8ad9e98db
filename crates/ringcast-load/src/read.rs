//! Reader tasks: every client reads what the server broadcasts and checks
//! it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::conn::closed;
use crate::run::Shared;
use crate::stats::{ReaderStats, Recorder};
use crate::wire::{Header, Kind, WIDE_MASK};

/// Bytes a reader asks the kernel for per read.
const READ_CHUNK: usize = 64 * 1024;

/// Reads everything client `client` receives until told to stop.
pub(crate) async fn read_client(
    client: usize,
    stream: Arc<TcpStream>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    warmed: mpsc::UnboundedSender<usize>,
) -> anyhow::Result<ReaderStats> {
    let size = shared.size;
    // An unfinished line is kept at the front: shorter than `size`, or it
    // is not one of ours and is skipped.
    let mut buf = vec![0u8; READ_CHUNK + size];
    let mut kept = 0usize;
    let mut skipping = false;
    let mut warm = false;
    let mut next_seq = vec![0u64; shared.publishers];
    // A publisher's own reader tells it how far its lines have come back.
    let own = shared.pubs.get(client);
    let mut stats = ReaderStats {
        delivered: 0,
        order_violations: 0,
        malformed: 0,
        latency: Recorder::new()?,
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            ready = stream.readable() => ready.map_err(|e| closed(client, Some(e)))?,
        }
        let n = match stream.try_read(&mut buf[kept..]) {
            Ok(0) => return Err(closed(client, None)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(closed(client, Some(e))),
        };
        let now = shared.now_ns();
        let end = kept + n;
        let mut line_start = 0;
        let mut delivered = 0u64;
        for nl in memchr::memchr_iter(b'\n', &buf[kept..end]) {
            let line = &buf[line_start..=kept + nl];
            line_start = kept + nl + 1;
            if skipping {
                skipping = false;
                stats.malformed += 1;
                continue;
            }
            let header = if line.len() == size {
                Header::parse(line)
            } else {
                None
            };
            match header {
                Some(h) if h.kind == Kind::Data && usize::from(h.publisher) < next_seq.len() => {
                    if !warm {
                        // Not ours to count: it predates the warm-up.
                        continue;
                    }
                    let next = &mut next_seq[usize::from(h.publisher)];
                    if h.seq < *next {
                        stats.order_violations += 1;
                    } else {
                        *next = h.seq + 1;
                    }
                    delivered += 1;
                    stats
                        .latency
                        .record_ns(now.wrapping_sub(h.sent_ns) & WIDE_MASK);
                }
                Some(h) if h.kind == Kind::Warmup => {
                    if !warm {
                        warm = true;
                        // The run has moved on if nobody listens.
                        let _ = warmed.send(client);
                    }
                }
                _ => stats.malformed += 1,
            }
        }
        let rest = end - line_start;
        if rest >= size {
            // Longer than any line of ours: drop it up to its newline.
            skipping = true;
            kept = 0;
        } else {
            buf.copy_within(line_start..end, 0);
            kept = rest;
        }
        if delivered > 0 {
            stats.delivered += delivered;
            shared.delivered.fetch_add(delivered, Ordering::Relaxed);
            shared.last_rx_ns.fetch_max(now, Ordering::Relaxed);
            if let Some(ack) = own {
                let next = next_seq[client];
                if ack.next.load(Ordering::Relaxed) != next {
                    ack.next.store(next, Ordering::Release);
                    ack.moved.notify_one();
                }
            }
        }
    }
    Ok(stats)
}
