"""Authorization rules as a user writes them (``devmesh authz add``'s flags, or the TUI's
access screen) turned into devmesh.yaml's shape (``authorization:``), and described back in
words (the control plane's ``does``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from devmesh.config.model import AuthzRule
from devmesh.errors import UsageError
from devmesh.forms.fields import FLAGS, Names

ACTIONS = ("allow", "deny")


def rule_from_fields(
    service: str,
    action: str,
    *,
    name: str | None = None,
    sources: Sequence[str] = (),
    paths: Sequence[str] = (),
    methods: Sequence[str] = (),
    audit: bool = False,
    names: Names = FLAGS,
) -> dict[str, Any]:
    """The rule on calls to ``service``, in devmesh.yaml's shape; the control plane names it
    when ``name`` is ``None`` and judges its values with the config's own rules."""
    chosen = action.strip().lower()
    if chosen not in ACTIONS:
        raise UsageError(
            f"{names.name('action')} must be allow or deny, not {action!r}",
            names.example("action", "deny"),
        )
    rule: dict[str, Any] = {"service": service, "action": chosen}
    if name is not None:
        rule["name"] = name
    if audit:
        rule["mode"] = "audit"
    for key, values in (("from", sources), ("paths", paths), ("methods", methods)):
        if values:
            rule[key] = list(values)
    return rule


def describe_rule(rule: AuthzRule) -> str:
    """``deny GET /admin/* to catalog from frontend``, and whether it is only audited."""
    methods = ",".join(rule.methods) or "any method"
    paths = ",".join(rule.paths) or "any path"
    sources = ",".join(rule.sources) or "anyone"
    audit = " (audit: reported, not enforced)" if rule.mode == "audit" else ""
    return f"{rule.action} {methods} {paths} to {rule.service} from {sources}{audit}"
