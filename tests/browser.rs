//! The chat page in a real browser: headless Chromium (Debian's package,
//! which `.ci/run` installs) opens `http://WS_ADDR/`, receives a line an
//! `nc`-like client sends, and sends one that the client receives. The
//! test drives the page over the DevTools protocol and leaves a screenshot
//! in `target/tmp/chat.png`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, Read as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Client, PATIENCE, TestServer, scratch_path, wait_for};
use ringcast::EngineChoice;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// Chromium, killed and its profile removed however the test ends.
struct Browser {
    child: Child,
    profile: std::path::PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Starts headless Chromium on `url`, with `extra` flags; returns it and
/// its DevTools address.
fn chromium(url: &str, extra: &[String]) -> (Browser, String) {
    let profile = scratch_path("chromium");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
            "--window-size=900,600",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium (apt-get install -y chromium)");
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let browser = Browser { child, profile };
    // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
    let mut devtools = None;
    for line in stderr.lines().map_while(Result::ok) {
        if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
            devtools = rest.split('/').next().map(String::from);
            break;
        }
    }
    (browser, devtools.expect("chromium's DevTools address"))
}

/// One DevTools connection to a page.
struct Page {
    ws: WebSocket<TcpStream>,
    next_id: u64,
}

impl Page {
    /// Connects to the first page target of the browser at `devtools`.
    fn attach(devtools: &str) -> Self {
        let url = wait_for("a page target", PATIENCE, || {
            let mut s = TcpStream::connect(devtools).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let request =
                format!("GET /json/list HTTP/1.1\r\nHost: {devtools}\r\nConnection: close\r\n\r\n");
            std::io::Write::write_all(&mut s, request.as_bytes()).ok()?;
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            let body = out.split("\r\n\r\n").nth(1)?;
            let targets: Vec<Value> = serde_json::from_str(body).ok()?;
            targets
                .into_iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
        });
        let stream = TcpStream::connect(devtools).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let (ws, _) = tungstenite::client::client(url, stream).unwrap();
        Self { ws, next_id: 1 }
    }

    /// Sends a DevTools command and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let command = json!({ "id": id, "method": method, "params": params });
        self.ws.send(Message::text(command.to_string())).unwrap();
        loop {
            if let Message::Text(text) = self.ws.read().unwrap() {
                let reply: Value = serde_json::from_str(&text).unwrap();
                if reply["id"] == id {
                    assert!(reply["error"].is_null(), "{method}: {reply}");
                    return reply["result"].clone();
                }
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    fn wait_until(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + PATIENCE;
        while self.eval(expression) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn the_chat_page_talks_to_nc_clients_in_a_real_browser() {
    require_tool!("chromium", "chromium");
    let server = TestServer::start_with(EngineChoice::Uring, |c| {
        c.ws = Some("127.0.0.1:0".parse().unwrap());
    });
    let ws_addr = server.ws_addr.unwrap();
    let (_browser, devtools) = chromium(&format!("http://{ws_addr}/"), &[]);
    let mut page = Page::attach(&devtools);
    page.wait_until(
        "the page to connect",
        "document.getElementById('status').textContent === 'connected'",
    );
    // An nc-like client on the TCP port.
    let nc = Client::connect(server.addr);
    server.wait_connected(2);
    chat(&mut page, nc, "chat.png");
}

/// The same page over `https://` and `wss://`, with a certificate the test
/// makes (Chromium trusts its key alone), beside a plain `nc`-like client
/// on `--plain-listen`.
#[test]
fn the_chat_page_over_https_talks_to_nc_clients_in_a_real_browser() {
    require_tool!("chromium", "chromium");
    let cert = common::tls::TestCert::new();
    let server = TestServer::start_with(EngineChoice::Uring, |c| {
        let mut tls = cert.config();
        tls.plain_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tls = Some(tls);
        c.ws = Some("127.0.0.1:0".parse().unwrap());
    });
    let port = server.ws_addr.unwrap().port();
    let trust = format!("--ignore-certificate-errors-spki-list={}", cert.spki_sha256);
    let (_browser, devtools) = chromium(&format!("https://localhost:{port}/"), &[trust]);
    let mut page = Page::attach(&devtools);
    page.wait_until(
        "the page to connect over wss",
        "document.getElementById('status').textContent === 'connected' \
         && location.protocol === 'https:'",
    );
    let nc = Client::connect(server.plain_addr.unwrap());
    server.wait_connected(2);
    chat(&mut page, nc, "chat-https.png");
}

/// A line from `nc` shows on the page; one typed on the page reaches `nc`;
/// a screenshot goes to `target/tmp/{shot}`.
fn chat(page: &mut Page, mut nc: Client, file: &str) {
    nc.send(b"hello from nc\n");
    page.wait_until(
        "the nc line on the page",
        "document.getElementById('log').innerText.includes('hello from nc')",
    );
    page.eval(
        "document.getElementById('line').value = 'hello from the browser'; \
         document.getElementById('send').click(); true",
    );
    assert_eq!(nc.read_lines(1), vec![b"hello from nc\n".to_vec()]);
    assert_eq!(nc.read_lines(1), vec![b"hello from the browser\n".to_vec()]);
    page.wait_until(
        "the browser's own line on the page",
        "document.getElementById('log').innerText.includes('hello from the browser')",
    );
    let shot = page.call("Page.captureScreenshot", json!({ "format": "png" }));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(file);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}
