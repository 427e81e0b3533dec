//! Authorization: whether a caller may make a request of this sidecar's service. No I/O.
//!
//! Istio's evaluation order (`AuthorizationPolicy`, CUSTOM aside):
//!
//! 1. a `deny` policy that matches the request denies it;
//! 2. with no `allow` policy for the service, the request is allowed;
//! 3. with any, it is allowed only if one of them matches.
//!
//! A policy in `audit` mode is not enforced: the request is also evaluated as
//! if it were (with the enforced ones), and a request that would then have been
//! denied is allowed and reported, so a developer sees what a policy would break
//! before enforcing it (Istio's `istio.io/dry-run`).
//!
//! A policy matches when every field it gives matches (a field it leaves out
//! matches anything) and a field matches when any of its values does:
//!
//! * `sources`: SPIFFE IDs of calling services, or `*` for any mesh identity.
//!   Only an identity proven by mTLS counts: a plaintext caller (`permissive`
//!   or `off`) has none, so a policy naming sources never matches it, and an
//!   allow policy naming sources does not let it in;
//! * `paths`: exact (`/items`), a prefix (`/items/*`), a suffix (`*.json`)
//!   or `*`, against the request's path without its query, percent-decoded and
//!   normalised first (`.` and `..` segments resolved, runs of `/` merged, as
//!   Istio's `BASE` and `MERGE_SLASHES` normalisation), so that
//!   `/x/../admin` or `//admin` cannot slip past a rule on `/admin`;
//! * `methods`: HTTP methods, upper case.
//!
//! Before a request is judged, [`canonical_target`] gives it the path the rules
//! judge (and that is passed on), or says why its path cannot be judged safely.

use serde_json::{Map, Value};

use crate::invalid::Invalid;

/// The `sources` entry that matches any mesh identity (never a plaintext caller).
pub const ANY_IDENTITY: &str = "*";

/// What a policy does to the requests it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Only what some allow policy matches is let in.
    Allow,
    /// What it matches is denied, whatever the allow policies say.
    Deny,
}

impl Action {
    /// The wire name: `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// One authorization policy of a destination service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzPolicy {
    /// Its name, reported when it decides a request.
    pub name: String,
    /// `allow` or `deny`.
    pub action: Action,
    /// Evaluated and reported, never enforced.
    pub audit: bool,
    /// SPIFFE IDs of callers, or `*` (any mesh identity); empty: any caller.
    pub sources: Vec<String>,
    /// Path patterns (exact, `prefix*`, `*suffix`, `*`); empty: any path.
    pub paths: Vec<String>,
    /// HTTP methods; empty: any method.
    pub methods: Vec<String>,
}

impl AuthzPolicy {
    /// A policy that matches every request (no field given), enforced.
    pub fn new(name: impl Into<String>, action: Action) -> Self {
        AuthzPolicy {
            name: name.into(),
            action,
            audit: false,
            sources: Vec::new(),
            paths: Vec::new(),
            methods: Vec::new(),
        }
    }

    /// Whether every field the policy gives matches the request. `path` is
    /// matched as given (see [`evaluate`], which normalises it first).
    pub fn matches(&self, principal: Option<&str>, path: &str, method: &str) -> bool {
        if !self.sources.is_empty() && !self.sources.iter().any(|s| source_matches(s, principal)) {
            return false;
        }
        if !self.paths.is_empty() && !self.paths.iter().any(|p| path_matches(p, path)) {
            return false;
        }
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }

    /// The wire form: `name` and `action`, `audit` only when true, the lists only
    /// when not empty.
    pub fn to_wire(&self) -> Value {
        let mut wire = Map::new();
        wire.insert("name".into(), Value::from(self.name.as_str()));
        wire.insert("action".into(), Value::from(self.action.as_str()));
        if self.audit {
            wire.insert("audit".into(), Value::Bool(true));
        }
        for (key, values) in [
            ("sources", &self.sources),
            ("paths", &self.paths),
            ("methods", &self.methods),
        ] {
            if !values.is_empty() {
                wire.insert(key.into(), Value::from(values.clone()));
            }
        }
        Value::Object(wire)
    }
}

/// The wire form of a list of policies (a JSON array).
pub fn policies_to_wire(policies: &[AuthzPolicy]) -> Value {
    Value::Array(policies.iter().map(AuthzPolicy::to_wire).collect())
}

/// The decision on one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Whether the request is let in.
    pub allowed: bool,
    /// The policy that denied the request (or, in an audit, would have); when no
    /// allow policy matched, the names of the allow policies, joined by `, `.
    pub policy: Option<String>,
    /// Why it was denied, in a sentence (empty when allowed).
    pub reason: String,
    /// Allowed, but the audit-mode policies would have denied it: why.
    pub audit: Option<Box<Verdict>>,
}

impl Verdict {
    /// Allowed, with nothing to report.
    pub fn allowed() -> Self {
        Verdict {
            allowed: true,
            ..Verdict::default()
        }
    }

    fn denied(policy: String, reason: String) -> Self {
        Verdict {
            allowed: false,
            policy: Some(policy),
            reason,
            audit: None,
        }
    }
}

/// The verdict on a request from `principal` (`None`: no mTLS identity) for
/// `path` (without its query; normalised here) and `method`.
pub fn evaluate(
    policies: &[AuthzPolicy],
    principal: Option<&str>,
    path: &str,
    method: &str,
) -> Verdict {
    if policies.is_empty() {
        return Verdict::allowed();
    }
    let path = normalized(path);
    let enforced: Vec<&AuthzPolicy> = policies.iter().filter(|p| !p.audit).collect();
    let verdict = decide(&enforced, principal, &path, method);
    if verdict.allowed && enforced.len() < policies.len() {
        let all: Vec<&AuthzPolicy> = policies.iter().collect();
        let shadow = decide(&all, principal, &path, method);
        if !shadow.allowed {
            return Verdict {
                audit: Some(Box::new(shadow)),
                ..Verdict::allowed()
            };
        }
    }
    verdict
}

fn decide(policies: &[&AuthzPolicy], principal: Option<&str>, path: &str, method: &str) -> Verdict {
    for policy in policies {
        if policy.action == Action::Deny && policy.matches(principal, path, method) {
            return Verdict::denied(
                policy.name.clone(),
                format!("denied by policy {}", policy.name),
            );
        }
    }
    let allows: Vec<&&AuthzPolicy> = policies
        .iter()
        .filter(|p| p.action == Action::Allow)
        .collect();
    if allows.is_empty() || allows.iter().any(|p| p.matches(principal, path, method)) {
        return Verdict::allowed();
    }
    let names = allows
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let caller = principal
        .filter(|p| !p.is_empty())
        .unwrap_or("a caller without a mesh identity");
    let reason = format!("no allow policy ({names}) lets {caller} {method} {path}");
    Verdict::denied(names, reason)
}

/// `path` with its dot segments removed (RFC 3986 5.2.4) and runs of `/` merged.
///
/// A `..` above the root stays at it; a trailing `/` (or a final `.` or `..`
/// segment) leaves a trailing `/`, except on the root itself.
pub fn normalized(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            _ => kept.push(segment),
        }
    }
    let mut result = String::with_capacity(path.len() + 1);
    result.push('/');
    result.push_str(&kept.join("/"));
    let trailing =
        (path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..")) && result != "/";
    if trailing {
        result.push('/');
    }
    result
}

/// Give a request the path its service's authorization rules judge, and that is
/// passed on (Istio's path normalisation): `%2e` decoded, dot segments resolved,
/// runs of `/` merged.
///
/// `target` is the request-target as sent, `path_qs` its path and query. The
/// answer is `Ok(None)` when `path_qs` is already canonical, `Ok(Some(new))` with
/// the canonical path and query otherwise, and `Err(why)` for a target the rules
/// cannot judge safely (a fragment, an escaped `/` or `\`): it is refused (400),
/// never normalised. The path [`evaluate`] then judges is the canonical path's
/// [`percent_decoded`] form, without its query.
pub fn canonical_target(target: &str, path_qs: &str) -> Result<Option<String>, &'static str> {
    let (raw, query) = match path_qs.split_once('?') {
        Some((raw, query)) => (raw, Some(query)),
        None => (path_qs, None),
    };
    if target.contains('#') {
        return Err("the request target holds a fragment (#), which HTTP never sends");
    }
    if has_escape(raw, &["2f", "5c"]) {
        return Err(
            "the path holds an escaped '/' or '\\', which authorization rules cannot judge",
        );
    }
    let path = normalized(&decode_escaped_dots(raw));
    if path == raw {
        return Ok(None);
    }
    Ok(Some(match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }))
}

/// `path` percent-decoded as Python's `urllib.parse.unquote` does it: each run
/// of `%XX` escapes becomes its bytes, read as UTF-8 with `U+FFFD` for what is
/// not; a `%` not followed by two hex digits stays as it is.
pub fn percent_decoded(path: &str) -> String {
    if !path.contains('%') {
        return path.to_owned();
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

/// Whether `raw` holds `%` followed by one of `escapes` (two lower-case hex
/// digits, matched in any case).
fn has_escape(raw: &str, escapes: &[&str]) -> bool {
    raw.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && escapes
                .iter()
                .any(|e| w[1..].eq_ignore_ascii_case(e.as_bytes()))
    })
}

/// `raw` with each `%2e` (any case) turned into `.`.
fn decode_escaped_dots(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if tail.len() >= 3 && tail.as_bytes()[1..3].eq_ignore_ascii_case(b"2e") {
            out.push('.');
            rest = &tail[3..];
        } else {
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn source_matches(pattern: &str, principal: Option<&str>) -> bool {
    match principal {
        None => false,
        Some(principal) => pattern == ANY_IDENTITY || pattern == principal,
    }
}

fn path_matches(pattern: &str, path: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return path.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return path.ends_with(suffix);
    }
    path == pattern
}

/// Validate a route's `authz` list (a list of objects); `at` names where it
/// sits (`snapshot.routes.catalog.authz`).
pub fn parse_policies(value: &Value, at: &str) -> Result<Vec<AuthzPolicy>, Invalid> {
    let Value::Array(items) = value else {
        return Err(Invalid::new(format!("{at} must be a list")));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, raw)| parse_policy(raw, &format!("{at}[{i}]")))
        .collect()
}

fn parse_policy(value: &Value, at: &str) -> Result<AuthzPolicy, Invalid> {
    let Value::Object(obj) = value else {
        return Err(Invalid::new(format!("{at} must be an object")));
    };
    let name = match obj.get("name") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        _ => {
            return Err(Invalid::new(format!(
                "{at}.name must be a non-empty string"
            )))
        }
    };
    let action = match obj.get("action").and_then(Value::as_str) {
        Some("allow") => Action::Allow,
        Some("deny") => Action::Deny,
        _ => return Err(Invalid::new(format!("{at}.action must be allow or deny"))),
    };
    let audit = match obj.get("audit") {
        None => false,
        Some(Value::Bool(audit)) => *audit,
        Some(_) => return Err(Invalid::new(format!("{at}.audit must be true or false"))),
    };
    let list = |key: &str| -> Result<Vec<String>, Invalid> {
        let bad = || Invalid::new(format!("{at}.{key} must be a list of non-empty strings"));
        match obj.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(values)) => values
                .iter()
                .map(|v| match v {
                    Value::String(s) if !s.is_empty() => Ok(s.clone()),
                    _ => Err(bad()),
                })
                .collect(),
            Some(_) => Err(bad()),
        }
    };
    Ok(AuthzPolicy {
        name,
        action,
        audit,
        sources: list("sources")?,
        paths: list("paths")?,
        methods: list("methods")?,
    })
}

#[cfg(test)]
mod tests;
