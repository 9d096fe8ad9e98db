//! What operators see and run beside the engines: the counters and their
//! HTTP endpoint, and the NATS bridge to other nodes.

pub mod clients;
pub(crate) mod cluster;
pub(crate) mod http;
pub mod metrics;
pub(crate) mod process;
