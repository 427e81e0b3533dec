"""The typed payloads (``devmesh.payloads``) say exactly what the control plane sends: each
key a TypedDict requires is there, each key sent is one it names, each value of the type it
says, all the way down, on JSON as a client decodes it, from a mesh with traffic, breakers,
faults, rules and identities."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

import pytest

from devmesh import payloads
from devmesh.controlplane import statusview
from devmesh.controlplane.api import ControlPlaneAPI
from devmesh.controlplane.identities import Identities
from devmesh.controlplane.mesh import Mesh, Proxy
from devmesh.controlplane.store import StateStore
from devmesh.controlplane.streams import TapFilter

NOW = 1000.5
PROJECT = {
    "name": "shop",
    "services": {
        "frontend": {"command": "true", "port": 8000, "expose": 8080},
        "catalog": {
            "port": 8000,
            "versions": {"v1": {"command": "true"}, "v2": {"command": "true"}},
        },
    },
    "policies": {"catalog": {"faults": [{"abort": 503, "match": {"path": "/slow"}}]}},
    "authorization": [
        {"name": "readers", "service": "catalog", "action": "allow", "from": ["frontend"]},
    ],
}


def problems(value: Any, hint: Any, where: str = "$") -> list[str]:
    """Where ``value`` (decoded JSON) does not fit ``hint``; none if it fits."""
    if hint is Any or hint is object:
        return []
    if is_typeddict(hint):
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not an object"]
        hints = get_type_hints(hint, include_extras=True)
        optional = {k for k, v in hints.items() if get_origin(v) is typing.NotRequired}
        hints = {k: get_args(v)[0] if k in optional else v for k, v in hints.items()}
        required = hints.keys() - optional
        found = [f"{where}: no key {key!r}" for key in required - value.keys()]
        found += [f"{where}: an unknown key {key!r}" for key in value.keys() - hints.keys()]
        for key in value.keys() & hints.keys():
            found += problems(value[key], hints[key], f"{where}.{key}")
        return found
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        arms = [problems(value, arm, where) for arm in args]
        return [] if any(not arm for arm in arms) else [f"{where}: {value!r} is not {hint}"]
    if origin is Literal:
        return [] if value in args else [f"{where}: {value!r} is not one of {args}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not a list"]
        return [p for i, item in enumerate(value) for p in problems(item, args[0], f"{where}[{i}]")]
    if origin is tuple:  # a pair on the wire: a list of its length
        if not isinstance(value, list) or len(value) != len(args):
            return [f"{where}: {value!r} is not a list of {len(args)}"]
        return [p for i, arm in enumerate(args) for p in problems(value[i], arm, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not an object"]
        return [p for k, item in value.items() for p in problems(item, args[1], f"{where}.{k}")]
    if hint is type(None):
        return [] if value is None else [f"{where}: {value!r} is not null"]
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{where}: {value!r} is not a number"]
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where}: {value!r} is not a whole number"]
    if hint in (str, bool):
        return [] if isinstance(value, hint) else [f"{where}: {value!r} is not a {hint.__name__}"]
    raise AssertionError(f"{where}: the checker does not know {hint}")


def wire(value: object) -> Any:
    """As a client reads it."""
    return json.loads(json.dumps(value))


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ts": NOW - 2,
        "direction": "outbound",
        "source": "frontend",
        "destination": "catalog",
        "version": "v1",
        "instance": "catalog-v1-1",
        "status": 200,
        "latency_ms": 12.0,
        "method": "GET",
        "path": "/items",
        "error": None,
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "retries": 0,
    }
    base.update(changes)
    return base


@pytest.fixture
def api(tmp_path: Path) -> ControlPlaneAPI:
    mesh = Mesh(StateStore(tmp_path / "state.json"), clock=lambda: NOW)
    mesh.apply_project(PROJECT)
    mesh.set_split("catalog", {"v1": 90, "v2": 10})
    mesh.add_fault("catalog", {"delay": {"fixed": "1s", "percent": 50}}, "2m")
    mesh.add_rule({"service": "catalog", "action": "deny", "paths": ["/admin/*"]})
    mesh.set_mtls("catalog", "strict")
    frontend = Proxy("frontend", "default", "frontend-1", "sidecar", "127.0.0.1:1", health="ready")
    mesh.connect(frontend)
    mesh.connect(Proxy("catalog", "v1", "catalog-v1-1", "sidecar", "127.0.0.1:2", health="ready"))
    mesh.report_breakers(
        frontend,
        {
            "catalog": {
                "state": "open",
                "instance": "catalog-v1-1",
                "reason": "5 consecutive 5xx",
                "retry_in": 3.0,
                "ejected": 1,
                "half_open": 0,
                "total": 2,
                "ejections": 1,
                "panic": False,
            }
        },
    )
    control = ControlPlaneAPI(mesh, "token")
    control.ingest(
        [
            record(),
            record(status=503, error="upstream-5xx", fault="abort", span_id="ef" * 8),
            record(direction="inbound", mtls=True, authz="deny:readers"),
        ]
    )
    return control


@pytest.mark.parametrize("history", [False, True])
def test_the_status_is_what_its_type_says(api: ControlPlaneAPI, history: bool) -> None:
    status = wire(statusview.status(api.mesh, 10, history=history))
    catalog = status["services"][1]
    assert status["edges"], "traffic to check"
    assert catalog["instances"], "instances to check"
    assert catalog["authz"], "rules to check"
    assert status["faults"], "faults to check"
    assert ("history" in status["edges"][0]) is history
    assert ("breaker_history" in status["edges"][0]) is history
    assert problems(status, payloads.Status) == []


async def test_each_event_is_what_its_type_says(api: ControlPlaneAPI) -> None:
    await api.publish()  # the snapshot of the mesh as the fixture made it
    subscriber = api.events.subscribe()
    api._tick(NOW)  # the per-second status
    assert not await api.publish(), "nothing changed: no config event"
    api.mesh.set_split("catalog", {"v1": 50, "v2": 50})
    await api.publish()  # the routes changed: a config event
    frontend = api.mesh.proxies["frontend-1"]
    for event in api.mesh.report_breakers(frontend, {"catalog": {"state": "closed"}}):
        api.events.publish(event)  # as the sidecars' links do
    events = [wire(await subscriber.next()) for _ in range(3)]
    assert [e["type"] for e in events] == ["status", "config", "breaker"]
    for event in events:
        assert problems(event, payloads.Event) == [], event["type"]


async def test_the_tap_s_messages_are_what_their_types_say(api: ControlPlaneAPI) -> None:
    tap = api.tap.subscribe(TapFilter())
    api.ingest([record()])
    messages = [wire(await tap.next()), wire(tap.report())]
    assert [m["type"] for m in messages] == ["request", "stats"]
    for message in messages:
        assert problems(message, payloads.TapMessage) == []


def test_the_runtime_changes_are_what_their_types_say(api: ControlPlaneAPI) -> None:
    mesh = api.mesh
    assert (
        problems(wire({"faults": [f.to_json(NOW) for f in mesh.faults()]}), payloads.Faults) == []
    )
    assert problems(wire({"rules": [r.to_json() for r in mesh.rules()]}), payloads.Rules) == []
    assert problems(wire({"modes": mesh.mtls_modes()}), payloads.MtlsModes) == []
    split = {"service": "catalog", "split": mesh.split_for("catalog")}
    assert problems(wire(split), payloads.SplitAnswer) == []


def test_the_traces_are_what_their_types_say(api: ControlPlaneAPI) -> None:
    [trace] = api.traces.recent()
    assert problems(wire({"traces": [trace.summary()]}), payloads.Traces) == []
    assert problems(wire(trace.to_json()), payloads.Trace) == []


def test_the_certs_are_what_their_type_says(tmp_path: Path) -> None:
    identities = Identities(tmp_path / "ca", clock=lambda: NOW)
    assert problems(wire(identities.to_json()), payloads.Certs) == [], "before any"
    identities.issue("shop", "catalog", "catalog-v1-1")
    certs = wire(identities.to_json())
    assert certs["ca"]
    assert certs["identities"]
    assert problems(certs, payloads.Certs) == []


class Shape(typing.TypedDict):
    n: int
    s: typing.NotRequired[str | None]


def test_the_optional_keys_are_known_at_run_time_too() -> None:
    """What a client sees of them when it checks a payload (``payloads`` has no postponed
    annotations, which would hide ``NotRequired``)."""
    assert payloads.Edge.__optional_keys__ == {"history", "breaker_history"}
    assert payloads.Error.__optional_keys__ == {"problems"}
    assert payloads.Rule.__optional_keys__ == {"from", "paths", "methods"}


def test_the_checker_sees_a_missing_key_an_unknown_one_and_a_wrong_type() -> None:
    assert problems({"n": 1}, Shape) == []
    assert problems({"n": True, "x": 1}, Shape) == [
        "$: an unknown key 'x'",
        "$.n: True is not a whole number",
    ]
    assert problems({"s": 2}, Shape) == ["$: no key 'n'", "$.s: 2 is not str | None"]
