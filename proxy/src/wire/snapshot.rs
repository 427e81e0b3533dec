//! The snapshot the control plane pushes: everything a sidecar routes by.

use serde_json::Value;

/// A snapshot that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub version: u64,
}

/// Why a snapshot was refused (sent back in the NACK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotError(pub String);

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SnapshotError {}

/// Parse and validate a snapshot as the control plane sends it.
pub fn parse_snapshot(value: &Value) -> Result<Snapshot, SnapshotError> {
    let version = value
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| SnapshotError("snapshot.version: expected a whole number".into()))?;
    Ok(Snapshot { version })
}
