"""A stand-in control plane for black-box sidecar tests, and sidecars started as processes
linked to it (as Envoy's integration tests run Envoy against a fake xDS server).

The stand-in serves the sidecar's end of the link (``/v1/sidecar/stream``, the contract of
``contract/README.md``) and nothing else: no mesh model, no API. A test decides what each
sidecar is told: the snapshot it gets on hello, the raw snapshots sent later
(``StandIn.route``: waits for the ack of that version, or for its nack), identities,
holds and releases; and it reads what each sidecar said: its telemetry records and
breaker reports, as they arrived (``StandIn.wait_records``, ``StandIn.wait_breakers``).

``standin_sidecar`` starts one sidecar of the data plane ``$DEVMESH_DATAPLANE`` picks
(``devmesh.runtime.dataplane``) from a bootstrap written by the runtime's own writer, so
that the same tests hold the Python and the Rust sidecar to the same contract.

Waiting is on a condition notified by each message, with a deadline: no sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from devmesh.runtime.bootstraps import READY_FILE, write_bootstrap
from devmesh.runtime.dataplane import selected
from devmesh.runtime.environment import infra_env
from devmesh.workspace import read_json
from proxy.bootstrap import Bootstrap, GatewayListener, Role
from proxy.control import STREAM_PATH
from proxy.snapshot import Snapshot, snapshot_to_wire

Wire = dict[str, Any]
"""One JSON object as it went over the link (a message, a snapshot, a record)."""

LOCALHOST = "127.0.0.1"
WITHIN = 10.0
"""The default deadline of every wait here, in seconds."""
START_TIMEOUT = 15.0
"""How long a sidecar process has to listen, link and ack its first snapshot."""
STOP_TIMEOUT = 10.0
"""How long it has to exit after SIGTERM before it is killed."""
EMPTY_SNAPSHOT: Wire = {"version": 0, "routes": {}}
"""What a sidecar the test set no snapshot for is sent on hello."""


class SnapshotRefused(AssertionError):
    """A sidecar nacked a snapshot the test expected it to take; the message is its error."""


def wire(snapshot: Snapshot | Wire) -> Wire:
    """The wire form of ``snapshot`` (a raw dict passes as it is)."""
    return snapshot_to_wire(snapshot) if isinstance(snapshot, Snapshot) else snapshot


@dataclass
class Link:
    """What one sidecar said on its link (kept across its reconnections), and the link."""

    instance: str
    hello: Wire
    ws: web.WebSocketResponse | None = None
    messages: list[Wire] = field(default_factory=list)
    """Every message after the hello, in order."""
    records: list[Wire] = field(default_factory=list)
    """Every telemetry record, in the order they came."""
    dropped: int = 0
    """The sum of the ``dropped`` counts of its telemetry messages."""
    breakers: list[dict[str, Wire]] = field(default_factory=list)
    """Every breakers report (breaker state by key), in order."""
    answers: list[Wire] = field(default_factory=list)
    """Its acks and nacks, in order."""
    in_force: Wire = field(default_factory=lambda: dict(EMPTY_SNAPSHOT))
    """The last snapshot sent to it (sent again when it dials again)."""

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    def of_type(self, kind: str) -> list[Wire]:
        """Its messages of type ``kind``, in order."""
        return [m for m in self.messages if m.get("type") == kind]


class StandIn:
    """The control plane's end of every sidecar's link, driven by the test."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token or secrets.token_hex(16)
        self.port = 0
        self.links: dict[str, Link] = {}
        """Every sidecar that said hello, by instance."""
        self.initial: dict[str, Wire] = {}
        """The snapshot each sidecar gets on its first hello, by instance (else an empty one)."""
        self.refused_links = 0
        """Upgrades refused for a bad token."""
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    # -- the server ------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(STREAM_PATH, self._stream)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOCALHOST, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for link in self.links.values():
            if link.ws is not None and not link.ws.closed:
                await link.ws.close(code=1001, message=b"stand-in shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self.refused_links += 1
            await self._notify()
            raise web.HTTPUnauthorized(text="a bad or missing token")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        hello = await ws.receive_json(timeout=WITHIN)
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            await ws.close(code=4000, message=b"bad hello")
            return ws
        instance = str(hello["node"]["instance"])
        link = self.links.get(instance)
        if link is None:
            link = self.links[instance] = Link(instance, hello)
            link.in_force = self.initial.get(instance, dict(EMPTY_SNAPSHOT))
        link.hello, link.ws = hello, ws
        await ws.send_json({"type": "snapshot", "snapshot": link.in_force})
        await self._notify()
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                data = message.json()
                if isinstance(data, dict):
                    self._take(link, data)
                    await self._notify()
        finally:
            if link.ws is ws:
                link.ws = None
            await self._notify()
        return ws

    @staticmethod
    def _take(link: Link, message: Wire) -> None:
        link.messages.append(message)
        kind = message.get("type")
        if kind == "telemetry":
            link.records.extend(r for r in message.get("records", []) if isinstance(r, dict))
            dropped = message.get("dropped", 0)
            link.dropped += dropped if isinstance(dropped, int) else 0
        elif kind == "breakers" and isinstance(message.get("breakers"), dict):
            link.breakers.append(message["breakers"])
        elif kind in ("ack", "nack"):
            link.answers.append(message)

    # -- waiting ---------------------------------------------------------------------

    async def wait(self, check: Callable[[], Any], what: str, within: float = WITHIN) -> Any:
        """Wait until ``check()`` is truthy (tried again at each message); its value. Fails
        the test naming ``what`` after ``within`` seconds."""
        async with self._changed:
            try:
                return await asyncio.wait_for(self._changed.wait_for(check), within)
            except TimeoutError:
                pytest.fail(f"timed out after {within:g}s waiting for {what}")

    def link(self, instance: str) -> Link:
        """The link of ``instance``'s sidecar (it said hello)."""
        link = self.links.get(instance)
        assert link is not None, f"the sidecar of {instance} has not said hello"
        return link

    async def wait_connected(self, instance: str, within: float = WITHIN) -> Link:
        """Wait until ``instance``'s sidecar is linked; its link."""

        def linked() -> Link | None:
            link = self.links.get(instance)
            return link if link is not None and link.connected else None

        found: Link = await self.wait(linked, f"the sidecar of {instance} to link", within)
        return found

    def records(
        self, instance: str | None = None, pred: Callable[[Wire], bool] | None = None
    ) -> list[Wire]:
        """The records that came so far (of one sidecar, or all), those ``pred`` takes."""
        links = [self.link(instance)] if instance is not None else list(self.links.values())
        return [r for link in links for r in link.records if pred is None or pred(r)]

    async def wait_records(
        self,
        pred: Callable[[Wire], bool] | None = None,
        count: int = 1,
        within: float = WITHIN,
        instance: str | None = None,
    ) -> list[Wire]:
        """Wait until at least ``count`` records ``pred`` takes have come (from ``instance``,
        or any sidecar); all those records."""

        def enough() -> list[Wire] | None:
            if instance is not None and instance not in self.links:
                return None
            found = self.records(instance, pred)
            return found if len(found) >= count else None

        found: list[Wire] = await self.wait(
            enough, f"{count} record(s) from {instance or 'the sidecars'}", within
        )
        return found

    async def wait_breakers(
        self,
        instance: str,
        pred: Callable[[dict[str, Wire]], bool],
        within: float = WITHIN,
    ) -> dict[str, Wire]:
        """Wait until a breakers report of ``instance`` that ``pred`` takes has come; it."""

        def found() -> dict[str, Wire] | None:
            link = self.links.get(instance)
            return next((b for b in link.breakers if pred(b)), None) if link else None

        report: dict[str, Wire] = await self.wait(
            found, f"a breakers report from {instance}", within
        )
        return report

    # -- telling sidecars ----------------------------------------------------------

    def _targets(self, instance: str | None) -> list[Link]:
        if instance is not None:
            return [self.link(instance)]
        return [link for link in self.links.values() if link.connected]

    async def _send(self, link: Link, message: Wire) -> None:
        ws = link.ws
        assert ws is not None, f"{link.instance} is linked"
        assert not ws.closed, f"{link.instance} is linked"
        await ws.send_json(message)

    async def _send_snapshot(
        self, snapshot: Snapshot | Wire, instance: str | None
    ) -> list[tuple[Link, Wire]]:
        """Send ``snapshot`` to the targets; each with its answer, once all answered."""
        raw = wire(snapshot)
        version = raw.get("version") if isinstance(raw, dict) else None
        targets = self._targets(instance)
        assert targets, "a sidecar is linked to send the snapshot to"
        sent = []
        for link in targets:
            sent.append((link, len(link.answers)))
            await self._send(link, {"type": "snapshot", "snapshot": raw})

        def answer(link: Link, since: int) -> Wire | None:
            return next((a for a in link.answers[since:] if a.get("version") == version), None)

        await self.wait(
            lambda: all(answer(link, since) for link, since in sent),
            f"the answer to snapshot {version} from {[link.instance for link, _ in sent]}",
        )
        answers = []
        for link, since in sent:
            got = answer(link, since)
            assert got is not None
            if got["type"] == "ack":
                link.in_force = raw
            answers.append((link, got))
        return answers

    async def route(self, snapshot: Snapshot | Wire, instance: str | None = None) -> None:
        """Send ``snapshot`` (a raw dict goes as it is) to ``instance``'s sidecar, or to
        every linked one, and wait until each acked its version; ``SnapshotRefused`` with
        the error text if one nacked it."""
        for link, answer in await self._send_snapshot(snapshot, instance):
            if answer["type"] != "ack":
                raise SnapshotRefused(f"{link.instance} nacked it: {answer.get('error')}")

    async def refused(self, snapshot: Snapshot | Wire, instance: str | None = None) -> str:
        """Send ``snapshot`` as ``route`` does, expecting every target to nack it; the
        error text (the first one's). Fails the test if one acked it."""
        errors = []
        for link, answer in await self._send_snapshot(snapshot, instance):
            if answer["type"] != "nack":
                pytest.fail(f"{link.instance} acked a snapshot it should have refused")
            errors.append(str(answer.get("error")))
        return errors[0]

    async def identity(self, instance: str, identity: Wire) -> str:
        """Send ``instance``'s sidecar an identity (``cert``, ``key``, ``ca``, ``spiffe_id``,
        ``fingerprint``, ``not_after``); the fingerprint it acks."""
        link = self.link(instance)
        since = len(link.messages)
        await self._send(link, {"type": "identity", **identity})
        ack: Wire = await self.wait(
            lambda: next(
                (m for m in link.messages[since:] if m.get("type") == "identity-ack"), None
            ),
            f"the identity-ack of {instance}",
        )
        return str(ack.get("fingerprint"))

    async def hold(self, instance: str, within: float = WITHIN + 5.0) -> int:
        """Have ``instance``'s sidecar hold its calls; the ``in_flight`` of its ``held``."""
        link = self.link(instance)
        since = len(link.messages)
        await self._send(link, {"type": "hold"})
        held: Wire = await self.wait(
            lambda: next((m for m in link.messages[since:] if m.get("type") == "held"), None),
            f"the held of {instance}",
            within,
        )
        return int(held.get("in_flight", 0))

    async def release(self, instance: str, within: float = WITHIN) -> None:
        """End ``instance``'s hold, and wait for its ``released``."""
        link = self.link(instance)
        since = len(link.messages)
        await self._send(link, {"type": "release"})
        await self.wait(
            lambda: any(m.get("type") == "released" for m in link.messages[since:]),
            f"the released of {instance}",
            within,
        )


@asynccontextmanager
async def standin(token: str | None = None) -> AsyncIterator[StandIn]:
    """A started ``StandIn``, stopped on the way out."""
    plane = StandIn(token)
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()


# -- sidecar processes -----------------------------------------------------------------


@dataclass
class Ports:
    """What a sidecar said it bound, in its ready file."""

    inbound: int | None = None
    outbound: int | None = None
    gateway: dict[str, int] = field(default_factory=dict)
    """The port of each gateway listener, by service (the gateway only)."""


@dataclass
class SidecarUnderTest:
    """A sidecar process linked to a stand-in: its bootstrap, ports, link and log."""

    plane: StandIn
    boot: Bootstrap
    process: asyncio.subprocess.Process
    log_path: Path
    ports: Ports = field(default_factory=Ports)

    @property
    def instance(self) -> str:
        return self.boot.instance

    @property
    def link(self) -> Link:
        return self.plane.link(self.instance)

    @property
    def proxy_url(self) -> str:
        """Its outbound listener, as an app's ``HTTP_PROXY``."""
        return f"http://{LOCALHOST}:{self.ports.outbound}"

    @property
    def inbound_address(self) -> str:
        """Its inbound listener, as an endpoint's ``address``."""
        return f"{LOCALHOST}:{self.ports.inbound}"

    def exited(self) -> bool:
        return self.process.returncode is not None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def records(self, pred: Callable[[Wire], bool] | None = None) -> list[Wire]:
        """Its records that came so far (those ``pred`` takes)."""
        return self.plane.records(self.instance, pred)

    async def wait_records(
        self,
        count: int = 1,
        pred: Callable[[Wire], bool] | None = None,
        within: float = WITHIN,
    ) -> list[Wire]:
        """Wait until at least ``count`` of its records (those ``pred`` takes) came; them."""
        return await self.plane.wait_records(pred, count, within, self.instance)

    async def route(self, snapshot: Snapshot | Wire) -> None:
        """``StandIn.route`` to this sidecar alone."""
        await self.plane.route(snapshot, self.instance)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``STOP_TIMEOUT``."""
        if self.exited():
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            self.process.kill()
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)

    async def _started(self) -> None:
        """Wait for its ready file (its ports) and the ack of its first snapshot."""
        ready = self.boot.ready_file
        assert ready is not None
        deadline = time.monotonic() + START_TIMEOUT
        exited = asyncio.ensure_future(self.process.wait())
        exited.add_done_callback(lambda _: asyncio.ensure_future(self.plane._notify()))
        try:
            # The ready file is the one thing not said on the link: polled, with a deadline.
            while not isinstance(ports := read_json(ready), dict) or (
                ports.get("pid") != self.process.pid
            ):
                if exited.done():
                    self._fail("exited before it wrote its ready file")
                if time.monotonic() > deadline:
                    self._fail(f"had not written its ready file after {START_TIMEOUT:g}s")
                await asyncio.wait({exited}, timeout=0.02)
            self.ports = Ports(
                inbound=ports.get("inbound") or None,
                outbound=ports.get("outbound") or None,
                gateway=dict(ports.get("gateway") or {}),
            )
            version = self.plane.initial.get(self.instance, EMPTY_SNAPSHOT).get("version")

            def acked() -> bool:
                link = self.plane.links.get(self.instance)
                return exited.done() or (
                    link is not None
                    and any(
                        a.get("type") == "ack" and a.get("version") == version for a in link.answers
                    )
                )

            await self.plane.wait(
                acked,
                f"{self.instance} to link and ack snapshot {version}",
                max(0.1, deadline - time.monotonic()),
            )
            if exited.done():
                self._fail("exited before it acked its first snapshot")
            nacks = [a for a in self.link.answers if a.get("type") == "nack"]
            if nacks and not any(a.get("type") == "ack" for a in self.link.answers):
                self._fail(f"nacked its first snapshot: {nacks[0].get('error')}")
        finally:
            exited.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await exited

    def _fail(self, what: str) -> None:
        code = self.process.returncode
        status = f" (it exited with status {code})" if code is not None else ""
        pytest.fail(f"the sidecar of {self.instance} {what}{status}; its log:\n{self.log()}")


@asynccontextmanager
async def standin_sidecar(
    plane: StandIn,
    tmp_path: Path,
    *,
    service: str,
    version: str = "v1",
    instance: str | None = None,
    app_port: int | None = None,
    role: Role = "sidecar",
    gateway: tuple[GatewayListener, ...] = (),
    snapshot: Snapshot | Wire | None = None,
    health_path: str | None = None,
) -> AsyncIterator[SidecarUnderTest]:
    """A sidecar process of the data plane ``$DEVMESH_DATAPLANE`` picks, linked to
    ``plane``, its bootstrap and log in ``tmp_path / instance``. ``snapshot``: what it is
    sent on hello (default: no routes). Entered once it wrote its ready file and acked that
    snapshot; stopped on the way out (SIGTERM, then SIGKILL), its log printed if the test
    failed inside."""
    instance = instance or f"{service}-{version}-1"
    state_dir = tmp_path / instance
    state_dir.mkdir(parents=True, exist_ok=True)
    token_file = state_dir / "token"
    token_file.write_text(plane.token + "\n")
    ready = state_dir / READY_FILE
    ready.unlink(missing_ok=True)
    boot = Bootstrap(
        service=service,
        version=version,
        instance=instance,
        control_plane=plane.url,
        token_file=token_file,
        state_dir=state_dir,
        role=role,
        app_port=app_port,
        health_path=health_path,
        gateway=gateway,
        ready_file=ready,
    )
    if snapshot is not None:
        plane.initial[instance] = wire(snapshot)
    command = selected().command(write_bootstrap(boot))
    log_path = state_dir / "sidecar.log"
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=infra_env()
        )
    running = SidecarUnderTest(plane, boot, process, log_path)
    try:
        await running._started()
        yield running
    except BaseException:
        await running.stop()
        print(f"--- the log of {instance} ({log_path})\n{running.log()}")
        raise
    finally:
        await running.stop()


# -- what the kernel shows of a process's sockets ----------------------------------------

TCP_OPEN_STATES = {0x01, 0x08}
"""ESTABLISHED and CLOSE_WAIT: the states of a connection whose local end is not closed."""


def peers_of(local_port: int) -> set[int]:
    """The remote ports of the TCP connections on 127.0.0.1 whose local end is
    ``local_port`` and not closed yet (``/proc/net/tcp``): a connection the sidecar on that
    port still holds is there, even once its peer closed its own end."""
    peers = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], int(fields[3], 16)
        if state in TCP_OPEN_STATES and int(local.rsplit(":", 1)[1], 16) == local_port:
            peers.add(int(remote.rsplit(":", 1)[1], 16))
    return peers


# -- breaker reports, as a test reads them (added for test_breaker / test_policy) ---------


def breaker_reports(sidecar: SidecarUnderTest, service: str, since: int = 0) -> list[Wire]:
    """The summaries of the breaker to ``service`` in ``sidecar``'s breakers reports from
    the ``since``-th report on, in order (reports that do not name it are left out)."""
    return [r[service] for r in sidecar.link.breakers[since:] if service in r]


def ever_opened(sidecar: SidecarUnderTest, service: str) -> bool:
    """Whether any breakers report of ``sidecar`` so far showed ``service`` other than
    closed."""
    return any(s.get("state") != "closed" for s in breaker_reports(sidecar, service))


async def wait_breaker(
    sidecar: SidecarUnderTest,
    service: str,
    pred: Callable[[Wire], bool],
    since: int = 0,
    within: float = WITHIN,
) -> Wire:
    """Wait until a breakers report of ``sidecar`` from the ``since``-th on has a summary
    of ``service`` that ``pred`` takes; that summary."""

    def found() -> Wire | None:
        link = sidecar.plane.links.get(sidecar.instance)
        if link is None:
            return None
        summaries = (r[service] for r in link.breakers[since:] if service in r)
        return next((s for s in summaries if pred(s)), None)

    summary: Wire = await sidecar.plane.wait(
        found, f"a breakers report from {sidecar.instance} on {service}", within
    )
    return summary


# -- the kernel's view of who dials a port (added for test_controlplane) ------------------


def dialed_to(remote_port: int) -> set[int]:
    """The local ports of the TCP connections on 127.0.0.1 to ``remote_port`` whose local
    end is not closed yet (``/proc/net/tcp``): who still holds a link to that port."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], int(fields[3], 16)
        if state in TCP_OPEN_STATES and int(remote.rsplit(":", 1)[1], 16) == remote_port:
            ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports
