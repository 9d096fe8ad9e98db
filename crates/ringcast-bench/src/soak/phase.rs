//! The controlled phase for the counters: sent + dropped == received × K.
//!
//! During the main phase the receivers of each message are whoever was
//! registered at that instant, which no scrape can observe, and messages
//! queued for a client that disconnects are neither sent nor dropped, so
//! the identity only holds for a fixed set of clients that all read
//! everything. So, with nothing else connected: K clients connect; once
//! the gauge shows all K registered, scrape; P of them publish N lines
//! each while all K read everything, checking per-publisher order; they
//! close; poll for up to 5 s (a writer counts its last write just after it
//! completes, which may be after its client's disconnect was registered)
//! until the deltas balance with Δreceived == P × N.
//!
//! (The load generator is not used here: it broadcasts warm-up lines until
//! all its clients have seen one, while some may not be registered yet, so
//! those lines reach fewer than K.)

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::metrics::{self, Metrics};
use crate::server::Server;

/// How long the K clients have to get every line.
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

/// Publisher `p`'s lines: `pP SEQ xxx…` (40 x's).
fn lines_of(p: usize, n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for seq in 0..n {
        out.extend_from_slice(format!("p{p} {seq} {}\n", "x".repeat(40)).as_bytes());
    }
    out
}

/// What one client has read: whole lines counted, each publisher's order
/// checked.
#[derive(Debug)]
pub(crate) struct Reader {
    next: Vec<u32>,
    partial: Vec<u8>,
    pub(crate) got: u64,
}

impl Reader {
    pub(crate) fn new(publishers: usize) -> Self {
        Reader {
            next: vec![0; publishers],
            partial: Vec::new(),
            got: 0,
        }
    }

    /// Takes bytes as read; an error names the first line out of place.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        self.partial.extend_from_slice(data);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let text = String::from_utf8_lossy(line);
            let mut fields = text.split(' ');
            let p = fields
                .next()
                .and_then(|f| f.strip_prefix('p'))
                .and_then(|f| f.parse::<usize>().ok());
            let seq = fields.next().and_then(|f| f.parse::<u32>().ok());
            let (Some(p), Some(seq)) = (p, seq) else {
                return Err(format!("a line that is not a phase line: {text:?}"));
            };
            let next = self
                .next
                .get_mut(p)
                .ok_or_else(|| format!("a line of publisher {p}, which does not exist"))?;
            if seq != *next {
                return Err(format!("publisher {p} line {seq}, expected {next}"));
            }
            *next += 1;
            self.got += 1;
        }
        Ok(())
    }
}

/// The deltas of the counters between two scrapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deltas {
    pub(crate) connected: i64,
    pub(crate) received: i64,
    pub(crate) sent: i64,
    pub(crate) dropped: i64,
}

impl Deltas {
    pub(crate) fn between(before: &Metrics, after: &Metrics) -> Self {
        let d = |name: &str| {
            (after.get(name).unwrap_or(0.0) - before.get(name).unwrap_or(0.0)).round() as i64
        };
        Deltas {
            connected: d("ringcast_connected_clients"),
            received: d("ringcast_messages_received_total"),
            sent: d("ringcast_messages_sent_total"),
            dropped: d("ringcast_messages_dropped_total"),
        }
    }

    /// All `k` gone, and every message received accounted for once per
    /// client: sent or dropped.
    pub(crate) fn balanced(&self, k: i64) -> bool {
        self.connected == -k && self.sent + self.dropped == self.received * k
    }
}

/// Runs the phase against `server`: the PASS detail, or the FAIL one.
pub(crate) fn run(
    server: &Server,
    k: usize,
    publishers: usize,
    lines: u32,
) -> Result<String, String> {
    let addr = server
        .metrics_addr()
        .ok_or_else(|| "the server reports no metrics address".to_owned())?;
    let gauge = "ringcast_connected_clients";
    metrics::wait_for_value(addr, gauge, 0, Duration::from_secs(10))
        .map_err(|e| format!("clients still connected before the phase ({e:#})"))?;
    let mut socks = Vec::with_capacity(k);
    for i in 0..k {
        let s = TcpStream::connect_timeout(&server.addr(), Duration::from_secs(5))
            .map_err(|e| format!("client {i} cannot connect: {e}"))?;
        socks.push(s);
    }
    // Only once the server has registered all k is the set of receivers
    // fixed.
    metrics::wait_for_value(addr, gauge, k as u64, Duration::from_secs(10))
        .map_err(|e| format!("the server did not register {k} clients ({e:#})"))?;
    let before = metrics::scrape(addr).map_err(|e| format!("{e:#}"))?;

    let want = publishers as u64 * u64::from(lines);
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for (i, sock) in socks.iter().enumerate() {
        let mut stream = sock.try_clone().map_err(|e| format!("client {i}: {e}"))?;
        readers.push(thread::spawn(move || -> Result<(), String> {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut reader = Reader::new(publishers);
            let mut buf = vec![0u8; 1 << 16];
            while reader.got < want {
                if Instant::now() > deadline {
                    return Err(format!(
                        "timed out: client {i} got {} of {want} lines",
                        reader.got
                    ));
                }
                match stream.read(&mut buf) {
                    Ok(0) => return Err(format!("client {i} closed by the server")),
                    Ok(n) => reader
                        .feed(&buf[..n])
                        .map_err(|e| format!("client {i}: {e}"))?,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(format!("client {i}: {e}")),
                }
            }
            Ok(())
        }));
        if i < publishers {
            let mut stream = sock.try_clone().map_err(|e| format!("client {i}: {e}"))?;
            let data = lines_of(i, lines);
            writers.push(thread::spawn(move || {
                let _ = stream.set_write_timeout(Some(PHASE_TIMEOUT));
                stream
                    .write_all(&data)
                    .map_err(|e| format!("publisher {i}: {e}"))
            }));
        }
    }
    let mut failure = None;
    for t in writers.into_iter().chain(readers) {
        let result = t
            .join()
            .unwrap_or_else(|_| Err("a client thread panicked".to_owned()));
        if let Err(e) = result
            && failure.is_none()
        {
            failure = Some(e);
        }
    }
    drop(socks);
    if let Some(e) = failure {
        return Err(e);
    }
    // Writers count a write just after it completes, which may be after the
    // client's disconnect was registered: poll for a few seconds.
    let k = k as i64;
    let (after, _) = metrics::wait_until(addr, Duration::from_secs(5), |m| {
        Deltas::between(&before, m).balanced(k)
    });
    let after = after.ok_or("cannot scrape the metrics after the phase")?;
    let d = Deltas::between(&before, &after);
    let detail = format!(
        "K={k}: received {} (published {want}) x {k} = {}, sent {} + dropped {} = {}; every client got all {want} lines in order",
        d.received,
        d.received * k,
        d.sent,
        d.dropped,
        d.sent + d.dropped
    );
    if d.balanced(k) && d.received == want as i64 {
        Ok(detail)
    } else {
        Err(format!(
            "{detail}; connected_clients moved by {}",
            d.connected
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_counts_lines_across_reads_and_checks_order() {
        let mut r = Reader::new(2);
        let a = lines_of(0, 3);
        let b = lines_of(1, 2);
        // Split mid-line.
        r.feed(&a[..10]).expect("ok");
        assert_eq!(r.got, 0);
        r.feed(&a[10..]).expect("ok");
        r.feed(&b).expect("ok");
        assert_eq!(r.got, 5);
        let err = r.feed(b"p0 7 xx\n").expect_err("out of order");
        assert!(err.contains("publisher 0 line 7, expected 3"), "{err}");
        assert!(Reader::new(1).feed(b"p1 0 x\n").is_err(), "no publisher 1");
        assert!(Reader::new(1).feed(b"hello\n").is_err());
    }

    #[test]
    fn deltas_balance_only_when_every_message_is_counted_once_per_client() {
        let before = metrics::parse(
            "ringcast_connected_clients 20\nringcast_messages_received_total 100\n\
             ringcast_messages_sent_total 1000\nringcast_messages_dropped_total 5\n",
        )
        .expect("parses");
        let after = metrics::parse(
            "ringcast_connected_clients 0\nringcast_messages_received_total 2100\n\
             ringcast_messages_sent_total 40990\nringcast_messages_dropped_total 15\n",
        )
        .expect("parses");
        let d = Deltas::between(&before, &after);
        assert_eq!(
            d,
            Deltas {
                connected: -20,
                received: 2000,
                sent: 39_990,
                dropped: 10
            }
        );
        assert!(d.balanced(20));
        assert!(!d.balanced(19));
        let still_counting = Deltas { sent: 39_980, ..d };
        assert!(!still_counting.balanced(20));
    }
}
