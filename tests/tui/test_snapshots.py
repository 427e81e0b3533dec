"""What each screen of the TUI looks like, over fixed data: a layout change shows as a diff
of the SVG snapshots in ``__snapshots__`` (``pytest --snapshot-update`` accepts it)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from textual.pilot import Pilot

from tests.tui.fixed_source import FixedSource
from tui.app import MeshApp

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


def test_overview(snap_compare: SnapCompare) -> None:
    assert snap_compare(MeshApp(FixedSource()), run_before=settle)


def test_overview_wide(snap_compare: SnapCompare) -> None:
    assert snap_compare(MeshApp(FixedSource()), run_before=settle, terminal_size=(120, 30))


def test_disconnected(snap_compare: SnapCompare) -> None:
    assert snap_compare(MeshApp(FixedSource(down=True), project="shop"), run_before=settle)


def test_fault_editor(snap_compare: SnapCompare) -> None:
    assert snap_compare(MeshApp(FixedSource()), run_before=settle, press=["down", "f", "_"])


def test_split_editor(snap_compare: SnapCompare) -> None:
    assert snap_compare(MeshApp(FixedSource()), run_before=settle, press=["down", "s", "left", "_"])


def test_tap(snap_compare: SnapCompare) -> None:
    assert snap_compare(MeshApp(FixedSource()), run_before=settle, press=["t", "_", "_"])


def test_trace_from_the_tap(snap_compare: SnapCompare) -> None:
    assert snap_compare(
        MeshApp(FixedSource()), run_before=settle, press=["t", "_", "_", "enter", "_", "_"]
    )


def test_help(snap_compare: SnapCompare) -> None:
    assert snap_compare(MeshApp(FixedSource()), run_before=settle, press=["question_mark"])
