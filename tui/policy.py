"""The policy editor (``p``): timeout, retries and breaker settings of calls to a service,
shown as in force and changed live; only the fields you change are sent, read by the same
code as ``devmesh policy``'s flags (``devmesh.forms.policies``)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.widgets import Footer, Static

from devmesh.errors import DevmeshError
from devmesh.forms.fields import Names
from devmesh.forms.policies import settings_from_fields
from tui.form import FormScreen, said
from tui.source import MeshSource

FIELDS = (
    ("timeout", "timeout", "the whole call, e.g. 2s"),
    ("retries", "retries", "attempts in all, 1-10"),
    ("per_try_timeout", "per try", "each attempt's timeout, e.g. 500ms"),
    ("retry_on", "retry on", "5xx,gateway-error,reset,connect-failure"),
    ("consecutive_5xx", "5xx in a row", "failures in a row that eject an instance"),
    ("base_ejection_time", "ejection", "first ejection time, e.g. 30s"),
    ("max_ejection_time", "max ejection", "longest ejection time, e.g. 300s"),
    ("max_ejection_percent", "max ejected %", "most instances ejected at once"),
    ("panic_threshold", "panic %", "below this % healthy, route to all (0: never)"),
    ("lb", "balancing", "round-robin or least-request"),
)
PERCENTS = ("max_ejection_percent", "panic_threshold")
NAMES = Names({key: label for key, label, _ in FIELDS})
"""The form's fields, named in messages by their labels."""


def current_values(policy: dict[str, Any]) -> dict[str, str]:
    """The form's starting values, from the policy in force."""
    retries = policy.get("retries") or {}
    breaker = policy.get("breaker") or {}
    values = {
        "timeout": str(policy.get("timeout") or ""),
        "retries": str(retries.get("attempts") or ""),
        "per_try_timeout": str(retries.get("per_try_timeout") or ""),
        "retry_on": ",".join(retries.get("retry_on") or []),
        "lb": str(policy.get("lb") or ""),
    }
    for key in ("consecutive_5xx", "base_ejection_time", "max_ejection_time"):
        values[key] = str(breaker.get(key, ""))
    for key in PERCENTS:
        percent = breaker.get(key)
        values[key] = "" if percent is None else f"{percent:g}"
    return values


def changed_fields(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    """The fields the user changed (and did not empty): only those are sent."""
    return {
        key: value.strip()
        for key, value in after.items()
        if value.strip() and value.strip() != before.get(key, "")
    }


class PolicyScreen(FormScreen):
    FIELDS = FIELDS
    PREFIX = "policy"

    def __init__(self, source: MeshSource, service: str) -> None:
        super().__init__()
        self.source = source
        self.service = service
        self.before: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Static(
            Text(f"calls to {self.service}: ", style="bold")
            + Text("change a field, enter applies what changed, esc leaves it"),
            classes="caption",
        )
        yield from self.fields()
        yield Footer()

    def on_mount(self) -> None:
        self._load()

    @work(exclusive=True)
    async def _load(self) -> None:
        try:
            answer = await self.source.policy(self.service)
        except DevmeshError as exc:
            self.notify(exc.message, title="policy not loaded", severity="error")
            return
        self.before = current_values(answer["policy"])
        for key, value in self.before.items():
            self.field(key).value = value
        self.field("timeout").focus()

    def action_apply(self) -> None:
        after = self.values()
        try:
            settings = settings_from_fields(changed_fields(self.before, after), NAMES)
        except DevmeshError as exc:
            self.notify(said(exc), title="policy not changed", severity="error")
            return
        if not settings:
            self.notify("nothing changed", severity="warning")
            return
        self._apply(settings)

    @work(exclusive=True, group="policy")
    async def _apply(self, settings: dict[str, Any]) -> None:
        try:
            await self.source.set_policy(self.service, settings)
        except DevmeshError as exc:
            self.notify(exc.message, title="policy not changed", severity="error")
            return
        self.notify(f"calls to {self.service}: {', '.join(settings)} changed")
        self.app.pop_screen()
