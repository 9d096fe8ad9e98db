//! Line splitting: turns a byte stream into messages, each ending in `\n`.
//!
//! Pure and I/O free. Lines are split off the read buffer without copying, so
//! every message is a [`Bytes`] that shares the read buffer's allocation.

// Public for the benches and the fuzz target (the `internals` feature).
#![cfg_attr(not(feature = "internals"), allow(unreachable_pub))]

use bytes::BytesMut;

use crate::policy::run::Run;

/// The client sent more than `max_line` bytes without a newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong {
    /// How long the overlong line is, newline not counted: the whole line
    /// when its newline had arrived, otherwise the bytes buffered so far.
    pub length: usize,
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
    #[cfg(any(test, feature = "internals"))]
    pub fn next_line(&mut self, buf: &mut BytesMut) -> Result<Option<bytes::Bytes>, LineTooLong> {
        Ok(self.next_run(buf, 1)?.map(|run| run.bytes))
    }

    /// Splits up to `max_lines` complete lines off the front of `buf`, as
    /// one [`Run`]: one split, however many lines. As
    /// [`next_line`](Self::next_line) otherwise; an overlong line after
    /// some complete ones is reported by the next call, so the lines
    /// before it come out first.
    pub fn next_run(
        &mut self,
        buf: &mut BytesMut,
        max_lines: usize,
    ) -> Result<Option<Run>, LineTooLong> {
        let (mut end, mut lines) = (0, 0u32);
        let mut overlong = None;
        // Where the search resumes: what was scanned before belongs to the
        // first line only.
        let mut from = self.scanned;
        self.scanned = 0;
        while (lines as usize) < max_lines {
            match memchr::memchr(b'\n', &buf[from..]) {
                Some(pos) => {
                    let content = from + pos - end;
                    if content > self.max_line {
                        overlong = Some(content);
                        break;
                    }
                    end = from + pos + 1;
                    from = end;
                    lines += 1;
                }
                None => {
                    let tail = buf.len() - end;
                    if tail > self.max_line {
                        overlong = Some(tail);
                    } else {
                        self.scanned = tail;
                    }
                    break;
                }
            }
        }
        if lines == 0 {
            return match overlong {
                Some(length) => Err(LineTooLong { length }),
                None => Ok(None),
            };
        }
        Ok(Some(Run {
            bytes: buf.split_to(end).freeze(),
            lines,
        }))
    }
}

/// A reference model of [`LineSplitter`], shared by the property tests and
/// the fuzz target: what the splitter should make of a whole stream
/// ([`reference`](model::reference)), and what it does make of the same
/// stream fed in reads ([`feed`](model::feed)).
#[cfg(any(test, feature = "internals"))]
pub mod model {
    use bytes::BytesMut;

    use super::LineSplitter;

    /// What a stream of bytes came to.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Split {
        /// Every line, each up to and including its `\n`.
        pub lines: Vec<Vec<u8>>,
        /// The bytes after the last line; empty after an error.
        pub rest: Vec<u8>,
        /// Some line's content, or the trailing partial line, was longer
        /// than the limit. Nothing after it is taken.
        pub error: bool,
    }

    /// The reference: a message is everything up to and including a `\n`;
    /// its content (without the `\n`) may be at most `max_line` bytes, and
    /// so may the trailing partial line, which is what a splitter holds
    /// without a newline. Lines before the first overlong one come out.
    pub fn reference(input: &[u8], max_line: usize) -> Split {
        let mut lines = Vec::new();
        let mut start = 0;
        for (i, &b) in input.iter().enumerate() {
            if b == b'\n' {
                if i - start > max_line {
                    return Split {
                        lines,
                        rest: Vec::new(),
                        error: true,
                    };
                }
                lines.push(input[start..=i].to_vec());
                start = i + 1;
            }
        }
        let rest = input[start..].to_vec();
        let error = rest.len() > max_line;
        Split {
            lines,
            rest: if error { Vec::new() } else { rest },
            error,
        }
    }

    /// Feeds `reads` to a [`LineSplitter`] one at a time, taking every line
    /// after each read, as the engines do, and stopping at the first error.
    ///
    /// # Panics
    ///
    /// If the splitter reports an error with no more than `max_line` bytes
    /// buffered.
    pub fn feed<'a>(reads: impl IntoIterator<Item = &'a [u8]>, max_line: usize) -> Split {
        let mut splitter = LineSplitter::new(max_line);
        let mut buf = BytesMut::new();
        let mut lines = Vec::new();
        for read in reads {
            buf.extend_from_slice(read);
            loop {
                match splitter.next_line(&mut buf) {
                    Ok(Some(line)) => lines.push(line.to_vec()),
                    Ok(None) => break,
                    Err(e) => {
                        assert!(e.length > max_line, "{e:?} with max_line {max_line}");
                        return Split {
                            lines,
                            rest: Vec::new(),
                            error: true,
                        };
                    }
                }
            }
        }
        Split {
            lines,
            rest: buf.to_vec(),
            error: false,
        }
    }

    /// `input` cut into consecutive reads of the given sizes (0 is an empty
    /// read), until it runs out; a read past the end is cut short. Give
    /// enough sizes to cover the input (for example a cycle that is not all
    /// zeros), or the rest of it is never read.
    pub fn reads(
        input: &[u8],
        sizes: impl IntoIterator<Item = usize>,
    ) -> impl Iterator<Item = &[u8]> {
        let mut at = 0;
        sizes.into_iter().map_while(move |size| {
            (at < input.len()).then(|| {
                let end = (at + size).min(input.len());
                let read = &input[at..end];
                at = end;
                read
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, Vec<u8>, bool) {
        let split = model::feed(chunks.iter().copied(), max);
        (split.lines, split.rest, split.error)
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

/// Property test of the splitter against [`model`]: however a byte stream is
/// cut into reads, the splitter yields the lines of the whole stream, leaves
/// the bytes after the last newline, and fails exactly when some line is
/// longer than the limit.
#[cfg(test)]
mod proptests {
    use super::model::{Split, feed, reads, reference};
    use proptest::prelude::*;

    /// Feeds `input` to a splitter in reads of the sizes in `chunks`, cycled;
    /// all-empty reads would never finish, so then one byte at a time.
    fn split(input: &[u8], chunks: &[usize], max_line: usize) -> Split {
        let chunks = if chunks.iter().all(|&c| c == 0) {
            &[1]
        } else {
            chunks
        };
        feed(reads(input, chunks.iter().copied().cycle()), max_line)
    }

    /// Bytes with plenty of newlines, so both short and long lines occur.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop_oneof![4 => any::<u8>(), 1 => Just(b'\n')], 0..400)
    }

    /// Read sizes: mostly small, so lines straddle many reads; 0 is an empty read.
    fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(prop_oneof![4 => 0usize..8, 1 => 0usize..300], 1..20)
    }

    fn check(input: &[u8], chunks: &[usize], max_line: usize) -> Result<(), TestCaseError> {
        let got = split(input, chunks, max_line);
        let want = reference(input, max_line);
        prop_assert_eq!(got.error, want.error, "error differs");
        prop_assert_eq!(&got.lines, &want.lines, "lines differ");
        if !want.error {
            prop_assert_eq!(&got.rest, &want.rest, "leftover differs");
            // Nothing is lost or invented: lines plus leftover are the input.
            let mut joined = got.lines.concat();
            joined.extend_from_slice(&got.rest);
            prop_assert_eq!(joined, input.to_vec());
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Runs of any size hold the same lines, in order.
        #[test]
        fn runs_hold_the_reference_lines(
            input in stream(),
            chunks in chunk_sizes(),
            max_line in 0usize..40,
            max_lines in 1usize..5,
        ) {
            let want = reference(&input, max_line);
            let chunks = if chunks.iter().all(|&c| c == 0) { vec![1] } else { chunks };
            let mut splitter = super::LineSplitter::new(max_line);
            let mut buf = bytes::BytesMut::new();
            let mut lines = Vec::new();
            let mut error = false;
            'reads: for read in reads(&input, chunks.iter().copied().cycle()) {
                buf.extend_from_slice(read);
                loop {
                    match splitter.next_run(&mut buf, max_lines) {
                        Ok(Some(run)) => {
                            prop_assert!(run.lines as usize <= max_lines);
                            let split: Vec<Vec<u8>> =
                                run.bytes.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
                            prop_assert_eq!(split.len(), run.lines as usize);
                            lines.extend(split);
                        }
                        Ok(None) => break,
                        Err(_) => {
                            error = true;
                            break 'reads;
                        }
                    }
                }
            }
            prop_assert_eq!(error, want.error);
            prop_assert_eq!(lines, want.lines);
        }

        /// With a limit that never trips, only the chunking varies.
        #[test]
        fn any_chunking_yields_the_reference_lines(input in stream(), chunks in chunk_sizes()) {
            check(&input, &chunks, usize::MAX)?;
        }

        /// With a small limit, the error appears iff some line (or the trailing
        /// partial line) is longer than the limit, whatever the chunking.
        #[test]
        fn the_limit_trips_exactly_on_overlong_lines(
            input in stream(),
            chunks in chunk_sizes(),
            max_line in 0usize..40,
        ) {
            check(&input, &chunks, max_line)?;
        }

        /// A line (or trailing partial line) of exactly the limit passes; one
        /// byte more fails, and the line before it still comes out.
        #[test]
        fn the_limit_is_inclusive(
            max_line in 2usize..64,
            over in any::<bool>(),
            partial in any::<bool>(),
            chunks in chunk_sizes(),
        ) {
            let len = if over { max_line + 1 } else { max_line };
            let mut input = b"ok\n".to_vec();
            input.extend(std::iter::repeat_n(b'x', len));
            if !partial {
                input.push(b'\n');
            }
            let got = split(&input, &chunks, max_line);
            prop_assert_eq!(got.error, over);
            prop_assert_eq!(got.lines[0].as_slice(), b"ok\n");
            prop_assert_eq!(got.lines.len(), if over || partial { 1 } else { 2 });
            check(&input, &chunks, max_line)?;
        }
    }
}
