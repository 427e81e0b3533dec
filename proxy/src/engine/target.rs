//! Where a request asked to go (`proxy/server.py`'s `_target`): the absolute-form
//! target's authority (an `HTTP_PROXY` request), else `Host` (RFC 9112 3.2.2), and what
//! else the handlers read of the request's head.

use http::{Method, Request};

use crate::security::authz::percent_decoded;

/// What the handlers read of a request's head.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: Method,
    /// The request target as it arrived.
    pub target: String,
    /// Its path and query.
    pub path_qs: String,
    /// Its path, percent-decoded.
    pub path: String,
    /// Where the caller asked to go: the absolute-form target's authority, else `Host`.
    pub authority: String,
    /// Its host, lower case, and port (80 if none).
    pub host: String,
    pub port: u16,
    pub content_length: Option<u64>,
}

impl Head {
    pub fn of<B>(request: &Request<B>) -> Head {
        let uri = request.uri();
        let path_qs = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let raw_path = path_qs.split('?').next().unwrap_or("").to_owned();
        let authority = match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(authority)) => authority.as_str().to_owned(),
            _ => request
                .headers()
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
        };
        let (host, port) = split_authority(&authority);
        Head {
            method: request.method().clone(),
            target: uri.to_string(),
            path: percent_decoded(&raw_path),
            path_qs,
            authority,
            host,
            port,
            content_length: request
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
        }
    }
}

/// `(host, port)` of an authority: lower case, the port 80 unless digits say otherwise,
/// an IPv6 literal without its brackets, user info dropped.
pub fn split_authority(authority: &str) -> (String, u16) {
    let mut host = authority.to_owned();
    let mut port = 80;
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            host = rest[..end].to_owned();
            if let Some(digits) = rest[end + 1..].strip_prefix(':') {
                if let Ok(p) = digits.parse::<u16>() {
                    if digits.bytes().all(|b| b.is_ascii_digit()) {
                        port = p;
                    }
                }
            }
        }
    } else if let Some((name, digits)) = authority.rsplit_once(':') {
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(p) = digits.parse::<u16>() {
                host = name.to_owned();
                port = p;
            }
        }
    }
    if let Some((_, after)) = host.rsplit_once('@') {
        host = after.to_owned();
    }
    (host.to_ascii_lowercase(), port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split_as_the_python_splits_them() {
        assert_eq!(split_authority("Catalog:8080"), ("catalog".into(), 8080));
        assert_eq!(split_authority("catalog"), ("catalog".into(), 80));
        assert_eq!(split_authority("[::1]:9000"), ("::1".into(), 9000));
        assert_eq!(split_authority("[::1]"), ("::1".into(), 80));
        assert_eq!(split_authority("user@host:81"), ("host".into(), 81));
        assert_eq!(split_authority("host:x"), ("host:x".into(), 80));
    }

    #[test]
    fn the_target_is_the_absolute_forms_else_the_host() {
        let request = Request::builder()
            .uri("http://catalog-v2:8080/items?q=%41")
            .header("host", "other")
            .body(())
            .unwrap();
        let head = Head::of(&request);
        assert_eq!((head.host.as_str(), head.port), ("catalog-v2", 8080));
        assert_eq!(head.path_qs, "/items?q=%41");
        let request = Request::builder()
            .uri("/a%20b")
            .header("host", "Catalog")
            .body(())
            .unwrap();
        let head = Head::of(&request);
        assert_eq!(
            (head.authority.as_str(), head.host.as_str()),
            ("Catalog", "catalog")
        );
        assert_eq!(head.path, "/a b");
    }
}
