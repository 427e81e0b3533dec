//! The sidecar's wire contract with the control plane (see `contract/`).

pub mod snapshot;
