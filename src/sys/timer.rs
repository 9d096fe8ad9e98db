//! A one-shot timer with microsecond resolution, for the write coalescer:
//! the runtimes' own timers tick in milliseconds.

use std::time::Duration;

/// A one-shot timer with microsecond resolution: a timerfd on the
/// monotonic clock, which becomes readable when it expires.
#[derive(Debug)]
pub(crate) struct FlushTimer(nix::sys::timerfd::TimerFd);

impl FlushTimer {
    /// A disarmed timer. `nonblocking` for readiness-based runtimes (epoll);
    /// io_uring waits on a blocking one.
    pub(crate) fn new(nonblocking: bool) -> std::io::Result<Self> {
        use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
        let mut flags = TimerFlags::TFD_CLOEXEC;
        if nonblocking {
            flags |= TimerFlags::TFD_NONBLOCK;
        }
        Ok(Self(TimerFd::new(ClockId::CLOCK_MONOTONIC, flags)?))
    }

    /// Arms the timer to expire once, `after` from now (at least 1 ns, since
    /// zero would disarm it).
    pub(crate) fn arm(&self, after: Duration) -> std::io::Result<()> {
        use nix::sys::time::TimeSpec;
        use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
        let after = after.max(Duration::from_nanos(1));
        self.0.set(
            Expiration::OneShot(TimeSpec::from_duration(after)),
            TimerSetTimeFlags::empty(),
        )?;
        Ok(())
    }

    /// The timer's file descriptor, to wait on.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }

    /// Reads and resets the expiration count; `WouldBlock` on a
    /// non-blocking timer that has not expired.
    pub(crate) fn expirations(&self) -> std::io::Result<u64> {
        let mut count = [0u8; 8];
        nix::unistd::read(self.fd(), &mut count)?;
        Ok(u64::from_ne_bytes(count))
    }
}

impl std::os::fd::AsRawFd for FlushTimer {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_flush_timer_expires_once_after_its_delay() {
        let timer = FlushTimer::new(false).unwrap();
        let start = Instant::now();
        timer.arm(Duration::from_micros(300)).unwrap();
        let mut expirations = [0u8; 8];
        let n = nix::unistd::read(timer.fd(), &mut expirations).unwrap();
        assert_eq!(n, 8);
        assert_eq!(u64::from_ne_bytes(expirations), 1);
        let timer = FlushTimer::new(true).unwrap();
        assert_eq!(
            timer.expirations().unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "not armed: nothing to read"
        );
        assert!(start.elapsed() >= Duration::from_micros(300));
    }
}
