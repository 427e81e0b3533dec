//! The sidecar's wire contract with the control plane (see `contract/`).

pub mod bootstrap;
pub mod mesh_headers;
pub mod messages;
pub mod snapshot;
pub mod telemetry;
