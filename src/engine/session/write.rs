//! What both engines do once the kernel has answered a send: deliverers
//! waiting for room hear of it, and a connection whose socket failed is
//! closed. How the send itself is made is the engine's: one at a time on
//! `tokio`, a core's due connections in one submission on `uring`.

use super::{Host, Link, Turn, close};

/// Follows up a [`Turn`]: wakes deliverers waiting for room, and closes
/// the connection if the send failed. Returns false if it closed.
pub(crate) fn settled<H: Host>(host: &H, link: &H::Link, turn: Turn) -> bool {
    if turn.room {
        link.room().notify_waiters();
    }
    match turn.close {
        Some(reason) => {
            close(host, link, reason);
            false
        }
        None => true,
    }
}
