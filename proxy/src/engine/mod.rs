//! The HTTP engine: the listeners (outbound, inbound, gateway), the forwarding between
//! them and upstreams, and header hygiene.
//!
//! - [`listener`]: accept loops, hyper's HTTP/1.1 server behind [`front`], the strict
//!   front every byte a caller sends passes through (the mesh's limits and refusals);
//! - [`sidecar`]: the [`sidecar::Engine`], the outbound and gateway handlers and
//!   passthrough; [`inbound`]: the inbound handler; [`target`]: where a request goes;
//! - [`outbound`]: the call pipeline to a mesh service (version, pool, attempts,
//!   retries, faults, timeouts);
//! - [`client`]: the pooled upstream client; [`upstream`]: what an attempt got, the
//!   mesh's own answers, relaying;
//! - [`destinations`]: per destination, the breaker, balancers and pool gate;
//! - [`record`]: one telemetry record per request;
//! - [`body`], [`throttle`], [`appgate`], [`origdst`], [`headers`]: the pieces.

pub mod appgate;
pub mod body;
pub mod client;
pub mod destinations;
pub mod front;
pub mod headers;
pub mod inbound;
pub mod listener;
pub mod origdst;
pub mod outbound;
pub mod record;
pub mod sidecar;
pub mod target;
pub mod throttle;
pub mod upstream;

#[cfg(test)]
mod mtls_tests;
#[cfg(test)]
mod tests;
