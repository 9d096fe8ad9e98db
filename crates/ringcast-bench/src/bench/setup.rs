//! setup.txt: the machine, kernel, commit and flags of a run, what else
//! was running at its start, and at its end how long it took, how long it
//! waited for quiet and what the hypervisor stole.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ::procfs::Current as _;

use super::{Bench, Settings, slow, tls};
use crate::procfs;
use crate::sample::busy_cores;

/// The host name up to its first dot, as `hostname -s` gives it.
pub(crate) fn short_hostname() -> String {
    let name = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    name.split('.').next().unwrap_or("unknown").to_owned()
}

/// The output of a command, trimmed; `None` if it failed.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The `[profile.release]` settings of a Cargo.toml's text, as
/// `key = value`.
fn release_profile(text: &str) -> String {
    let manifest: toml::Table = toml::from_str(text).unwrap_or_default();
    let release = manifest
        .get("profile")
        .and_then(|p| p.get("release"))
        .and_then(toml::Value::as_table);
    release
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first lines, written when the run starts.
pub(crate) fn header(
    s: &Settings,
    bin: &Path,
    textbook_bin: Option<&Path>,
    fd_got: u64,
    fd_hard: u64,
    clk_tck: u64,
) -> Vec<String> {
    let mut l = Vec::new();
    l.push(format!(
        "ringcast benchmark, {}",
        chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    ));
    l.push(format!(
        "mode: {}{}",
        if s.quick { "quick" } else { "full" },
        if s.cluster {
            ", cluster (single node vs cross-node)"
        } else {
            ""
        }
    ));
    if !s.scenarios.is_empty() {
        l.push(format!("scenarios: only {:?}", s.scenarios));
    }
    l.extend(machine());
    l.push(format!(
        "cargo profile: release ({})",
        release_profile(&std::fs::read_to_string("Cargo.toml").unwrap_or_default())
    ));
    l.push(format!("server binary: {}", bin.display()));
    if let Some(textbook) = textbook_bin {
        l.push(format!(
            "textbook server (load matrix only; idle, swarm, slow readers and TLS run uring and tokio only): {}",
            textbook.display()
        ));
    }
    l.push(format!(
        "load generator: the ringcast-load library inside ringcast-bench (same process), {} threads, duration {} s per cell, publishers min({}, clients), window default (1000, or fewer so that publishers x window x clients <= 1,000,000)",
        s.load_threads,
        s.duration.as_secs_f64(),
        s.max_publishers
    ));
    if s.cluster {
        l.push(format!(
            "cluster: 2 uring nodes (a: --node-id bench-a, b: --node-id bench-b) on one local nats-server; clients {:?} x 64 B, {} publishers, fixed load {} deliveries/s and rate max; single = every client on A, cross = client i on node i mod 2",
            s.cluster_clients, s.max_publishers, s.fixed_deliveries_64
        ));
    } else {
        l.push(format!(
            "rounds: each saturation cell {} time(s), engines alternating; each fixed-rate cell once",
            s.rounds
        ));
        l.push(format!(
            "fixed offered load: {} deliveries/s for 64-byte lines, {} for 1024-byte lines",
            s.fixed_deliveries_64, s.fixed_deliveries_1024
        ));
        l.push(format!(
            "flood: {} clients x {} B, 1 publisher at rate max paced by nobody (--paced-by none: no window, as fast as its socket takes lines), {} time(s), servers alternating",
            s.flood_clients, s.flood_size, s.flood_rounds
        ));
        l.push(format!(
            "slow readers: {} publishers at {} lines/s each, {}-byte lines, {} s per run, SO_RCVBUF {} B asked for each slow reader; cases: {}",
            slow::PUBLISHERS,
            slow::RATE,
            slow::SIZE,
            s.slow_duration.as_secs_f64(),
            slow::RCVBUF,
            slow::CASES
                .iter()
                .map(|c| format!("{} ({})", c.name, c.text))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        l.push(format!(
            "tls: {} clients x {:?} B, {} publishers at {} lines/s each ({} deliveries/s), {} s per run, {} round(s); per engine one server with a self-signed certificate (tls-cert.pem and tls-key.pem in the results folder) serving TLS on --listen and plain TCP on --plain-listen; each cell once plain, once with every client over TLS",
            tls::CLIENTS,
            s.tls_sizes,
            tls::PUBLISHERS,
            tls::rate(),
            tls::DELIVERIES,
            s.tls_duration.as_secs_f64(),
            s.tls_rounds,
        ));
        l.push(format!(
            "netcat swarm: {} listeners, {} publishers x {} lines of 64 bytes",
            s.nc_listeners, s.nc_publishers, s.nc_lines
        ));
        l.push(format!("idle clients: {}", s.idle_clients));
    }
    l.push(format!("open-files limit: {fd_got} (hard {fd_hard})"));
    // One second of the machine, and of every process in it, measured the
    // one way CPU is measured everywhere: clock ticks from /proc.
    let before = procfs::all_process_ticks();
    let busy = busy_cores(Duration::from_secs(1), clk_tck).unwrap_or(f64::NAN);
    let after = procfs::all_process_ticks();
    l.push(format!(
        "load average at start: {}; cores busy in the second before: {busy:.2} of {}",
        load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    l.push("busiest other processes in that second (cores, from /proc/PID/stat):".to_owned());
    let mut busiest: Vec<(f64, String)> = after
        .iter()
        .filter_map(|(pid, name, t1)| {
            let t0 = before.iter().find(|(p, _, _)| p == pid)?.2;
            Some((
                t1.saturating_sub(t0) as f64 / clk_tck.max(1) as f64,
                name.clone(),
            ))
        })
        .collect();
    busiest.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (cores, name) in busiest.iter().take(5) {
        l.push(format!("  {cores:5.2} {name}"));
    }
    l
}

/// The machine, kernel, this checkout's commit and rustc: setup.txt's
/// lines for any run.
pub(crate) fn machine() -> Vec<String> {
    let mut l = Vec::new();
    l.push(format!(
        "host: {}",
        nix::unistd::gethostname().map_or_else(
            |_| "unknown".to_owned(),
            |h| h.to_string_lossy().into_owned()
        )
    ));
    let cpuinfo = ::procfs::CpuInfo::current().ok();
    l.push(format!(
        "cpu: {}",
        cpuinfo
            .as_ref()
            .and_then(|c| c.model_name(0))
            .unwrap_or_default()
    ));
    let in_cpuinfo = cpuinfo.as_ref().map_or(0, ::procfs::CpuInfo::num_cores);
    l.push(format!(
        "cores: {} online ({in_cpuinfo} in /proc/cpuinfo)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    l.push(format!(
        "memory: {}",
        ::procfs::Meminfo::current()
            .map_or_else(|_| String::new(), |m| format!("{} kB", m.mem_total / 1024))
    ));
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    l.push(format!(
        "kernel: {} (Linux {})",
        release.trim(),
        std::env::consts::ARCH
    ));
    let dirty = output("git", &["diff", "--quiet", "HEAD"]).is_none();
    l.push(format!(
        "git commit: {}{}",
        output("git", &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned()),
        if dirty {
            " (working tree has uncommitted changes)"
        } else {
            ""
        }
    ));
    l.push(format!(
        "uncommitted changes to tracked files built into this run: {}",
        output("git", &["diff", "--name-only", "HEAD"])
            .unwrap_or_default()
            .replace('\n', " ")
    ));
    l.push(format!(
        "rustc: {}",
        output("rustc", &["-V"]).unwrap_or_else(|| "unknown".to_owned())
    ));
    l
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    ::procfs::LoadAverage::current()
        .map(|l| format!("{:.2} {:.2} {:.2}", l.one, l.five, l.fifteen))
        .unwrap_or_default()
}

/// The last lines, written at the end.
pub(crate) fn footer(
    bench: &Bench,
    steal_at_start: u64,
    elapsed_s: f64,
) -> anyhow::Result<Vec<String>> {
    let stolen_ticks = procfs::machine_ticks()?
        .steal
        .saturating_sub(steal_at_start);
    let stolen_s = stolen_ticks as f64 / bench.clk_tck.max(1) as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut l = vec![
        format!("total run time: {elapsed_s:.3}s"),
        format!("load average at end: {}", load_average()),
        format!(
            "machine waits for quiet: {:.0}s of {}s allowed",
            bench.quiet.waited.as_secs_f64(),
            bench.quiet.budget.as_secs()
        ),
        format!(
            "stolen by the hypervisor (steal in /proc/stat) during the run: {stolen_s:.1} s of CPU ({:.1}% of the cores over the run); well above 0 means a busy host, and noisy numbers",
            100.0 * stolen_s / (elapsed_s.max(1e-9) * cores)
        ),
    ];
    l.push(if bench.s.cluster {
        "raw.csv (cluster rows): server_cpu_cores is both nodes together, over each cell's wall time; server_dropped = ringcast_messages_dropped_total + ringcast_cluster_dropped_total, both nodes".to_owned()
    } else {
        "raw.csv: server_cpu_cores, load_cpu_cores (the generator: this harness's own process) and machine_cpu_cores (every process) are all over each cell's wall time (wall_s), from /proc/PID/stat and /proc/stat; other_cpu_cores = machine - server - generator (which includes steal), noise from other processes if well above 0. server_cpu_measured_s is the server's CPU over the measured interval of delivered_per_s alone (start of publishing to last delivery, from /proc/PID/stat sampled every 10 ms), and server_cpu_ns_per_delivery that over delivered".to_owned()
    });
    crate::say!("stolen by the hypervisor during the run: {stolen_s:.1} s of CPU");
    Ok(l)
}

#[cfg(test)]
mod tests {
    #[test]
    fn release_profile_lists_its_settings() {
        let text = "[package]\nname = \"x\"\n\n[profile.release]\ndebug = \"line-tables-only\"\nlto = true\n\n[profile.dev]\nopt-level = 1\n";
        assert_eq!(
            super::release_profile(text),
            "debug = \"line-tables-only\" lto = true"
        );
        assert_eq!(super::release_profile("[package]\n"), "");
    }
}
