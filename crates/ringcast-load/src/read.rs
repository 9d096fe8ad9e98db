//! Reader tasks: every fast client reads what the server broadcasts and
//! checks it; [`Tally`] is the checking, shared with the slow readers.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, watch};

use crate::conn::{Conn, closed};
use crate::shared::Shared;
use crate::stats::{ReaderStats, Recorder};
use crate::wire::{Header, Kind, WIDE_MASK};

/// Bytes a reader asks the kernel for per read.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// What a reader makes of the bytes it reads: whole lines, per-publisher
/// order, and counts. No I/O and no clock, so the fast and slow readers
/// share it and tests feed it bytes.
#[derive(Debug)]
pub(crate) struct Tally {
    /// Line size, newline included.
    size: usize,
    /// An unfinished line at the front, then room for one read.
    buf: Vec<u8>,
    /// Bytes of the unfinished line.
    kept: usize,
    /// The bytes up to the next newline are not one of our lines.
    skipping: bool,
    /// Counting has begun: a warm-up marker has arrived.
    warm: bool,
    /// Per publisher, one past the highest sequence number seen.
    next_seq: Vec<u64>,
    /// Lines counted.
    pub(crate) delivered: u64,
    /// Lines with a sequence number no higher than one already seen from
    /// the same publisher. Gaps are not violations.
    pub(crate) order_violations: u64,
    /// Lines that are not ours.
    pub(crate) malformed: u64,
}

/// What one read brought.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Taken {
    /// Lines counted.
    pub(crate) delivered: u64,
    /// The first warm-up marker came with it: counting starts now.
    pub(crate) warmed: bool,
    /// Lines it showed lost: sequence numbers skipped, per publisher.
    pub(crate) gaps: u64,
}

impl Tally {
    /// A tally for lines of `size` bytes from `publishers` publishers, read
    /// at most `read` bytes at a time.
    pub(crate) fn new(size: usize, publishers: usize, read: usize) -> Self {
        Tally {
            size,
            buf: vec![0u8; read + size],
            kept: 0,
            skipping: false,
            warm: false,
            next_seq: vec![0; publishers],
            delivered: 0,
            order_violations: 0,
            malformed: 0,
        }
    }

    /// Where the next read goes.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.kept..]
    }

    /// One past the highest sequence number seen from `publisher`.
    pub(crate) fn next_seq(&self, publisher: usize) -> u64 {
        self.next_seq.get(publisher).copied().unwrap_or(0)
    }

    /// Takes the `n` bytes just read into [`spare`](Tally::spare), and
    /// calls `counted` with the header of each line it counts and how many
    /// of the publisher's lines before it were skipped (lost).
    pub(crate) fn take(&mut self, n: usize, mut counted: impl FnMut(&Header, u64)) -> Taken {
        let size = self.size;
        let kept = self.kept;
        let end = kept + n;
        let mut taken = Taken::default();
        let mut line_start = 0;
        for nl in memchr::memchr_iter(b'\n', &self.buf[kept..end]) {
            let line = &self.buf[line_start..=kept + nl];
            line_start = kept + nl + 1;
            if self.skipping {
                self.skipping = false;
                self.malformed += 1;
                continue;
            }
            let header = if line.len() == size {
                Header::parse(line)
            } else {
                None
            };
            match header {
                Some(h)
                    if h.kind == Kind::Data && usize::from(h.publisher) < self.next_seq.len() =>
                {
                    if !self.warm {
                        // Not ours to count: it predates the warm-up.
                        continue;
                    }
                    let next = &mut self.next_seq[usize::from(h.publisher)];
                    let mut skipped = 0;
                    if h.seq < *next {
                        self.order_violations += 1;
                    } else {
                        skipped = h.seq - *next;
                        taken.gaps += skipped;
                        *next = h.seq + 1;
                    }
                    taken.delivered += 1;
                    counted(&h, skipped);
                }
                Some(h) if h.kind == Kind::Warmup => {
                    if !self.warm {
                        self.warm = true;
                        taken.warmed = true;
                    }
                }
                _ => self.malformed += 1,
            }
        }
        let rest = end - line_start;
        if rest >= size {
            // Longer than any line of ours: drop it up to its newline.
            self.skipping = true;
            self.kept = 0;
        } else {
            self.buf.copy_within(line_start..end, 0);
            self.kept = rest;
        }
        self.delivered += taken.delivered;
        taken
    }
}

/// Reads everything client `client` receives until told to stop.
pub(crate) async fn read_client<C: Conn>(
    client: usize,
    stream: Arc<C>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    warmed: mpsc::UnboundedSender<usize>,
) -> anyhow::Result<ReaderStats> {
    let mut tally = Tally::new(shared.size, shared.publishers, READ_CHUNK);
    let mut latency = Recorder::new()?;
    // Paced by every reader (the only case with readers to track), this
    // reader tells the publishers how far it has their lines, and which of
    // them it found missing.
    let every = client < shared.received.readers();
    let mut progress: Vec<(usize, u64)> = Vec::with_capacity(shared.publishers);
    let mut in_progress = vec![false; shared.publishers];
    // Paced by its own connection, a publisher's own reader tells it how
    // far its lines have come back.
    let own = shared.pubs.get(client).filter(|_| !every);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            ready = stream.readable() => ready.map_err(|e| closed(client, Some(e)))?,
        }
        let n = match stream.try_read(tally.spare()) {
            Ok(0) => return Err(closed(client, None)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(closed(client, Some(e))),
        };
        let now = shared.now_ns();
        // Timestamps keep 48 bits, so the difference does too.
        let taken = tally.take(n, |h, skipped| {
            latency.record_ns(now.wrapping_sub(h.sent_ns) & WIDE_MASK);
            if every {
                let publisher = usize::from(h.publisher);
                if skipped > 0 {
                    shared.pubs[publisher].lost(h.seq);
                }
                if !in_progress[publisher] {
                    in_progress[publisher] = true;
                    progress.push((publisher, 0));
                }
            }
        });
        if taken.warmed {
            // The run has moved on if nobody listens.
            let _ = warmed.send(client);
        }
        if taken.delivered > 0 {
            shared
                .delivered
                .fetch_add(taken.delivered, Ordering::Relaxed);
            shared.last_rx_ns.fetch_max(now, Ordering::Relaxed);
            if every {
                for (publisher, next) in &mut progress {
                    *next = tally.next_seq(*publisher);
                    in_progress[*publisher] = false;
                }
                shared.received.arrived(client, &shared.pubs, &progress);
                progress.clear();
            }
            if let Some(ack) = own {
                if taken.gaps > 0 {
                    // This connection lost lines: the publisher's own may
                    // be among them, and would never come back.
                    ack.give_up_in_flight();
                }
                let next = tally.next_seq(client);
                if ack.next.load(Ordering::Relaxed) != next {
                    ack.next.store(next, Ordering::Release);
                    ack.moved.notify_one();
                }
            }
        }
    }
    Ok(ReaderStats {
        delivered: tally.delivered,
        order_violations: tally.order_violations,
        malformed: tally.malformed,
        latency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: usize = 40;

    fn line(kind: Kind, publisher: u16, seq: u64) -> Vec<u8> {
        let mut line = vec![0u8; SIZE];
        Header {
            kind,
            publisher,
            seq,
            sent_ns: 0,
        }
        .encode(&mut line);
        line
    }

    /// Feeds `bytes` to `tally` in reads of at most `read` bytes; returns
    /// the (publisher, seq) of each counted line.
    fn feed(tally: &mut Tally, bytes: &[u8], read: usize) -> Vec<(u16, u64)> {
        let mut seen = Vec::new();
        for chunk in bytes.chunks(read) {
            tally.spare()[..chunk.len()].copy_from_slice(chunk);
            tally.take(chunk.len(), |h, _| seen.push((h.publisher, h.seq)));
        }
        seen
    }

    #[test]
    fn lines_split_across_reads_are_counted_once() {
        let mut bytes = line(Kind::Warmup, 0, 0);
        for seq in 0..5 {
            bytes.extend(line(Kind::Data, 1, seq));
        }
        for read in [1, 7, SIZE, 3 * SIZE + 5] {
            let mut tally = Tally::new(SIZE, 2, read);
            let seen = feed(&mut tally, &bytes, read);
            assert_eq!(seen, (0..5).map(|s| (1, s)).collect::<Vec<_>>(), "{read}");
            assert_eq!((tally.delivered, tally.malformed), (5, 0));
            assert_eq!(tally.next_seq(1), 5);
        }
    }

    #[test]
    fn nothing_counts_before_the_warm_up_marker() {
        let mut tally = Tally::new(SIZE, 1, 1024);
        let mut bytes = line(Kind::Data, 0, 0);
        bytes.extend(line(Kind::Warmup, 0, 0));
        bytes.extend(line(Kind::Data, 0, 1));
        bytes.extend(line(Kind::Warmup, 0, 1));
        tally.spare()[..bytes.len()].copy_from_slice(&bytes);
        let taken = tally.take(bytes.len(), |_, _| {});
        assert_eq!(
            taken,
            Taken {
                delivered: 1,
                warmed: true,
                // Line 0 came before the marker: lost, as far as counting goes.
                gaps: 1,
            }
        );
    }

    #[test]
    fn gaps_are_fine_reordering_is_not() {
        let mut tally = Tally::new(SIZE, 2, 4096);
        let mut bytes = line(Kind::Warmup, 0, 0);
        // Publisher 0 skips 1..=9 (a slow reader's loss): in order.
        for seq in [0, 10, 11] {
            bytes.extend(line(Kind::Data, 0, seq));
        }
        // Publisher 1 goes back: one violation, and its next is unchanged.
        for seq in [5, 3, 6] {
            bytes.extend(line(Kind::Data, 1, seq));
        }
        feed(&mut tally, &bytes, 4096);
        assert_eq!(tally.order_violations, 1);
        assert_eq!((tally.next_seq(0), tally.next_seq(1)), (12, 7));
        assert_eq!(tally.delivered, 6);
    }

    #[test]
    fn a_read_tells_how_many_lines_it_showed_lost() {
        let mut tally = Tally::new(SIZE, 2, 4096);
        let mut bytes = line(Kind::Warmup, 0, 0);
        // Publisher 0 loses 1..=9, publisher 1 its first two.
        for (publisher, seq) in [(0, 0), (0, 10), (1, 2), (1, 3)] {
            bytes.extend(line(Kind::Data, publisher, seq));
        }
        tally.spare()[..bytes.len()].copy_from_slice(&bytes);
        assert_eq!(tally.take(bytes.len(), |_, _| {}).gaps, 11);
        // In order from there: nothing more lost.
        let bytes = line(Kind::Data, 0, 11);
        tally.spare()[..bytes.len()].copy_from_slice(&bytes);
        assert_eq!(tally.take(bytes.len(), |_, _| {}).gaps, 0);
    }

    #[test]
    fn foreign_and_overlong_lines_are_malformed() {
        let mut tally = Tally::new(SIZE, 1, 64);
        let mut bytes = line(Kind::Warmup, 0, 0);
        bytes.extend(b"hello\n");
        bytes.extend(vec![b'x'; 3 * SIZE]);
        bytes.push(b'\n');
        bytes.extend(line(Kind::Data, 0, 0));
        bytes.extend(line(Kind::Data, 9, 0)); // no such publisher
        let seen = feed(&mut tally, &bytes, 64);
        assert_eq!(seen, [(0, 0)]);
        assert_eq!(tally.malformed, 3);
    }
}
