//! Fuzzes `ringcast::line::LineSplitter` against a reference model: however
//! the input is cut into reads, the splitter yields the lines of the whole
//! stream (each up to and including its `\n`), leaves the bytes after the
//! last newline, and fails exactly when some line's content, or the
//! trailing partial line, is longer than `max_line`. Lines before the first
//! overlong one still come out.
//!
//! Input layout: byte 0 picks `max_line` (255 means no limit), byte 1 is a
//! seed for the read sizes, the rest is the stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringcast::line::LineSplitter;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    lines: Vec<Vec<u8>>,
    /// What is left in the buffer; empty after an error (not compared).
    rest: Vec<u8>,
    error: bool,
}

fn split(input: &[u8], mut seed: u8, max_line: usize) -> Outcome {
    let mut splitter = LineSplitter::new(max_line);
    let mut buf = BytesMut::new();
    let mut lines = Vec::new();
    let mut at = 0;
    while at < input.len() {
        // A cheap sequence of read sizes from 0 (an empty read) to 31.
        seed = seed.wrapping_mul(29).wrapping_add(17);
        let end = (at + usize::from(seed % 32)).min(input.len());
        buf.extend_from_slice(&input[at..end]);
        at = end;
        loop {
            match splitter.next_line(&mut buf) {
                Ok(Some(line)) => lines.push(line.to_vec()),
                Ok(None) => break,
                Err(e) => {
                    assert!(e.buffered > max_line, "{e:?} with max_line {max_line}");
                    return Outcome {
                        lines,
                        rest: Vec::new(),
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
    if rest.len() > max_line {
        return Outcome {
            lines,
            rest: Vec::new(),
            error: true,
        };
    }
    Outcome {
        lines,
        rest,
        error: false,
    }
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
    assert_eq!(split(stream, *seed, max_line), reference(stream, max_line));
});
