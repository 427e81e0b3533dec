"""devmesh.forms.authz: `devmesh authz add`'s flags and the TUI's access form as one rule."""

from __future__ import annotations

import pytest

from devmesh.errors import UsageError
from devmesh.forms.authz import rule_from_fields
from tui.access import rule_from_form


def test_the_flags_and_the_form_give_the_same_rule() -> None:
    flags = rule_from_fields(
        "catalog", "deny", sources=["frontend"], paths=["/admin/*", "*.json"], audit=True
    )
    form = rule_from_form(
        "catalog",
        {"action": " Deny ", "from": "frontend", "paths": "/admin/*, *.json", "audit": "yes"},
    )
    assert (
        flags
        == form
        == {
            "service": "catalog",
            "action": "deny",
            "mode": "audit",
            "from": ["frontend"],
            "paths": ["/admin/*", "*.json"],
        }
    )
    assert rule_from_form("catalog", {"action": ""}) is None


def test_a_bad_action_or_audit_names_the_form_s_label() -> None:
    with pytest.raises(UsageError, match=r"^add: action must be allow or deny, not 'permit'"):
        rule_from_form("catalog", {"action": "permit"})
    with pytest.raises(UsageError, match=r"^audit only must be yes or no, not 'maybe'"):
        rule_from_form("catalog", {"action": "allow", "audit": "maybe"})
