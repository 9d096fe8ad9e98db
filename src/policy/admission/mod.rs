//! Who may connect: the client caps, accept backoff, log throttling.

pub(crate) mod limits;
