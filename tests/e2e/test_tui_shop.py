"""The TUI on the shop recipe (local runtime), driven by its keys under ``run_test()``:
an instance killed and the service restarted from the detail view, a policy changed, the
instance's logs shown."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from tests.e2e.conftest import ProjectFactory
from tests.e2e.test_shop import get_json
from tui.app import MeshApp
from tui.confirm import ConfirmScreen
from tui.detail import DetailScreen
from tui.editors import SplitScreen
from tui.policy import PolicyScreen
from tui.source import LiveSource

pytestmark = pytest.mark.e2e


async def until(
    pilot: Pilot[Any], check: Callable[[], bool], what: str, within: float = 20.0
) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:g}s waiting until {what}")
        await pilot.pause(0.1)


def state_of(app: MeshApp, instance: str) -> str | None:
    for service in (app.status or {}).get("services", []):
        for entry in service["instances"]:
            if entry["id"] == instance:
                return str(entry["state"])
    return None


async def test_kill_restart_policy_and_logs_from_the_keys(projects: ProjectFactory) -> None:
    shop = projects.recipe("shop")
    up = shop.cli("up", "--detach", "--runtime", "local")
    assert up.returncode == 0, up.stdout + up.stderr
    app = MeshApp(LiveSource(shop.dir), retry=0.2)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await until(pilot, lambda: app.connected, "the TUI is connected")
        await pilot.press("down", "enter")  # catalog, up close
        detail = app.screen
        assert isinstance(detail, DetailScreen)
        members = detail.query_one("#members", DataTable)
        await until(pilot, lambda: members.row_count == 4, "v1, its instance, v2, its instance")
        await pilot.press("down")  # catalog-v1-1
        assert detail.selected_instance() == "catalog-v1-1"
        logs = detail.query_one("#logs", Static)
        await until(
            pilot,
            lambda: "catalog-v1 listening on" in str(logs.render()),
            "the instance's log lines show",
        )

        await pilot.press("k")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(
            pilot,
            lambda: state_of(app, "catalog-v1-1") not in ("ready", None),
            "the killed instance shows as down",
        )
        # The state can show down before the kill's command has returned, and the keys
        # refuse a restart while a kill still runs: wait for it to have finished.
        await until(pilot, lambda: not detail.busy, "the kill has finished")
        await pilot.press("r")
        await pilot.press("y")
        await until(
            pilot,
            lambda: state_of(app, "catalog-v1-1") == "ready",
            "the restarted instance is ready again",
            within=40,
        )

        await pilot.press("escape", "p")
        assert isinstance(app.screen, PolicyScreen)
        timeout = app.screen.query_one("#policy-timeout", Input)
        await until(pilot, lambda: app.screen.before != {}, "the policy in force fills the form")
        timeout.value = "3s"
        timeout.focus()
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, PolicyScreen), "it applies")

        # The split editor moves traffic: all of catalog's to v2.
        await pilot.press("s")
        assert isinstance(app.screen, SplitScreen)
        await pilot.press("down", *["right"] * 10, "enter")
        await until(pilot, lambda: not isinstance(app.screen, SplitScreen), "it applies")
        await until(
            pilot,
            lambda: "v1 0 · v2 100" in str(app.overview.query_one("#services", DataTable)
                                           .get_row_at(1)[1]),
            "the overview shows the new split",
        )  # fmt: skip

    shown = json.loads(shop.cli("policy", "catalog", "--json").stdout)
    assert shown["policy"]["timeout"] == "3s"
    assert shown["overrides"] == {"timeout": "3s"}
    versions = {get_json(shop.url + "/")["catalog_version"] for _ in range(20)}
    assert versions == {"v2"}, "every call to catalog now goes to v2"
