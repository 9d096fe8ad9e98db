//! A connection's writer: what is queued goes to the kernel, coalesced
//! while the core is busy, and the socket is waited for when it refuses.

use std::pin::pin;

use bytes::Bytes;

use super::{CloseReason, Host, Link, Next, Turn, close};

/// Hands what is queued for the client to the kernel until the connection
/// closes.
pub(crate) async fn write_loop<H: Host>(host: &H, link: &H::Link) {
    // A flush came while this writer waited to coalesce.
    let mut flush_due = false;
    loop {
        let coalescer = host.coalescer();
        let next = link.with(|s| {
            s.next(host.flushing(), |out| {
                !flush_due && coalescer.should_wait(out)
            })
        });
        let reason = match next {
            Next::Exit => return,
            Next::Close(reason) => Some(reason),
            Next::Sleep => {
                link.writer_woken().await;
                None
            }
            Next::Coalesce => {
                tokio::select! {
                    () = coalescer.next_flush() => flush_due = true,
                    () = link.writer_woken() => {}
                }
                None
            }
            Next::Send => {
                flush_due = false;
                let cx = host.cx();
                turn(
                    link,
                    link.with(|s| s.flush(|bufs| link.try_send(bufs), &cx)),
                )
            }
            Next::Wait(rest) => wait_writable(host, link, rest).await,
        };
        if let Some(reason) = reason {
            close(host, link, reason);
            return;
        }
    }
}

/// Waits until the socket takes more, and settles what the wait brought.
///
/// The wait may hold an io_uring write of `rest`, which cannot be taken
/// back: it is never dropped to be issued again, only ended by closing the
/// connection. Shutdown does that for a client that is dropping anyway, or
/// whose socket takes nothing for the drain's stall time.
async fn wait_writable<H: Host>(host: &H, link: &H::Link, rest: Bytes) -> Option<CloseReason> {
    let mut writing = pin!(link.writable(rest));
    let mut give_up: Option<tokio::time::Instant> = None;
    let result = loop {
        if give_up.is_none() && host.flushing() {
            if link.with(|s| s.out.episode().is_some()) {
                return Some(CloseReason::Shutdown);
            }
            give_up = Some(tokio::time::Instant::now() + host.cx().settings.drain_stall);
        }
        let deadline = async {
            match give_up {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut writing => break result,
            // Shutdown may have begun: look again.
            () = link.writer_woken() => {}
            () = deadline => return Some(CloseReason::Shutdown),
        }
    };
    let cx = host.cx();
    turn(link, link.with(|s| s.writable(result, &cx)))
}

/// Lets deliverers waiting for room know there is some; returns why to
/// close, if the turn says so.
fn turn(link: &impl Link, turn: Turn) -> Option<CloseReason> {
    if turn.room {
        link.room().notify_waiters();
    }
    turn.close
}
