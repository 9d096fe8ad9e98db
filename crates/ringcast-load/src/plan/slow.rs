//! The slow readers a plan may add, and their checks.

use std::time::Duration;

use super::PlanError;

/// Default `--slow-read`, in bytes.
pub const DEFAULT_SLOW_READ: usize = 4096;
/// Default `--slow-every`.
pub const DEFAULT_SLOW_EVERY: Duration = Duration::from_millis(10);
/// Default `--slow-rcvbuf`, in bytes.
pub const DEFAULT_SLOW_RCVBUF: usize = 8192;
/// Largest `--slow-read`: a slow reader's buffer holds one read and one
/// unfinished line.
pub const MAX_SLOW_READ: usize = 1 << 20;
/// Largest `--slow-rcvbuf`: `setsockopt` takes an `int`.
pub const MAX_SLOW_RCVBUF: usize = i32::MAX as usize;

/// Connections that read slowly, to see how the server treats them and
/// whether they hold up everyone else. They come on top of the plan's
/// `clients`: they never publish, are not waited for at the end, and are
/// reported apart, so the fast readers' figures mean what they mean
/// without them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowReaders {
    /// How many (`--slow-clients`); 0 adds none.
    pub count: usize,
    /// How they read.
    pub mode: SlowMode,
    /// The receive buffer (`SO_RCVBUF`) each asks for before it connects,
    /// so the server sees a small TCP window from the start; Linux doubles
    /// it. `None` keeps the kernel's default (and its autotuning).
    pub rcvbuf: Option<usize>,
}

impl Default for SlowReaders {
    /// None yet; once counted, they pace their reads with `ringcast
    /// load`'s defaults.
    fn default() -> Self {
        SlowReaders {
            count: 0,
            mode: SlowMode::Paced {
                read: DEFAULT_SLOW_READ,
                every: DEFAULT_SLOW_EVERY,
            },
            rcvbuf: Some(DEFAULT_SLOW_RCVBUF),
        }
    }
}

/// How a slow reader reads. The two ways do not combine: one caps the rate
/// a reader drains at, the other stops it outright for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowMode {
    /// Read at most `read` bytes, then wait `every`, and again: at most
    /// `read / every` bytes per second (`--slow-read`, `--slow-every`).
    Paced {
        /// Bytes asked for per read.
        read: usize,
        /// The wait after each read.
        every: Duration,
    },
    /// Read everything as fast as it comes, but stop reading for `pause`
    /// at the end of every period of `every` (`--slow-pause`,
    /// `--slow-pause-every`): with 200 ms and 300 ms, 100 ms of reading,
    /// then 200 ms of nothing.
    Pausing {
        /// How long each pause lasts.
        pause: Duration,
        /// The period: a pause ends each one.
        every: Duration,
    },
}

impl SlowReaders {
    /// Checks the values a plan with these slow readers needs; `None` if
    /// there are none.
    pub(super) fn check(self) -> Result<Option<SlowReaders>, PlanError> {
        if self.count == 0 {
            return Ok(None);
        }
        match self.mode {
            SlowMode::Paced { read, every } => {
                if read == 0 {
                    return Err(PlanError::new("slow-read", "must be at least 1"));
                }
                if read > MAX_SLOW_READ {
                    return Err(PlanError::new(
                        "slow-read",
                        format!("must be at most {MAX_SLOW_READ}"),
                    ));
                }
                if every.is_zero() {
                    return Err(PlanError::new(
                        "slow-every",
                        "must be longer than zero (a reader that never waits is not slow)",
                    ));
                }
            }
            SlowMode::Pausing { pause, every } => {
                if pause.is_zero() {
                    return Err(PlanError::new("slow-pause", "must be longer than zero"));
                }
                if every <= pause {
                    return Err(PlanError::new(
                        "slow-pause-every",
                        format!(
                            "({}) must be longer than --slow-pause ({}), or the reader never reads",
                            humantime::format_duration(every),
                            humantime::format_duration(pause)
                        ),
                    ));
                }
            }
        }
        match self.rcvbuf {
            Some(0) => Err(PlanError::new(
                "slow-rcvbuf",
                "must be at least 1 (the command line's 0 means the kernel's default)",
            )),
            Some(n) if n > MAX_SLOW_RCVBUF => Err(PlanError::new(
                "slow-rcvbuf",
                format!("must be at most {MAX_SLOW_RCVBUF}"),
            )),
            _ => Ok(Some(self)),
        }
    }
}
