//! A textbook line-broadcast server on tokio: what a user would write
//! without ringcast, and the second baseline of `scripts/bench.sh`.
//!
//! Try it:
//!
//! ```sh
//! cargo run --release --example textbook -- 127.0.0.1:9002
//! nc 127.0.0.1 9002      # in two more terminals; type a line in either
//! ```
//!
//! Every newline-terminated line a client sends goes, byte for byte, to
//! every client, the sender included. It is written the way the tokio
//! tutorials write it, and nothing more: a multi-thread runtime; per
//! client one reader task and one writer task; between them a bounded
//! channel of 100 [`Bytes`] lines; a registry of the channels' senders
//! behind a mutex. The reader broadcasts each line with `try_send`, so a
//! client whose channel is full loses that line (counted in one total). The
//! writer, woken by a line, also takes every line already waiting in the
//! channel (at most its 100), copies them into one reused buffer and hands
//! that to the socket with one `write_all`: a `BufWriter`-style loop, one
//! write per wake-up rather than one per line.
//!
//! `textbook ADDR [--ready-file PATH]`: ADDR may have port 0. Once bound it
//! prints `listening on ADDR` on stderr and, with `--ready-file`, writes
//! `{"listen":"ADDR","metrics":null,"ws":null,"engine":"textbook","pid":N}`
//! there (the shape `ringcast serve --ready-file` writes), through a
//! temporary file renamed into place. SIGTERM or SIGINT stops it, exit 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// Lines a client may have queued before it loses new ones.
const QUEUE: usize = 100;
/// A client sending more than this without a newline is disconnected, so
/// one client cannot make the server buffer without end.
const MAX_LINE: usize = 64 * 1024;

/// Every client's channel, by connection number, and the lines lost to
/// full channels.
#[derive(Default)]
struct Hub {
    clients: Mutex<HashMap<u64, mpsc::Sender<Bytes>>>,
    dropped: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .context("usage: textbook ADDR [--ready-file PATH]")?
        .parse()
        .context("ADDR must be IP:PORT")?;
    let ready_file = match (args.next().as_deref(), args.next()) {
        (Some("--ready-file"), Some(path)) => Some(path),
        (None, _) => None,
        _ => anyhow::bail!("usage: textbook ADDR [--ready-file PATH]"),
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    eprintln!("listening on {bound}");
    if let Some(path) = ready_file {
        let json = format!(
            "{{\"listen\":\"{bound}\",\"metrics\":null,\"ws\":null,\"engine\":\"textbook\",\"pid\":{}}}\n",
            std::process::id()
        );
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write {path}"))?;
    }

    let hub = Arc::new(Hub::default());
    let mut term = signal(SignalKind::terminate())?;
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                // A failed accept (out of descriptors) is that client's loss.
                let Ok((stream, _)) = accepted else { continue };
                next_id += 1;
                tokio::spawn(serve(next_id, stream, Arc::clone(&hub)));
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    eprintln!(
        "stopping; {} lines dropped for full queues",
        hub.dropped.load(Ordering::Relaxed)
    );
    Ok(())
}

/// One client: registers its channel, writes from it on a task of its own,
/// and broadcasts every line it reads until it leaves.
async fn serve(id: u64, stream: TcpStream, hub: Arc<Hub>) {
    // Lines are small and latency matters: no Nagle.
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel(QUEUE);
    hub.clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, tx);
    tokio::spawn(write_lines(writer, rx));

    let mut buf = BytesMut::with_capacity(MAX_LINE);
    let mut scanned = 0;
    loop {
        buf.reserve(8 * 1024);
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        while let Some(at) = memchr::memchr(b'\n', &buf[scanned..]) {
            let line = buf.split_to(scanned + at + 1).freeze();
            scanned = 0;
            broadcast(&hub, &line);
        }
        scanned = buf.len();
        if scanned > MAX_LINE {
            break;
        }
    }
    // Dropping the sender ends the writer once it has written what is
    // queued; the socket closes when both halves are gone.
    hub.clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
}

/// Offers `line` to every client; a full channel loses it.
fn broadcast(hub: &Hub, line: &Bytes) {
    let clients = hub.clients.lock().unwrap_or_else(|e| e.into_inner());
    for tx in clients.values() {
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(line.clone()) {
            hub.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes the queued lines to the client until its channel closes or a
/// write fails: on each wake-up, the line that woke it and whatever else is
/// already queued, copied into one buffer and written at once.
async fn write_lines(mut writer: OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    let mut batch = Vec::new();
    while let Some(line) = rx.recv().await {
        batch.extend_from_slice(&line);
        // The channel holds at most QUEUE lines; take those already there.
        for _ in 1..QUEUE {
            match rx.try_recv() {
                Ok(line) => batch.extend_from_slice(&line),
                Err(_) => break,
            }
        }
        if writer.write_all(&batch).await.is_err() {
            break;
        }
        batch.clear();
    }
}
