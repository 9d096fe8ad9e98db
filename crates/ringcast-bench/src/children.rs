//! Child processes that never outlive the harness.
//!
//! Every child is a [`ChildGuard`]: dropping it kills the child and reaps
//! it, so every early return and every `?` cleans up. Drops do not run
//! when a signal ends the process, so [`kill_on_signal`] starts a thread
//! that, on SIGINT, SIGTERM or SIGHUP, kills every child still registered
//! and removes the registered scratch folders before exiting.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// What the signal thread must clean up.
#[derive(Default)]
struct Registry {
    /// Children not reaped yet.
    pids: BTreeSet<i32>,
    /// Scratch folders to remove.
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: BTreeSet::new(),
    dirs: Vec::new(),
});

/// The registry; a panic elsewhere while holding it leaves it usable.
fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts the thread that cleans up on SIGINT, SIGTERM and SIGHUP, then
/// exits with 128 + the signal's number, as a shell would report it.
pub(crate) fn kill_on_signal() -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install the signal handlers")?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let registry = registry();
                for &pid in &registry.pids {
                    // Already gone is fine: it is what we want.
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                for dir in &registry.dirs {
                    let _ = std::fs::remove_dir_all(dir);
                }
                eprintln!("ringcast-bench: stopped by signal {signal}; children killed");
                std::process::exit(128 + signal);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// Removes `dir` if a signal ends the harness (a [`tempfile::TempDir`]
/// removes itself on every other way out).
pub(crate) fn remove_on_signal(dir: PathBuf) {
    registry().dirs.push(dir);
}

/// A child process that is killed and reaped when dropped.
#[derive(Debug)]
pub(crate) struct ChildGuard {
    child: Child,
    /// What it is, for messages.
    what: String,
    /// Its exit status, once reaped.
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `command`; `what` names it in errors.
    pub(crate) fn spawn(command: &mut Command, what: impl Into<String>) -> anyhow::Result<Self> {
        let what = what.into();
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {what} ({command:?})"))?;
        if let Ok(pid) = i32::try_from(child.id()) {
            registry().pids.insert(pid);
        }
        Ok(ChildGuard {
            child,
            what,
            status: None,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child itself, for its pipes.
    pub(crate) fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Its exit status if it has exited, without waiting.
    pub(crate) fn try_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.status.is_none()
            && let Some(status) = self
                .child
                .try_wait()
                .with_context(|| format!("cannot wait for {}", self.what))?
        {
            self.reaped(status);
        }
        Ok(self.status)
    }

    /// Waits until it exits, `timeout` at most; `None` if it is still
    /// running then.
    pub(crate) fn wait_for(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits `timeout` at most for it to exit; `None` if
    /// it is still running then.
    pub(crate) fn terminate(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        if self.try_status()?.is_none() {
            let pid = Pid::from_raw(i32::try_from(self.pid()).context("pid out of range")?);
            kill(pid, Signal::SIGTERM)
                .with_context(|| format!("cannot send SIGTERM to {}", self.what))?;
        }
        self.wait_for(timeout)
    }

    /// Kills it (SIGKILL) unless it has exited, and reaps it.
    pub(crate) fn kill(&mut self) {
        if self.status.is_some() {
            return;
        }
        // Fails only if it has exited already, which the wait then reaps.
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait() {
            self.reaped(status);
        }
    }

    fn reaped(&mut self, status: ExitStatus) {
        self.status = Some(status);
        if let Ok(pid) = i32::try_from(self.child.id()) {
            registry().pids.remove(&pid);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
