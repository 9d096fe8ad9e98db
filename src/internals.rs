//! What the benches and the fuzz target reach inside the crate, behind the
//! `internals` feature. Not a stable API.

pub use crate::engine::mesh::{Inbox, Outbox, Pushed, RING_CAPACITY, mesh};
pub use crate::engine::uring::RING_BATCH;
pub use crate::policy::codec::line::{LineSplitter, LineTooLong, model};
pub use crate::policy::run::{Kind, Run};
pub use crate::policy::send::outbound::{Change, Episode, Outbound, Outcome, SendBuf, Sent, Step};
