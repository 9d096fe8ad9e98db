//! What `/proc` says about a process and the machine, read with the
//! procfs crate.
//!
//! CPU is measured one way everywhere: clock ticks, from
//! `/proc/<pid>/stat` (utime + stime) for a process and the `cpu` line of
//! `/proc/stat` for the machine, divided by `CLK_TCK`.

use anyhow::Context as _;
use procfs::process::{FDTarget, Process};
use procfs::{CpuTime, CurrentSI as _, KernelStats};

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

impl From<&CpuTime> for MachineTicks {
    fn from(t: &CpuTime) -> Self {
        // Guest time is already inside user and nice.
        let steal = t.steal.unwrap_or(0);
        let busy = t.user + t.nice + t.system + t.irq.unwrap_or(0) + t.softirq.unwrap_or(0) + steal;
        Self { busy, steal }
    }
}

/// Process `pid`, as procfs opens it.
fn process(pid: u32) -> anyhow::Result<Process> {
    let id = i32::try_from(pid).with_context(|| format!("{pid} is not a pid"))?;
    Process::new(id).with_context(|| format!("cannot open /proc/{pid}"))
}

/// Clock ticks (user + system) process `pid` has used.
pub(crate) fn pid_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = process(pid)?
        .stat()
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    Ok(stat.utime + stat.stime)
}

/// Clock ticks this process has used: the load generator's, which runs
/// in it.
pub(crate) fn self_ticks() -> anyhow::Result<u64> {
    pid_ticks(std::process::id())
}

/// The machine's clock ticks.
pub(crate) fn machine_ticks() -> anyhow::Result<MachineTicks> {
    let stats = KernelStats::current().context("cannot read /proc/stat")?;
    Ok(MachineTicks::from(&stats.total))
}

/// Resident memory of process `pid`, in KiB.
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    process(pid)?
        .status()
        .with_context(|| format!("cannot read /proc/{pid}/status"))?
        .vmrss
        .with_context(|| format!("/proc/{pid}/status has no VmRSS"))
}

/// Open descriptors of process `pid`.
pub(crate) fn fd_count(pid: u32) -> anyhow::Result<usize> {
    process(pid)?
        .fd_count()
        .with_context(|| format!("cannot list /proc/{pid}/fd"))
}

/// What process `pid`'s descriptors point at, counted by kind
/// (`socket`, `anon_inode:[io_uring]`, a path): for the message when
/// they do not come back.
pub(crate) fn fd_kinds(pid: u32) -> String {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    let fds = process(pid).ok().and_then(|p| p.fd().ok());
    for fd in fds.into_iter().flatten().flatten() {
        // Sockets and pipes by kind, not one by one.
        let kind = match fd.target {
            FDTarget::Path(path) => path.display().to_string(),
            FDTarget::Socket(_) => "socket".to_owned(),
            FDTarget::Net(_) => "net".to_owned(),
            FDTarget::Pipe(_) => "pipe".to_owned(),
            FDTarget::AnonInode(name) => format!("anon_inode:{name}"),
            FDTarget::MemFD(name) => format!("memfd:{name}"),
            FDTarget::Other(kind, _) | FDTarget::Unknown(kind, _) => kind,
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Clock ticks per second (`CLK_TCK`).
pub(crate) fn clk_tck() -> u64 {
    procfs::ticks_per_second()
}

/// Clock ticks of every process on the machine, by pid, with its name:
/// for the busiest other processes in setup.txt.
pub(crate) fn all_process_ticks() -> Vec<(u32, String, u64)> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.flatten()
        .filter_map(|p| {
            let stat = p.stat().ok()?;
            let pid = u32::try_from(stat.pid).ok()?;
            Some((pid, stat.comm, stat.utime + stat.stime))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 9000 30 7 8 2 0 0\n\
                    cpu0 50 2 25 4500 15 3 4 1 0 0\n\
                    ctxt 1\nbtime 1\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n";
        let stats = <KernelStats as procfs::FromReadSI>::from_read(
            stat.as_bytes(),
            procfs::current_system_info(),
        )
        .expect("parses");
        let t = MachineTicks::from(&stats.total);
        assert_eq!(t.busy, 100 + 5 + 50 + 7 + 8 + 2);
        assert_eq!(t.steal, 2);
    }

    #[test]
    fn readers_work_on_this_process() {
        let me = std::process::id();
        assert!(rss_kib(me).expect("rss") > 0);
        assert!(fd_count(me).expect("fds") >= 3);
        assert!(!fd_kinds(me).is_empty());
        pid_ticks(me).expect("ticks");
        self_ticks().expect("own ticks");
        machine_ticks().expect("machine");
        assert!(clk_tck() > 0);
        assert!(all_process_ticks().iter().any(|(pid, _, _)| *pid == me));
    }
}
