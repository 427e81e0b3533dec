//! The wire schema a sidecar accepts, and the last good snapshot on disk (ported from
//! `tests/unit/proxy/test_snapshot.py`; the cases about a route policy's contents are
//! `policy::route`'s).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

use super::*;
use crate::security::authz::Action;

fn wire_base() -> Value {
    json!({
        "version": 7,
        "routes": {
            "catalog": {
                "endpoints": [
                    {"instance": "catalog-v1-1", "version": "v1", "address": "127.0.0.1:41234"},
                    {"instance": "catalog-v2-1", "version": "v2", "address": "localhost:41235"},
                ],
                "split": {"v1": 90, "v2": 10},
            },
            "pricing": {
                "endpoints": [
                    {"instance": "pricing-1", "version": "default", "address": "10.0.0.2:8000"}
                ]
            },
            "idle": {"endpoints": []},
        },
    })
}

/// A copy of the base wire form; each change maps a dotted path
/// (`routes.catalog.split`) to a new value, or to `None` to delete the key.
fn wire(changes: &[(&str, Option<Value>)]) -> Value {
    let mut data = wire_base();
    for (dotted, value) in changes {
        let (parents, last) = match dotted.rsplit_once('.') {
            Some((parents, last)) => (format!("/{}", parents.replace('.', "/")), last),
            None => (String::new(), *dotted),
        };
        let node = data.pointer_mut(&parents).expect("the path exists");
        match (node, value) {
            (Value::Object(map), Some(value)) => {
                map.insert(last.to_owned(), value.clone());
            }
            (Value::Object(map), None) => {
                map.remove(last);
            }
            (Value::Array(list), Some(value)) => {
                list[last.parse::<usize>().unwrap()] = value.clone()
            }
            (Value::Array(list), None) => {
                list.remove(last.parse::<usize>().unwrap());
            }
            _ => panic!("{dotted} is not in an object or a list"),
        }
    }
    data
}

/// Whether two JSON values are the same, numbers compared by value (as Python
/// compares `90 == 90.0`).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn parse_builds_the_typed_snapshot() {
    let snap = parse_snapshot(&wire_base()).unwrap();
    assert_eq!(snap.version, 7);
    assert_eq!(
        snap.routes.keys().collect::<Vec<_>>(),
        ["catalog", "idle", "pricing"]
    );
    let catalog = &snap.routes["catalog"];
    assert_eq!(
        catalog.endpoints[0],
        Endpoint {
            instance: "catalog-v1-1".into(),
            version: "v1".into(),
            address: "127.0.0.1:41234".into()
        }
    );
    assert_eq!(
        (catalog.endpoints[1].host(), catalog.endpoints[1].port()),
        ("localhost", 41235)
    );
    let split = vec![("v1".to_owned(), 90.0), ("v2".to_owned(), 10.0)];
    assert_eq!(catalog.split, Some(split));
    assert_eq!(snap.routes["pricing"].split, None);
    assert_eq!(snap.routes["idle"], Route::default());
}

#[test]
fn to_wire_then_parse_round_trips() {
    let snap = parse_snapshot(&wire_base()).unwrap();
    let wired = snapshot_to_wire(&snap);
    let text = serde_json::to_string(&wired).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), wired);
    assert_eq!(parse_snapshot(&wired).unwrap(), snap);
    assert!(
        same_json(&wired, &wire_base()),
        "nothing is added or lost: {wired}"
    );
}

#[test]
fn versions_of_a_route_are_carried() {
    let wire =
        json!({"version": 1, "routes": {"catalog": {"endpoints": [], "versions": ["v1", "v2"]}}});
    let snap = parse_snapshot(&wire).unwrap();
    assert_eq!(snap.routes["catalog"].versions, ["v1", "v2"]);
    assert_eq!(snapshot_to_wire(&snap), wire);
    let err = parse_snapshot(&json!({"version": 1, "routes": {"catalog": {"versions": "v1"}}}))
        .unwrap_err();
    assert_eq!(err.0, "snapshot.routes.catalog.versions must be a list");
}

#[test]
fn routes_may_be_omitted() {
    assert_eq!(
        parse_snapshot(&json!({"version": 0})),
        Ok(Snapshot {
            version: 0,
            routes: BTreeMap::new()
        })
    );
    assert_eq!(
        parse_snapshot(&json!({"version": 0})),
        Ok(Snapshot::default())
    );
}

#[test]
fn mtls_and_authz_are_the_destinations_and_round_trip() {
    let wire = json!({"version": 3, "routes": {"catalog": {
        "endpoints": [],
        "mtls": "strict",
        "authz": [{"name": "readers", "action": "allow",
                   "sources": ["spiffe://devmesh.local/shop/frontend"], "methods": ["GET"]}],
    }}});
    let snap = parse_snapshot(&wire).unwrap();
    let catalog = &snap.routes["catalog"];
    assert_eq!(catalog.mtls, MtlsMode::Strict);
    assert_eq!(catalog.authz.len(), 1);
    assert_eq!(catalog.authz[0].action, Action::Allow);
    assert_eq!(snapshot_to_wire(&snap), wire);
    for mode in MTLS_MODES {
        let wire = json!({"version": 1, "routes": {"c": {"mtls": mode.as_str()}}});
        assert_eq!(parse_snapshot(&wire).unwrap().routes["c"].mtls, mode);
    }
    let permissive = json!({"version": 1, "routes": {"c": {"mtls": "permissive"}}});
    let parsed = parse_snapshot(&permissive).unwrap();
    assert_eq!(
        snapshot_to_wire(&parsed),
        json!({"version": 1, "routes": {"c": {"endpoints": []}}}),
        "the default mode is left out"
    );
}

#[test]
fn the_texts_are_the_python_sidecars() {
    for (data, text) in [
        (json!([]), "snapshot must be an object"),
        (
            wire(&[("version", Some(json!(-1)))]),
            "snapshot.version must be a non-negative integer",
        ),
        (
            wire(&[("routes", Some(json!(null)))]),
            "snapshot.routes must be an object",
        ),
        (
            json!({"version": 1, "routes": {"": {}}}),
            "snapshot.routes keys must be non-empty strings",
        ),
        (
            wire(&[("routes.catalog.endpoints.1.address", Some(json!("nohost")))]),
            "snapshot.routes.catalog.endpoints[1].address must be host:port, got 'nohost'",
        ),
        (
            wire(&[("routes.catalog.endpoints.0.address", Some(json!("it's:x")))]),
            "snapshot.routes.catalog.endpoints[0].address must be host:port, got \"it's:x\"",
        ),
        (
            wire(&[(
                "routes.catalog.endpoints.0.address",
                Some(json!("a\nb\\c\u{7f}")),
            )]),
            "snapshot.routes.catalog.endpoints[0].address must be host:port, got 'a\\nb\\\\c\\x7f'",
        ),
        (
            wire(&[("routes.catalog.endpoints.0.instance", Some(json!("")))]),
            "snapshot.routes.catalog.endpoints[0].instance must be a non-empty string",
        ),
        (
            wire(&[("routes.catalog.split", Some(json!({"v1": 90, "v2": 20})))]),
            "snapshot.routes.catalog.split weights must sum to 100",
        ),
        (
            wire(&[("routes.catalog.split", Some(json!({"v1": 110, "v2": -10})))]),
            "snapshot.routes.catalog.split.v2 must be a number >= 0",
        ),
        (
            wire(&[("routes.catalog.split", Some(json!({"": 100})))]),
            "snapshot.routes.catalog.split keys must be non-empty strings",
        ),
        (
            json!({"version": 1, "routes": {"c": {"versions": ["v1", 2]}}}),
            "snapshot.routes.c.versions keys must be non-empty strings",
        ),
        (
            json!({"version": 1, "routes": {"c": {"mtls": "on"}}}),
            "snapshot.routes.c.mtls must be one of strict, permissive, off",
        ),
        (
            json!({"version": 1, "routes": {"c": {"mtls": null}}}),
            "snapshot.routes.c.mtls must be one of strict, permissive, off",
        ),
        (
            json!({"version": 1, "routes": {"c": {"authz": {}}}}),
            "snapshot.routes.c.authz must be a list",
        ),
        (
            json!({"version": 1, "routes": {"c": {"authz": [{"name": "x"}]}}}),
            "snapshot.routes.c.authz[0].action must be allow or deny",
        ),
    ] {
        assert_eq!(parse_snapshot(&data), Err(Invalid::new(text)), "{data}");
    }
}

#[test]
fn a_null_split_is_no_split() {
    let snap = parse_snapshot(&wire(&[("routes.catalog.split", Some(json!(null)))])).unwrap();
    assert_eq!(snap.routes["catalog"].split, None);
}

#[test]
fn malformed_snapshot_raises_naming_the_field() {
    let address = "routes.catalog.endpoints.0.address";
    let split = "routes.catalog.split";
    let cases: Vec<(Value, &str)> = vec![
        (wire(&[("version", Some(json!(-1)))]), "snapshot.version"),
        (wire(&[("version", Some(json!(true)))]), "snapshot.version"),
        (wire(&[("version", Some(json!(1.5)))]), "snapshot.version"),
        (wire(&[("version", Some(json!("7")))]), "snapshot.version"),
        (wire(&[("version", None)]), "snapshot.version"),
        (json!([]), "snapshot"),
        (wire(&[("routes", Some(json!([])))]), "snapshot.routes"),
        (
            wire(&[("routes.catalog", Some(json!("x")))]),
            "snapshot.routes.catalog",
        ),
        (
            wire(&[("routes.catalog.endpoints", Some(json!({})))]),
            "snapshot.routes.catalog.endpoints",
        ),
        (
            wire(&[("routes.catalog.endpoints.0", Some(json!("a")))]),
            "snapshot.routes.catalog.endpoints[0]",
        ),
        (
            wire(&[("routes.catalog.endpoints.1.address", Some(json!("nohost")))]),
            "snapshot.routes.catalog.endpoints[1].address",
        ),
        (
            wire(&[(address, Some(json!("h:0")))]),
            "snapshot.routes.catalog.endpoints[0].address",
        ),
        (
            wire(&[(address, Some(json!("h:99999")))]),
            "snapshot.routes.catalog.endpoints[0].address",
        ),
        (
            wire(&[(address, Some(json!(":80")))]),
            "snapshot.routes.catalog.endpoints[0].address",
        ),
        (
            wire(&[(address, Some(json!("h:8o")))]),
            "snapshot.routes.catalog.endpoints[0].address",
        ),
        (
            wire(&[("routes.catalog.endpoints.0.instance", Some(json!("")))]),
            "snapshot.routes.catalog.endpoints[0].instance",
        ),
        (
            wire(&[("routes.catalog.endpoints.0.version", None)]),
            "snapshot.routes.catalog.endpoints[0].version",
        ),
        (
            wire(&[(address, Some(json!(8000)))]),
            "snapshot.routes.catalog.endpoints[0].address",
        ),
        (
            wire(&[(split, Some(json!({"v1": 90, "v2": 20})))]),
            "snapshot.routes.catalog.split",
        ),
        (
            wire(&[(split, Some(json!({"v1": 50})))]),
            "snapshot.routes.catalog.split",
        ),
        (
            wire(&[(split, Some(json!({"v1": 110, "v2": -10})))]),
            "snapshot.routes.catalog.split.v2",
        ),
        (
            wire(&[(split, Some(json!({"v1": 100, "v2": false})))]),
            "snapshot.routes.catalog.split.v2",
        ),
        (
            wire(&[(split, Some(json!({"v1": "90", "v2": 10})))]),
            "snapshot.routes.catalog.split.v1",
        ),
        (
            wire(&[(split, Some(json!([90, 10])))]),
            "snapshot.routes.catalog.split",
        ),
    ];
    for (data, field) in cases {
        let message = parse_snapshot(&data).unwrap_err().0;
        assert!(
            message.starts_with(&format!("{field} ")),
            "{message:?} does not name {field}"
        );
    }
}

/// A fresh folder under the system's temporary one, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "devmesh-snapshot-test-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn save_then_load_gives_the_same_snapshot() {
    let tmp = TempDir::new();
    let snap = parse_snapshot(&wire_base()).unwrap();
    let path = tmp.path().join("state").join("snapshot.json");
    save_snapshot(&snap, &path).unwrap();
    assert_eq!(load_snapshot(&path), Some(snap));
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["snapshot.json"]);
}

#[test]
fn save_replaces_the_previous_snapshot() {
    let tmp = TempDir::new();
    let path = tmp.path().join("snapshot.json");
    save_snapshot(&parse_snapshot(&wire_base()).unwrap(), &path).unwrap();
    let eight = Snapshot {
        version: 8,
        routes: BTreeMap::new(),
    };
    save_snapshot(&eight, &path).unwrap();
    assert_eq!(load_snapshot(&path), Some(eight));
}

#[test]
fn load_of_a_missing_file_is_none() {
    let tmp = TempDir::new();
    assert_eq!(load_snapshot(&tmp.path().join("absent.json")), None);
}

#[test]
fn load_of_a_torn_file_is_none() {
    let tmp = TempDir::new();
    let path = tmp.path().join("snapshot.json");
    let text = wire_base().to_string();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    assert_eq!(load_snapshot(&path), None);
}

#[test]
fn load_of_an_unusable_file_is_none() {
    let tmp = TempDir::new();
    let path = tmp.path().join("snapshot.json");
    for content in [
        &b""[..],
        b"\xff\xfe\x00garbage",
        b"[1, 2]",
        b"{\"version\": -3}",
        b"null",
    ] {
        std::fs::write(&path, content).unwrap();
        assert_eq!(load_snapshot(&path), None, "{content:?}");
    }
}

#[test]
fn a_split_keeps_the_order_it_came_in_which_sets_each_versions_band_of_the_draw() {
    let snap = parse_snapshot(&json!({"version": 1, "routes": {"catalog": {
        "endpoints": [], "split": {"v2": 10, "v1": 90}}}}))
    .unwrap();
    let order: Vec<&str> = snap.routes["catalog"]
        .split
        .iter()
        .flatten()
        .map(|(v, _)| v.as_str())
        .collect();
    assert_eq!(order, ["v2", "v1"]);
    let wire = snapshot_to_wire(&snap);
    let keys: Vec<&String> = wire["routes"]["catalog"]["split"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, ["v2", "v1"]);
}

#[test]
fn a_route_policy_is_written_and_read_back() {
    let raw = json!({"version": 3, "routes": {"catalog": {"endpoints": [],
        "policy": {"timeout": 2.5, "lb": "least-request",
                   "faults": [{"id": "f1", "abort_status": 503, "abort_percent": 20.0}]}}}});
    let snap = parse_snapshot(&raw).unwrap();
    assert_ne!(snap.routes["catalog"].policy, RoutePolicy::default());
    assert_eq!(parse_snapshot(&snapshot_to_wire(&snap)).unwrap(), snap);
}

/// `contract/examples/snapshots.json`: the cases both sidecars are held to, with the
/// exact text of the NACK; the Python sidecar's tests read the same file.
fn contract_examples() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contract/examples/snapshots.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("contract/examples/snapshots.json is JSON")
}

#[test]
fn the_contracts_refused_snapshots_are_refused_with_the_same_text_as_the_python_sidecars() {
    let examples = contract_examples();
    let mut wrong = Vec::new();
    for kind in ["refused", "beyond_the_schema"] {
        for case in examples[kind].as_array().unwrap() {
            let got = parse_snapshot(&case["snapshot"]).err().map(|e| e.0);
            let want = case["error"].as_str().unwrap();
            if got.as_deref() != Some(want) {
                wrong.push(format!("{}: want {want:?}, got {got:?}", case["what"]));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn the_contracts_accepted_snapshots_are_accepted_and_written_back_the_same() {
    let examples = contract_examples();
    for case in examples["accepted"].as_array().unwrap() {
        let snap = parse_snapshot(&case["snapshot"])
            .unwrap_or_else(|e| panic!("{}: refused: {e}", case["what"]));
        assert_eq!(
            parse_snapshot(&snapshot_to_wire(&snap)).unwrap(),
            snap,
            "{}",
            case["what"]
        );
    }
}
