//! The HTTP engine: the listeners (outbound, inbound, gateway), the forwarding between
//! them and upstreams, and header hygiene.
//!
//! - [`listener`]: accept loops, hyper's HTTP/1.1 server with the mesh's limits;
//! - [`sidecar`]: the [`sidecar::Engine`] and each listener's handler;
//! - [`outbound`]: the call pipeline to a mesh service (version, pool, attempts,
//!   retries, faults, timeouts);
//! - [`upstream`]: the pooled client, the mesh's own answers, relaying;
//! - [`destinations`]: per destination, the breaker, balancers and pool gate;
//! - [`record`]: one telemetry record per request;
//! - [`body`], [`throttle`], [`appgate`], [`origdst`], [`headers`]: the pieces.

pub mod appgate;
pub mod body;
pub mod destinations;
pub mod headers;
pub mod listener;
pub mod origdst;
pub mod outbound;
pub mod record;
pub mod sidecar;
pub mod throttle;
pub mod upstream;

#[cfg(test)]
mod tests;
