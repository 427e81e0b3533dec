"""The inbound sidecar's gate in front of its app, held while the app restarts."""

from __future__ import annotations

import asyncio

import pytest

from proxy import appgate
from proxy.appgate import AppGate
from tests.helpers import wait_for


async def test_an_open_gate_lets_calls_through_and_counts_them() -> None:
    gate = AppGate()
    assert await gate.enter()
    assert gate.in_flight == 1
    gate.leave()
    assert gate.in_flight == 0
    assert not gate.held


async def test_a_hold_waits_for_the_calls_in_flight_and_new_ones_wait_for_the_release() -> None:
    gate = AppGate()
    assert await gate.enter()  # a call with the app
    holding = asyncio.create_task(gate.hold())
    await wait_for(lambda: gate.held, what="the gate to close")
    assert not holding.done(), "the hold waits for the call in flight"
    waiting = asyncio.create_task(gate.enter())  # a new call arrives
    gate.leave()  # the call in flight ends
    assert await holding == 0
    await asyncio.sleep(0.1)  # a while, for something that must not happen
    assert not waiting.done(), "a new call waits while the app is held"
    gate.release()
    assert await waiting, "released, it goes on"
    assert gate.in_flight == 1


async def test_a_hold_that_is_never_released_ends_by_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(appgate, "HOLD_LIMIT", 0.2)
    gate = AppGate()
    await gate.hold()
    assert gate.held
    await wait_for(lambda: not gate.held, what="the hold to expire", timeout=2)
    assert await gate.enter()


async def test_a_call_held_past_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(appgate, "HOLD_LIMIT", 0.2)
    gate = AppGate()
    await gate.hold()
    monkeypatch.setattr(appgate, "HOLD_LIMIT", 0.05)  # the call's own wait runs out first
    assert not await gate.enter()
    assert gate.in_flight == 0


async def test_draining_gives_up_after_its_limit_and_says_how_many_are_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(appgate, "DRAIN_LIMIT", 0.05)
    gate = AppGate()
    assert await gate.enter()
    assert await gate.hold() == 1
    gate.release()
