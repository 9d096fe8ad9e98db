//! Property test of the line splitter against the reference model in
//! `ringcast::line::model`: however a byte stream is cut into reads,
//! `LineSplitter` yields the lines of the whole stream, leaves the bytes
//! after the last newline, and fails exactly when some line is longer than
//! the limit.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use ringcast::line::model::{Split, feed, reads, reference};

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
