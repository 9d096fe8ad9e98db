//! Property test of the line splitter against a one-line reference model:
//! however a byte stream is cut into reads, `LineSplitter` yields the lines
//! of the whole stream, leaves the bytes after the last newline, and fails
//! exactly when some line is longer than the limit.
#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use proptest::prelude::*;
use ringcast::line::LineSplitter;

/// What feeding a stream to the splitter produced.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    lines: Vec<Vec<u8>>,
    /// The buffer's contents at the end (meaningless after an error).
    rest: Vec<u8>,
    error: bool,
}

/// Feeds `input` to a splitter in reads of the sizes in `chunks` (cycled;
/// a size of 0 is an empty read, as long as some size is not 0), taking every line after each read, as the
/// engines do, and stopping at the first error.
fn split(input: &[u8], chunks: &[usize], max_line: usize) -> Outcome {
    let mut splitter = LineSplitter::new(max_line);
    let mut buf = BytesMut::new();
    let mut lines = Vec::new();
    let mut at = 0;
    // All-empty reads would never finish: then read one byte at a time.
    let chunks = if chunks.iter().all(|&c| c == 0) {
        &[1]
    } else {
        chunks
    };
    for &size in chunks.iter().cycle() {
        if at >= input.len() {
            break;
        }
        let end = (at + size).min(input.len());
        buf.extend_from_slice(&input[at..end]);
        at = end;
        loop {
            match splitter.next_line(&mut buf) {
                Ok(Some(line)) => lines.push(line.to_vec()),
                Ok(None) => break,
                Err(e) => {
                    // The error reports at least the limit plus one byte.
                    assert!(e.buffered > max_line, "{e:?} with max_line {max_line}");
                    return Outcome {
                        lines,
                        rest: buf.to_vec(),
                        error: true,
                    };
                }
            }
        }
    }
    Outcome {
        lines,
        rest: buf.to_vec(),
        error: false,
    }
}

/// The reference: a message is everything up to and including a `\n`; its
/// content (without the `\n`) may be at most `max_line` bytes, and so may
/// the trailing partial line, which is what the splitter has buffered
/// without a newline. Lines before the first overlong one come out; nothing
/// after it does.
fn reference(input: &[u8], max_line: usize) -> Outcome {
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, &b) in input.iter().enumerate() {
        if b == b'\n' {
            if i - start > max_line {
                return Outcome {
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
    Outcome {
        lines,
        error: rest.len() > max_line,
        rest,
    }
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
