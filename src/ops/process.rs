//! The standard process metrics, named as Prometheus's client libraries
//! name them, read from `/proc/self` when scraped.
//!
//! Six numbers from three files and one system call: parsed here rather
//! than through a crate for all of `/proc`.

/// The process, at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Process {
    /// `process_resident_memory_bytes`.
    pub(crate) resident_bytes: u64,
    /// `process_virtual_memory_bytes`.
    pub(crate) virtual_bytes: u64,
    /// `process_cpu_seconds_total`: user and system time.
    pub(crate) cpu_seconds: f64,
    /// `process_start_time_seconds`, since the Unix epoch.
    pub(crate) start_time_seconds: f64,
    /// `process_open_fds`.
    pub(crate) open_fds: u64,
    /// `process_max_fds`: the soft `RLIMIT_NOFILE`.
    pub(crate) max_fds: u64,
}

/// Reads the process's figures now; `None` where `/proc` is not Linux's.
pub(crate) fn read() -> Option<Process> {
    let ticks = sysconf(nix::unistd::SysconfVar::CLK_TCK)?;
    let page = sysconf(nix::unistd::SysconfVar::PAGE_SIZE)?;
    let boot = boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    // One entry per descriptor (the directory's own is not listed); the
    // directory's descriptor while it is read is one more.
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let (max_fds, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok()?;
    Some(Process {
        resident_bytes: stat.rss_pages.saturating_mul(page),
        virtual_bytes: stat.vsize,
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks as f64,
        start_time_seconds: boot as f64 + stat.start_ticks as f64 / ticks as f64,
        open_fds: open_fds.saturating_sub(1),
        max_fds,
    })
}

fn sysconf(var: nix::unistd::SysconfVar) -> Option<u64> {
    u64::try_from(nix::unistd::sysconf(var).ok()??).ok()
}

/// The fields of `/proc/self/stat` read here, in their own units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// User and system time, in clock ticks.
    utime: u64,
    stime: u64,
    /// When the process started, in clock ticks after boot.
    start_ticks: u64,
    /// Virtual memory, in bytes.
    vsize: u64,
    /// Resident memory, in pages.
    rss_pages: u64,
}

/// Parses `/proc/[pid]/stat` (proc(5)). The command name, field 2, is in
/// parentheses and may hold spaces and parentheses itself: the fields
/// after it are counted from its last `)`.
fn parse_stat(stat: &str) -> Option<Stat> {
    let (_, rest) = stat.rsplit_once(')')?;
    // Field 3 (state) is the first after the name.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

/// The boot time, in seconds since the Unix epoch, from `/proc/stat`'s
/// `btime` line.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// How long ago the process started, for tests.
#[cfg(test)]
fn age(p: &Process) -> std::time::Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(std::time::Duration::from_secs_f64(p.start_time_seconds))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn parses_stat_past_a_name_with_spaces_and_parentheses() {
        // A real line of proc(5)'s format, its name made awkward.
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 2012 0 0 0 \
                    31 17 0 0 20 0 5 0 98765 123456789 2345 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 17475 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 31,
                stime: 17,
                start_ticks: 98765,
                vsize: 123_456_789,
                rss_pages: 2345,
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 1 2"), None);
        assert_eq!(parse_stat("no parentheses"), None);
    }

    #[test]
    fn finds_the_boot_time() {
        let stat = "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1765000000\nprocesses 7\n";
        assert_eq!(boot_time(stat), Some(1_765_000_000));
        assert_eq!(boot_time("cpu 1\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let before = read().expect("Linux's /proc");
        let after = read().expect("Linux's /proc");
        // Other tests of this binary open and close descriptors meanwhile:
        // tests/operator.rs counts a server's own.
        assert!((3..=after.max_fds).contains(&after.open_fds), "{after:?}");
        assert!(
            before.resident_bytes > 100_000 && before.virtual_bytes >= before.resident_bytes,
            "{before:?}"
        );
        assert!(after.cpu_seconds >= before.cpu_seconds);
        assert_eq!(after.start_time_seconds, before.start_time_seconds);
        // The test binary started moments ago (a loaded machine: a minute).
        assert!(age(&before) < Duration::from_secs(60), "{before:?}");
    }
}
