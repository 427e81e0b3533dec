"""proxy.control.ControlLink against a stand-in control plane on 127.0.0.1: what it logs
when it has no token, and when handling a message fails; how it keeps a silent link alive
with its own pings, and gives up on one that never answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web

from proxy import control
from proxy.bootstrap import TOKEN_ENV, Bootstrap
from proxy.control import STREAM_PATH, ControlLink
from proxy.health import HealthProbe
from proxy.router import Router
from proxy.server import BoundPorts
from proxy.snapshot import Snapshot
from proxy.telemetry import TelemetryBuffer
from tests.helpers import LOCALHOST, wait_for

SNAPSHOT = {"type": "snapshot", "snapshot": {"version": 1, "routes": {}}}


@dataclass
class StandIn:
    """Accepts sidecar streams, sends each one snapshot, remembers who dialled with what."""

    url: str = ""
    authorizations: list[str] = field(default_factory=list)


@asynccontextmanager
async def stand_in() -> AsyncIterator[StandIn]:
    plane = StandIn()

    async def stream(request: web.Request) -> web.WebSocketResponse:
        plane.authorizations.append(request.headers.get("Authorization", ""))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json(SNAPSHOT)
        async for _ in ws:
            pass
        return ws

    async with serving(plane, stream):
        yield plane


@asynccontextmanager
async def serving(
    plane: StandIn, stream: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> AsyncIterator[None]:
    """The sidecar stream at ``plane.url``, answered by ``stream``."""
    app = web.Application()
    app.router.add_get(STREAM_PATH, stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, LOCALHOST, 0).start()
        plane.url = f"http://{LOCALHOST}:{runner.addresses[0][1]}"
        yield
    finally:
        await runner.cleanup()


@asynccontextmanager
async def linked(
    plane: StandIn, tmp_path: Path, token_file: Path | None, router: Router | None = None
) -> AsyncIterator[ControlLink]:
    boot = Bootstrap(
        service="web",
        version="v1",
        instance="web-1",
        control_plane=plane.url,
        token_file=token_file,
        state_dir=tmp_path / "state",
    )
    link = ControlLink(
        boot, BoundPorts(), router or Router(), TelemetryBuffer(), HealthProbe(None, None)
    )
    task = asyncio.create_task(link.run())
    try:
        yield link
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "devmesh.proxy.control"]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="devmesh.proxy.control")
    return caplog


async def test_without_a_token_it_does_not_dial_and_says_so_until_there_is_one(
    tmp_path: Path, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    async with stand_in() as plane, linked(plane, tmp_path, token_file=None) as link:
        missing = f"no project token: ${TOKEN_ENV} is not set"
        await wait_for(lambda: messages(logs).count(missing) >= 2, what="two tries without one")
        assert plane.authorizations == [], "it dialled without a token"
        monkeypatch.setenv(TOKEN_ENV, "the-token\n")
        await wait_for(link.connected.is_set, what="the link to connect once there is a token")
        assert plane.authorizations == ["Bearer the-token"]


async def test_an_unreadable_token_file_is_named(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no-such-token"
    async with stand_in() as plane, linked(plane, tmp_path, token_file=missing):
        await wait_for(
            lambda: any(f"cannot read {missing}" in m for m in messages(logs)),
            what="the token file to be named",
        )
        assert plane.authorizations == []
        assert not any("unreachable" in m for m in messages(logs))


class BrokenRouter(Router):
    """A router that fails to take a snapshot with a KeyError (a bug in message handling)."""

    def update(self, snapshot: Snapshot) -> None:
        raise KeyError("routes")


async def test_a_key_error_in_handling_a_message_is_not_taken_for_a_missing_token(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("the-token\n")
    async with (
        stand_in() as plane,
        linked(plane, tmp_path, token_file=token_file, router=BrokenRouter()),
    ):
        await wait_for(lambda: len(plane.authorizations) >= 2, what="the link to dial again")
    assert not any("no project token" in m for m in messages(logs)), messages(logs)
    failures = [r for r in logs.records if r.getMessage().startswith("control plane link failed")]
    assert failures, messages(logs)
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], KeyError), "logged without what went wrong"


@asynccontextmanager
async def quiet_plane(answer_pings: bool) -> AsyncIterator[tuple[StandIn, list[str]]]:
    """A stand-in that sends one snapshot and then nothing of its own (no heartbeat), as a
    control plane that hears telemetry never pings; it answers pings only if told to."""
    plane = StandIn()
    frames: list[str] = []

    async def stream(request: web.Request) -> web.WebSocketResponse:
        plane.authorizations.append(request.headers.get("Authorization", ""))
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.send_json(SNAPSHOT)
        async for message in ws:
            frames.append(message.type.name)
            if message.type == WSMsgType.PING and answer_pings:
                await ws.pong(message.data)
        return ws

    async with serving(plane, stream):
        yield plane, frames


@pytest.fixture
def short_silence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "PING_AFTER", 0.2)
    monkeypatch.setattr(control, "SILENCE_LIMIT", 1.0)


@pytest.mark.usefixtures("short_silence")
async def test_a_silent_control_plane_is_pinged_and_the_link_holds_while_it_answers(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("the-token\n")
    async with (
        quiet_plane(answer_pings=True) as (plane, frames),
        linked(plane, tmp_path, token_file=token_file) as link,
    ):
        await wait_for(link.connected.is_set, what="the link to connect")
        # Five silence limits: the pongs alone keep it alive.
        await wait_for(lambda: frames.count("PING") >= 20, what="the sidecar to ping", timeout=10)
        assert len(plane.authorizations) == 1, "the link dropped and was dialled again"
        assert not any("unreachable" in m for m in messages(logs)), messages(logs)


@pytest.mark.usefixtures("short_silence")
async def test_a_control_plane_that_never_answers_is_given_up_and_dialled_again(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("the-token\n")
    async with (
        quiet_plane(answer_pings=False) as (plane, frames),
        linked(plane, tmp_path, token_file=token_file),
    ):
        await wait_for(lambda: len(plane.authorizations) >= 2, what="the link to be dialled again")
        assert "PING" in frames
        assert any("no word from the control plane in 1s" in m for m in messages(logs))
