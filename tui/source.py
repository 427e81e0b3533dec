"""Where the TUI gets the mesh from and sends its changes to: the control plane's API.

``MeshSource`` is what the screens use; ``LiveSource`` is the real one (through
``devmesh.client``, as the CLI does, so the TUI can do nothing the API cannot);
tests and screenshots use a hand-written one over fixed data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import devmesh.payloads as payloads
from devmesh.client import ControlPlaneClient, Endpoint


class MeshSource(Protocol):
    """The mesh as the TUI sees it. Every call may raise ``DevmeshError`` (the control plane
    is away, or refused the change: its message says why)."""

    def events(self) -> AsyncIterator[payloads.Event]:
        """The event stream: a ``status`` each second, ``breaker`` and ``config`` changes."""
        ...

    def tap(self, **filters: str | float | None) -> AsyncIterator[payloads.TapMessage]:
        """Sampled requests (``service``, ``path``, ``status``, ``min_latency_ms``, ``rate``)."""
        ...

    async def trace(self, trace_id: str) -> payloads.Trace: ...

    async def add_fault(
        self, service: str, fault: Mapping[str, Any], lasts: float | str | None
    ) -> payloads.Fault: ...

    async def remove_fault(self, fault_id: str) -> None: ...

    async def reset_faults(self, service: str | None) -> list[str]: ...

    async def set_split(
        self, service: str, weights: Mapping[str, float]
    ) -> payloads.SplitAnswer: ...

    async def policy(self, service: str) -> payloads.PolicyAnswer:
        """The settings in force (``policy``), and which are runtime changes
        (``overrides``)."""
        ...

    async def set_policy(
        self, service: str, settings: Mapping[str, Any]
    ) -> payloads.PolicyAnswer: ...

    async def authz_rules(self) -> list[payloads.Rule]: ...

    async def add_authz_rule(self, rule: Mapping[str, Any]) -> payloads.Rule: ...

    async def remove_authz_rule(self, name: str) -> payloads.Rule: ...

    async def set_mtls(self, service: str | None, mode: str | None) -> dict[str, str]: ...

    async def logs(self, instance: str, lines: int) -> list[str]:
        """The last ``lines`` lines of an instance's log."""
        ...

    async def kill(self, instance: str) -> None: ...

    async def restart(self, service: str) -> list[str]:
        """Restart a service's instances; returns them once each is ready again."""
        ...


class LiveSource:
    """The running control plane of the project in ``project_dir``; its address is read again
    for each call, so a control plane restarted on another port is found."""

    def __init__(self, project_dir: Path) -> None:
        self.project_dir = project_dir

    def _client(self) -> ControlPlaneClient:
        return ControlPlaneClient(Endpoint.of_project(self.project_dir))

    async def events(self) -> AsyncIterator[payloads.Event]:
        async with self._client() as client:
            async for event in client.events(window=10):
                yield event

    async def tap(self, **filters: str | float | None) -> AsyncIterator[payloads.TapMessage]:
        async with self._client() as client:
            async for message in client.tap(**filters):
                yield message

    async def trace(self, trace_id: str) -> payloads.Trace:
        async with self._client() as client:
            return await client.trace(trace_id)

    async def add_fault(
        self, service: str, fault: Mapping[str, Any], lasts: float | str | None
    ) -> payloads.Fault:
        async with self._client() as client:
            return await client.add_fault(service, fault, lasts)

    async def remove_fault(self, fault_id: str) -> None:
        async with self._client() as client:
            await client.remove_fault(fault_id)

    async def reset_faults(self, service: str | None) -> list[str]:
        async with self._client() as client:
            return await client.reset_faults(service)

    async def set_split(self, service: str, weights: Mapping[str, float]) -> payloads.SplitAnswer:
        async with self._client() as client:
            return await client.set_split(service, weights)

    async def policy(self, service: str) -> payloads.PolicyAnswer:
        async with self._client() as client:
            return await client.policy(service)

    async def set_policy(self, service: str, settings: Mapping[str, Any]) -> payloads.PolicyAnswer:
        async with self._client() as client:
            return await client.set_policy(service, settings)

    async def authz_rules(self) -> list[payloads.Rule]:
        async with self._client() as client:
            return await client.authz_rules()

    async def add_authz_rule(self, rule: Mapping[str, Any]) -> payloads.Rule:
        async with self._client() as client:
            return await client.add_authz_rule(rule)

    async def remove_authz_rule(self, name: str) -> payloads.Rule:
        async with self._client() as client:
            return await client.remove_authz_rule(name)

    async def set_mtls(self, service: str | None, mode: str | None) -> dict[str, str]:
        async with self._client() as client:
            return await client.set_mtls(service, mode)

    async def logs(self, instance: str, lines: int) -> list[str]:
        async with self._client() as client:
            return await client.logs(instance, lines)

    async def kill(self, instance: str) -> None:
        async with self._client() as client:
            await client.kill(instance)

    async def restart(self, service: str) -> list[str]:
        async with self._client() as client:
            return await client.restart(service)
