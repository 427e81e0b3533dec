//! The last good snapshot on disk (`<state_dir>/snapshot.json`): written atomically
//! after each snapshot the sidecar takes, read at start so that a sidecar whose control
//! plane is away routes as it did (`proxy/snapshot.py`'s `save_snapshot`/`load_snapshot`).
//! What is written is the snapshot's JSON as it was received (after it parsed).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::wire::snapshot::{parse_snapshot, Snapshot};

/// Write `raw` (a snapshot that parsed) to `path` atomically: a `.tmp` beside it, renamed,
/// so that a crash mid-write never leaves a torn last good snapshot.
pub fn save(path: &Path, raw: &Value) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = fs::File::create(&tmp)?;
    file.write_all(raw.to_string().as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

/// The last good snapshot on disk, or `None` if there is none or it is unreadable or
/// no longer valid.
pub fn load(path: &Path) -> Option<Snapshot> {
    let text = fs::read_to_string(path).ok()?;
    let raw: Value = serde_json::from_str(&text).ok()?;
    parse_snapshot(&raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_saved_snapshot_loads_back_and_a_bad_file_is_none() {
        let dir = std::env::temp_dir().join(format!("rlink-kept-{}", std::process::id()));
        let path = dir.join("state").join("snapshot.json");
        assert_eq!(load(&path), None);
        save(&path, &json!({"version": 7, "routes": {}})).unwrap();
        assert_eq!(load(&path).map(|s| s.version), Some(7));
        assert!(!dir.join("state").join("snapshot.json.tmp").exists());
        fs::write(&path, "{torn").unwrap();
        assert_eq!(load(&path), None);
        fs::write(&path, r#"{"version": -1}"#).unwrap();
        assert_eq!(load(&path), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
