"""Authorization in the sidecar, table-driven: Istio's order (deny first; no allow policy
allows; with any allow policy only what one allows), the match of each field, and audit
mode (what would have been denied is let through and reported)."""

from __future__ import annotations

import re

import pytest

from proxy.authz import AuthzError, AuthzPolicy, evaluate, normalized, parse_policies

FRONTEND = "spiffe://devmesh.local/shop/frontend"
ADMIN = "spiffe://devmesh.local/shop/admin"
PLAINTEXT = None


def allow(name: str = "a", **fields: object) -> AuthzPolicy:
    return AuthzPolicy(name, "allow", **fields)  # type: ignore[arg-type]


def deny(name: str = "d", **fields: object) -> AuthzPolicy:
    return AuthzPolicy(name, "deny", **fields)  # type: ignore[arg-type]


NO_ADMIN = [deny(paths=("/admin/*",))]

# (what the case shows, policies, caller, path, method, allowed, deciding policy)
CASES = [
    ("no policy: everything is allowed", [], FRONTEND, "/x", "GET", True, None),
    ("no policy: even a plaintext caller", [], PLAINTEXT, "/x", "GET", True, None),
    (
        "only a deny that does not match: allowed",
        [deny(sources=(ADMIN,))],
        FRONTEND,
        "/",
        "GET",
        True,
        None,
    ),
    ("a matching deny denies", [deny(sources=(FRONTEND,))], FRONTEND, "/", "GET", False, "d"),
    ("an empty deny matches everything", [deny()], FRONTEND, "/", "GET", False, "d"),
    ("an empty allow allows everything", [allow()], PLAINTEXT, "/", "GET", True, None),
    (
        "an allow that matches allows",
        [allow(sources=(FRONTEND,))],
        FRONTEND,
        "/",
        "GET",
        True,
        None,
    ),
    (
        "with an allow, what it does not match is denied",
        [allow(sources=(ADMIN,))],
        FRONTEND,
        "/",
        "GET",
        False,
        "a",
    ),
    (
        "deny wins over a matching allow",
        [allow(), deny(paths=("/admin",))],
        FRONTEND,
        "/admin",
        "GET",
        False,
        "d",
    ),
    (
        "deny first, whatever the order given",
        [deny(paths=("/admin",)), allow()],
        FRONTEND,
        "/admin",
        "GET",
        False,
        "d",
    ),
    (
        "a deny that does not match leaves the allow",
        [allow(), deny(paths=("/admin",))],
        FRONTEND,
        "/items",
        "GET",
        True,
        None,
    ),
    (
        "any one of several allows is enough",
        [allow("a1", sources=(ADMIN,)), allow("a2", methods=("GET",))],
        FRONTEND,
        "/",
        "GET",
        True,
        None,
    ),
    (
        "none of several allows: denied, naming them",
        [allow("a1", sources=(ADMIN,)), allow("a2", methods=("GET",))],
        FRONTEND,
        "/",
        "POST",
        False,
        "a1, a2",
    ),
    (
        "'*' source matches any mesh identity",
        [allow(sources=("*",))],
        ADMIN,
        "/",
        "GET",
        True,
        None,
    ),
    (
        "'*' source does not match plaintext",
        [allow(sources=("*",))],
        PLAINTEXT,
        "/",
        "GET",
        False,
        "a",
    ),
    (
        "a named source never matches plaintext",
        [deny(sources=(FRONTEND,))],
        PLAINTEXT,
        "/",
        "GET",
        True,
        None,
    ),
    (
        "deny of '*' lets plaintext through (no identity to match)",
        [deny(sources=("*",))],
        PLAINTEXT,
        "/",
        "GET",
        True,
        None,
    ),
    (
        "a source is one of a list",
        [allow(sources=(ADMIN, FRONTEND))],
        FRONTEND,
        "/",
        "GET",
        True,
        None,
    ),
    (
        "another project's identity is another caller",
        [allow(sources=(FRONTEND,))],
        "spiffe://devmesh.local/other/frontend",
        "/",
        "GET",
        False,
        "a",
    ),
    ("exact path matches itself", [deny(paths=("/admin",))], FRONTEND, "/admin", "GET", False, "d"),
    (
        "exact path does not match below it",
        [deny(paths=("/admin",))],
        FRONTEND,
        "/admin/users",
        "GET",
        True,
        None,
    ),
    (
        "prefix path matches below it",
        [deny(paths=("/admin/*",))],
        FRONTEND,
        "/admin/users",
        "GET",
        False,
        "d",
    ),
    (
        "prefix path does not match a neighbour",
        [deny(paths=("/admin/*",))],
        FRONTEND,
        "/administrator",
        "GET",
        True,
        None,
    ),
    (
        "suffix path matches the end",
        [deny(paths=("*.json",))],
        FRONTEND,
        "/a/b.json",
        "GET",
        False,
        "d",
    ),
    (
        "suffix path does not match another end",
        [deny(paths=("*.json",))],
        FRONTEND,
        "/a/b.jsonp",
        "GET",
        True,
        None,
    ),
    ("'*' path matches any path", [deny(paths=("*",))], FRONTEND, "/anything", "GET", False, "d"),
    ("a path is one of a list", [allow(paths=("/a", "/b"))], FRONTEND, "/b", "GET", True, None),
    (
        "dots cannot slip past a prefix",
        [deny(paths=("/admin/*",))],
        FRONTEND,
        "/x/../admin/u",
        "GET",
        False,
        "d",
    ),
    (
        "doubled slashes cannot either",
        [deny(paths=("/admin/*",))],
        FRONTEND,
        "//admin//u",
        "GET",
        False,
        "d",
    ),
    ("nor past an exact path", [deny(paths=("/admin",))], FRONTEND, "/./admin", "GET", False, "d"),
    (
        "'..' above the root stays at it",
        [allow(paths=("/items",))],
        FRONTEND,
        "/../../items",
        "GET",
        True,
        None,
    ),
    ("method matches", [deny(methods=("DELETE",))], FRONTEND, "/", "DELETE", False, "d"),
    ("another method does not", [deny(methods=("DELETE",))], FRONTEND, "/", "GET", True, None),
    (
        "every field given must match (all match)",
        [allow(sources=(FRONTEND,), paths=("/items/*",), methods=("GET",))],
        FRONTEND,
        "/items/1",
        "GET",
        True,
        None,
    ),
    (
        "every field given must match (the method does not)",
        [allow(sources=(FRONTEND,), paths=("/items/*",), methods=("GET",))],
        FRONTEND,
        "/items/1",
        "PUT",
        False,
        "a",
    ),
    (
        "every field given must match (the path does not)",
        [allow(sources=(FRONTEND,), paths=("/items/*",), methods=("GET",))],
        FRONTEND,
        "/orders",
        "GET",
        False,
        "a",
    ),
    (
        "every field given must match (the source does not)",
        [allow(sources=(FRONTEND,), paths=("/items/*",), methods=("GET",))],
        ADMIN,
        "/items/1",
        "GET",
        False,
        "a",
    ),
    (
        "a deny scoped to one caller leaves others",
        [allow(), deny(sources=(ADMIN,), methods=("POST",))],
        FRONTEND,
        "/",
        "POST",
        True,
        None,
    ),
    (
        "a deny scoped to one caller catches it",
        [allow(), deny(sources=(ADMIN,), methods=("POST",))],
        ADMIN,
        "/",
        "POST",
        False,
        "d",
    ),
    ("audit policies alone enforce nothing", [deny(audit=True)], FRONTEND, "/", "GET", True, None),
    (
        "an audit allow does not deny what it does not match",
        [allow(audit=True, sources=(ADMIN,))],
        FRONTEND,
        "/",
        "GET",
        True,
        None,
    ),
    (
        "an enforced deny still denies beside audit ones",
        [deny("d"), allow("x", audit=True)],
        FRONTEND,
        "/",
        "GET",
        False,
        "d",
    ),
]


@pytest.mark.parametrize(
    ("policies", "principal", "path", "method", "allowed", "by"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_istio_evaluation_order(
    policies: list[AuthzPolicy],
    principal: str | None,
    path: str,
    method: str,
    allowed: bool,
    by: str | None,
) -> None:
    verdict = evaluate(policies, principal, path, method)
    assert verdict.allowed is allowed
    assert verdict.policy == by
    assert bool(verdict.reason) is not allowed


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


# (what the case shows, policies, caller, path, method, the audit report's policy or None)
AUDITS = [
    ("an audit deny that matches is reported", [deny("d", audit=True)], FRONTEND, "/", "GET", "d"),
    (
        "an audit deny that does not match is not",
        [deny("d", audit=True, paths=("/x",))],
        FRONTEND,
        "/",
        "GET",
        None,
    ),
    (
        "an audit allow that lets it in: nothing to report",
        [allow("a", audit=True, sources=(FRONTEND,))],
        FRONTEND,
        "/",
        "GET",
        None,
    ),
    (
        "an audit allow that would shut a caller out is reported",
        [allow("a", audit=True, sources=(ADMIN,))],
        FRONTEND,
        "/",
        "GET",
        "a",
    ),
    (
        "an audit allow beside an enforced allow that matches",
        [allow("e"), allow("a", audit=True, sources=(ADMIN,))],
        FRONTEND,
        "/",
        "GET",
        None,
    ),
    (
        "plaintext would be shut out by an audit allow of '*'",
        [allow("a", audit=True, sources=("*",))],
        PLAINTEXT,
        "/",
        "GET",
        "a",
    ),
]


@pytest.mark.parametrize(
    ("policies", "principal", "path", "method", "reported"),
    [case[1:] for case in AUDITS],
    ids=[case[0] for case in AUDITS],
)
def test_audit_reports_what_would_be_denied_without_denying(
    policies: list[AuthzPolicy], principal: str | None, path: str, method: str, reported: str | None
) -> None:
    verdict = evaluate(policies, principal, path, method)
    assert verdict.allowed, "an audit-mode policy never denies"
    if reported is None:
        assert verdict.audit is None
    else:
        assert verdict.audit is not None
        assert verdict.audit.policy == reported
        assert not verdict.audit.allowed


def test_a_denial_says_who_was_denied_what() -> None:
    verdict = evaluate([allow("readers", methods=("GET",))], FRONTEND, "/items", "POST")
    assert verdict.reason == f"no allow policy (readers) lets {FRONTEND} POST /items"
    verdict = evaluate([allow("readers", sources=(FRONTEND,))], None, "/items", "GET")
    assert "a caller without a mesh identity" in verdict.reason


def test_the_wire_form_round_trips_and_bad_ones_are_refused() -> None:
    policies = (
        allow("a", sources=(FRONTEND,), paths=("/x/*",), methods=("GET",)),
        deny("d", audit=True),
    )
    assert parse_policies([p.to_wire() for p in policies], "authz") == policies
    for bad, message in [
        ({}, "authz[0].name must be a non-empty string"),
        ({"name": "x", "action": "maybe"}, "authz[0].action must be allow or deny"),
        ({"name": "x", "action": "deny", "audit": "yes"}, "authz[0].audit must be true or false"),
        ({"name": "x", "action": "deny", "paths": "/x"}, "authz[0].paths must be a list"),
    ]:
        with pytest.raises(AuthzError, match=re.escape(message)):
            parse_policies([bad], "authz")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/a/b/..", "/a/"),
        ("//a///b", "/a/b"),
        ("/../a", "/a"),
        ("/..", "/"),
    ],
)
def test_paths_are_normalised_before_they_are_matched(path: str, expected: str) -> None:
    assert normalized(path) == expected
