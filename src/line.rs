//! Line splitting: turns a byte stream into messages, each ending in `\n`.
//!
//! Pure and I/O free. Lines are split off the read buffer without copying, so
//! every message is a [`Bytes`] that shares the read buffer's allocation.

use bytes::{Bytes, BytesMut};

/// The client sent more than `max_line` bytes without a newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong {
    /// How many bytes were buffered without a newline when the limit tripped.
    pub buffered: usize,
}

/// Splits complete lines off a growing read buffer.
///
/// It remembers how far it has already scanned, so bytes are searched for a
/// newline once, however many reads a long line takes to arrive.
#[derive(Debug)]
pub struct LineSplitter {
    max_line: usize,
    scanned: usize,
}

impl LineSplitter {
    /// A splitter that rejects lines longer than `max_line` bytes, not counting
    /// the newline itself.
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line,
            scanned: 0,
        }
    }

    /// Splits the next complete line (including its `\n`) off the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds no complete line; the partial tail is
    /// left in `buf` for the next read to extend. A line whose content exceeds
    /// `max_line` bytes is an error, whether or not its newline has arrived.
    pub fn next_line(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, LineTooLong> {
        match memchr::memchr(b'\n', &buf[self.scanned..]) {
            Some(pos) => {
                let content = self.scanned + pos;
                self.scanned = 0;
                if content > self.max_line {
                    return Err(LineTooLong { buffered: content });
                }
                Ok(Some(buf.split_to(content + 1).freeze()))
            }
            None => {
                self.scanned = buf.len();
                if buf.len() > self.max_line {
                    return Err(LineTooLong {
                        buffered: buf.len(),
                    });
                }
                Ok(None)
            }
        }
    }

    /// Forgets the scan position, for when the caller discards the buffer.
    pub fn reset(&mut self) {
        self.scanned = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, Vec<u8>, bool) {
        let mut s = LineSplitter::new(max);
        let mut buf = BytesMut::new();
        let mut lines = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match s.next_line(&mut buf) {
                    Ok(Some(line)) => lines.push(line.to_vec()),
                    Ok(None) => break,
                    Err(_) => return (lines, buf.to_vec(), true),
                }
            }
        }
        (lines, buf.to_vec(), false)
    }

    #[test]
    fn splits_lines_keeping_the_newline() {
        let (lines, rest, err) = split_all(&[b"a\nbc\n\nd"], 100);
        assert_eq!(
            lines,
            vec![b"a\n".to_vec(), b"bc\n".to_vec(), b"\n".to_vec()]
        );
        assert_eq!(rest, b"d");
        assert!(!err);
    }

    #[test]
    fn keeps_arbitrary_bytes_intact() {
        let (lines, rest, _) = split_all(&[b"\r\0\xff\xfe\r\n", b"x\x00y\n"], 100);
        assert_eq!(
            lines,
            vec![b"\r\0\xff\xfe\r\n".to_vec(), b"x\x00y\n".to_vec()]
        );
        assert!(rest.is_empty());
    }

    #[test]
    fn joins_a_line_split_across_reads() {
        let (lines, rest, _) = split_all(&[b"he", b"l", b"lo\nwor", b"ld\n"], 100);
        assert_eq!(lines, vec![b"hello\n".to_vec(), b"world\n".to_vec()]);
        assert!(rest.is_empty());
    }

    #[test]
    fn every_split_point_gives_the_same_lines() {
        let input: &[u8] = b"one\ntwo\n\nthree\r\nfour";
        let whole = split_all(&[input], 100);
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let parts = split_all(&[&input[..i], &input[i..j], &input[j..]], 100);
                assert_eq!(parts, whole, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn line_at_the_limit_passes() {
        let mut line = vec![b'x'; 8];
        line.push(b'\n');
        let (lines, _, err) = split_all(&[&line], 8);
        assert!(!err);
        assert_eq!(lines, vec![line]);
    }

    #[test]
    fn partial_line_over_the_limit_fails_before_its_newline() {
        let (lines, _, err) = split_all(&[b"ok\n", b"123456789"], 8);
        assert_eq!(lines, vec![b"ok\n".to_vec()]);
        assert!(err);
    }

    #[test]
    fn complete_line_over_the_limit_fails() {
        let (_, _, err) = split_all(&[b"123456789\n"], 8);
        assert!(err);
    }

    #[test]
    fn partial_tail_at_the_limit_waits_for_more() {
        let (lines, rest, err) = split_all(&[b"12345678"], 8);
        assert!(lines.is_empty());
        assert_eq!(rest, b"12345678");
        assert!(!err);
    }
}
