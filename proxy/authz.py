"""Authorization: whether a caller may make a request of this sidecar's service. No I/O.

Istio's evaluation order (``AuthorizationPolicy``, CUSTOM aside):

1. a ``deny`` policy that matches the request denies it;
2. with no ``allow`` policy for the service, the request is allowed;
3. with any, it is allowed only if one of them matches.

A policy in ``audit`` mode is not enforced: the request is also evaluated as
if it were (with the enforced ones), and a request that would then have been
denied is allowed and reported, so a developer sees what a policy would break
before enforcing it (Istio's ``istio.io/dry-run``).

A policy matches when every field it gives matches (a field it leaves out
matches anything) and a field matches when any of its values does:

* ``sources``: SPIFFE IDs of calling services, or ``*`` for any mesh identity.
  Only an identity proven by mTLS counts: a plaintext caller (``permissive``
  or ``off``) has none, so a policy naming sources never matches it, and an
  allow policy naming sources does not let it in;
* ``paths``: exact (``/items``), a prefix (``/items/*``), a suffix (``*.json``)
  or ``*``, against the request's path without its query, percent-decoded and
  normalised first (``.`` and ``..`` segments resolved, runs of ``/`` merged, as
  Istio's ``BASE`` and ``MERGE_SLASHES`` normalisation), so that
  ``/x/../admin`` or ``//admin`` cannot slip past a rule on ``/admin``;
* ``methods``: HTTP methods, upper case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

ACTIONS = ("allow", "deny")
ANY_IDENTITY = "*"


class AuthzError(ValueError):
    """A policy that does not match the schema; the message says where."""


@dataclass(frozen=True)
class AuthzPolicy:
    name: str
    action: str
    """``allow`` or ``deny``."""
    audit: bool = False
    """Evaluated and reported, never enforced."""
    sources: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()

    def matches(self, principal: str | None, path: str, method: str) -> bool:
        if self.sources and not any(_source_matches(s, principal) for s in self.sources):
            return False
        if self.paths and not any(_path_matches(p, path) for p in self.paths):
            return False
        return not self.methods or method in self.methods

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"name": self.name, "action": self.action}
        if self.audit:
            wire["audit"] = True
        for key in ("sources", "paths", "methods"):
            if getattr(self, key):
                wire[key] = list(getattr(self, key))
        return wire


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    policy: str | None = None
    """The policy that denied the request (or, in an audit, would have); when no allow
    policy matched, the names of the allow policies."""
    reason: str = ""
    """Why it was denied, in a sentence (empty when allowed)."""
    audit: Verdict | None = None
    """Allowed, but the audit-mode policies would have denied it: why."""


ALLOWED = Verdict(allowed=True)


def evaluate(
    policies: Sequence[AuthzPolicy], principal: str | None, path: str, method: str
) -> Verdict:
    """The verdict on a request from ``principal`` (``None``: no mTLS identity)."""
    if not policies:
        return ALLOWED
    path = normalized(path)
    enforced = [p for p in policies if not p.audit]
    verdict = _decide(enforced, principal, path, method)
    if verdict.allowed and len(enforced) < len(policies):
        shadow = _decide(policies, principal, path, method)
        if not shadow.allowed:
            return Verdict(allowed=True, audit=shadow)
    return verdict


def _decide(
    policies: Sequence[AuthzPolicy], principal: str | None, path: str, method: str
) -> Verdict:
    for policy in policies:
        if policy.action == "deny" and policy.matches(principal, path, method):
            return Verdict(False, policy.name, f"denied by policy {policy.name}")
    allows = [p for p in policies if p.action == "allow"]
    if not allows or any(p.matches(principal, path, method) for p in allows):
        return ALLOWED
    names = ", ".join(p.name for p in allows)
    caller = principal or "a caller without a mesh identity"
    return Verdict(False, names, f"no allow policy ({names}) lets {caller} {method} {path}")


def normalized(path: str) -> str:
    """``path`` with its dot segments removed (RFC 3986 5.2.4) and runs of ``/`` merged."""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if kept:
                kept.pop()
            continue
        kept.append(segment)
    result = "/" + "/".join(kept)
    trailing = path.endswith(("/", "/.", "/..")) and result != "/"
    return result + "/" if trailing else result


def _source_matches(pattern: str, principal: str | None) -> bool:
    if principal is None:
        return False
    return pattern in (ANY_IDENTITY, principal)


def _path_matches(pattern: str, path: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return path.endswith(pattern[1:])
    return path == pattern


def parse_policies(data: object, where: str) -> tuple[AuthzPolicy, ...]:
    """The wire form (a list of objects) to policies; raises ``AuthzError``."""
    if not isinstance(data, list):
        raise AuthzError(f"{where} must be a list")
    return tuple(_parse(raw, f"{where}[{i}]") for i, raw in enumerate(data))


def _parse(data: object, where: str) -> AuthzPolicy:
    if not isinstance(data, dict):
        raise AuthzError(f"{where} must be an object")
    name, action = data.get("name"), data.get("action")
    if not isinstance(name, str) or not name:
        raise AuthzError(f"{where}.name must be a non-empty string")
    if action not in ACTIONS:
        raise AuthzError(f"{where}.action must be allow or deny")
    audit = data.get("audit", False)
    if not isinstance(audit, bool):
        raise AuthzError(f"{where}.audit must be true or false")
    lists = {}
    for key in ("sources", "paths", "methods"):
        values = data.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise AuthzError(f"{where}.{key} must be a list of non-empty strings")
        lists[key] = tuple(values)
    return AuthzPolicy(name, str(action), audit, **lists)
