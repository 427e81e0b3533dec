//! devmesh's sidecar, the data plane of the mesh.
//!
//! The layers, from the wire inwards:
//!
//! - [`wire`]: the contract with the control plane (`contract/` at the top of
//!   the repository): the bootstrap file, the snapshot, the control stream's
//!   messages and the telemetry record, parsed and validated.
//! - [`control`]: the control link, one WebSocket dialled by the sidecar.
//! - [`engine`]: the HTTP engine (listeners, forwarding, header hygiene).
//! - [`policy`]: traffic policy as pure decisions (routing and splits, the
//!   balancer, outlier detection, pool limits, faults, retries). No I/O: the
//!   clock and randomness are passed in, so `cargo test` checks them on a
//!   paused clock.
//! - [`security`]: authorization (path normalisation and rule matching), and
//!   later mTLS and identity.
//! - [`interception`]: the iptables rules of transparent interception (the
//!   init step's `devmesh-proxy intercept`).

pub mod cli;
pub mod control;
pub mod engine;
pub mod interception;
pub mod invalid;
pub mod policy;
pub mod security;
pub mod wire;
