//! The netcat swarm: N real `nc` listeners and 3 `nc` publishers, each
//! publisher piping its own numbered 64-byte lines; the time until every
//! listener has every line, and whether each got every publisher's lines
//! complete and in order.
//!
//! Every `nc`'s stdin is a pipe the harness holds open and never closes
//! while it runs, as `sleep | nc` did: a half-close reads as a disconnect.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::Bench;
use crate::children::ChildGuard;
use crate::row::{Row, Scenario};
use crate::say;
use crate::server::Server;

/// Bytes per line, the newline included.
const LINE: usize = 64;

/// The publishers' input files' contents.
pub(crate) struct Inputs {
    publishers: Vec<Vec<u8>>,
    lines: u32,
}

impl Inputs {
    /// `lines` lines for each of the run's publishers.
    pub(crate) fn write(bench: &Bench) -> anyhow::Result<Inputs> {
        Ok(Inputs {
            publishers: (1..=bench.s.nc_publishers)
                .map(|p| publisher_input(p, bench.s.nc_lines))
                .collect(),
            lines: bench.s.nc_lines,
        })
    }
}

/// Publisher `p`'s lines: `ncP SEQ xxx...x`, 64 bytes each.
fn publisher_input(p: u32, lines: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines as usize * LINE);
    for i in 0..lines {
        let head = format!("nc{p} {i:08} ");
        out.extend_from_slice(head.as_bytes());
        out.resize(out.len() + (LINE - 1).saturating_sub(head.len()), b'x');
        out.push(b'\n');
    }
    out
}

/// What the listeners got: the fewest and most lines, and whether every
/// one had exactly every publisher's lines in order and nothing else.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Check {
    pub(crate) min: u64,
    pub(crate) max: u64,
    pub(crate) total: u64,
    pub(crate) ok: bool,
}

/// Checks what each listener received against `publishers` × `lines`.
pub(crate) fn check(received: &[Vec<u8>], publishers: u32, lines: u32) -> Check {
    let mut c = Check {
        min: u64::MAX,
        max: 0,
        total: 0,
        ok: true,
    };
    for data in received {
        let mut next = vec![0u32; publishers as usize];
        let mut count = 0u64;
        let complete = data.ends_with(b"\n") || data.is_empty();
        for line in data.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            count += 1;
            let ok = (|| {
                let text = std::str::from_utf8(line).ok()?;
                let mut fields = text.split(' ');
                let p: usize = fields.next()?.strip_prefix("nc")?.parse().ok()?;
                let seq: u32 = fields.next()?.parse().ok()?;
                let slot = next.get_mut(p.checked_sub(1)?)?;
                (seq == *slot && line.len() == LINE - 1).then(|| *slot += 1)
            })();
            if ok.is_none() {
                c.ok = false;
            }
        }
        if !complete || next.iter().any(|&n| n != lines) {
            c.ok = false;
        }
        c.min = c.min.min(count);
        c.max = c.max.max(count);
        c.total += count;
    }
    if received.is_empty() {
        c.min = 0;
    }
    c
}

/// Spawns `nc -n 127.0.0.1 PORT` with its stdin a pipe held open.
fn nc(port: u16, stdout: Stdio, errors: &File) -> anyhow::Result<ChildGuard> {
    let mut cmd = Command::new("nc");
    cmd.args(["-n", "127.0.0.1", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(errors.try_clone().context("cannot share nc.err")?);
    ChildGuard::spawn(&mut cmd, "nc")
}

pub(crate) fn run(bench: &mut Bench, server: &mut Server, inputs: &Inputs) -> anyhow::Result<()> {
    let n = bench.s.nc_listeners;
    let publishers = inputs.publishers.len() as u32;
    let expected = u64::from(publishers) * u64::from(inputs.lines);
    let dir = bench.scratch.path().join(format!("swarm-{}", server.name));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let errors = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("nc.err"))
        .context("cannot create nc.err")?;
    bench.wait_quiet()?;
    server.check_alive()?;
    let dropped_before = server.scrape()?.count("ringcast_messages_dropped_total")?;
    let port = server.addr().port();

    let mut listeners = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for i in 0..n {
        let path = dir.join(format!("listener-{i}.txt"));
        let out =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        listeners.push(nc(port, Stdio::from(out), &errors)?);
        files.push(path);
    }
    if let Err(e) = server.wait_for(
        "ringcast_connected_clients",
        u64::from(n),
        Duration::from_secs(30),
    ) {
        bench.problem(format!(
            "{} swarm: not all {n} nc listeners connected ({e:#})",
            server.name
        ));
    }

    let start = Instant::now();
    let mut senders: Vec<(ChildGuard, JoinHandle<std::io::Result<ChildStdin>>)> = Vec::new();
    for input in &inputs.publishers {
        let mut publisher = nc(port, Stdio::null(), &errors)?;
        let mut stdin = publisher
            .child_mut()
            .stdin
            .take()
            .context("nc has no stdin")?;
        let input = input.clone();
        // The pipe holds 64 KiB: write from a thread while nc reads, and
        // hand the pipe back open, never closed while nc runs.
        let writer = thread::spawn(move || stdin.write_all(&input).map(|()| stdin));
        senders.push((publisher, writer));
    }

    // Every line is 64 bytes: a listener's file size says how many it has.
    let (timed_out, lowest) = loop {
        let lowest = files
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()) / LINE as u64)
            .min()
            .unwrap_or(0);
        if lowest >= expected {
            break (false, lowest);
        }
        if start.elapsed() > bench.s.swarm_timeout {
            break (true, lowest);
        }
        thread::sleep(Duration::from_millis(50));
    };
    let seconds = start.elapsed().as_secs_f64();
    // Kill every nc (the guards' drop), then collect the writers, which
    // end once their nc is gone.
    let (publishers_nc, writers): (Vec<_>, Vec<_>) = senders.into_iter().unzip();
    drop(publishers_nc);
    drop(listeners);
    for w in writers {
        let _ = w.join();
    }

    let received: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    let c = check(&received, publishers, inputs.lines);
    if timed_out {
        bench.problem(format!(
            "{} swarm: listeners still missing lines after {} s (fewest {lowest} of {expected})",
            server.name,
            bench.s.swarm_timeout.as_secs()
        ));
    }
    if !c.ok {
        bench.problem(format!(
            "{} swarm: some listener's lines are missing, extra or out of order",
            server.name
        ));
    }
    let dropped_after = server.scrape()?.count("ringcast_messages_dropped_total")?;
    let all = expected * u64::from(n);
    bench.record(&Row {
        clients: Some(u64::from(n)),
        publishers: Some(u64::from(publishers)),
        size: Some(LINE as u64),
        published: Some(expected),
        delivered: Some(c.total),
        expected: Some(all),
        loss: Some(all.saturating_sub(c.total)),
        elapsed_s: Some(seconds),
        delivered_per_s: Some(c.total as f64 / seconds.max(1e-9)),
        lines_expected: Some(expected),
        lines_min: Some(c.min),
        lines_max: Some(c.max),
        content_ok: Some(c.ok),
        server_dropped: Some(dropped_after.saturating_sub(dropped_before)),
        ..Row::new(server.engine, Scenario::NcSwarm)
    })?;
    say!(
        "{} swarm: {n} listeners got {}..{} of {expected} lines in {seconds:.3}s (complete and in order: {})",
        server.name,
        c.min,
        c.max,
        if c.ok { "yes" } else { "no" }
    );
    let _ = std::fs::remove_dir_all(&dir);
    bench.wait_disconnected(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interleave(inputs: &[Vec<u8>]) -> Vec<u8> {
        // Line by line, round robin: what a listener might see.
        let split: Vec<Vec<&[u8]>> = inputs
            .iter()
            .map(|i| i.split_inclusive(|&b| b == b'\n').collect())
            .collect();
        let mut out = Vec::new();
        for k in 0..split.iter().map(Vec::len).max().unwrap_or(0) {
            for s in &split {
                if let Some(l) = s.get(k) {
                    out.extend_from_slice(l);
                }
            }
        }
        out
    }

    #[test]
    fn inputs_are_64_byte_numbered_lines() {
        let input = publisher_input(2, 3);
        assert_eq!(input.len(), 3 * LINE);
        assert!(input.starts_with(b"nc2 00000000 xxx"));
        assert_eq!(&input[LINE..LINE + 13], b"nc2 00000001 ");
        assert_eq!(input[LINE - 1], b'\n');
    }

    #[test]
    fn check_accepts_complete_ordered_listeners() {
        let inputs: Vec<Vec<u8>> = (1..=3).map(|p| publisher_input(p, 5)).collect();
        let all = interleave(&inputs);
        let c = check(&[all.clone(), all], 3, 5);
        assert_eq!(
            c,
            Check {
                min: 15,
                max: 15,
                total: 30,
                ok: true
            }
        );
    }

    #[test]
    fn check_rejects_missing_reordered_and_partial() {
        let inputs: Vec<Vec<u8>> = (1..=3).map(|p| publisher_input(p, 5)).collect();
        let all = interleave(&inputs);
        let short = all[..all.len() - LINE].to_vec();
        let c = check(&[all.clone(), short], 3, 5);
        assert_eq!((c.min, c.max, c.ok), (14, 15, false));
        // Two lines of one publisher swapped.
        let mut swapped = inputs[0].clone();
        swapped[..2 * LINE].rotate_left(LINE);
        let c = check(
            &[interleave(&[swapped, inputs[1].clone(), inputs[2].clone()])],
            3,
            5,
        );
        assert!(!c.ok);
        // Half a line at the end.
        let partial = all[..all.len() - 10].to_vec();
        assert!(!check(&[partial], 3, 5).ok);
        assert_eq!(check(&[], 3, 5).min, 0);
    }
}
