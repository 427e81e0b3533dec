"""A hand-written stand-in for the control plane: a fixed mesh, for snapshot tests and the
README's screenshot. It answers what the TUI asks, and records the changes it is sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

from devmesh import payloads
from devmesh.errors import DevmeshError
from tui.source import MeshSource

TS = 1_764_000_000.0
"""Every time in the data (rendered in UTC by the tests)."""


NO_CLASSES: payloads.StatusClasses = {
    "none": 0, "1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0
}  # fmt: skip
NO_COUNTS: payloads.Counts = {
    "requests": 0, "errors": 0, "injected": 0, "retries": 0, "timeouts": 0, "classes": NO_CLASSES
}  # fmt: skip


def traffic(rps: float, success: float, p50: float, p99: float, shape: int) -> payloads.Traffic:
    # A minute with a shape: a ramp, a dip, a burst (as traffic from a developer's clicks).
    history = [max(0, int(rps * (0.3 + 0.7 * ((i * (shape + 2)) % 17) / 16))) for i in range(60)]
    requests = int(rps * 600)
    return {
        "requests": requests,
        "errors": int(requests * (1 - success)),
        "injected": 0,
        "retries": 3,
        "timeouts": 0,
        "classes": NO_CLASSES,
        "window_s": 10,
        "rps": rps,
        "success_rate": success,
        "p50_ms": p50,
        "p90_ms": (p50 + p99) / 2,
        "p99_ms": p99,
        "window": NO_COUNTS,
        "history": {"requests": history, "errors": [0] * 60},
        "latency_bins": [
            (bound, count)
            for bound, count in zip(
                [1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, None],
                [3, 40, 120, 60, 20, 8, 3, 1, 0],
                strict=True,
            )
        ],
    }


def instance(name: str, version: str, state: payloads.InstanceState = "ready") -> payloads.Instance:
    served = traffic(10.0, 0.99, 3.0, 30.0, 6) if state == "ready" else None
    return {
        "id": name,
        "version": version,
        "state": state,
        "detail": "",
        "address": None,
        "restarts": 0,
        "served": served,
    }


CLOSED: payloads.Breaker = {"state": "closed", "reason": None, "retry_in": None, "panic": False}
OPEN: payloads.Breaker = {
    "state": "open",
    "instance": "pricing-1",
    "reason": "5 consecutive 5xx (last: 500)",
    "retry_in": 23.0,
    "ejected": 1,
    "total": 1,
    "panic": True,
}

EJECTIONS: list[payloads.BreakerEvent] = [
    {
        "type": "breaker",
        "ts": TS - 7,
        "source": "catalog",
        "caller": "catalog-v1-1",
        "destination": "pricing",
        "state": "open",
        "was": "closed",
        "endpoint": "pricing-1",
        "reason": "5 consecutive 5xx (last: 500)",
        "retry_in": 30.0,
        "ejections": 1,
    }
]

NO_CALLS: payloads.SecurityCounts = {
    "mtls_requests": 0, "plaintext_requests": 0, "last": None, "denied": 0, "audited": 0,
    "by_rule": {},
}  # fmt: skip
LOCKED: payloads.EdgeSecurity = {**NO_CALLS, "mode": "strict", "locked": True, "shown": "locked"}
LOCKED_DENIED: payloads.EdgeSecurity = {**LOCKED, "denied": 4}
PERMISSIVE: payloads.EdgeSecurity = {
    **NO_CALLS, "mode": "permissive", "locked": False, "shown": "mtls"
}  # fmt: skip


def service(
    name: str,
    versions: list[str],
    split: dict[str, float] | None,
    instances: list[payloads.Instance],
    traffic: payloads.Traffic,
    by_version: dict[str, payloads.Traffic | None] | None = None,
) -> payloads.Service:
    """A service as the status gives it: no URL, mTLS mode or rule of its own."""
    return {
        "name": name,
        "url": None,
        "versions": versions,
        "split": split,
        "mtls": None,
        "authz": [],
        "instances": instances,
        "traffic": traffic,
        "by_version": by_version or {},
    }


def edge(
    source: str,
    destination: str,
    numbers: tuple[float, float, float, float, int],
    breaker: payloads.Breaker,
    security: payloads.EdgeSecurity,
) -> payloads.Edge:
    return {
        "source": source,
        "destination": destination,
        **traffic(*numbers),
        "breaker": breaker,
        "breaker_history": EJECTIONS if breaker is OPEN else [],
        "security": security,
    }


STATUS: payloads.StatusEvent = {
    "type": "status",
    "ts": TS,
    "project": "shop",
    "snapshot_version": 42,
    "window_s": 10,
    "services": [
        service(
            "frontend",
            ["default"],
            None,
            [instance("frontend-1", "default")],
            traffic(20.1, 0.981, 6.1, 48.2, 1),
        ),
        service(
            "catalog",
            ["v1", "v2"],
            {"v1": 90, "v2": 10},
            [instance("catalog-v1-1", "v1"), instance("catalog-v2-1", "v2")],
            traffic(20.1, 0.981, 3.7, 45.5, 2),
            by_version={
                "v1": traffic(18.1, 0.99, 3.5, 40.1, 4),
                "v2": traffic(2.0, 0.9, 4.1, 60.2, 5),
            },
        ),
        service(
            "pricing",
            ["default"],
            None,
            [instance("pricing-1", "default", "unhealthy")],
            traffic(19.7, 0.902, 1.6, 3.9, 3),
        ),
    ],
    "edges": [
        edge(*row)
        for row in (
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

REQUESTS: list[payloads.TapRequest] = [
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


def span(
    span_id: str,
    parent_id: str | None,
    kind: Literal["client", "server"],
    source: str,
    destination: str,
    instance: str,
    path: str,
    start: float,
    duration_ms: float,
    fault: str | None = None,
) -> payloads.Span:
    """A span of the trace below: a GET that answered 200, without retries or errors."""
    return {
        "trace_id": f"{1:032x}",
        "span_id": span_id,
        "parent_id": parent_id,
        "kind": kind,
        "service": source if kind == "client" else destination,
        "source": source,
        "destination": destination,
        "instance": instance,
        "version": "default",
        "method": "GET",
        "path": path,
        "status": 200,
        "start": start,
        "duration_ms": duration_ms,
        "error": None,
        "fault": fault,
        "retries": 0,
    }


TRACE: payloads.Trace = {
    "trace_id": f"{1:032x}",
    "start": TS,
    "duration_ms": 7.3,
    "spans": 4,
    "root": "ingress → frontend GET /",
    "status": 200,
    "failed": False,
    "faults": ["f1"],
    "truncated": 0,
    "span_list": [
        span("a", None, "client", "ingress", "frontend", "frontend-1", "/", TS, 7.3),
        span("b", "a", "server", "ingress", "frontend", "frontend-1", "/", TS + 0.0003, 6.7),
        span("c", "b", "client", "frontend", "catalog", "catalog-v2-1", "/items", TS + 0.004,
             2.7, fault="f1"),
        span("d", "c", "server", "frontend", "catalog", "catalog-v2-1", "/items", TS + 0.0043,
             2.3),
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

    async def events(self) -> AsyncIterator[payloads.Event]:
        self._check()
        yield STATUS
        await asyncio.Event().wait()

    async def tap(self, **filters: str | float | None) -> AsyncIterator[payloads.TapMessage]:
        self._check()
        for request in REQUESTS:
            yield request
        yield {"type": "stats", "matched": 12, "sampled_out": 7, "lost": 0, "rate": 50}
        await asyncio.Event().wait()

    async def trace(self, trace_id: str) -> payloads.Trace:
        self._check()
        return TRACE

    async def add_fault(
        self, service: str, fault: Mapping[str, Any], lasts: float | str | None
    ) -> payloads.Fault:
        self._check()
        self.changes.append(("add_fault", (service, dict(fault), lasts)))
        return {
            "id": "f2",
            "service": service,
            "origin": "cli",
            "fault": dict(fault),
            "does": "as asked",
            "matches": "every request",
            "expires_in": None,
        }

    async def remove_fault(self, fault_id: str) -> None:
        self._check()
        self.changes.append(("remove_fault", fault_id))

    async def reset_faults(self, service: str | None) -> list[str]:
        self._check()
        self.changes.append(("reset_faults", service))
        return ["f1"]

    async def set_split(self, service: str, weights: Mapping[str, float]) -> payloads.SplitAnswer:
        self._check()
        self.changes.append(("set_split", (service, dict(weights))))
        return {"service": service, "split": dict(weights)}

    async def policy(self, service: str) -> payloads.PolicyAnswer:
        self._check()
        return {"service": service, "policy": POLICY, "overrides": {"timeout": "2s"}}

    async def set_policy(self, service: str, settings: Mapping[str, Any]) -> payloads.PolicyAnswer:
        self._check()
        self.changes.append(("set_policy", (service, dict(settings))))
        return {"service": service, "policy": POLICY, "overrides": dict(settings)}

    async def authz_rules(self) -> list[payloads.Rule]:
        self._check()
        return []

    async def add_authz_rule(self, rule: Mapping[str, Any]) -> payloads.Rule:
        self._check()
        self.changes.append(("add_authz_rule", dict(rule)))
        return answered_rule({"name": f"{rule['service']}-{rule['action']}-1", **rule})

    async def remove_authz_rule(self, name: str) -> payloads.Rule:
        self._check()
        self.changes.append(("remove_authz_rule", name))
        return answered_rule({"name": name, "service": "catalog", "action": "deny"})

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


def answered_rule(rule: Mapping[str, Any]) -> payloads.Rule:
    """A rule (devmesh.yaml's shape) as the control plane answers it: added at run time."""
    answer: payloads.Rule = {
        "name": rule["name"],
        "service": rule["service"],
        "action": rule["action"],
        "mode": rule.get("mode", "enforce"),
        "origin": "cli",
        "does": "as asked",
    }
    if "from" in rule:
        answer["from"] = list(rule["from"])
    if "paths" in rule:
        answer["paths"] = list(rule["paths"])
    if "methods" in rule:
        answer["methods"] = list(rule["methods"])
    return answer


def _a_mesh_source(source: FixedSource) -> MeshSource:
    """Where mypy checks that FixedSource answers as ``MeshSource`` says, in the API's types."""
    return source


POLICY: dict[str, object] = {
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
