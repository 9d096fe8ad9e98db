//! io_uring forbidden for real: the binary runs under a seccomp filter that
//! makes `io_uring_setup` fail with EPERM, as a container runtime's default
//! profile does. `--engine auto` must fall back to tokio with one warning
//! and serve; `--engine uring` must fail fast with one error line.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, ServerProcess, wait_for};
use nix::libc;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};

/// Allows every system call except `io_uring_setup`, which fails with EPERM.
fn no_io_uring() -> BpfProgram {
    SeccompFilter::new(
        [(libc::SYS_io_uring_setup, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap()
    .try_into()
    .unwrap()
}

/// `ringcast serve` as the shared tests start it, then `args`; under the
/// filter if `forbid_uring`.
#[allow(unsafe_code)]
fn serve_command(args: &[&str], forbid_uring: bool) -> Command {
    let mut cmd = ServerProcess::command(&[], args);
    if forbid_uring {
        // Compiled here, before the fork: the child only installs it.
        let filter = no_io_uring();
        // SAFETY: the closure runs in the forked child before exec, where
        // only async-signal-safe work is allowed. It allocates nothing and
        // takes no locks: `apply_filter` makes two raw system calls (prctl
        // PR_SET_NO_NEW_PRIVS, then seccomp) on the program compiled above,
        // which the closure owns, and its errors wrap the errno in an
        // `io::Error` of the OS kind, which does not allocate either.
        unsafe {
            cmd.pre_exec(move || {
                seccompiler::apply_filter(&filter).map_err(|e| match e {
                    seccompiler::Error::Prctl(e) | seccompiler::Error::Seccomp(e) => e,
                    _ => std::io::Error::from_raw_os_error(libc::EINVAL),
                })
            });
        }
    }
    cmd
}

/// A server that got as far as serving, and what it logged on the way.
fn start(args: &[&str], forbid_uring: bool) -> (ServerProcess, String) {
    let server = ServerProcess::spawn(serve_command(args, forbid_uring));
    let log = server.startup.concat();
    (server, log)
}

/// The last startup line, "serving ...".
fn serving_line(server: &ServerProcess) -> &str {
    server.startup.last().unwrap()
}

/// One client, one line, back again: the server really serves.
fn echoes(server: &ServerProcess) {
    let mut c = Client::connect(server.addr);
    c.send(b"through the filter\n");
    assert_eq!(c.read_lines(1), vec![b"through the filter\n".to_vec()]);
}

/// SIGTERM, then the exit status.
fn terminate(server: &mut ServerProcess) -> ExitStatus {
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait_exit()
}

#[test]
fn auto_falls_back_to_tokio_when_seccomp_forbids_io_uring() {
    let (mut server, log) = start(&["--engine", "auto"], true);
    let warnings: Vec<&String> = server
        .startup
        .iter()
        .filter(|l| l.contains("WARN"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning:\n{log}");
    let warning = warnings[0];
    for needle in ["io_uring", "falling back", "Operation not permitted"] {
        assert!(warning.contains(needle), "{needle:?} not in: {warning}");
    }
    assert!(
        serving_line(&server).contains(r#"engine="tokio""#),
        "not on tokio:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    echoes(&server);
    let status = terminate(&mut server);
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn explicit_uring_fails_fast_when_seccomp_forbids_io_uring() {
    let started = Instant::now();
    let mut child = serve_command(&["--engine", "uring"], true).spawn().unwrap();
    let status = wait_for("the server to give up", PATIENCE, || {
        child.try_wait().unwrap()
    });
    let took = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "expected failure; stderr: {stderr}");
    // A configuration that cannot work here: a supervisor should not retry.
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?} to fail");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    for needle in ["io_uring is not available", "Operation not permitted"] {
        assert!(errors[0].contains(needle), "{needle:?} not in: {stderr}");
    }
    assert!(!stderr.contains(" serving "), "it served anyway: {stderr}");
}

#[test]
fn tokio_runs_normally_under_the_filter() {
    let (mut server, log) = start(&["--engine", "tokio"], true);
    assert!(
        !log.contains("WARN"),
        "no warning for an explicit tokio:\n{log}"
    );
    assert!(serving_line(&server).contains(r#"engine="tokio""#), "{log}");
    echoes(&server);
    assert!(terminate(&mut server).success());
}

#[test]
fn auto_picks_uring_without_the_filter() {
    let (mut server, log) = start(&["--engine", "auto"], false);
    assert!(
        serving_line(&server).contains(r#"engine="uring""#),
        "auto did not pick uring on this kernel:\n{log}"
    );
    assert!(!log.contains("WARN"), "unexpected warning:\n{log}");
    echoes(&server);
    let status = terminate(&mut server);
    assert!(status.success(), "exit status {status:?}");
}
