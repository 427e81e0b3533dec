//! The HTTP engine: listeners, forwarding, header hygiene.

pub mod headers;
