//! A connection's incoming side: how much to read next, into which
//! buffer, and the lines that come out of it. No I/O: the engine reads
//! into [`Inbound::buffer`] and reports how much arrived.
//!
//! Reads start small, so an idle client costs one 4 KiB buffer. A read that
//! fills its window doubles the next one, up to [`READ_MAX`]; a read that
//! does not sizes the next one to what arrived. When a burst ends, the big
//! buffer is let go and the next read gets a small one: the allocation is
//! freed once the last line in it has been written out.

use bytes::BytesMut;

use crate::policy::codec::line::{LineSplitter, LineTooLong};
use crate::policy::run::Run;

/// The smallest read window, and an idle client's buffer.
pub(crate) const READ_MIN: usize = 4 * 1024;
/// The largest read window.
pub(crate) const READ_MAX: usize = 64 * 1024;

/// The read buffer, its window and the line splitter of one connection.
#[derive(Debug)]
pub(crate) struct Inbound {
    buf: BytesMut,
    window: usize,
    /// The size of the last read asked for.
    asked: usize,
    /// Most bytes the buffer ever holds: a partial line plus a read.
    limit: usize,
    splitter: LineSplitter,
}

impl Inbound {
    /// For a connection whose lines may be `max_line` bytes long, newline
    /// not counted.
    pub(crate) fn new(max_line: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            window: READ_MIN,
            asked: 0,
            limit: READ_MAX.max(max_line.saturating_add(1)),
            splitter: LineSplitter::new(max_line),
        }
    }

    /// Makes room for the next read and returns how many bytes it may take
    /// (at least one). Allocates only when the buffer is too small and the
    /// lines that share it are still out, or to let a big buffer go.
    pub(crate) fn prepare(&mut self) -> usize {
        let held = self.buf.len();
        let want = self.window.min(self.limit - held).max(1);
        let spare = self.buf.capacity() - held;
        let oversized = spare > 2 * want.max(READ_MIN);
        if oversized || (spare < want / 2 + 1 && !self.buf.try_reclaim(want)) {
            let mut fresh = BytesMut::with_capacity((held + want).max(READ_MIN));
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
        }
        self.asked = want.min(self.buf.capacity() - held);
        self.asked
    }

    /// The buffer to read into: its spare capacity, up to what
    /// [`prepare`](Self::prepare) returned.
    pub(crate) fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Takes the buffer out for an engine whose reads own it (io_uring);
    /// give it back with [`put_back`](Self::put_back).
    pub(crate) fn take(&mut self) -> BytesMut {
        std::mem::take(&mut self.buf)
    }

    /// Returns the buffer taken with [`take`](Self::take).
    pub(crate) fn put_back(&mut self, buf: BytesMut) {
        self.buf = buf;
    }

    /// A read of `n` bytes (more than zero) completed into the buffer.
    pub(crate) fn filled(&mut self, n: usize) {
        self.window = if n >= self.asked {
            (self.window * 2).min(READ_MAX)
        } else {
            n.next_power_of_two().clamp(READ_MIN, READ_MAX)
        };
    }

    /// The next complete line, newline included, split off the buffer
    /// without copying.
    #[cfg(test)]
    pub(crate) fn next_line(&mut self) -> Result<Option<bytes::Bytes>, LineTooLong> {
        self.splitter.next_line(&mut self.buf)
    }

    /// The next up to `max_lines` complete lines, newlines included, split
    /// off the buffer as one run without copying.
    pub(crate) fn next_run(&mut self, max_lines: usize) -> Result<Option<Run>, LineTooLong> {
        self.splitter.next_run(&mut self.buf, max_lines)
    }

    /// The buffer's capacity, for tests of the memory bound.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// Reads `data` into `inbound` as a socket would: at most what
    /// `prepare` allows per read.
    /// Returns the largest read it was allowed.
    fn feed(inbound: &mut Inbound, mut data: &[u8], lines: &mut Vec<Bytes>) -> usize {
        let mut largest = 0;
        while !data.is_empty() {
            let room = inbound.prepare();
            largest = largest.max(room);
            let n = room.min(data.len());
            inbound.buffer().extend_from_slice(&data[..n]);
            inbound.filled(n);
            data = &data[n..];
            while let Some(line) = inbound.next_line().expect("no overlong line") {
                lines.push(line);
            }
        }
        largest
    }

    #[test]
    fn an_idle_connection_holds_one_small_buffer() {
        let mut inbound = Inbound::new(65536);
        assert_eq!(inbound.prepare(), READ_MIN);
        assert_eq!(inbound.capacity(), READ_MIN);
    }

    #[test]
    fn a_burst_grows_the_window_and_its_end_lets_the_big_buffer_go() {
        let mut inbound = Inbound::new(65536);
        let line = [b"x".repeat(99), b"\n".to_vec()].concat();
        let burst: Vec<u8> = line.repeat(10_000);
        let mut lines = Vec::new();
        let largest = feed(&mut inbound, &burst, &mut lines);
        assert_eq!(lines.len(), 10_000);
        assert!(lines.iter().all(|l| l[..] == line[..]));
        // Up to the largest window, less the partial line it already holds.
        assert!(
            largest > READ_MAX - 100,
            "a burst that fills reads grows them"
        );
        assert!(inbound.capacity() <= 2 * READ_MAX);
        drop(lines);
        // A short read ends the burst: the next read is small again.
        let mut lines = Vec::new();
        feed(&mut inbound, b"hi\n", &mut lines);
        assert_eq!(inbound.prepare(), READ_MIN);
        assert!(inbound.capacity() <= 2 * READ_MIN, "{}", inbound.capacity());
    }

    #[test]
    fn no_read_makes_the_buffer_outgrow_a_partial_line_plus_a_window() {
        let max_line = 200_000;
        let mut inbound = Inbound::new(max_line);
        let mut long = vec![b'y'; max_line];
        long.push(b'\n');
        let mut lines = Vec::new();
        let mut largest = 0;
        let mut data = &long[..];
        while !data.is_empty() {
            let room = inbound.prepare();
            largest = largest.max(inbound.capacity());
            let n = room.min(data.len());
            inbound.buffer().extend_from_slice(&data[..n]);
            inbound.filled(n);
            data = &data[n..];
            while let Some(line) = inbound.next_line().expect("within the limit") {
                lines.push(line);
            }
        }
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), max_line + 1);
        assert!(largest <= max_line + 1 + READ_MAX, "{largest}");
    }

    #[test]
    fn small_reads_share_one_buffer_while_their_lines_are_out() {
        let mut inbound = Inbound::new(65536);
        let mut lines = Vec::new();
        let first = {
            inbound.prepare();
            inbound.buffer().as_ptr()
        };
        for _ in 0..30 {
            feed(
                &mut inbound,
                &[b"z".repeat(63), b"\n".to_vec()].concat(),
                &mut lines,
            );
        }
        // 30 lines of 64 bytes fit in the first 4 KiB allocation, with room
        // for half a window left: the splitter hands out slices of it,
        // nothing is copied or allocated.
        assert!(
            lines
                .iter()
                .all(|l| l.as_ptr() >= first && l.as_ptr() < first.wrapping_add(READ_MIN))
        );
    }
}
