//! The control link: one WebSocket to the control plane, dialled by the sidecar.

pub mod link;
