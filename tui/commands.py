"""The command palette's devmesh commands (``ctrl+p`` or ``:``): every action on every
service by name, so that a service far down the list is a few letters away."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

ACTIONS = (
    ("detail", "Show", "its versions, instances, latency, breaker history and logs"),
    ("faults", "Faults on", "add or remove faults on calls to it"),
    ("split", "Split", "move traffic between its versions"),
    ("policy", "Policy of", "timeout, retries and breaker settings"),
    ("access", "Access to", "its mTLS mode and authorization rules"),
    ("tap", "Tap", "its requests, live"),
    ("restart", "Restart", "every instance of it (asks first)"),
)


class MeshCommands(Provider):
    def _commands(self) -> list[tuple[str, Callable[[], Any], str]]:
        from tui.app import MeshApp  # the app imports this module for its palette

        app = self.app
        if not isinstance(app, MeshApp) or app.status is None:
            return []
        status, overview = app.status, app.overview
        found: list[tuple[str, Callable[[], Any], str]] = []
        for service in status["services"]:
            name = service["name"]
            for action, verb, help_text in ACTIONS:
                run = partial(_run, overview, name, action)
                found.append((f"{verb} {name}", run, help_text))
        return found

    async def discover(self) -> Hits:
        for text, run, help_text in self._commands():
            yield DiscoveryHit(text, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, run, help_text in self._commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), run, help=help_text)


def _run(overview: Any, service: str, action: str) -> None:
    """Select ``service`` on the main view, then act as its key would."""
    overview.app.switch_to_overview()
    overview.select(service)
    getattr(overview, f"action_{action}")()
