"""The access screen (``a``): who may call a service. Its mTLS mode, its authorization rules,
and a form to change the mode, add a rule (``--audit`` first, to see what it would deny) or
remove one, live; the control plane judges every value with the config's own rules."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.widgets import Footer, Static

import devmesh.payloads as payloads
from devmesh.errors import DevmeshError
from devmesh.forms.authz import rule_from_fields
from devmesh.forms.fields import Names, items, yes_or_no
from tui.form import FormScreen, said
from tui.source import MeshSource

FIELDS = (
    ("mtls", "mTLS", "strict (only mTLS from the mesh), permissive or off"),
    ("action", "add: action", "allow or deny (empty: add no rule)"),
    ("from", "from", "calling services, comma-separated; * is any mesh identity"),
    ("paths", "paths", "/items, /items/*, *.json or *; comma-separated"),
    ("methods", "methods", "GET,POST..."),
    ("audit", "audit only", "yes: report what it would deny, deny nothing"),
    ("remove", "remove rule", "a rule's name"),
)


NAMES = Names({key: label for key, label, _ in FIELDS})
"""The form's fields, named in messages by their labels."""


def rule_from_form(service: str, values: dict[str, str]) -> dict[str, Any] | None:
    """The rule the form describes, in devmesh.yaml's shape (``None``: no action given), read
    by the same code as ``devmesh authz add``'s flags; the control plane names it."""
    if not values.get("action", "").strip():
        return None
    return rule_from_fields(
        service,
        values["action"],
        sources=items(values.get("from")),
        paths=items(values.get("paths")),
        methods=items(values.get("methods")),
        audit=yes_or_no(values.get("audit"), "audit", NAMES),
        names=NAMES,
    )


def rules_text(rules: list[payloads.Rule]) -> Text:
    """Each rule in the control plane's words, deny in red, allow in green."""
    if not rules:
        return Text("no rules: every caller is let in", style="dim")
    text = Text()
    for rule in rules:
        style = "red" if rule["action"] == "deny" else "green"
        text += Text(f"{rule['name']}: ", style="bold") + Text(rule["does"], style=style)
        if rule.get("origin") == "config":
            text += Text(" devmesh.yaml", style="dim")
        text += "\n"
    return text


class AccessScreen(FormScreen):
    CSS = FormScreen.CSS + "#rules { padding: 1 1; height: auto; }"
    FIELDS = FIELDS
    PREFIX = "access"

    def __init__(self, source: MeshSource, service: payloads.Service) -> None:
        super().__init__()
        self.source = source
        self.service = service["name"]
        self.mode = str(service.get("mtls") or "permissive")
        self.rules: list[payloads.Rule] = list(service.get("authz") or [])

    def compose(self) -> ComposeResult:
        yield Static(
            Text(f"calls to {self.service}: ", style="bold")
            + Text("change the mode, add or remove a rule; enter applies, esc leaves it"),
            classes="caption",
        )
        yield Static(rules_text(self.rules), id="rules")
        yield from self.fields()
        yield Footer()

    def on_mount(self) -> None:
        self.field("mtls").value = self.mode
        self.field("action").focus()

    def action_apply(self) -> None:
        values = self.values()
        try:
            rule = rule_from_form(self.service, values)
        except DevmeshError as exc:
            self.notify(said(exc), title="nothing changed", severity="error")
            return
        mode = values["mtls"].strip()
        remove = values["remove"].strip()
        if mode == self.mode and rule is None and not remove:
            self.notify("nothing changed", severity="warning")
            return
        self._apply(mode if mode != self.mode else None, rule, remove or None)

    @work(exclusive=True, group="access")
    async def _apply(
        self, mode: str | None, rule: dict[str, Any] | None, remove: str | None
    ) -> None:
        done = []
        try:
            if mode is not None:
                await self.source.set_mtls(self.service, mode)
                done.append(f"mTLS {mode}")
            if remove is not None:
                await self.source.remove_authz_rule(remove)
                done.append(f"rule {remove} removed")
            if rule is not None:
                added = await self.source.add_authz_rule(rule)
                done.append(f"rule {added['name']} added")
        except DevmeshError as exc:
            what = "; ".join(done) + "; then " if done else ""
            self.notify(what + exc.message, title="not changed", severity="error")
            return
        self.notify(f"calls to {self.service}: {', '.join(done)}")
        self.app.pop_screen()
