"""What each screen of the TUI looks like, over fixed data: a layout change shows as a diff
of the SVG snapshots in ``__snapshots__`` (``pytest --snapshot-update`` accepts it)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from textual.command import CommandPalette
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import DataTable, Input, OptionList, Static

from tests.tui.fixed_source import REQUESTS, FixedSource
from tui.app import MeshApp
from tui.confirm import ConfirmScreen
from tui.detail import DetailScreen
from tui.editors import FaultScreen, SplitScreen
from tui.graph import GraphScreen
from tui.help import HelpScreen
from tui.policy import PolicyScreen
from tui.tapview import TapScreen, TraceScreen

SnapCompare = Callable[..., bool]


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """The data's times render the same on every machine."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


async def settle(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, MeshApp)
    deadline = time.monotonic() + 5
    while not app.connected and not app.problem.startswith("the control plane at"):
        assert time.monotonic() < deadline, "the app never got its first status"
        await pilot.pause(0.02)
    await pilot.pause()


def keys(*pressed: str, then: type[Screen[Any]] | None = None) -> Callable[[Pilot[Any]], Any]:
    """Once the app shows its data: press ``pressed``, then wait until the screen on top
    is a ``then`` (when given) and the app is idle."""

    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press(*pressed)
        deadline = time.monotonic() + 5
        while then is not None and not isinstance(pilot.app.screen, then):
            assert time.monotonic() < deadline, f"no {then.__name__} after {pressed}"
            await pilot.pause(0.02)
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()

    return run


def test_overview(snap_compare: SnapCompare) -> None:
    assert snap_compare(MeshApp(FixedSource()), run_before=settle)


def test_overview_wide(snap_compare: SnapCompare) -> None:
    assert snap_compare(MeshApp(FixedSource()), run_before=settle, terminal_size=(120, 30))


def test_disconnected(snap_compare: SnapCompare) -> None:
    assert snap_compare(MeshApp(FixedSource(down=True), project="shop"), run_before=settle)


def test_fault_editor(snap_compare: SnapCompare) -> None:
    assert snap_compare(MeshApp(FixedSource()), run_before=keys("down", "f", then=FaultScreen))


def test_split_editor(snap_compare: SnapCompare) -> None:
    assert snap_compare(
        MeshApp(FixedSource()), run_before=keys("down", "s", "left", then=SplitScreen)
    )


def test_tap(snap_compare: SnapCompare) -> None:
    async def tapped(pilot: Pilot[Any]) -> None:
        await keys("t", then=TapScreen)(pilot)
        table = pilot.app.screen.query_one("#requests", DataTable)
        caption = pilot.app.screen.query_one("#caption", Static)
        await until(
            pilot,
            lambda: table.row_count == len(REQUESTS) and "7 not shown" in str(caption.render()),
            "every request and the count of those not shown",
        )

    assert snap_compare(MeshApp(FixedSource()), run_before=tapped)


def test_trace_from_the_tap(snap_compare: SnapCompare) -> None:
    async def traced(pilot: Pilot[Any]) -> None:
        await keys("t", then=TapScreen)(pilot)
        table = pilot.app.screen.query_one("#requests", DataTable)
        await until(pilot, lambda: table.row_count == len(REQUESTS), "every request shows")
        await keys("enter", then=TraceScreen)(pilot)
        tree = pilot.app.screen.query_one("#tree", Static)
        await until(pilot, lambda: "loading" not in str(tree.render()), "the trace loads")

    assert snap_compare(MeshApp(FixedSource()), run_before=traced)


def test_help(snap_compare: SnapCompare) -> None:
    assert snap_compare(MeshApp(FixedSource()), run_before=keys("question_mark", then=HelpScreen))


def detail_loaded(*pressed: str) -> Callable[[Pilot[Any]], Any]:
    async def run(pilot: Pilot[Any]) -> None:
        await keys(*pressed, then=DetailScreen)(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, DetailScreen)
        logs, policy = screen.query_one("#logs", Static), screen.query_one("#policy", Static)
        await until(
            pilot,
            lambda: "log lines" in str(logs.render()) and "loading" not in str(policy.render()),
            "the policy and the logs load",
        )

    return run


def test_detail_of_a_service(snap_compare: SnapCompare) -> None:
    assert snap_compare(
        MeshApp(FixedSource()), run_before=detail_loaded("down", "enter"), terminal_size=(100, 30)
    )


def test_detail_of_a_service_with_an_open_breaker(snap_compare: SnapCompare) -> None:
    assert snap_compare(
        MeshApp(FixedSource()),
        run_before=detail_loaded("down", "down", "enter"),
        terminal_size=(100, 30),
    )


def test_policy_editor(snap_compare: SnapCompare) -> None:
    async def loaded(pilot: Pilot[Any]) -> None:
        await keys("down", "p", then=PolicyScreen)(pilot)
        field = pilot.app.screen.query_one("#policy-timeout", Input)
        await until(pilot, lambda: field.value == "2s", "the policy in force fills the form")

    assert snap_compare(MeshApp(FixedSource()), run_before=loaded)


def test_kill_asks_first(snap_compare: SnapCompare) -> None:
    assert snap_compare(
        MeshApp(FixedSource()), run_before=keys("down", "down", "k", then=ConfirmScreen)
    )


def test_command_palette_finds_actions_by_service(snap_compare: SnapCompare) -> None:
    async def search(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("colon", *"split cat")
        palette = pilot.app.screen
        assert isinstance(palette, CommandPalette)
        found = palette.query_one(OptionList)
        await until(pilot, lambda: found.option_count > 0, "the palette finds the action")

    assert snap_compare(MeshApp(FixedSource()), run_before=search)


async def until(pilot: Pilot[Any], check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await pilot.pause(0.02)


def test_traffic_graph(snap_compare: SnapCompare) -> None:
    assert snap_compare(MeshApp(FixedSource()), run_before=keys("g", then=GraphScreen))
