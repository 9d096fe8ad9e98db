//! What a connection logs and counts when something happens to it: a
//! client breaking the protocol, a failed TLS session, a refused origin,
//! and a slow episode's start and end. Each kind of line is throttled to
//! once a second for the whole server, with the count of those it left
//! out.

use std::io;

use super::{Cx, Session};
use crate::policy::send::outbound::Episode;

impl Session {
    /// Logs that the client broke the protocol, at most once a second.
    /// Returns whether it logged.
    pub(crate) fn report_protocol_error(&self, why: &str, cx: &Cx<'_>) -> bool {
        let Some(suppressed) = cx.logs.protocol_errors.allow() else {
            return false;
        };
        tracing::info!(
            conn = self.id(),
            peer = %self.peer(),
            why,
            also_broke_the_protocol_since_last_line = suppressed,
            "websocket client broke the protocol; closing it"
        );
        true
    }

    /// Counts a failed TLS session, and logs it at most once a second.
    pub(crate) fn report_tls_error(&self, error: &io::Error, cx: &Cx<'_>) {
        cx.shard.tls_error();
        let Some(suppressed) = cx.logs.tls_errors.allow() else {
            return;
        };
        tracing::info!(
            conn = self.id(),
            peer = %self.peer(),
            %error,
            also_failed_since_last_line = suppressed,
            "tls session failed; closing the connection"
        );
    }

    /// Logs, at most once a second, a WebSocket handshake refused for the
    /// page's `origin`. True if it did.
    pub(crate) fn report_forbidden_origin(&self, origin: &str, cx: &Cx<'_>) -> bool {
        let Some(suppressed) = cx.logs.origins.allow() else {
            return false;
        };
        tracing::info!(
            conn = self.id(),
            peer = %self.peer(),
            origin,
            also_refused_since_last_line = suppressed,
            "websocket handshake from a page --ws-origin does not allow: answered 403"
        );
        true
    }

    pub(super) fn slow_started(&self, cx: &Cx<'_>) {
        cx.shard.slow_started();
        if let Some(suppressed) = cx.logs.started.allow() {
            tracing::warn!(
                conn = self.id(),
                peer = %self.peer(),
                core = self.core(),
                queue = self.queue_capacity(),
                also_started_since_last_warning = suppressed,
                "slow client: its queue and socket buffer are full; dropping its messages until it catches up, other clients unaffected"
            );
        }
    }

    pub(super) fn caught_up(&self, episode: Episode, cx: &Cx<'_>) {
        cx.shard.slow_ended();
        if let Some(suppressed) = cx.logs.caught_up.allow() {
            tracing::info!(
                conn = self.id(),
                peer = %self.peer(),
                core = self.core(),
                lost = episode.dropped,
                slow_for = ?episode.since.elapsed(),
                also_caught_up_since_last_line = suppressed,
                "slow client caught up; it takes messages again"
            );
        }
    }
}
