//! io_uring forbidden for real: the binary runs under a seccomp filter that
//! makes `io_uring_setup` fail with EPERM, as a container runtime's default
//! profile does. `--engine auto` must fall back to tokio with one warning
//! and serve; `--engine uring` must fail fast with one error line.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, wait_for};
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

/// `ringcast serve ARGS`, stderr piped; under the filter if `forbid_uring`.
#[allow(unsafe_code)]
fn serve(args: &[&str], forbid_uring: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringcast"));
    cmd.arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
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
    cmd.spawn().unwrap()
}

/// A server child process; killed if a test fails before it exits.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// Everything logged up to and including the "serving" line.
    startup: Vec<String>,
}

impl Server {
    fn start(args: &[&str], forbid_uring: bool) -> Self {
        let mut child = serve(args, forbid_uring);
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut startup = Vec::new();
        let addr = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                let _ = child.kill();
                panic!("server exited before serving:\n{}", startup.join(""));
            }
            startup.push(line.clone());
            if line.contains(" serving ") {
                let addr = line
                    .split("addr=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .expect("addr= in the serving line");
                break addr.parse().unwrap();
            }
        };
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Self {
            child,
            addr,
            startup,
        }
    }

    fn serving_line(&self) -> &str {
        self.startup.last().unwrap()
    }

    /// One client, one line, back again: the server really serves.
    fn echoes(&self) {
        let mut c = Client::connect(self.addr);
        c.send(b"through the filter\n");
        assert_eq!(c.read_lines(1), vec![b"through the filter\n".to_vec()]);
    }

    /// SIGTERM, then waits for the exit status.
    fn terminate(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        wait_for("the server to exit", PATIENCE, || {
            self.child.try_wait().unwrap()
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn auto_falls_back_to_tokio_when_seccomp_forbids_io_uring() {
    let mut server = Server::start(
        &[
            "--engine",
            "auto",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "info",
        ],
        true,
    );
    let log = server.startup.concat();
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
        server.serving_line().contains(r#"engine="tokio""#),
        "not on tokio:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    server.echoes();
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn explicit_uring_fails_fast_when_seccomp_forbids_io_uring() {
    let started = Instant::now();
    let mut child = serve(
        &[
            "--engine",
            "uring",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "info",
        ],
        true,
    );
    let status = wait_for("the server to give up", PATIENCE, || {
        child.try_wait().unwrap()
    });
    let took = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "expected failure; stderr: {stderr}");
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
    let mut server = Server::start(
        &[
            "--engine",
            "tokio",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "info",
        ],
        true,
    );
    let log = server.startup.concat();
    assert!(
        !log.contains("WARN"),
        "no warning for an explicit tokio:\n{log}"
    );
    assert!(server.serving_line().contains(r#"engine="tokio""#), "{log}");
    server.echoes();
    assert!(server.terminate().success());
}

#[test]
fn auto_picks_uring_without_the_filter() {
    let mut server = Server::start(
        &[
            "--engine",
            "auto",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "info",
        ],
        false,
    );
    let log = server.startup.concat();
    assert!(
        server.serving_line().contains(r#"engine="uring""#),
        "auto did not pick uring on this kernel:\n{log}"
    );
    assert!(!log.contains("WARN"), "unexpected warning:\n{log}");
    server.echoes();
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}
