//! Cutting a batch of lines into NATS messages no longer than the
//! server's `max_payload`, and lines from other nodes to `--max-line`.

use bytes::Bytes;

use crate::policy::run::Run;

/// The messages a batch of `lines` whole lines goes out in, of at most
/// `room` bytes each: the batch as it is when it fits, without a look at
/// its bytes; else its [`Pieces`], a line too long for any left out.
pub(super) fn outgoing(
    batch: &Bytes,
    lines: usize,
    room: usize,
) -> impl Iterator<Item = Piece> + '_ {
    let fits = batch.len() <= room;
    let whole = fits.then(|| {
        Piece::Lines(Run {
            bytes: batch.clone(),
            lines: u32::try_from(lines).unwrap_or(u32::MAX),
        })
    });
    let split = (!fits)
        .then(|| {
            Pieces {
                bytes: batch,
                max_bytes: room,
                max_lines: usize::MAX,
                max_line: usize::MAX,
            }
            .iter()
        })
        .into_iter()
        .flatten();
    whole.into_iter().chain(split)
}

/// Whole lines of `bytes`, cut into pieces of at most `max_bytes` and
/// `max_lines` lines, without copying; a line longer than `max_line`
/// (newline not counted), or than `max_bytes` with its newline, is left out
/// and reported. Anything after the last newline is left out.
pub(super) struct Pieces<'a> {
    pub(super) bytes: &'a Bytes,
    pub(super) max_bytes: usize,
    pub(super) max_lines: usize,
    pub(super) max_line: usize,
}

/// A piece of [`Pieces`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Piece {
    /// Lines within the limits.
    Lines(Run),
    /// A line left out, this long (newline not counted).
    TooLong(usize),
}

impl<'a> Pieces<'a> {
    pub(super) fn iter(self) -> impl Iterator<Item = Piece> + 'a {
        let Pieces {
            bytes,
            max_bytes,
            max_lines,
            max_line,
        } = self;
        let mut newlines = memchr::memchr_iter(b'\n', bytes).peekable();
        // Where the next piece starts.
        let mut start = 0;
        std::iter::from_fn(move || {
            let (mut end, mut lines) = (start, 0u32);
            while (lines as usize) < max_lines {
                let Some(&at) = newlines.peek() else { break };
                let length = at - end;
                if length > max_line || length >= max_bytes {
                    if lines > 0 {
                        // The lines before it go first.
                        break;
                    }
                    newlines.next();
                    start = at + 1;
                    return Some(Piece::TooLong(length));
                }
                if at + 1 - start > max_bytes {
                    break;
                }
                newlines.next();
                end = at + 1;
                lines += 1;
            }
            (lines > 0).then(|| {
                let run = Run {
                    bytes: bytes.slice(start..end),
                    lines,
                };
                start = end;
                Piece::Lines(run)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(
        bytes: &'static [u8],
        max_bytes: usize,
        max_lines: usize,
        max_line: usize,
    ) -> Vec<Piece> {
        let bytes = Bytes::from_static(bytes);
        Pieces {
            bytes: &bytes,
            max_bytes,
            max_lines,
            max_line,
        }
        .iter()
        .collect()
    }

    fn lines(text: &'static [u8]) -> Piece {
        Piece::Lines(Run::of(Bytes::from_static(text)))
    }

    #[test]
    fn a_batch_over_max_payload_is_cut_at_lines_and_only_a_line_over_it_is_left_out() {
        // Pieces of at most 8 bytes: whole lines, in order.
        assert_eq!(
            pieces(b"aaa\nbbb\ncc\nd\n", 8, usize::MAX, usize::MAX),
            vec![lines(b"aaa\nbbb\n"), lines(b"cc\nd\n")]
        );
        // A line that alone exceeds 8 bytes (with its newline) is left out;
        // the lines around it go.
        assert_eq!(
            pieces(b"a\n12345678\nb\nc\n", 8, usize::MAX, usize::MAX),
            vec![lines(b"a\n"), Piece::TooLong(8), lines(b"b\nc\n")]
        );
        assert_eq!(
            pieces(b"1234567\n", 8, usize::MAX, usize::MAX),
            vec![lines(b"1234567\n")],
            "exactly 8 with its newline"
        );
        // A batch that fits is one piece; a tail without newline is not sent.
        assert_eq!(
            pieces(b"a\nb\ntail", 100, usize::MAX, usize::MAX),
            vec![lines(b"a\nb\n")]
        );
        assert_eq!(pieces(b"", 100, usize::MAX, usize::MAX), vec![]);
        assert_eq!(
            pieces(b"ab\n", 0, usize::MAX, usize::MAX),
            vec![Piece::TooLong(2)]
        );
    }

    #[test]
    fn a_batch_that_fits_goes_whole_and_only_one_that_does_not_is_cut() {
        let batch = Bytes::from_static(b"aaa\nbbb\ncc\nd\n");
        let whole: Vec<Piece> = outgoing(&batch, 4, batch.len()).collect();
        let [Piece::Lines(run)] = whole.as_slice() else {
            panic!("{whole:?}")
        };
        assert_eq!(run.lines, 4);
        assert_eq!(
            (run.bytes.as_ptr(), run.bytes.len()),
            (batch.as_ptr(), batch.len()),
            "the batch itself, not a copy"
        );
        assert_eq!(
            outgoing(&batch, 4, 8).collect::<Vec<_>>(),
            vec![lines(b"aaa\nbbb\n"), lines(b"cc\nd\n")]
        );
        assert_eq!(
            outgoing(&batch, 4, 3).collect::<Vec<_>>(),
            vec![
                Piece::TooLong(3),
                Piece::TooLong(3),
                lines(b"cc\n"),
                lines(b"d\n")
            ]
        );
    }

    #[test]
    fn lines_from_other_nodes_over_max_line_are_left_out_and_runs_stay_short() {
        assert_eq!(
            pieces(b"1234\n12345\n\n123\n12345\n", usize::MAX, 64, 4),
            vec![
                lines(b"1234\n"),
                Piece::TooLong(5),
                lines(b"\n123\n"),
                Piece::TooLong(5),
            ]
        );
        assert_eq!(
            pieces(b"a\nb\nc\n", usize::MAX, 2, 4),
            vec![lines(b"a\nb\n"), lines(b"c\n")]
        );
    }
}
