//! The config snapshot a sidecar accepts: the contract between control plane and data plane.
//!
//! Like Envoy's xDS resources, this schema belongs to the data plane: the control
//! plane builds snapshots in this shape, the sidecar validates every one it
//! receives with [`parse_snapshot`] and applies it whole or not at all. A snapshot
//! that fails to parse is rejected (NACK) and the previous one stays in force.
//!
//! Wire form (JSON):
//!
//! ```json
//! {"version": 7,
//!  "routes": {"catalog": {"endpoints": [{"instance": "catalog-v1-1", "version": "v1",
//!                                        "address": "127.0.0.1:41234"}],
//!                         "split": {"v1": 90, "v2": 10},
//!                         "versions": ["v1", "v2"],
//!                         "mtls": "strict",
//!                         "authz": [{"name": "readers", "action": "allow",
//!                                    "sources": ["spiffe://devmesh.local/shop/frontend"],
//!                                    "methods": ["GET"]}]}}}
//! ```
//!
//! `mtls` and `authz` are the destination's: a caller's sidecar reads the mode to
//! know whether to call it over mTLS, the destination's own sidecar reads both to
//! know whom to let in.
//!
//! The last good snapshot is kept on disk ([`save_snapshot`], [`load_snapshot`]), so
//! a sidecar restarted while the control plane is away serves on it.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::invalid::Invalid;
use crate::policy::route::{parse_policy, RoutePolicy};
use crate::policy::router::{RouteView, VersionedEndpoint};
use crate::security::authz::{parse_policies, policies_to_wire, AuthzPolicy};

/// A destination's mTLS mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MtlsMode {
    /// Only mTLS from a mesh identity is let in.
    Strict,
    /// mTLS or plaintext on the same port (callers in the mesh use mTLS).
    #[default]
    Permissive,
    /// Plaintext only.
    Off,
}

/// The modes, in the order the error text names them.
pub const MTLS_MODES: [MtlsMode; 3] = [MtlsMode::Strict, MtlsMode::Permissive, MtlsMode::Off];

/// The mode of a route that gives none.
pub const DEFAULT_MTLS: MtlsMode = MtlsMode::Permissive;

impl MtlsMode {
    /// The wire name: `strict`, `permissive` or `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Strict => "strict",
            MtlsMode::Permissive => "permissive",
            MtlsMode::Off => "off",
        }
    }

    /// The mode a wire name names, if any.
    pub fn from_wire(name: &str) -> Option<Self> {
        MTLS_MODES.into_iter().find(|mode| mode.as_str() == name)
    }
}

/// One instance of a destination service, as its inbound sidecar listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub instance: String,
    pub version: String,
    /// `host:port` of the instance's inbound sidecar listener.
    pub address: String,
}

impl Endpoint {
    /// The host of [`address`](Self::address): all before its last `:`.
    pub fn host(&self) -> &str {
        self.address.rsplit_once(':').map_or("", |(host, _)| host)
    }

    /// The port of [`address`](Self::address) (0 if it has none, which
    /// [`parse_snapshot`] never lets through).
    pub fn port(&self) -> u16 {
        self.address
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or(0)
    }
}

/// How to reach one destination service.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Route {
    pub endpoints: Vec<Endpoint>,
    /// Weight per version (summing to 100), in the wire's order (the order sets each
    /// version's band of the draw); `None` spreads over all endpoints.
    pub split: Option<Vec<(String, f64)>>,
    /// The service's named versions: `<service>-<version>` is a host for each of them.
    pub versions: Vec<String>,
    /// How calls to it are handled: timeout, retries, breaker, pool, balancing, faults.
    pub policy: RoutePolicy,
    /// Its mTLS mode.
    pub mtls: MtlsMode,
    /// Its authorization policies.
    pub authz: Vec<AuthzPolicy>,
}

impl Route {
    /// What the router needs of this route.
    pub fn view(&self) -> RouteView<'_, Endpoint> {
        RouteView {
            endpoints: &self.endpoints,
            split: self.split.as_deref().unwrap_or(&[]),
            versions: &self.versions,
        }
    }
}

impl VersionedEndpoint for Endpoint {
    fn instance(&self) -> &str {
        &self.instance
    }
    fn version(&self) -> &str {
        &self.version
    }
}

/// A snapshot that passed validation. The default is the empty snapshot of
/// version 0 (Python's `EMPTY`), in force before the first one arrives.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub version: u64,
    pub routes: BTreeMap<String, Route>,
}

/// Parse and validate a snapshot as the control plane sends it; the error names
/// the first field that does not match the schema.
pub fn parse_snapshot(value: &Value) -> Result<Snapshot, Invalid> {
    let obj = mapping(value, "snapshot")?;
    let version = obj
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| Invalid::new("snapshot.version must be a non-negative integer"))?;
    let mut routes = BTreeMap::new();
    if let Some(raw) = obj.get("routes") {
        for (name, raw) in mapping(raw, "snapshot.routes")? {
            let name = key(name, "snapshot.routes")?;
            let route = parse_route(raw, &format!("snapshot.routes.{name}"))?;
            routes.insert(name.to_owned(), route);
        }
    }
    Ok(Snapshot { version, routes })
}

/// The wire form of a route policy, or `None` (left out) at its default.
fn policy_wire(policy: &RoutePolicy) -> Option<Value> {
    (*policy != RoutePolicy::default()).then(|| crate::policy::route::policy_to_wire(policy))
}

/// The wire form of `snapshot`, which [`parse_snapshot`] reads back to the same
/// snapshot. What is at its default (no split, no versions, the default policy
/// and mTLS mode, no authz) is left out.
pub fn snapshot_to_wire(snapshot: &Snapshot) -> Value {
    let routes: Map<String, Value> = snapshot
        .routes
        .iter()
        .map(|(name, route)| (name.clone(), route_to_wire(route)))
        .collect();
    let mut wire = Map::new();
    wire.insert("version".into(), Value::from(snapshot.version));
    wire.insert("routes".into(), Value::Object(routes));
    Value::Object(wire)
}

fn route_to_wire(route: &Route) -> Value {
    let mut wire = Map::new();
    let endpoints = route
        .endpoints
        .iter()
        .map(|e| {
            let mut endpoint = Map::new();
            endpoint.insert("instance".into(), Value::from(e.instance.as_str()));
            endpoint.insert("version".into(), Value::from(e.version.as_str()));
            endpoint.insert("address".into(), Value::from(e.address.as_str()));
            Value::Object(endpoint)
        })
        .collect();
    wire.insert("endpoints".into(), Value::Array(endpoints));
    if let Some(split) = &route.split {
        let split = split
            .iter()
            .map(|(version, weight)| (version.clone(), Value::from(*weight)))
            .collect();
        wire.insert("split".into(), Value::Object(split));
    }
    if !route.versions.is_empty() {
        wire.insert("versions".into(), Value::from(route.versions.clone()));
    }
    if route.policy != RoutePolicy::default() {
        if let Some(policy) = policy_wire(&route.policy) {
            wire.insert("policy".into(), policy);
        }
    }
    if route.mtls != DEFAULT_MTLS {
        wire.insert("mtls".into(), Value::from(route.mtls.as_str()));
    }
    if !route.authz.is_empty() {
        wire.insert("authz".into(), policies_to_wire(&route.authz));
    }
    Value::Object(wire)
}

/// Write `snapshot` to `path` atomically (to `<path>.tmp`, then renamed over it), so
/// a crash mid-write never leaves a torn last-good snapshot. Creates the folder.
pub fn save_snapshot(snapshot: &Snapshot, path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, snapshot_to_wire(snapshot).to_string())?;
    std::fs::rename(&tmp, path)
}

/// The last good snapshot on disk, or `None` if there is none or it is unreadable
/// (not UTF-8, not JSON, or not a valid snapshot).
pub fn load_snapshot(path: &Path) -> Option<Snapshot> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    parse_snapshot(&value).ok()
}

fn parse_route(value: &Value, at: &str) -> Result<Route, Invalid> {
    let obj = mapping(value, at)?;
    let endpoints = match obj.get("endpoints") {
        None => Vec::new(),
        Some(Value::Array(raw)) => raw
            .iter()
            .enumerate()
            .map(|(i, raw)| parse_endpoint(raw, &format!("{at}.endpoints[{i}]")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(Invalid::new(format!("{at}.endpoints must be a list"))),
    };
    let split = match obj.get("split") {
        None | Some(Value::Null) => None,
        Some(raw) => Some(parse_split(raw, &format!("{at}.split"))?),
    };
    let versions = match obj.get("versions") {
        None => Vec::new(),
        Some(Value::Array(raw)) => raw
            .iter()
            .map(|v| name(v, &format!("{at}.versions")).map(str::to_owned))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(Invalid::new(format!("{at}.versions must be a list"))),
    };
    let empty = Value::Object(Map::new());
    let policy = parse_policy(obj.get("policy").unwrap_or(&empty), &format!("{at}.policy"))?;
    let mtls = match obj.get("mtls") {
        None => DEFAULT_MTLS,
        Some(raw) => raw.as_str().and_then(MtlsMode::from_wire).ok_or_else(|| {
            let modes: Vec<&str> = MTLS_MODES.iter().map(|m| m.as_str()).collect();
            Invalid::new(format!("{at}.mtls must be one of {}", modes.join(", ")))
        })?,
    };
    let no_authz = Value::Array(Vec::new());
    let authz = parse_policies(
        obj.get("authz").unwrap_or(&no_authz),
        &format!("{at}.authz"),
    )?;
    Ok(Route {
        endpoints,
        split,
        versions,
        policy,
        mtls,
        authz,
    })
}

fn parse_split(value: &Value, at: &str) -> Result<Vec<(String, f64)>, Invalid> {
    let mut split = Vec::new();
    for (version, weight) in mapping(value, at)? {
        let weight = match weight {
            Value::Number(n) => n.as_f64().filter(|w| *w >= 0.0),
            _ => None,
        }
        .ok_or_else(|| Invalid::new(format!("{at}.{version} must be a number >= 0")))?;
        split.push((key(version, at)?.to_owned(), weight));
    }
    if (split.iter().map(|(_, w)| w).sum::<f64>() - 100.0).abs() > 1e-6 {
        return Err(Invalid::new(format!("{at} weights must sum to 100")));
    }
    Ok(split)
}

fn parse_endpoint(value: &Value, at: &str) -> Result<Endpoint, Invalid> {
    let obj = mapping(value, at)?;
    let field = |key: &str| match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(Invalid::new(format!(
            "{at}.{key} must be a non-empty string"
        ))),
    };
    let endpoint = Endpoint {
        instance: field("instance")?,
        version: field("version")?,
        address: field("address")?,
    };
    let valid = match endpoint.address.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u32>().is_ok_and(|p| 0 < p && p < 65536)
        }
        None => false,
    };
    if !valid {
        return Err(Invalid::new(format!(
            "{at}.address must be host:port, got {}",
            python_repr(&endpoint.address)
        )));
    }
    Ok(endpoint)
}

fn mapping<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, Invalid> {
    value
        .as_object()
        .ok_or_else(|| Invalid::new(format!("{at} must be an object")))
}

/// A map key, which must not be empty.
fn key<'a>(value: &'a str, at: &str) -> Result<&'a str, Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(format!("{at} keys must be non-empty strings")));
    }
    Ok(value)
}

/// A name in a list, which must be a non-empty string (the Python's text, which
/// says "keys" for these too).
fn name<'a>(value: &'a Value, at: &str) -> Result<&'a str, Invalid> {
    match value {
        Value::String(s) => key(s, at),
        _ => Err(Invalid::new(format!("{at} keys must be non-empty strings"))),
    }
}

/// `text` quoted as Python's `repr` of a string, so error texts match the Python
/// sidecar's: single quotes unless the text holds one and no double quote;
/// backslashes, the quote, `\t`, `\n`, `\r` and other unprintable characters escaped.
fn python_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !printable(c) => {
                let code = c as u32;
                if code < 0x100 {
                    out.push_str(&format!("\\x{code:02x}"));
                } else if code < 0x10000 {
                    out.push_str(&format!("\\u{code:04x}"));
                } else {
                    out.push_str(&format!("\\U{code:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `str.isprintable` for one character, closely enough: control
/// characters, separators other than the space, and the common format characters
/// are not printable.
fn printable(c: char) -> bool {
    !(c.is_control()
        || matches!(c,
            '\u{a0}' | '\u{ad}' | '\u{1680}' | '\u{2000}'..='\u{200f}' | '\u{2028}'..='\u{202f}'
            | '\u{205f}'..='\u{2064}' | '\u{3000}' | '\u{feff}'))
}

#[cfg(test)]
mod tests;
