//! The line format: encoding and parsing the fixed header every generated
//! line starts with.
//!
//! Every line is exactly `size` bytes, the trailing newline included, and
//! starts with a fixed 31-byte ASCII header:
//!
//! ```text
//! P0001S00000000002aT000000bc614e xxxxxxxx…x\n
//! ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
//! │ │   │           │
//! │ │   │           └ send time: ns since the run's origin, 12 hex digits
//! │ │   └ sequence number, per publisher from 0, 12 hex digits
//! │ └ publisher id, 4 hex digits
//! └ `P` for a counted line, `W` for a warm-up marker
//! ```
//!
//! then the filler byte `x` up to the newline (the example shows a space
//! only to separate the header). Sequence numbers and timestamps are taken
//! modulo 2^48 (about 78 hours of nanoseconds). Nothing in a line but its
//! last byte can be a newline, and a reader finds every field at a fixed
//! offset without allocating.

/// Length of the line header, in bytes.
pub const HEADER_LEN: usize = 31;
/// Smallest `--size`: the header plus the newline.
pub const MIN_SIZE: usize = HEADER_LEN + 1;
/// Largest `--size`.
pub const MAX_SIZE: usize = 1 << 20;
/// Most publishers the 4-hex-digit publisher id can name.
pub const MAX_PUBLISHERS: usize = 1 << 16;
/// The byte that pads a line from its header to its newline.
pub const FILLER: u8 = b'x';

/// Tag of a counted line.
const DATA_TAG: u8 = b'P';
/// Tag of a warm-up marker.
const WARMUP_TAG: u8 = b'W';
/// Header field offsets.
const PUB_AT: usize = 1;
const SEQ_TAG_AT: usize = 5;
const SEQ_AT: usize = 6;
const TS_TAG_AT: usize = 18;
const TS_AT: usize = 19;
const PUB_DIGITS: usize = 4;
const WIDE_DIGITS: usize = 12;
/// What the 12-digit fields keep of a value: its low 48 bits.
pub(crate) const WIDE_MASK: u64 = (1 << (4 * WIDE_DIGITS)) - 1;

/// What a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A published line, counted in the results.
    Data,
    /// A warm-up marker, never counted.
    Warmup,
}

/// The header every generated line starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Counted line or warm-up marker.
    pub kind: Kind,
    /// The publishing client.
    pub publisher: u16,
    /// Per-publisher sequence number, from 0 (kept modulo 2^48).
    pub seq: u64,
    /// Send time, in nanoseconds since the run's origin (kept modulo 2^48).
    pub sent_ns: u64,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `line`,
    /// leaving the rest alone.
    ///
    /// # Panics
    ///
    /// If `line` is shorter than [`HEADER_LEN`].
    pub fn write(&self, line: &mut [u8]) {
        line[0] = match self.kind {
            Kind::Data => DATA_TAG,
            Kind::Warmup => WARMUP_TAG,
        };
        put_hex(
            &mut line[PUB_AT..PUB_AT + PUB_DIGITS],
            u64::from(self.publisher),
        );
        line[SEQ_TAG_AT] = b'S';
        put_hex(&mut line[SEQ_AT..SEQ_AT + WIDE_DIGITS], self.seq);
        line[TS_TAG_AT] = b'T';
        put_hex(&mut line[TS_AT..TS_AT + WIDE_DIGITS], self.sent_ns);
    }

    /// Fills `line` with a whole line: the header, filler, and a newline as
    /// its last byte.
    ///
    /// # Panics
    ///
    /// If `line` is shorter than [`MIN_SIZE`].
    pub fn encode(&self, line: &mut [u8]) {
        assert!(
            line.len() >= MIN_SIZE,
            "a line needs at least {MIN_SIZE} bytes"
        );
        self.write(line);
        let last = line.len() - 1;
        line[HEADER_LEN..last].fill(FILLER);
        line[last] = b'\n';
    }

    /// Reads the header of a whole line (newline included). `None` if the
    /// line is too short, does not end in a newline, or its header is not
    /// one this generator writes. The filler is not checked.
    pub fn parse(line: &[u8]) -> Option<Header> {
        if line.len() < MIN_SIZE || line.last() != Some(&b'\n') {
            return None;
        }
        let kind = match line[0] {
            DATA_TAG => Kind::Data,
            WARMUP_TAG => Kind::Warmup,
            _ => return None,
        };
        if line[SEQ_TAG_AT] != b'S' || line[TS_TAG_AT] != b'T' {
            return None;
        }
        let publisher = get_hex(&line[PUB_AT..PUB_AT + PUB_DIGITS])?;
        Some(Header {
            kind,
            publisher: u16::try_from(publisher).ok()?,
            seq: get_hex(&line[SEQ_AT..SEQ_AT + WIDE_DIGITS])?,
            sent_ns: get_hex(&line[TS_AT..TS_AT + WIDE_DIGITS])?,
        })
    }
}

/// Writes `v` as lowercase hex filling `out`, keeping its low digits.
fn put_hex(out: &mut [u8], mut v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// Reads lowercase hex; `None` on any other byte.
fn get_hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |v, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(v << 4 | u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_round_trips() {
        let header = Header {
            kind: Kind::Data,
            publisher: 0x1a2b,
            seq: 0x0123_4567_89ab,
            sent_ns: 42,
        };
        let mut line = vec![0u8; 64];
        header.encode(&mut line);
        assert_eq!(line.len(), 64);
        assert_eq!(&line[..HEADER_LEN], b"P1a2bS0123456789abT00000000002a");
        assert!(line[HEADER_LEN..63].iter().all(|&b| b == FILLER));
        assert_eq!(memchr::memchr_iter(b'\n', &line).collect::<Vec<_>>(), [63]);
        assert_eq!(Header::parse(&line), Some(header));
    }

    #[test]
    fn smallest_line_has_no_filler() {
        let header = Header {
            kind: Kind::Warmup,
            publisher: 0,
            seq: u64::MAX,
            sent_ns: 7,
        };
        let mut line = vec![0u8; MIN_SIZE];
        header.encode(&mut line);
        assert_eq!(&line[..], b"W0000SffffffffffffT000000000007\n");
        let parsed = Header::parse(&line).expect("parses");
        assert_eq!(parsed.kind, Kind::Warmup);
        assert_eq!(parsed.seq, WIDE_MASK, "kept modulo 2^48");
    }

    #[test]
    fn parse_rejects_foreign_lines() {
        assert_eq!(Header::parse(b"hello\n"), None);
        let mut line = vec![0u8; 40];
        Header {
            kind: Kind::Data,
            publisher: 1,
            seq: 2,
            sent_ns: 3,
        }
        .encode(&mut line);
        let mut no_newline = line.clone();
        *no_newline.last_mut().expect("not empty") = b'x';
        assert_eq!(Header::parse(&no_newline), None);
        let mut bad_digit = line.clone();
        bad_digit[SEQ_AT + 3] = b'G';
        assert_eq!(Header::parse(&bad_digit), None);
        let mut bad_tag = line;
        bad_tag[0] = b'Q';
        assert_eq!(Header::parse(&bad_tag), None);
    }
}
