//! The `x-devmesh-*` headers: what sidecars say to each other, and to callers, on a request
//! or a response. Part of the contract between sidecars (the Python sidecar's
//! `proxy/headers.py` has the same names); an app never receives one from outside the mesh.

/// Set by the calling sidecar: the service the request comes from.
pub const SOURCE_HEADER: &str = "x-devmesh-source";
/// Set on a response the mesh made itself (no endpoint, connect failure, ...).
pub const ERROR_HEADER: &str = "x-devmesh-error";
/// Set on a response a fault shaped (the ids of the faults): injected, not real.
pub const FAULT_HEADER: &str = "x-devmesh-fault";
/// Set on a 403 an authorization policy made: why the request was denied.
pub const DENIED_HEADER: &str = "x-devmesh-denied";
/// Sent by a caller to pin one request to a version of the destination (`v2`).
pub const VERSION_HEADER: &str = "x-devmesh-version";
/// The prefix of the headers the mesh asserts.
pub const MESH_PREFIX: &str = "x-devmesh-";
