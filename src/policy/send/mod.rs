//! What a connection does with an offered message: queue, send, hold or drop it, and seal it for TLS.

pub(crate) mod coalesce;
pub(crate) mod outbound;
pub(crate) mod patience;
pub(crate) mod tls;
