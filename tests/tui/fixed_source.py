"""A hand-written stand-in for the control plane: a fixed mesh, for snapshot tests and the
README's screenshot. It answers what the TUI asks, and records the changes it is sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from devmesh.errors import DevmeshError

TS = 1_764_000_000.0
"""Every time in the data (rendered in UTC by the tests)."""


def traffic(rps: float, success: float, p50: float, p99: float, shape: int) -> dict[str, Any]:
    # A minute with a shape: a ramp, a dip, a burst (as traffic from a developer's clicks).
    history = [max(0, int(rps * (0.3 + 0.7 * ((i * (shape + 2)) % 17) / 16))) for i in range(60)]
    requests = int(rps * 600)
    return {
        "requests": requests,
        "errors": int(requests * (1 - success)),
        "injected": 0,
        "retries": 3,
        "timeouts": 0,
        "classes": {},
        "window_s": 10,
        "rps": rps,
        "success_rate": success,
        "p50_ms": p50,
        "p90_ms": (p50 + p99) / 2,
        "p99_ms": p99,
        "window": {},
        "history": {"requests": history, "errors": [0] * 60},
        "latency_bins": [
            [bound, count]
            for bound, count in zip(
                [1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, None],
                [3, 40, 120, 60, 20, 8, 3, 1, 0],
                strict=True,
            )
        ],
    }


def instance(name: str, version: str, state: str = "ready") -> dict[str, Any]:
    served = traffic(10.0, 0.99, 3.0, 30.0, 6) if state == "ready" else None
    return {
        "id": name,
        "version": version,
        "state": state,
        "detail": "",
        "address": None,
        "served": served,
    }


CLOSED = {"state": "closed", "reason": None, "retry_in": None}
OPEN = {
    "state": "open",
    "instance": "pricing-1",
    "reason": "5 consecutive 5xx (last: 500)",
    "retry_in": 23.0,
    "ejected": 1,
    "total": 1,
    "panic": True,
}

EJECTIONS = [
    {
        "type": "breaker",
        "ts": TS - 7,
        "source": "catalog",
        "destination": "pricing",
        "state": "open",
        "was": "closed",
        "endpoint": "pricing-1",
        "reason": "5 consecutive 5xx (last: 500)",
        "ejections": 1,
    }
]

LOCKED = {"mode": "strict", "locked": True, "shown": "locked", "denied": 0, "audited": 0}
LOCKED_DENIED = {**LOCKED, "denied": 4}
PERMISSIVE = {"mode": "permissive", "locked": False, "shown": "mtls", "denied": 0, "audited": 0}

STATUS: dict[str, Any] = {
    "type": "status",
    "ts": TS,
    "project": "shop",
    "snapshot_version": 42,
    "window_s": 10,
    "services": [
        {
            "name": "frontend",
            "versions": ["default"],
            "split": None,
            "instances": [instance("frontend-1", "default")],
            "traffic": traffic(20.1, 0.981, 6.1, 48.2, 1),
        },
        {
            "name": "catalog",
            "versions": ["v1", "v2"],
            "split": {"v1": 90, "v2": 10},
            "instances": [instance("catalog-v1-1", "v1"), instance("catalog-v2-1", "v2")],
            "traffic": traffic(20.1, 0.981, 3.7, 45.5, 2),
            "by_version": {
                "v1": traffic(18.1, 0.99, 3.5, 40.1, 4),
                "v2": traffic(2.0, 0.9, 4.1, 60.2, 5),
            },
        },
        {
            "name": "pricing",
            "versions": ["default"],
            "split": None,
            "instances": [instance("pricing-1", "default", "unhealthy")],
            "traffic": traffic(19.7, 0.902, 1.6, 3.9, 3),
        },
    ],
    "edges": [
        {
            "source": source,
            "destination": destination,
            **traffic(*numbers),
            "breaker": state,
            "breaker_history": EJECTIONS if state is OPEN else [],
            "security": security,
        }
        for source, destination, numbers, state, security in (
            ("ingress", "frontend", (20.1, 0.981, 6.1, 48.2, 1), CLOSED, LOCKED),
            ("frontend", "catalog", (20.1, 0.981, 3.7, 45.5, 2), CLOSED, LOCKED_DENIED),
            ("catalog", "pricing", (19.7, 0.902, 1.6, 3.9, 3), OPEN, PERMISSIVE),
        )
    ],
    "faults": [
        {
            "id": "f1",
            "service": "catalog",
            "origin": "cli",
            "fault": {"delay": {"fixed": "200ms", "percent": 20}},
            "does": "delay 200ms (20%)",
            "matches": "every request",
            "expires_in": 95.0,
        }
    ],
    "proxies": [],
    "telemetry": {"records": 0, "dropped": 0, "malformed": 0},
}

REQUESTS = [
    {
        "type": "request",
        "ts": TS + i * 0.05,
        "source": source,
        "destination": destination,
        "method": "GET",
        "path": path,
        "status": status,
        "latency_ms": latency,
        "version": version,
        "instance": f"{destination}-1",
        "trace_id": f"{i + 1:032x}",
        "fault": "f1" if latency > 200 else None,
        "error": None,
        "retries": 0,
    }
    for i, (source, destination, path, status, latency, version) in enumerate(
        [
            ("ingress", "frontend", "/", 200, 7.2, "default"),
            ("frontend", "catalog", "/items", 200, 3.1, "v1"),
            ("catalog", "pricing", "/prices", 500, 1.2, "default"),
            ("frontend", "catalog", "/items", 200, 203.9, "v2"),
            ("ingress", "frontend", "/", 502, 4.4, "default"),
            ("frontend", "catalog", "/items/[/b][id]", 404, 2.2, "v1"),  # not markup
        ]
    )
]

TRACE = {
    "trace_id": f"{1:032x}",
    "start": TS,
    "duration_ms": 7.3,
    "spans": 4,
    "truncated": 0,
    "span_list": [
        {"span_id": "a", "parent_id": None, "kind": "client", "source": "ingress",
         "destination": "frontend", "instance": "frontend-1", "method": "GET", "path": "/",
         "status": 200, "start": TS, "duration_ms": 7.3, "retries": 0, "error": None,
         "fault": None},
        {"span_id": "b", "parent_id": "a", "kind": "server", "source": "ingress",
         "destination": "frontend", "instance": "frontend-1", "method": "GET", "path": "/",
         "status": 200, "start": TS + 0.0003, "duration_ms": 6.7, "retries": 0, "error": None,
         "fault": None},
        {"span_id": "c", "parent_id": "b", "kind": "client", "source": "frontend",
         "destination": "catalog", "instance": "catalog-v2-1", "method": "GET",
         "path": "/items", "status": 200, "start": TS + 0.004, "duration_ms": 2.7, "retries": 0,
         "error": None, "fault": "f1"},
        {"span_id": "d", "parent_id": "c", "kind": "server", "source": "frontend",
         "destination": "catalog", "instance": "catalog-v2-1", "method": "GET",
         "path": "/items", "status": 200, "start": TS + 0.0043, "duration_ms": 2.3,
         "retries": 0, "error": None, "fault": None},
    ],
}  # fmt: skip


class FixedSource:
    """The mesh above, forever; ``down`` makes every call fail as with no control plane."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.changes: list[tuple[str, Any]] = []

    def _check(self) -> None:
        if self.down:
            raise DevmeshError("the control plane at http://127.0.0.1:33085 is not answering")

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        self._check()
        yield STATUS
        await asyncio.Event().wait()

    async def tap(self, **filters: str | float | None) -> AsyncIterator[dict[str, Any]]:
        self._check()
        for request in REQUESTS:
            yield request
        yield {"type": "stats", "matched": 12, "sampled_out": 7, "lost": 0, "rate": 50}
        await asyncio.Event().wait()

    async def trace(self, trace_id: str) -> dict[str, Any]:
        self._check()
        return TRACE

    async def add_fault(
        self, service: str, fault: Mapping[str, Any], lasts: float | None
    ) -> dict[str, Any]:
        self._check()
        self.changes.append(("add_fault", (service, dict(fault), lasts)))
        return {"id": "f2", "service": service, "fault": dict(fault), "does": "as asked"}

    async def remove_fault(self, fault_id: str) -> None:
        self._check()
        self.changes.append(("remove_fault", fault_id))

    async def reset_faults(self, service: str | None) -> list[str]:
        self._check()
        self.changes.append(("reset_faults", service))
        return ["f1"]

    async def set_split(self, service: str, weights: Mapping[str, float]) -> dict[str, Any]:
        self._check()
        self.changes.append(("set_split", (service, dict(weights))))
        return {"service": service, "split": dict(weights)}

    async def policy(self, service: str) -> dict[str, Any]:
        self._check()
        return {"service": service, "policy": POLICY, "overrides": {"timeout": "2s"}}

    async def set_policy(self, service: str, settings: Mapping[str, Any]) -> dict[str, Any]:
        self._check()
        self.changes.append(("set_policy", (service, dict(settings))))
        return {"service": service, "policy": POLICY, "overrides": dict(settings)}

    async def authz_rules(self) -> list[dict[str, Any]]:
        self._check()
        return []

    async def add_authz_rule(self, rule: Mapping[str, Any]) -> dict[str, Any]:
        self._check()
        self.changes.append(("add_authz_rule", dict(rule)))
        return {"name": f"{rule['service']}-{rule['action']}-1", **rule, "origin": "cli"}

    async def remove_authz_rule(self, name: str) -> dict[str, Any]:
        self._check()
        self.changes.append(("remove_authz_rule", name))
        return {"name": name}

    async def set_mtls(self, service: str | None, mode: str | None) -> dict[str, str]:
        self._check()
        self.changes.append(("set_mtls", (service, mode)))
        return {service or "*": mode or "permissive"}

    async def logs(self, instance: str, lines: int) -> list[str]:
        self._check()
        return [f"{instance}: GET /items HTTP/1.1 200" for _ in range(3)]

    async def kill(self, instance: str) -> None:
        self._check()
        self.changes.append(("kill", instance))

    async def restart(self, service: str) -> list[str]:
        self._check()
        self.changes.append(("restart", service))
        return [f"{service}-1"]


POLICY = {
    "timeout": "2s",
    "retries": {"attempts": 3, "per_try_timeout": "500ms", "retry_on": ["5xx", "reset"]},
    "breaker": {
        "consecutive_5xx": 5,
        "interval": "10s",
        "base_ejection_time": "30s",
        "max_ejection_time": "300s",
        "max_ejection_percent": 10.0,
        "panic_threshold": 50.0,
    },
    "lb": "round-robin",
}
