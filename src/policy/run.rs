//! The unit of fan-out: a run of whole messages that sit side by side in
//! one buffer, such as the complete lines of one read.
//!
//! A receiver takes a run as one queue entry, one handle clone and one
//! piece of a send, however many messages it holds; the allowance still
//! counts messages. Where a run has to be cut (the queue has room for only
//! part of it, or the kernel took only part), the message boundaries are
//! found by scanning: for newlines in a run of lines, from header to header
//! in a run of WebSocket frames. Cutting is the uncommon path, so a run
//! carries no table of offsets.

// Public for the benches and the fuzz target (the `internals` feature).
#![cfg_attr(not(feature = "internals"), allow(unreachable_pub))]

use bytes::Bytes;

/// Most messages in one run: a reader hands over a read's lines this many
/// at a time.
pub(crate) const RUN_LINES: usize = 64;

/// Whole lines, each ending in `\n`, in one buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The lines, newlines included.
    pub bytes: Bytes,
    /// How many.
    pub lines: u32,
}

impl Run {
    /// A run of the whole lines in `bytes`, counted.
    #[cfg(test)]
    pub fn of(bytes: Bytes) -> Self {
        let lines = u32::try_from(memchr::memchr_iter(b'\n', &bytes).count()).unwrap_or(u32::MAX);
        Self { bytes, lines }
    }

    /// `bytes`, whole lines, as runs of at most [`RUN_LINES`] lines each.
    /// Anything after the last newline is left out.
    pub fn split(bytes: &Bytes) -> impl Iterator<Item = Run> + '_ {
        let mut newlines = memchr::memchr_iter(b'\n', bytes);
        let mut start = 0;
        std::iter::from_fn(move || {
            let mut lines = 0;
            let mut end = start;
            while lines < RUN_LINES as u32 {
                let Some(at) = newlines.next() else { break };
                end = at + 1;
                lines += 1;
            }
            (lines > 0).then(|| {
                let run = Run {
                    bytes: bytes.slice(start..end),
                    lines,
                };
                start = end;
                run
            })
        })
    }
}

/// How the messages of a run are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Lines, each up to and including its `\n`.
    Lines,
    /// Unmasked WebSocket frames, one message each.
    Frames,
}

impl Kind {
    /// Length of the message at the start of `bytes`: up to and including
    /// its newline, or its whole frame. All of `bytes` if it is cut short.
    pub fn message_len(self, bytes: &[u8]) -> usize {
        match self {
            Kind::Lines => memchr::memchr(b'\n', bytes).map_or(bytes.len(), |i| i + 1),
            Kind::Frames => frame_len(bytes).unwrap_or(bytes.len()).min(bytes.len()),
        }
    }

    /// Where the first `n` messages of `bytes` end.
    pub fn offset_of(self, bytes: &[u8], n: u32) -> usize {
        let mut at = 0;
        for _ in 0..n {
            if at >= bytes.len() {
                break;
            }
            at += self.message_len(&bytes[at..]);
        }
        at
    }
}

/// Length of the unmasked frame at the start of `bytes` (RFC 6455 5.2),
/// header included; `None` if the header itself is cut short.
fn frame_len(bytes: &[u8]) -> Option<usize> {
    let short = usize::from(*bytes.get(1)? & 0x7f);
    let (header, payload) = match short {
        126 => (
            4,
            usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
        ),
        127 => {
            let len: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            (10, usize::try_from(u64::from_be_bytes(len)).ok()?)
        }
        n => (2, n),
    };
    Some(header + payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::codec::websocket;

    #[test]
    fn runs_hold_at_most_run_lines_lines_and_nothing_past_the_last_newline() {
        let text: Vec<u8> = (0..150)
            .flat_map(|n| format!("{n}\n").into_bytes())
            .collect();
        let mut with_tail = text.clone();
        with_tail.extend_from_slice(b"partial");
        let with_tail = Bytes::from(with_tail);
        let runs: Vec<Run> = Run::split(&with_tail).collect();
        assert_eq!(
            runs.iter().map(|r| r.lines).collect::<Vec<_>>(),
            [64, 64, 22]
        );
        let joined: Vec<u8> = runs.iter().flat_map(|r| r.bytes.to_vec()).collect();
        assert_eq!(joined, text);
        assert_eq!(Run::of(Bytes::from_static(b"a\nb\n")).lines, 2);
    }

    #[test]
    fn message_boundaries_of_lines_and_frames() {
        let lines = b"one\ntwo\nthree\n";
        assert_eq!(Kind::Lines.offset_of(lines, 0), 0);
        assert_eq!(Kind::Lines.offset_of(lines, 2), 8);
        assert_eq!(Kind::Lines.offset_of(lines, 3), lines.len());
        assert_eq!(Kind::Lines.offset_of(lines, 9), lines.len());
        // Frames of every header size: 7 bytes, 200 and 70,000 of payload.
        let sizes = [7, 200, 70_000];
        let frames: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&n| websocket::frame_line(&vec![b'x'; n]).to_vec())
            .collect();
        let all = frames.concat();
        let mut at = 0;
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(Kind::Frames.message_len(&all[at..]), f.len(), "frame {i}");
            at += f.len();
        }
        assert_eq!(
            Kind::Frames.offset_of(&all, 2),
            frames[0].len() + frames[1].len()
        );
        // A header cut short counts as what there is.
        assert_eq!(Kind::Frames.message_len(&all[..1]), 1);
    }
}
