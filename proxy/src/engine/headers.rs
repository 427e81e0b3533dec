//! Header hygiene for one hop through the mesh: pure functions on [`HeaderMap`], no I/O.
//!
//! RFC 9110 §7.6.1: a proxy removes the hop-by-hop headers, and every header the
//! `Connection` header names, before forwarding in either direction. Each hop also
//! appends exactly one `X-Forwarded-For` entry, becomes a span of the request's W3C
//! trace (`traceparent`, propagated or started) and keeps or starts an
//! `x-request-id`. The randomness for new ids is passed in.
//!
//! A [`HeaderMap`] keeps no name's case (names are lower case) and groups the values
//! of one name together, in their order; the order of names is kept.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

/// The headers a proxy never forwards (RFC 9110 §7.6.1, and the de facto
/// `keep-alive` and `proxy-connection`).
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub use crate::wire::mesh_headers::*;

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// The request id header, kept end to end.
pub const REQUEST_ID: &str = "x-request-id";
/// The header `X-Forwarded-For`.
pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// The longest text [`header_safe`] makes by default, in characters.
pub const HEADER_SAFE_LIMIT: usize = 512;

/// The header names the `Connection` headers list, lower case (every `Connection`
/// header counts, each a comma list).
fn connection_tokens(headers: &HeaderMap) -> Vec<Vec<u8>> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .map(|token| token.trim_ascii().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

/// A copy of `headers` fit to forward: hop-by-hop headers removed, and those the
/// `Connection` headers name. With `drop_mesh`, the `x-devmesh-*` headers are
/// removed too, so that an application cannot forge what the mesh asserts (its
/// source identity).
pub fn forwardable(headers: &HeaderMap, drop_mesh: bool) -> HeaderMap {
    let mut out = headers.clone();
    make_forwardable(&mut out, drop_mesh);
    out
}

/// [`forwardable`] in place, for a map the caller owns.
pub fn make_forwardable(headers: &mut HeaderMap, drop_mesh: bool) {
    let named = connection_tokens(headers);
    let drop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            HOP_BY_HOP.contains(&name)
                || named.iter().any(|token| token == name.as_bytes())
                || (drop_mesh && name.starts_with(MESH_PREFIX))
        })
        .cloned()
        .collect();
    for name in drop {
        headers.remove(name);
    }
}

/// Append one entry (the peer's address) to `X-Forwarded-For`: the values it had
/// become one, `<them>, <peer>`. Without a peer (or with one that cannot be in a
/// header, a control character), the headers are left as they are.
pub fn append_forwarded_for(headers: &mut HeaderMap, peer: Option<&str>) {
    let Some(peer) = peer.filter(|p| !p.is_empty()) else {
        return;
    };
    let mut value: Vec<u8> = Vec::new();
    for existing in headers.get_all(FORWARDED_FOR) {
        if !value.is_empty() {
            value.extend_from_slice(b", ");
        }
        value.extend_from_slice(existing.as_bytes());
    }
    if !value.is_empty() {
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(peer.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        headers.insert(FORWARDED_FOR, value);
    }
}

/// `headers` without every value of each of `names` (any case).
pub fn without<'a>(headers: &mut HeaderMap, names: impl IntoIterator<Item = &'a str>) {
    for name in names {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(name);
        }
    }
}

/// This hop's place in the request's W3C trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// This hop's span: 16 lower-case hex digits, the next hop's parent.
    pub span_id: String,
    /// The span of the caller (`None`: this hop started the trace).
    pub parent_id: Option<String>,
}

/// Make this hop a span of the request's W3C trace, and its id the next hop's parent.
///
/// A valid `traceparent` keeps its trace id and flags and gets this hop's new span
/// id as parent; an absent or malformed one starts a trace (flags `01`). An
/// `x-request-id` is kept, or one is started (a UUID 4). The ids need to be unique,
/// not secret (as OpenTelemetry's SDKs make them): `rng` may be a fast generator.
pub fn trace_hop(headers: &mut HeaderMap, rng: &mut impl Rng) -> Span {
    let found = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    let span = format!("{:016x}", nonzero(rng.next_u64()));
    let (trace, parent, flags) = match found {
        Some((trace, parent, flags)) => (trace, Some(parent), flags),
        None => {
            let trace = nonzero(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()));
            (format!("{trace:032x}"), None, "01".to_owned())
        }
    };
    let traceparent = format!("00-{trace}-{span}-{flags}");
    if let Ok(value) = HeaderValue::from_str(&traceparent) {
        headers.insert(TRACEPARENT, value);
    }
    let has_id = headers.get(REQUEST_ID).is_some_and(|v| !v.is_empty());
    if !has_id {
        let id = uuid4(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()));
        if let Ok(value) = HeaderValue::from_str(&id) {
            headers.insert(REQUEST_ID, value);
        }
    }
    Span {
        trace_id: trace,
        span_id: span,
        parent_id: parent,
    }
}

/// `draw`, or 1 for a draw of 0 (an all-zero id is invalid in W3C trace context).
fn nonzero<T: PartialEq + From<u8>>(draw: T) -> T {
    if draw == T::from(0) {
        T::from(1)
    } else {
        draw
    }
}

/// `(trace id, parent id, flags)` of a valid version-00-shaped `traceparent`, lower
/// case: four `-`-separated fields of 2, 32, 16 and 2 hex digits, the version not
/// `ff`, neither id all zeros.
fn parse_traceparent(value: &str) -> Option<(String, String, String)> {
    let value = value.trim().to_ascii_lowercase();
    let parts: Vec<&str> = value.split('-').collect();
    let [version, trace, parent, flags] = parts[..] else {
        return None;
    };
    if (version.len(), trace.len(), parent.len(), flags.len()) != (2, 32, 16, 2) {
        return None;
    }
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if ![version, trace, parent, flags].into_iter().all(hex) || version == "ff" {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    Some((trace.to_owned(), parent.to_owned(), flags.to_owned()))
}

/// A random UUID (version 4, RFC 4122 variant) made of the 128 random bits `draw`,
/// as `uuid.uuid4()` makes one.
pub fn uuid4(draw: u128) -> String {
    let value =
        (draw & !(0xC000u128 << 48 | 0xF000u128 << 64)) | (0x8000u128 << 48 | 0x4000u128 << 64);
    let h = format!("{value:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `text` fit for a header value: printable ASCII only (a request's decoded path may
/// hold anything, line breaks included, each made `?`), at most `limit` characters.
pub fn header_safe(text: &str, limit: usize) -> String {
    text.chars()
        .take(limit)
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests;
