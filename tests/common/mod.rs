//! Shared helpers: a real server on 127.0.0.1:0, real TCP clients, and
//! waiting for conditions instead of sleeping.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringcast::ops::clients::{ClientInfo, Clients, Page, SortBy};
use ringcast::ops::metrics::{Metrics, Totals};
use ringcast::{Config, EngineChoice, Server};

pub mod fds;
pub mod http;
pub mod tls;

// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use fds::{sockets, wait_sockets_closed};
#[allow(unused_imports)]
pub use http::{Answer, http_get, try_http_get};

/// Generous upper bound for anything a test waits for; a correct server
/// meets it with a wide margin, a broken one fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// `--grace` for the tests' servers; see [`TestServer::start_with`].
pub const TEST_GRACE: Duration = Duration::from_millis(50);

/// A server running in this process until dropped or stopped.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Where WebSocket clients connect, with `--ws`.
    pub ws_addr: Option<SocketAddr>,
    /// Where plain line clients connect beside TLS, with `--plain-listen`.
    pub plain_addr: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    clients: Clients,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ringcast::Error>>>,
}

impl TestServer {
    pub fn start(engine: EngineChoice) -> Self {
        Self::start_with(engine, |_| {})
    }

    pub fn start_with(engine: EngineChoice, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            engine,
            threads: Some(2),
            // The default 5 ms assumes readers that get a CPU when they need
            // one. Here two tests at a time share two cores with their
            // servers, and a reader thread can wait tens of milliseconds to
            // be scheduled: it keeps reading, but late. Tests of slow
            // clients set their own.
            grace: TEST_GRACE,
            ..Config::default()
        };
        tweak(&mut config);
        let server = Server::bind(config).expect("bind test server");
        let addr = server.local_addr();
        let ws_addr = server.ws_addr();
        let plain_addr = server.plain_addr();
        let metrics = server.metrics();
        let clients = server.clients();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(server.run(async {
                let _ = stopped.await;
            }))
        });
        Self {
            addr,
            ws_addr,
            plain_addr,
            metrics,
            clients,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn totals(&self) -> Totals {
        self.metrics.totals()
    }

    /// Waits until `check` holds for the server's totals.
    pub fn wait_totals(&self, what: &str, check: impl Fn(&Totals) -> bool) -> Totals {
        wait_for(what, PATIENCE, || {
            let t = self.totals();
            check(&t).then_some(t)
        })
    }

    /// Every connected client, as `/clients` shows it.
    pub fn clients(&self) -> Vec<ClientInfo> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(self.clients.list())
    }

    /// A page of the clients by `sort`, as `/clients?sort=..&offset=..&limit=..`.
    pub fn query(&self, sort: SortBy, offset: usize, limit: usize) -> Page {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(self.clients.query(sort, offset, limit))
    }

    /// The server's view of `client`.
    pub fn client_info(&self, client: &Client) -> ClientInfo {
        let me = client.stream.local_addr().unwrap();
        wait_for("the client in the server's list", PATIENCE, || {
            self.clients().into_iter().find(|c| c.peer == me)
        })
    }

    /// Waits until exactly `n` clients are registered.
    pub fn wait_connected(&self, n: u64) {
        self.wait_totals(&format!("{n} connected clients"), |t| t.connected == n);
    }

    /// Begins shutdown and returns a handle that yields the run result.
    pub fn begin_stop(&mut self) -> JoinHandle<Result<(), ringcast::Error>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread.take().expect("server already stopped")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls `f` until it returns `Some`, panicking with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A blocking TCP client with a receive buffer for line-oriented reads.
pub struct Client {
    pub stream: TcpStream,
    pending: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            pending: Vec::new(),
        }
    }

    /// Connects with a small receive buffer, so a client that stops reading
    /// fills up quickly.
    pub fn connect_small_rcvbuf(addr: SocketAddr) -> Self {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).expect("connect");
        Self {
            stream: socket.into(),
            pending: Vec::new(),
        }
    }

    /// A client on a socket connected elsewhere (with its own options).
    pub fn from_stream(stream: TcpStream) -> Self {
        Self {
            stream,
            pending: Vec::new(),
        }
    }

    /// A second handle on the same socket (e.g. to read in another thread).
    pub fn try_clone(&self) -> Self {
        Self {
            stream: self.stream.try_clone().unwrap(),
            pending: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads until `n` complete lines arrived, or panics after `PATIENCE`.
    pub fn read_lines(&mut self, n: usize) -> Vec<Vec<u8>> {
        let mut lines = Vec::with_capacity(n);
        let deadline = Instant::now() + PATIENCE;
        self.take_lines(&mut lines, n);
        while lines.len() < n {
            let read = self
                .fill(deadline)
                .unwrap_or_else(|e| panic!("read after {} of {n} lines: {e}", lines.len()));
            assert!(
                read > 0,
                "connection closed after {} of {n} lines",
                lines.len()
            );
            self.take_lines(&mut lines, n);
        }
        lines
    }

    /// Reads whatever arrives until the server closes the connection.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.fill(deadline) {
                Ok(0) | Err(_) => return std::mem::take(&mut self.pending),
                Ok(_) => {}
            }
        }
    }

    /// True if the server has closed (or reset) this connection. Waits for it.
    pub fn wait_closed_by_server(&mut self) -> bool {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.fill(deadline) {
                Ok(0) => return true,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(e) => panic!("unexpected read error {e}"),
                Ok(_) => {}
            }
        }
    }

    /// Asserts nothing arrives for `quiet`; returns what did.
    pub fn read_available(&mut self, quiet: Duration) -> Vec<u8> {
        self.stream.set_read_timeout(Some(quiet)).unwrap();
        let mut buf = [0u8; 65536];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        std::mem::take(&mut self.pending)
    }

    /// Moves complete lines from `pending` to `lines`, up to `n` in all. One
    /// pass and one shift per call, so a reader keeps up with a flood.
    fn take_lines(&mut self, lines: &mut Vec<Vec<u8>>, n: usize) {
        let mut start = 0;
        while lines.len() < n {
            let Some(pos) = self.pending[start..].iter().position(|&b| b == b'\n') else {
                break;
            };
            lines.push(self.pending[start..=start + pos].to_vec());
            start += pos + 1;
        }
        self.pending.drain(..start);
    }

    fn fill(&mut self, deadline: Instant) -> std::io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out reading from the server");
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 65536];
        loop {
            match self.stream.read(&mut buf) {
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Connects `n` clients and waits until the server has registered them all.
pub fn connect_all(server: &TestServer, n: usize) -> Vec<Client> {
    let already = server.totals().connected;
    let clients: Vec<Client> = (0..n).map(|_| Client::connect(server.addr)).collect();
    server.wait_connected(already + n as u64);
    clients
}

/// Checks that for each sender the sequence numbers arrive in order
/// `0..count`, for lines shaped `s<sender> <seq> ...\n`.
pub fn assert_per_sender_order(lines: &[Vec<u8>], senders: usize, count: usize) {
    let mut next = vec![0usize; senders];
    for line in lines {
        let text = std::str::from_utf8(line).expect("utf8 line");
        let mut parts = text.trim_end().split(' ');
        let sender: usize = parts
            .next()
            .and_then(|s| s.strip_prefix('s'))
            .unwrap()
            .parse()
            .unwrap();
        let seq: usize = parts.next().unwrap().parse().unwrap();
        assert_eq!(seq, next[sender], "sender {sender} out of order: got {seq}");
        next[sender] += 1;
    }
    assert_eq!(next, vec![count; senders], "not every line arrived");
}

/// Runs `$name(EngineChoice)` once per engine, as `uring::$name` and `tokio::$name`.
#[macro_export]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $( #[test] fn $name() { super::$name(ringcast::EngineChoice::Uring) } )*
        }
        mod tokio {
            $( #[test] fn $name() { super::$name(ringcast::EngineChoice::Tokio) } )*
        }
    };
}

/// A `ringcast serve` child process on 127.0.0.1:0 with metrics on,
/// killed however the test ends.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub metrics: String,
    /// Every stderr line up to and including the "serving" line.
    pub startup: Vec<String>,
    /// Every stderr line logged after startup, with when it arrived.
    pub log: Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    /// Where the server wrote its addresses (`--ready-file`).
    pub ready_file: std::path::PathBuf,
}

/// A path for a test's file that no other test (or run) uses.
pub fn scratch_path(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "ringcast-test-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

impl ServerProcess {
    pub fn start(args: &[&str]) -> Self {
        Self::start_via(&[], args)
    }

    /// Starts the server through `wrapper` (e.g. `["prlimit", "--nofile=40:40"]`).
    pub fn start_via(wrapper: &[&str], args: &[&str]) -> Self {
        Self::spawn(Self::command(wrapper, args))
    }

    /// The command [`ServerProcess::start_via`] runs, to adjust before
    /// [`ServerProcess::spawn`]: `ringcast serve` on 127.0.0.1:0 with
    /// metrics on, info logs and a ready file, then `args`, stderr piped.
    pub fn command(wrapper: &[&str], args: &[&str]) -> std::process::Command {
        let bin = env!("CARGO_BIN_EXE_ringcast");
        let (program, pre): (&str, Vec<&str>) = match wrapper.split_first() {
            Some((first, rest)) => (first, rest.iter().copied().chain([bin]).collect()),
            None => (bin, Vec::new()),
        };
        let mut cmd = std::process::Command::new(program);
        cmd.args(pre)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
                "--log",
                "info",
                "--ready-file",
            ])
            .arg(scratch_path("ready.json"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd
    }

    /// Where a [`ServerProcess::command`] has the server write its addresses.
    pub fn ready_file(cmd: &std::process::Command) -> std::path::PathBuf {
        cmd.get_args()
            .skip_while(|a| *a != "--ready-file")
            .nth(1)
            .expect("a --ready-file")
            .into()
    }

    /// Spawns `cmd` (see [`ServerProcess::command`]) and waits until it
    /// serves; panics with what it logged if it exits first.
    pub fn spawn(mut cmd: std::process::Command) -> Self {
        use std::io::BufRead;
        let ready_file = Self::ready_file(&cmd);
        let mut child = cmd.spawn().unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut startup = Vec::new();
        loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                let _ = child.kill();
                panic!("server exited before serving:\n{}", startup.concat());
            }
            startup.push(line.clone());
            if line.contains("serving") {
                break;
            }
        }
        // The addresses, as the server reports them to scripts.
        let ready: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&ready_file).unwrap()).unwrap();
        let addr = ready["listen"].as_str().unwrap().parse().unwrap();
        let metrics = ready["metrics"].as_str().map(String::from);
        // Keep reading stderr so the child never blocks on a full pipe.
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        std::thread::spawn({
            let log = Arc::clone(&log);
            move || {
                for line in stderr.lines().map_while(Result::ok) {
                    log.lock().unwrap().push((Instant::now(), line));
                }
            }
        });
        Self {
            child,
            addr,
            metrics: metrics.expect("a metrics address"),
            startup,
            log,
            ready_file,
        }
    }

    /// The current `/metrics` text.
    pub fn scrape(&self) -> String {
        http_get(&self.metrics, "/metrics").body
    }

    /// Connects `n` clients and waits until the server has accepted them all.
    pub fn connect(&self, n: usize) -> Vec<Client> {
        let clients = (0..n).map(|_| Client::connect(self.addr)).collect();
        let want = format!("ringcast_connected_clients {n}");
        wait_for("clients to be registered", PATIENCE, || {
            self.scrape().lines().any(|l| l == want).then_some(())
        });
        clients
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.wait_exit_within(PATIENCE)
    }

    /// Waits for the server to exit; panics if it has not after `limit`.
    pub fn wait_exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        wait_for("the server to exit", limit, || {
            self.child.try_wait().unwrap()
        })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.ready_file);
    }
}

/// Like `wait_for`, but returns false instead of panicking at `PATIENCE`.
pub fn wait_for_quietly(mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Whether `name` is on `PATH`, for a test that runs it. Without it the
/// test says so in one line naming Debian's `package` and passes, or
/// fails under `RINGCAST_TEST_REQUIRE_TOOLS=1` (as `.ci/run` sets): see
/// [`require_tool!`].
#[track_caller]
pub fn tool(name: &str, package: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    });
    found || missing(&format!("`{name}` (Debian package {package})"))
}

/// Whether this process runs as root, for a test that needs it.
#[track_caller]
pub fn root(why: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    root || missing(&format!("root ({why})"))
}

/// A test cannot run without `what`: fails under
/// `RINGCAST_TEST_REQUIRE_TOOLS=1`, or else says so and returns false.
#[track_caller]
fn missing(what: &str) -> bool {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let require = std::env::var_os("RINGCAST_TEST_REQUIRE_TOOLS").is_some_and(|v| v == "1");
    assert!(
        !require,
        "{test} needs {what}, which is missing (RINGCAST_TEST_REQUIRE_TOOLS=1)"
    );
    // Straight to stderr: the harness swallows `eprintln!` of passing tests.
    let line = format!("skipped: {test} needs {what}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    false
}

/// `require_tool!("nats-server", "nats-server")` at the top of a test:
/// returns from it early, passing, where [`tool`] says the tool is missing.
#[macro_export]
macro_rules! require_tool {
    ($name:expr, $package:expr) => {
        if !$crate::common::tool($name, $package) {
            return;
        }
    };
}
