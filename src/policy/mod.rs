//! Decisions with no I/O, each unit-tested without a socket: how bytes
//! become lines, what a connection does with an offered message, how long
//! a core waits for clients that are behind, when a busy core holds writes
//! back, and the limits on clients and warnings.

pub(crate) mod coalesce;
pub(crate) mod inbound;
pub(crate) mod limits;
pub(crate) mod line;
pub(crate) mod outbound;
pub(crate) mod patience;
pub(crate) mod run;
pub(crate) mod tls;
pub(crate) mod websocket;
