//! The operating system: sockets, the io_uring probe, the tokio engine's
//! non-blocking send, the uring engine's send ring, and the timerfd the
//! write coalescer sleeps on.

pub(crate) mod net;
pub(crate) mod send;
pub(crate) mod sendring;
pub(crate) mod timer;
