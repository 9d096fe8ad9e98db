//! The operating system: sockets, the io_uring probe, the non-blocking
//! send both engines use, and the timerfd the write coalescer sleeps on.

pub(crate) mod net;
pub(crate) mod send;
pub(crate) mod sendring;
pub(crate) mod timer;
