//! The control link: one WebSocket to the control plane, dialled by the sidecar, and
//! what the link keeps (the last good snapshot, the identity) and reports (the health).

pub mod health;
pub mod identity;
pub mod kept;
pub mod link;
pub mod liveness;
pub mod state;

#[cfg(test)]
mod link_tests;
