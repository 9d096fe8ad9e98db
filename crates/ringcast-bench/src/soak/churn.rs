//! Churn: short-lived connections spread over the main phase, each
//! closing cleanly or by reset (SO_LINGER 0), some after reading a little.

use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use socket2::SockRef;

/// How long one connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Past its schedule, churn gives up after this long more.
const OVERRUN: Duration = Duration::from_secs(60);

/// A small seeded generator (SplitMix64): churn's choices are the same
/// from run to run, which makes a failure easier to chase.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        // The top 53 bits as a fraction in [0, 1).
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// What churn did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) cycles: u32,
    pub(crate) failures: u32,
}

impl Outcome {
    /// At most 1% of the connects may fail.
    pub(crate) fn ok(&self) -> bool {
        self.failures <= self.cycles / 100
    }
}

/// `cycles` connect/disconnect cycles to `addr`, paced to spread over
/// `over` (never faster than the schedule).
pub(crate) fn run(addr: SocketAddr, cycles: u32, over: Duration, seed: u64) -> Outcome {
    let mut rng = SplitMix64::new(seed);
    let start = Instant::now();
    let give_up = start + over + OVERRUN;
    let mut failures = 0;
    for i in 0..cycles {
        let due = start + over.mul_f64(f64::from(i) / f64::from(cycles.max(1)));
        let now = Instant::now();
        if now > give_up {
            failures += cycles - i;
            break;
        }
        if due > now {
            thread::sleep(due - now);
        }
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) else {
            failures += 1;
            continue;
        };
        if rng.chance(0.3) {
            // Read a little, if anything is there (the soak's load is).
            let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
        }
        if rng.chance(0.5) {
            // RST instead of FIN.
            let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        }
        drop(stream);
    }
    Outcome { cycles, failures }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_seeded_and_fair() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let hits = (0..10_000).filter(|_| a.chance(0.3)).count();
        assert!((2700..3300).contains(&hits), "{hits}");
    }

    #[test]
    fn failures_are_judged_at_one_percent() {
        assert!(
            Outcome {
                cycles: 2000,
                failures: 20
            }
            .ok()
        );
        assert!(
            !Outcome {
                cycles: 2000,
                failures: 21
            }
            .ok()
        );
    }

    #[test]
    fn churns_against_a_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accept = thread::spawn(move || {
            for _ in 0..20 {
                if listener.accept().is_err() {
                    break;
                }
            }
        });
        let out = run(addr, 20, Duration::from_millis(100), 7);
        assert_eq!(
            out,
            Outcome {
                cycles: 20,
                failures: 0
            }
        );
        accept.join().expect("joins");
    }
}
