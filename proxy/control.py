"""The sidecar's link to the control plane: one WebSocket, dialled by the sidecar.

Sidecar -> control plane messages (JSON text frames)::

    {"type": "hello", "node": {...}, "snapshot_version": 6,
     "health": {"state": "ready", "detail": "..."}}
    {"type": "health", "state": "ready", "detail": "..."}
    {"type": "telemetry", "records": [...], "dropped": 0}
    {"type": "ack", "version": 7}   /   {"type": "nack", "version": 7, "error": "..."}
    {"type": "breakers", "breakers": {...}}
    {"type": "identity-ack", "fingerprint": "..."}
    {"type": "leaving"}             (the sidecar is stopping: take it out of routing now)
    {"type": "held", "in_flight": 0}   (the answer to a hold)
    {"type": "released"}                (a hold ended: by a release, or by itself)

Control plane -> sidecar::

    {"type": "snapshot", "snapshot": {...}}
    {"type": "identity", ...}
    {"type": "hold"}  /  {"type": "release"}   (around a restart of the app: ``proxy.appgate``)

Liveness: any frame counts as a sign of life, both ways. Each side pings (a
WebSocket ping, answered by a pong) once it has heard nothing from the other
for ``PING_AFTER`` seconds, and gives the link up after ``SILENCE_LIMIT``
seconds of silence. A busy sidecar's telemetry keeps the control plane hearing
from it; its pings keep it hearing from a control plane with nothing to say.

The hello carries the sidecar's health as it stands, so a sidecar that dials
again (the link dropped, or the control plane restarted) keeps its place in
routing instead of starting over as ``starting``. While its app is held for a
restart, the health it reports is the one it had when the hold began (the app
is down on purpose); on release it probes the new app at once and reports that.

If the link drops, the sidecar keeps routing with its last good snapshot and
dials again with capped exponential backoff; records wait in the buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from proxy.appgate import AppGate
from proxy.bootstrap import AUTO, Bootstrap
from proxy.destinations import Destinations
from proxy.health import HealthProbe
from proxy.identity import IdentityError, IdentityStore
from proxy.router import Router
from proxy.server import BoundPorts
from proxy.snapshot import SnapshotError, parse_snapshot, save_snapshot
from proxy.telemetry import TelemetryBuffer
from proxy.websocket import WebSocket, WebSocketError, connect

log = logging.getLogger("devmesh.proxy.control")

STREAM_PATH = "/v1/sidecar/stream"
FLUSH_INTERVAL = 0.1
BATCH_LIMIT = 1000
BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0
BREAKER_REFRESH = 1.0
PING_AFTER = 10.0
"""This long without a word from the control plane, the sidecar pings it."""
SILENCE_LIMIT = 25.0
"""This long without a word from the control plane (its pongs included), the link is dead."""
POLICY_VIOLATION = 1008


class ControlLink:
    def __init__(
        self,
        boot: Bootstrap,
        ports: BoundPorts,
        router: Router,
        telemetry: TelemetryBuffer,
        health: HealthProbe,
        destinations: Destinations | None = None,
        identity: IdentityStore | None = None,
        gate: AppGate | None = None,
    ) -> None:
        self.boot = boot
        self.ports = ports
        self.router = router
        self.telemetry = telemetry
        self.health = health
        self.destinations = destinations
        self.connected = asyncio.Event()
        self._health_dirty = True
        self._breakers_dirty = True
        self._breakers_looked = 0.0
        self._ws: WebSocket | None = None
        self.gate = gate or AppGate()
        self.gate.on_release = self._released
        self._health_at_hold: tuple[str, str] | None = None
        self._say_released = False
        self._holds: set[asyncio.Task[None]] = set()
        """Holds draining (each answers on the link of the moment when it is done)."""
        self.identity = identity or IdentityStore(boot.state_dir / "identity")
        """The identity the control plane issued this sidecar's service (for mTLS)."""

    def health_changed(self) -> None:
        self._health_dirty = True

    def breakers_changed(self) -> None:
        self._breakers_dirty = True

    def hello(self) -> dict[str, Any]:
        host = self.boot.advertise_host
        if host == AUTO:
            host = _address_towards(self.boot.control_plane)
        inbound = f"{host}:{self.ports.inbound}" if self.ports.inbound else None
        return {
            "type": "hello",
            "node": {
                "service": self.boot.service,
                "version": self.boot.version,
                "instance": self.boot.instance,
                "role": self.boot.role,
                "inbound": inbound,
                "health_check": self.health.describe(),
            },
            "snapshot_version": self.router.snapshot.version,
            "health": self._health(),
        }

    def _health(self) -> dict[str, str]:
        """The health to report: the probe's, or while the app is held the one it had then."""
        state, detail = self._health_at_hold or (self.health.state, self.health.detail)
        return {"state": state, "detail": detail}

    async def run(self) -> None:
        """Stay connected until cancelled."""
        backoff = BACKOFF_MIN
        while True:
            token = self._token()
            if token is not None:
                try:
                    await self._session(token)
                    backoff = BACKOFF_MIN
                except (WebSocketError, OSError, TimeoutError) as exc:
                    log.info("control plane unreachable (%s); retrying", exc or type(exc).__name__)
                except Exception:
                    # A fault of this sidecar's (a bug in handling a message): say so,
                    # and stay linked rather than route on a stale snapshot for good.
                    log.exception("control plane link failed; dialling again")
                finally:
                    self.connected.clear()
                    if self._ws is not None:
                        await self._ws.close()
                    self._ws = None
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def flush(self) -> None:
        """Send what is buffered now, if connected (used on shutdown)."""
        if self._ws is not None and not self._ws.closed:
            await self._send_pending(self._ws)

    async def leave(self) -> None:
        """Tell the control plane this sidecar is stopping (it leaves routing at once), if
        connected; best effort, on shutdown."""
        if self._ws is not None and not self._ws.closed:
            await _send_json(self._ws, {"type": "leaving"})

    def _token(self) -> str | None:
        """The project token, read before each dial (``up`` may have written a new one)."""
        try:
            return self.boot.token()
        except KeyError as exc:
            log.error("no project token: $%s is not set", exc.args[0])
        except OSError as exc:
            log.error(
                "no project token: cannot read %s (%s)",
                self.boot.token_file,
                exc.strerror or exc,
            )
        return None

    async def _session(self, token: str) -> None:
        ws = self._ws = await connect(
            self.boot.control_plane + STREAM_PATH, {"Authorization": f"Bearer {token}"}
        )
        await _send_json(ws, self.hello())
        self._health_dirty = True
        self.connected.set()
        log.info("connected to control plane %s", self.boot.control_plane)
        sender = asyncio.create_task(self._send_loop(ws))
        try:
            while (data := await ws.receive()) is not None:
                await self._handle(ws, data)
        finally:
            sender.cancel()
            # gather() returns the sender's own CancelledError as a value but
            # still raises if *this* task is being cancelled.
            results = await asyncio.gather(sender, return_exceptions=True)
        if isinstance(results[0], TimeoutError):
            raise results[0]
        if ws.close_code == POLICY_VIOLATION:
            log.error("control plane refused this sidecar: %s", ws.close_reason or "bad token")

    async def _handle(self, ws: WebSocket, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("ignoring a control plane message that is not JSON")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "identity":
            await self._install_identity(ws, message)
        elif kind == "hold":
            task = asyncio.create_task(self._hold())
            self._holds.add(task)
            task.add_done_callback(self._holds.discard)
        elif kind == "release":
            await self._release()
        elif kind == "snapshot":
            await self._take_snapshot(ws, message)

    async def _take_snapshot(self, ws: WebSocket, message: dict[str, Any]) -> None:
        raw = message.get("snapshot")
        version = raw.get("version") if isinstance(raw, dict) else None
        try:
            snapshot = parse_snapshot(raw)
        except SnapshotError as exc:
            log.warning("rejected snapshot %s: %s", version, exc)
            await _send_json(ws, {"type": "nack", "version": version, "error": str(exc)})
            return
        self.router.update(snapshot)
        try:
            save_snapshot(snapshot, self.boot.snapshot_file)
        except OSError as exc:
            log.warning("could not keep snapshot %s on disk: %s", snapshot.version, exc)
        await _send_json(ws, {"type": "ack", "version": snapshot.version})

    async def _hold(self) -> None:
        if self._health_at_hold is None:
            self._health_at_hold = (self.health.state, self.health.detail)
        in_flight = await self.gate.hold()
        log.info("holding calls to the app (%d still in flight)", in_flight)
        ws = self._ws  # the link may have been dialled again while it drained
        if ws is not None and not ws.closed:
            with contextlib.suppress(WebSocketError, OSError):
                await _send_json(ws, {"type": "held", "in_flight": in_flight})

    async def _release(self) -> None:
        if self.gate.held:
            await self.health.probe_now()  # what the new app is, before anyone counts on it
        self.gate.release()
        self._released()  # said again even if it had ended: the control plane may not know

    def _released(self) -> None:
        """A hold ended: report the probe's health again, and say so."""
        if self._health_at_hold is not None:
            log.info("released the calls held for the app (%s)", self.health.state)
        self._health_at_hold = None
        self._health_dirty = True
        self._say_released = True

    async def _install_identity(self, ws: WebSocket, message: dict[str, Any]) -> None:
        try:
            installed = await asyncio.to_thread(self.identity.install, message)
        except IdentityError as exc:
            log.error("refused an identity from the control plane: %s", exc)
            return
        log.info("identity %s installed (certificate %s)", installed.spiffe_id,
                 installed.fingerprint[:16])  # fmt: skip
        await _send_json(ws, {"type": "identity-ack", "fingerprint": installed.fingerprint})

    async def _send_loop(self, ws: WebSocket) -> None:
        pinged = 0.0
        while True:
            await self._send_pending(ws)
            await asyncio.sleep(FLUSH_INTERVAL)
            now = time.monotonic()
            silent = now - ws.last_received
            if silent > SILENCE_LIMIT:
                await ws.close()
                raise TimeoutError(f"no word from the control plane in {SILENCE_LIMIT:g}s")
            if silent > PING_AFTER and now - pinged > PING_AFTER:
                pinged = now
                await ws.ping()

    async def _send_pending(self, ws: WebSocket) -> None:
        if self._health_dirty and self._health_at_hold is None:
            self._health_dirty = False
            await _send_json(ws, {"type": "health", **self._health()})
        if self._say_released:
            self._say_released = False
            await _send_json(ws, {"type": "released"})
        await self._send_breakers(ws)
        while len(self.telemetry):
            batch = self.telemetry.take(BATCH_LIMIT)
            dropped, self.telemetry.dropped = self.telemetry.dropped, 0
            try:
                await _send_json(
                    ws,
                    {
                        "type": "telemetry",
                        "records": [r.to_wire() for r in batch],
                        "dropped": dropped,
                    },
                )
            except BaseException:
                self.telemetry.put_back(batch)
                self.telemetry.dropped += dropped
                raise

    async def _send_breakers(self, ws: WebSocket) -> None:
        """The breaker of every destination: at once on a change, and each second while one
        is not closed (its countdown moves on; open turns half-open with no request)."""
        if self.destinations is None:
            return
        now = time.monotonic()
        if not self._breakers_dirty and now - self._breakers_looked < BREAKER_REFRESH:
            return  # this runs every flush: look at the breakers only when it may send
        self._breakers_looked = now
        breakers = self.destinations.breakers()  # also moves the breakers' clocks on
        troubled = any(s.state != "closed" for s in breakers.values())
        if not (self._breakers_dirty or troubled):
            return
        self._breakers_dirty = False
        await _send_json(
            ws,
            {
                "type": "breakers",
                "breakers": {name: summary.to_json(now) for name, summary in breakers.items()},
            },
        )


def _address_towards(url: str) -> str:
    """This host's address on the route to ``url`` (a UDP "connect" sends no packet)."""
    target = urlsplit(url)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((target.hostname or "127.0.0.1", target.port or 80))
        address: str = sock.getsockname()[0]
        return address


async def _send_json(ws: WebSocket, message: dict[str, Any]) -> None:
    await ws.send_text(json.dumps(message, separators=(",", ":")))
