//! What `/proc` says about a process and the machine. The parsers take the
//! files' text, so the tests feed them fixtures; the readers around them
//! only read the files.
//!
//! CPU is measured one way everywhere: clock ticks, from
//! `/proc/<pid>/stat` (utime + stime) for a process and the `cpu` line of
//! `/proc/stat` for the machine, divided by `CLK_TCK`.

use std::path::Path;

use anyhow::{Context as _, bail};

/// User plus system clock ticks a process has used, from the text of
/// `/proc/<pid>/stat`.
pub(crate) fn parse_pid_ticks(stat: &str) -> anyhow::Result<u64> {
    // The command name, field 2, is in parentheses and may hold spaces and
    // parentheses itself, so fields are counted from the last ')'.
    let (_, rest) = stat
        .rsplit_once(')')
        .context("no ')' after the command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15.
    let field = |n: usize| -> anyhow::Result<u64> {
        let text = fields
            .get(n - 3)
            .with_context(|| format!("only {} fields after the name", fields.len()))?;
        text.parse()
            .with_context(|| format!("field {n} is {text:?}, not a tick count"))
    };
    Ok(field(14)? + field(15)?)
}

/// The machine's clock ticks by kind, summed over every core: the `cpu`
/// line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MachineTicks {
    /// Every kind but idle and iowait: what some process or the kernel
    /// used, the hypervisor's steal included.
    pub(crate) busy: u64,
    /// Ticks the hypervisor gave to other guests.
    pub(crate) steal: u64,
}

/// The `cpu` line of the text of `/proc/stat`.
pub(crate) fn parse_machine_ticks(stat: &str) -> anyhow::Result<MachineTicks> {
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))
        .context("no \"cpu\" line")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{line:?} has a field that is not a tick count"))?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already inside user and nice.
    let &[user, nice, system, _idle, _iowait, irq, softirq, steal, ..] = ticks.as_slice() else {
        bail!("{line:?} has fewer than 8 tick counts");
    };
    Ok(MachineTicks {
        busy: user + nice + system + irq + softirq + steal,
        steal,
    })
}

/// Resident memory in KiB, the `VmRSS` line of the text of
/// `/proc/<pid>/status`.
pub(crate) fn parse_rss_kib(status: &str) -> anyhow::Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let value = line
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("{line:?} has no value"))?;
    value
        .parse()
        .with_context(|| format!("{line:?}: {value:?} is not a number of KiB"))
}

/// Reads a file of `/proc`, naming it in the error.
fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Clock ticks (user + system) process `pid` has used.
pub(crate) fn pid_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    parse_pid_ticks(&read(path.as_ref())?).with_context(|| format!("cannot parse {path}"))
}

/// Clock ticks this process has used: the load generator's, which runs
/// in it.
pub(crate) fn self_ticks() -> anyhow::Result<u64> {
    parse_pid_ticks(&read("/proc/self/stat".as_ref())?).context("cannot parse /proc/self/stat")
}

/// The machine's clock ticks.
pub(crate) fn machine_ticks() -> anyhow::Result<MachineTicks> {
    parse_machine_ticks(&read("/proc/stat".as_ref())?).context("cannot parse /proc/stat")
}

/// Resident memory of process `pid`, in KiB.
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    parse_rss_kib(&read(path.as_ref())?).with_context(|| format!("cannot parse {path}"))
}

/// Open descriptors of process `pid`.
pub(crate) fn fd_count(pid: u32) -> anyhow::Result<usize> {
    let path = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&path)
        .with_context(|| format!("cannot list {path}"))?
        .count())
}

/// What process `pid`'s descriptors point at, counted by kind
/// (`socket`, `anon_inode:[io_uring]`, a path): for the message when
/// they do not come back.
pub(crate) fn fd_kinds(pid: u32) -> String {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in dir.flatten() {
            let target = std::fs::read_link(entry.path())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "?".to_owned());
            // socket:[12345] and pipe:[678] by kind, not one by one.
            let kind = match target.split_once(":[") {
                Some((kind, _)) => kind.to_owned(),
                None => target,
            };
            *kinds.entry(kind).or_default() += 1;
        }
    }
    kinds
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Clock ticks per second (`CLK_TCK`), 100 on Linux unless told otherwise.
pub(crate) fn clk_tck() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n.unsigned_abs(),
        _ => 100,
    }
}

/// Clock ticks of every process on the machine, by pid, with its name:
/// for the busiest other processes in setup.txt.
pub(crate) fn all_process_ticks() -> Vec<(u32, String, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let name = stat.split_once('(')?.1.rsplit_once(')')?.0.to_owned();
            Some((pid, name, parse_pid_ticks(&stat).ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_stat_sums_utime_and_stime() {
        // A real line, with a name that has a space and a parenthesis.
        let stat = "26709 (ringcast (x) y) S 1 26709 1 0 -1 4194560 5391 0 0 0 \
                    1234 567 0 0 20 0 3 0 123456 12345678 1500 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_pid_ticks(stat).expect("parses"), 1234 + 567);
        assert!(parse_pid_ticks("1 (x) S 1 2").is_err(), "too short");
        assert!(parse_pid_ticks("no parenthesis").is_err());
    }

    #[test]
    fn proc_stat_busy_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 9000 30 7 8 2 0 0\n\
                    cpu0 50 2 25 4500 15 3 4 1 0 0\n\
                    intr 12345\n";
        let t = parse_machine_ticks(stat).expect("parses");
        assert_eq!(t.busy, 100 + 5 + 50 + 7 + 8 + 2);
        assert_eq!(t.steal, 2);
        assert!(
            parse_machine_ticks("cpu0 1 2 3 4 5 6 7 8\n").is_err(),
            "no cpu line"
        );
        assert!(parse_machine_ticks("cpu 1 2 3\n").is_err(), "short line");
    }

    #[test]
    fn status_gives_rss() {
        let status = "Name:\tringcast\nState:\tS (sleeping)\nVmPeak:\t  99999 kB\n\
                      VmRSS:\t   63084 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status).expect("parses"), 63084);
        assert!(
            parse_rss_kib("Name:\tkthread\n").is_err(),
            "kernel threads have none"
        );
    }

    #[test]
    fn readers_work_on_this_process() {
        let me = std::process::id();
        assert!(rss_kib(me).expect("rss") > 0);
        assert!(fd_count(me).expect("fds") >= 3);
        pid_ticks(me).expect("ticks");
        machine_ticks().expect("machine");
        assert!(clk_tck() > 0);
    }
}
