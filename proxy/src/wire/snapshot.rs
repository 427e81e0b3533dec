//! The snapshot the control plane pushes: everything a sidecar routes by.

use serde_json::Value;

use crate::invalid::Invalid;

/// A snapshot that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub version: u64,
}

/// Parse and validate a snapshot as the control plane sends it.
pub fn parse_snapshot(value: &Value) -> Result<Snapshot, Invalid> {
    let version = value
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| Invalid::new("snapshot.version must be a non-negative integer"))?;
    Ok(Snapshot { version })
}
