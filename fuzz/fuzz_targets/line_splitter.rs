//! Fuzzes the line splitter against the reference model in
//! `ringcast::internals::model` (shared with the splitter's property test):
//! however the input is cut into reads, the splitter yields the lines of
//! the whole stream (each up to and including its `\n`), leaves the bytes
//! after the last newline, and fails exactly when some line's content, or
//! the trailing partial line, is longer than `max_line`. Lines before the
//! first overlong one still come out.
//!
//! Input layout: byte 0 picks `max_line` (255 means no limit), byte 1 is a
//! seed for the read sizes, the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::internals::model::{feed, reads, reference};

/// A cheap sequence of read sizes from 0 (an empty read) to 31. The
/// generator visits all 256 seeds, so zeros never go on forever.
fn sizes(mut seed: u8) -> impl Iterator<Item = usize> {
    std::iter::repeat_with(move || {
        seed = seed.wrapping_mul(29).wrapping_add(17);
        usize::from(seed % 32)
    })
}

fuzz_target!(|data: &[u8]| {
    let [limit, seed, stream @ ..] = data else {
        return;
    };
    let max_line = if *limit == 255 {
        usize::MAX
    } else {
        usize::from(*limit)
    };
    assert_eq!(
        feed(reads(stream, sizes(*seed)), max_line),
        reference(stream, max_line)
    );
});
