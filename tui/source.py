"""Where the TUI gets the mesh from and sends its changes to: the control plane's API.

``MeshSource`` is what the screens use; ``LiveSource`` is the real one (through
``devmesh.client``, as the CLI does, so the TUI can do nothing the API cannot);
tests and screenshots use a hand-written one over fixed data.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from devmesh.client import ControlPlaneClient, Endpoint
from devmesh.errors import DevmeshError
from devmesh.runtime.docker import labels
from devmesh.runtime.docker.daemon import connect
from devmesh.runtime.docker.logs import read_all
from devmesh.runtime.processes import RuntimeRecord, tail
from devmesh.workspace import Workspace


class MeshSource(Protocol):
    """The mesh as the TUI sees it. Every call may raise ``DevmeshError`` (the control plane
    is away, or refused the change: its message says why)."""

    def events(self) -> AsyncIterator[dict[str, Any]]:
        """The event stream: a ``status`` each second, ``breaker`` and ``config`` changes."""
        ...

    def tap(self, **filters: str | float | None) -> AsyncIterator[dict[str, Any]]:
        """Sampled requests (``service``, ``path``, ``status``, ``min_latency_ms``, ``rate``)."""
        ...

    async def trace(self, trace_id: str) -> dict[str, Any]: ...

    async def add_fault(
        self, service: str, fault: Mapping[str, Any], lasts: float | None
    ) -> dict[str, Any]: ...

    async def remove_fault(self, fault_id: str) -> None: ...

    async def reset_faults(self, service: str | None) -> list[str]: ...

    async def set_split(self, service: str, weights: Mapping[str, float]) -> dict[str, Any]: ...

    async def policy(self, service: str) -> dict[str, Any]:
        """``{"policy": {...}, "overrides": {...}}``: the settings in force, and which are
        runtime changes."""
        ...

    async def set_policy(self, service: str, settings: Mapping[str, Any]) -> dict[str, Any]: ...

    async def logs(self, instance: str, lines: int) -> list[str]:
        """The last ``lines`` lines of an instance's log."""
        ...

    async def kill(self, instance: str) -> None: ...

    async def restart(self, service: str) -> list[str]:
        """Restart a service's instances; returns them once each is ready again."""
        ...


class LiveSource:
    """The project's running control plane; its address is read again for each call, so a
    control plane restarted on another port is found."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def _client(self) -> ControlPlaneClient:
        return ControlPlaneClient(Endpoint.of(self.workspace))

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        async with self._client() as client:
            async for event in client.events(window=10):
                yield event

    async def tap(self, **filters: str | float | None) -> AsyncIterator[dict[str, Any]]:
        async with self._client() as client:
            async for message in client.tap(**filters):
                yield message

    async def trace(self, trace_id: str) -> dict[str, Any]:
        async with self._client() as client:
            return await client.trace(trace_id)

    async def add_fault(
        self, service: str, fault: Mapping[str, Any], lasts: float | None
    ) -> dict[str, Any]:
        async with self._client() as client:
            return await client.add_fault(service, fault, lasts)

    async def remove_fault(self, fault_id: str) -> None:
        async with self._client() as client:
            await client.remove_fault(fault_id)

    async def reset_faults(self, service: str | None) -> list[str]:
        async with self._client() as client:
            return await client.reset_faults(service)

    async def set_split(self, service: str, weights: Mapping[str, float]) -> dict[str, Any]:
        async with self._client() as client:
            return await client.set_split(service, weights)

    async def policy(self, service: str) -> dict[str, Any]:
        async with self._client() as client:
            return await client.policy(service)

    async def set_policy(self, service: str, settings: Mapping[str, Any]) -> dict[str, Any]:
        async with self._client() as client:
            return await client.set_policy(service, settings)

    # Logs, kill and restart act on the runtime, as `devmesh logs`, `kill` and `restart` do
    # (kill and restart by running them).

    async def logs(self, instance: str, lines: int) -> list[str]:
        return await asyncio.to_thread(self._logs, instance, lines)

    def _logs(self, instance: str, lines: int) -> list[str]:
        record = RuntimeRecord.load(self.workspace.runtime_file)
        if record is not None and record.runtime == "docker":
            name = labels.container_name(record.project, instance, "service")
            client = connect()
            try:
                return [line for _, line in read_all(client, {instance: name}, lines)]
            finally:
                client.close()
        return tail(self.workspace.log_file(instance), lines)

    async def kill(self, instance: str) -> None:
        await self._cli("kill", instance)

    async def restart(self, service: str) -> list[str]:
        said = await self._cli("restart", service)
        return [line for line in said.splitlines() if line.strip()]

    async def _cli(self, *args: str) -> str:
        """Run ``devmesh ARGS`` on this project, as a user would in another terminal: the
        instances it starts belong to it, not to the TUI's process. Its error sentence, if
        it fails, becomes a ``DevmeshError``."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "devmesh",
            "-C",
            str(self.workspace.project_dir),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            first = next((line for line in lines if line.startswith("error: ")), None)
            raise DevmeshError(
                first.removeprefix("error: ") if first else f"devmesh {' '.join(args)} failed"
            )
        return out.decode(errors="replace")
