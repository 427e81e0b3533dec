//! Authorization, table-driven (ported from `tests/unit/proxy/test_authz.py`): Istio's
//! order (deny first; no allow policy allows; with any allow policy only what one allows),
//! the match of each field, and audit mode (what would have been denied is let through and
//! reported).

use serde_json::json;

use super::*;

const FRONTEND: &str = "spiffe://devmesh.local/shop/frontend";
const ADMIN: &str = "spiffe://devmesh.local/shop/admin";
const PLAINTEXT: Option<&str> = None;

fn allow(name: &str) -> AuthzPolicy {
    AuthzPolicy::new(name, Action::Allow)
}

fn deny(name: &str) -> AuthzPolicy {
    AuthzPolicy::new(name, Action::Deny)
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

/// Test-only builders: `allow("a").sources(&[FRONTEND]).methods(&["GET"])`.
trait Build {
    fn sources(self, values: &[&str]) -> Self;
    fn paths(self, values: &[&str]) -> Self;
    fn methods(self, values: &[&str]) -> Self;
    fn audit(self) -> Self;
}

impl Build for AuthzPolicy {
    fn sources(mut self, values: &[&str]) -> Self {
        self.sources = strings(values);
        self
    }
    fn paths(mut self, values: &[&str]) -> Self {
        self.paths = strings(values);
        self
    }
    fn methods(mut self, values: &[&str]) -> Self {
        self.methods = strings(values);
        self
    }
    fn audit(mut self) -> Self {
        self.audit = true;
        self
    }
}

/// What the case shows, policies, caller, path, method, allowed, deciding policy.
type Case = (
    &'static str,
    Vec<AuthzPolicy>,
    Option<&'static str>,
    &'static str,
    &'static str,
    bool,
    Option<&'static str>,
);

fn cases() -> Vec<Case> {
    let f = Some(FRONTEND);
    let a = Some(ADMIN);
    let every = || {
        allow("a")
            .sources(&[FRONTEND])
            .paths(&["/items/*"])
            .methods(&["GET"])
    };
    vec![
        (
            "no policy: everything is allowed",
            vec![],
            f,
            "/x",
            "GET",
            true,
            None,
        ),
        (
            "no policy: even a plaintext caller",
            vec![],
            PLAINTEXT,
            "/x",
            "GET",
            true,
            None,
        ),
        (
            "only a deny that does not match: allowed",
            vec![deny("d").sources(&[ADMIN])],
            f,
            "/",
            "GET",
            true,
            None,
        ),
        (
            "a matching deny denies",
            vec![deny("d").sources(&[FRONTEND])],
            f,
            "/",
            "GET",
            false,
            Some("d"),
        ),
        (
            "an empty deny matches everything",
            vec![deny("d")],
            f,
            "/",
            "GET",
            false,
            Some("d"),
        ),
        (
            "an empty allow allows everything",
            vec![allow("a")],
            PLAINTEXT,
            "/",
            "GET",
            true,
            None,
        ),
        (
            "an allow that matches allows",
            vec![allow("a").sources(&[FRONTEND])],
            f,
            "/",
            "GET",
            true,
            None,
        ),
        (
            "with an allow, what it does not match is denied",
            vec![allow("a").sources(&[ADMIN])],
            f,
            "/",
            "GET",
            false,
            Some("a"),
        ),
        (
            "deny wins over a matching allow",
            vec![allow("a"), deny("d").paths(&["/admin"])],
            f,
            "/admin",
            "GET",
            false,
            Some("d"),
        ),
        (
            "deny first, whatever the order given",
            vec![deny("d").paths(&["/admin"]), allow("a")],
            f,
            "/admin",
            "GET",
            false,
            Some("d"),
        ),
        (
            "a deny that does not match leaves the allow",
            vec![allow("a"), deny("d").paths(&["/admin"])],
            f,
            "/items",
            "GET",
            true,
            None,
        ),
        (
            "any one of several allows is enough",
            vec![allow("a1").sources(&[ADMIN]), allow("a2").methods(&["GET"])],
            f,
            "/",
            "GET",
            true,
            None,
        ),
        (
            "none of several allows: denied, naming them",
            vec![allow("a1").sources(&[ADMIN]), allow("a2").methods(&["GET"])],
            f,
            "/",
            "POST",
            false,
            Some("a1, a2"),
        ),
        (
            "'*' source matches any mesh identity",
            vec![allow("a").sources(&["*"])],
            a,
            "/",
            "GET",
            true,
            None,
        ),
        (
            "'*' source does not match plaintext",
            vec![allow("a").sources(&["*"])],
            PLAINTEXT,
            "/",
            "GET",
            false,
            Some("a"),
        ),
        (
            "a named source never matches plaintext",
            vec![deny("d").sources(&[FRONTEND])],
            PLAINTEXT,
            "/",
            "GET",
            true,
            None,
        ),
        (
            "deny of '*' lets plaintext through (no identity to match)",
            vec![deny("d").sources(&["*"])],
            PLAINTEXT,
            "/",
            "GET",
            true,
            None,
        ),
        (
            "a source is one of a list",
            vec![allow("a").sources(&[ADMIN, FRONTEND])],
            f,
            "/",
            "GET",
            true,
            None,
        ),
        (
            "another project's identity is another caller",
            vec![allow("a").sources(&[FRONTEND])],
            Some("spiffe://devmesh.local/other/frontend"),
            "/",
            "GET",
            false,
            Some("a"),
        ),
        (
            "exact path matches itself",
            vec![deny("d").paths(&["/admin"])],
            f,
            "/admin",
            "GET",
            false,
            Some("d"),
        ),
        (
            "exact path does not match below it",
            vec![deny("d").paths(&["/admin"])],
            f,
            "/admin/users",
            "GET",
            true,
            None,
        ),
        (
            "prefix path matches below it",
            vec![deny("d").paths(&["/admin/*"])],
            f,
            "/admin/users",
            "GET",
            false,
            Some("d"),
        ),
        (
            "prefix path does not match a neighbour",
            vec![deny("d").paths(&["/admin/*"])],
            f,
            "/administrator",
            "GET",
            true,
            None,
        ),
        (
            "suffix path matches the end",
            vec![deny("d").paths(&["*.json"])],
            f,
            "/a/b.json",
            "GET",
            false,
            Some("d"),
        ),
        (
            "suffix path does not match another end",
            vec![deny("d").paths(&["*.json"])],
            f,
            "/a/b.jsonp",
            "GET",
            true,
            None,
        ),
        (
            "'*' path matches any path",
            vec![deny("d").paths(&["*"])],
            f,
            "/anything",
            "GET",
            false,
            Some("d"),
        ),
        (
            "a path is one of a list",
            vec![allow("a").paths(&["/a", "/b"])],
            f,
            "/b",
            "GET",
            true,
            None,
        ),
        (
            "dots cannot slip past a prefix",
            vec![deny("d").paths(&["/admin/*"])],
            f,
            "/x/../admin/u",
            "GET",
            false,
            Some("d"),
        ),
        (
            "doubled slashes cannot either",
            vec![deny("d").paths(&["/admin/*"])],
            f,
            "//admin//u",
            "GET",
            false,
            Some("d"),
        ),
        (
            "nor past an exact path",
            vec![deny("d").paths(&["/admin"])],
            f,
            "/./admin",
            "GET",
            false,
            Some("d"),
        ),
        (
            "'..' above the root stays at it",
            vec![allow("a").paths(&["/items"])],
            f,
            "/../../items",
            "GET",
            true,
            None,
        ),
        (
            "method matches",
            vec![deny("d").methods(&["DELETE"])],
            f,
            "/",
            "DELETE",
            false,
            Some("d"),
        ),
        (
            "another method does not",
            vec![deny("d").methods(&["DELETE"])],
            f,
            "/",
            "GET",
            true,
            None,
        ),
        (
            "every field given must match (all match)",
            vec![every()],
            f,
            "/items/1",
            "GET",
            true,
            None,
        ),
        (
            "every field given must match (the method does not)",
            vec![every()],
            f,
            "/items/1",
            "PUT",
            false,
            Some("a"),
        ),
        (
            "every field given must match (the path does not)",
            vec![every()],
            f,
            "/orders",
            "GET",
            false,
            Some("a"),
        ),
        (
            "every field given must match (the source does not)",
            vec![every()],
            a,
            "/items/1",
            "GET",
            false,
            Some("a"),
        ),
        (
            "a deny scoped to one caller leaves others",
            vec![allow("a"), deny("d").sources(&[ADMIN]).methods(&["POST"])],
            f,
            "/",
            "POST",
            true,
            None,
        ),
        (
            "a deny scoped to one caller catches it",
            vec![allow("a"), deny("d").sources(&[ADMIN]).methods(&["POST"])],
            a,
            "/",
            "POST",
            false,
            Some("d"),
        ),
        (
            "audit policies alone enforce nothing",
            vec![deny("d").audit()],
            f,
            "/",
            "GET",
            true,
            None,
        ),
        (
            "an audit allow does not deny what it does not match",
            vec![allow("a").audit().sources(&[ADMIN])],
            f,
            "/",
            "GET",
            true,
            None,
        ),
        (
            "an enforced deny still denies beside audit ones",
            vec![deny("d"), allow("x").audit()],
            f,
            "/",
            "GET",
            false,
            Some("d"),
        ),
    ]
}

#[test]
fn istio_evaluation_order() {
    for (what, policies, principal, path, method, allowed, by) in cases() {
        let verdict = evaluate(&policies, principal, path, method);
        assert_eq!(verdict.allowed, allowed, "{what}");
        assert_eq!(verdict.policy.as_deref(), by, "{what}");
        assert_eq!(
            verdict.reason.is_empty(),
            allowed,
            "{what}: a reason iff denied"
        );
    }
}

#[test]
fn there_are_at_least_thirty_cases() {
    assert!(cases().len() >= 30);
}

/// What the case shows, policies, caller, path, method, the audit report's policy or None.
type Audit = (
    &'static str,
    Vec<AuthzPolicy>,
    Option<&'static str>,
    &'static str,
    &'static str,
    Option<&'static str>,
);

#[test]
fn audit_reports_what_would_be_denied_without_denying() {
    let f = Some(FRONTEND);
    let audits: Vec<Audit> = vec![
        (
            "an audit deny that matches is reported",
            vec![deny("d").audit()],
            f,
            "/",
            "GET",
            Some("d"),
        ),
        (
            "an audit deny that does not match is not",
            vec![deny("d").audit().paths(&["/x"])],
            f,
            "/",
            "GET",
            None,
        ),
        (
            "an audit allow that lets it in: nothing to report",
            vec![allow("a").audit().sources(&[FRONTEND])],
            f,
            "/",
            "GET",
            None,
        ),
        (
            "an audit allow that would shut a caller out is reported",
            vec![allow("a").audit().sources(&[ADMIN])],
            f,
            "/",
            "GET",
            Some("a"),
        ),
        (
            "an audit allow beside an enforced allow that matches",
            vec![allow("e"), allow("a").audit().sources(&[ADMIN])],
            f,
            "/",
            "GET",
            None,
        ),
        (
            "plaintext would be shut out by an audit allow of '*'",
            vec![allow("a").audit().sources(&["*"])],
            PLAINTEXT,
            "/",
            "GET",
            Some("a"),
        ),
    ];
    for (what, policies, principal, path, method, reported) in audits {
        let verdict = evaluate(&policies, principal, path, method);
        assert!(verdict.allowed, "{what}: an audit-mode policy never denies");
        match reported {
            None => assert!(verdict.audit.is_none(), "{what}"),
            Some(name) => {
                let audit = verdict.audit.expect(what);
                assert_eq!(audit.policy.as_deref(), Some(name), "{what}");
                assert!(!audit.allowed, "{what}");
            }
        }
    }
}

#[test]
fn a_denial_says_who_was_denied_what() {
    let verdict = evaluate(
        &[allow("readers").methods(&["GET"])],
        Some(FRONTEND),
        "/items",
        "POST",
    );
    assert_eq!(
        verdict.reason,
        format!("no allow policy (readers) lets {FRONTEND} POST /items")
    );
    let verdict = evaluate(
        &[allow("readers").sources(&[FRONTEND])],
        None,
        "/items",
        "GET",
    );
    assert!(verdict.reason.contains("a caller without a mesh identity"));
}

#[test]
fn the_wire_form_round_trips_and_bad_ones_are_refused() {
    let policies = vec![
        allow("a")
            .sources(&[FRONTEND])
            .paths(&["/x/*"])
            .methods(&["GET"]),
        deny("d").audit(),
    ];
    let wire = policies_to_wire(&policies);
    assert_eq!(parse_policies(&wire, "authz"), Ok(policies));
    for (bad, message) in [
        (json!({}), "authz[0].name must be a non-empty string"),
        (
            json!({"name": "x", "action": "maybe"}),
            "authz[0].action must be allow or deny",
        ),
        (
            json!({"name": "x", "action": "deny", "audit": "yes"}),
            "authz[0].audit must be true or false",
        ),
        (
            json!({"name": "x", "action": "deny", "paths": "/x"}),
            "authz[0].paths must be a list",
        ),
    ] {
        let err = parse_policies(&json!([bad]), "authz").unwrap_err();
        assert!(err.0.contains(message), "{err} does not say {message}");
    }
}

#[test]
fn the_wire_form_is_minimal_and_every_shape_is_checked() {
    assert_eq!(deny("d").to_wire(), json!({"name": "d", "action": "deny"}));
    for (bad, message) in [
        (json!({"a": 1}), "authz must be a list"),
        (json!(null), "authz must be a list"),
        (json!(["x"]), "authz[0] must be an object"),
        (
            json!([{"name": "", "action": "deny"}]),
            "authz[0].name must be a non-empty string",
        ),
        (
            json!([{"name": 3, "action": "deny"}]),
            "authz[0].name must be a non-empty string",
        ),
        (
            json!([{"name": "x", "action": ["deny"]}]),
            "authz[0].action must be allow or deny",
        ),
        (
            json!([{"name": "x", "action": "deny", "audit": null}]),
            "authz[0].audit must be true or false",
        ),
        (
            json!([{"name": "x", "action": "deny", "methods": ["GET", ""]}]),
            "authz[0].methods must be a list of non-empty strings",
        ),
        (
            json!([{"name": "x", "action": "deny"}, {"name": "y", "action": "deny", "sources": [1]}]),
            "authz[1].sources must be a list of non-empty strings",
        ),
    ] {
        assert_eq!(
            parse_policies(&bad, "authz"),
            Err(Invalid::new(message)),
            "{bad}"
        );
    }
}

#[test]
fn paths_are_normalised_before_they_are_matched() {
    for (path, expected) in [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/a/b/..", "/a/"),
        ("//a///b", "/a/b"),
        ("/../a", "/a"),
        ("/..", "/"),
    ] {
        assert_eq!(normalized(path), expected, "{path}");
    }
}

#[test]
fn the_canonical_target_is_the_path_the_rules_judge() {
    // As tests/integration/test_security.py drives `canonical_target` through a sidecar.
    for sneaky in [
        "/x/../admin/u",
        "/x/%2e%2E/admin/u",
        "//admin//u",
        "/./admin/u",
    ] {
        assert_eq!(
            canonical_target(sneaky, sneaky),
            Ok(Some("/admin/u".to_string())),
            "{sneaky}"
        );
    }
    for unjudgeable in ["/admin%2fu", "/admin%5Cu"] {
        assert_eq!(
            canonical_target(unjudgeable, unjudgeable),
            Err("the path holds an escaped '/' or '\\', which authorization rules cannot judge"),
        );
    }
    assert_eq!(
        canonical_target("/a#b", "/a"),
        Err("the request target holds a fragment (#), which HTTP never sends")
    );
    assert_eq!(
        canonical_target("/items/./a//b/../c?q=1", "/items/./a//b/../c?q=1"),
        Ok(Some("/items/a/c?q=1".to_string()))
    );
    assert_eq!(canonical_target("/items?x=/../", "/items?x=/../"), Ok(None));
    assert_eq!(canonical_target("/a%20b", "/a%20b"), Ok(None));
    assert_eq!(
        canonical_target("http://h/x/..", "/x/.."),
        Ok(Some("/".to_string()))
    );
}

#[test]
fn paths_are_percent_decoded_as_python_unquote_does() {
    for (raw, decoded) in [
        ("/plain", "/plain"),
        ("/a%20b", "/a b"),
        ("/%C3%A9t%c3%a9", "/été"),
        ("/100%", "/100%"),
        ("/%zz%4", "/%zz%4"),
        ("/%ff", "/\u{fffd}"),
        ("/%2Fx", "//x"),
    ] {
        assert_eq!(percent_decoded(raw), decoded, "{raw}");
    }
}
