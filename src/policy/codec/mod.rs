//! Bytes in and out of the wire formats: lines, the read buffer, WebSocket frames.

pub(crate) mod inbound;
pub(crate) mod line;
pub(crate) mod websocket;
