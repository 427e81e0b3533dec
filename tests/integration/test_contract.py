"""The sidecar's wire contract (``contract/``), checked against what devmesh really sends.

The JSON Schemas in ``contract/`` write down the bootstrap file, the config snapshot, the
link's messages both ways and the telemetry record. Here: every schema is a valid draft
2020-12 schema that describes each of its properties; snapshots the real control plane
builds (splits, every policy, every kind of fault, every mTLS mode, authorization rules)
validate; the messages that cross a real link between a real control plane and real
in-process sidecars validate, a nack, telemetry, breakers and identities among them;
the bootstrap files both runtimes write validate; and snapshots the sidecar refuses the
schema refuses too (what a schema cannot say is listed, and checked, apart).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from devmesh.config import parse_project
from devmesh.controlplane import sidecars
from devmesh.controlplane.mesh import Mesh, Proxy
from devmesh.controlplane.roster import Roster
from devmesh.controlplane.store import StateStore
from devmesh.plan import plan_instances
from devmesh.runtime.bootstraps import app_port_for, sidecar_bootstrap, write_bootstrap
from devmesh.runtime.docker.topology import MeshSettings, desired_containers
from devmesh.workspace import Workspace
from proxy.bootstrap import BOOTSTRAP_ENV, Bootstrap, BootstrapError, GatewayListener
from proxy.snapshot import SnapshotError, parse_snapshot, snapshot_to_wire
from proxy.websocket import WebSocket
from tests.integration.meshkit import (
    ControlPlane,
    all_synced,
    call_through,
    serve,
    sidecar,
    wait_until,
)

CONTRACT = Path(__file__).resolve().parents[2] / "contract"
NAMES = ("bootstrap", "snapshot", "to-sidecar", "from-sidecar", "telemetry-record")
SCHEMAS: dict[str, dict[str, Any]] = {
    name: json.loads((CONTRACT / f"{name}.schema.json").read_text()) for name in NAMES
}
REGISTRY: Registry[Any] = Registry().with_resources(
    (schema["$id"], DRAFT202012.create_resource(schema)) for schema in SCHEMAS.values()
)


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(SCHEMAS[name], registry=REGISTRY)


def problems(name: str, instance: object) -> list[str]:
    """What the schema ``name`` finds wrong with ``instance`` (empty: it is valid)."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator(name).iter_errors(instance)
    ]


def wire(value: object) -> Any:
    """``value`` as it crosses a wire: through JSON and back."""
    return json.loads(json.dumps(value))


# -- the schemas themselves ---------------------------------------------------------------


def _objects(node: object, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from _objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _objects(value, f"{where}/{index}")


@pytest.mark.parametrize("name", NAMES)
def test_each_schema_is_a_draft_2020_12_schema_that_says_what_each_property_means(
    name: str,
) -> None:
    schema = SCHEMAS[name]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/{name}.schema.json")
    assert schema["title"]
    assert schema["description"]
    undescribed = [
        f"{where}/properties/{key}"
        for where, node in _objects(schema, "")
        if isinstance(node.get("properties"), dict)
        and where.rpartition("/")[2] != "properties"
        and "/allOf/" not in where  # the conditions between fields, not the fields
        for key, prop in node["properties"].items()
        if not (isinstance(prop, dict) and prop.get("description"))
    ]
    assert undescribed == []


# -- snapshots the real control plane builds ------------------------------------------------

RICH_PROJECT: dict[str, Any] = {
    "name": "shop",
    "mtls": "strict",
    "services": {
        "frontend": {"command": "true", "port": 8000, "mtls": "off", "depends_on": ["catalog"]},
        "catalog": {
            "port": 8000,
            "mtls": "permissive",
            "replicas": 2,
            "versions": {"v1": {"command": "true"}, "v2": {"command": "true", "replicas": 1}},
        },
        "pricing": {"command": "true", "port": 8000},
        "stock": {"command": "true", "port": 8000, "expose": 8080},
    },
    "policies": {
        "catalog": {
            "timeout": "2s",
            "retries": {
                "attempts": 3,
                "per_try_timeout": "500ms",
                "retry_on": ["5xx", "gateway-error", "reset", "connect-failure"],
            },
            "breaker": {
                "consecutive_5xx": 3,
                "interval": "5s",
                "base_ejection_time": "10s",
                "max_ejection_time": "1m",
                "max_ejection_percent": 50,
                "panic_threshold": 0,
            },
            "pool": {"max_connections": 10, "max_pending": 5, "max_requests": 20},
            "lb": "least-request",
            "split": {"v1": 90, "v2": 10},
            "faults": [
                {
                    "delay": {"fixed": "100ms", "jitter": "20ms", "percent": 50},
                    "match": {
                        "path": "/items",
                        "method": "GET",
                        "headers": {"x-test": "1"},
                        "source": "frontend",
                    },
                },
                {"abort": {"http_status": 503, "percent": 20}},
                {"abort": {"reset": True, "percent": 5}},
                {"bandwidth": 1000},
                {"hang": "3s"},
            ],
        },
        "pricing": {"timeout": "1s", "retries": {"attempts": 2}},
    },
    "authorization": [
        {
            "name": "readers",
            "service": "catalog",
            "action": "allow",
            "from": ["frontend"],
            "methods": ["GET"],
            "paths": ["/items/*", "*.json", "/health"],
        },
        {"name": "no-admin", "service": "catalog", "action": "deny", "paths": ["/admin"]},
        {"name": "try-out", "service": "pricing", "action": "deny", "mode": "audit", "from": ["*"]},
    ],
}


def _rich_mesh(folder: Path) -> Mesh:
    mesh = Mesh(StateStore(folder / "state.json"), roster=Roster(folder / "roster.json"))
    mesh.apply_project(RICH_PROJECT)
    project = parse_project(RICH_PROJECT)
    for port, spec in enumerate(plan_instances(project), start=41000):
        health = "starting" if spec.id == "catalog-v1-2" else "ready"
        address = f"127.0.0.1:{port}"
        mesh.connect(Proxy(spec.service, spec.version, spec.id, "sidecar", address, health=health))
    mesh.connect(Proxy("ingress", "default", "ingress", "gateway", None, health="ready"))
    return mesh


def _snapshots() -> Iterator[tuple[str, dict[str, Any]]]:
    """The wire form of snapshots the real control plane builds, as the mesh changes."""
    with tempfile.TemporaryDirectory() as folder:
        mesh = _rich_mesh(Path(folder))
        mesh.rebuild()
        yield "from devmesh.yaml", snapshot_to_wire(mesh.snapshot)
        mesh.set_split("catalog", {"v1": 33.3, "v2": 66.7})
        mesh.set_policy(
            "pricing",
            {
                "lb": "least-request",
                "breaker": {"consecutive_5xx": 1, "max_ejection_percent": 100},
                "pool": {"max_pending": 1},
            },
        )
        mesh.add_fault("pricing", {"delay": "50ms"}, "2m")
        mesh.add_fault("pricing", {"abort": 502, "match": {"path": "/x", "source": "catalog"}}, 30)
        mesh.add_fault("stock", {"abort": {"reset": True}}, None)
        mesh.add_fault("stock", {"hang": "1s", "match": {"headers": {"x-a": "b"}}}, None)
        mesh.add_fault("stock", {"bandwidth": 10, "delay": {"fixed": "1s", "percent": 10}}, None)
        mesh.add_rule(
            {"name": "gate", "service": "stock", "action": "allow", "from": ["ingress", "*"]}
        )
        mesh.set_mtls("pricing", "off")
        mesh.set_mtls("stock", "permissive")
        mesh.rebuild()
        yield "with runtime changes", snapshot_to_wire(mesh.snapshot)
        mesh.clear_split("catalog")
        mesh.reset_faults(None)
        mesh.set_mtls(None, "off")
        mesh.rebuild()
        yield "with them undone", snapshot_to_wire(mesh.snapshot)
        empty = Mesh(StateStore(Path(folder) / "other.json"))
        yield "with no project", snapshot_to_wire(empty.snapshot)


SNAPSHOTS = list(_snapshots())


def test_the_built_snapshots_hold_every_part_of_the_schema() -> None:
    """The snapshots below are worth checking: between them they use every key."""
    text = json.dumps([snapshot for _, snapshot in SNAPSHOTS])
    for key in (
        '"split"', '"versions"', '"timeout"', '"retries"', '"per_try_timeout"', '"outlier"',
        '"pool"', '"least-request"', '"jitter"', '"delay_percent"', '"abort_status"',
        '"abort_reset"', '"abort_percent"', '"bandwidth"', '"hang"', '"expires_at"',
        '"path_prefix"', '"method"', '"headers"', '"source"', '"strict"', '"off"', '"authz"',
        '"audit"', '"sources"', '"paths"', '"methods"', '"deny"', '"allow"',
    ):  # fmt: skip
        assert key in text, key
    assert '"mtls": "permissive"' not in text, "permissive is the default, left out"


@pytest.mark.parametrize(("what", "snapshot"), SNAPSHOTS, ids=[w for w, _ in SNAPSHOTS])
def test_a_snapshot_the_control_plane_builds_matches_the_schema(
    what: str, snapshot: dict[str, Any]
) -> None:
    assert problems("snapshot", wire(snapshot)) == []
    parse_snapshot(wire(snapshot))  # and the sidecar takes it


# -- what the sidecar refuses, the schema refuses ------------------------------------------

EXAMPLES = json.loads((CONTRACT / "examples" / "snapshots.json").read_text())
"""Cases both sidecars are held to: the Rust sidecar's tests read the same file."""


def _cases(kind: str) -> list[Any]:
    return [pytest.param(case, id=case["what"]) for case in EXAMPLES[kind]]


@pytest.mark.parametrize("case", _cases("refused"))
def test_a_snapshot_the_sidecar_refuses_the_schema_refuses(case: dict[str, Any]) -> None:
    with pytest.raises(SnapshotError) as refused:
        parse_snapshot(case["snapshot"])
    assert str(refused.value) == case["error"]
    assert problems("snapshot", case["snapshot"]), f"the schema takes: {case['what']}"


@pytest.mark.parametrize("case", _cases("accepted"))
def test_a_snapshot_the_sidecar_takes_the_schema_takes(case: dict[str, Any]) -> None:
    parse_snapshot(case["snapshot"])
    assert problems("snapshot", case["snapshot"]) == []


@pytest.mark.parametrize("case", _cases("beyond_the_schema"))
def test_what_the_schema_cannot_say_only_the_sidecar_refuses(case: dict[str, Any]) -> None:
    """Listed in contract/README.md: a schema can check neither sums nor uniqueness under a
    transformation, and JSON Schema counts 7.0 as an integer (Python does not)."""
    with pytest.raises(SnapshotError) as refused:
        parse_snapshot(case["snapshot"])
    assert str(refused.value) == case["error"]
    assert problems("snapshot", case["snapshot"]) == []


def test_every_kind_of_example_is_there() -> None:
    assert {k: len(EXAMPLES[k]) > 3 for k in ("refused", "accepted", "beyond_the_schema")} == {
        "refused": True,
        "accepted": True,
        "beyond_the_schema": True,
    }


# -- the link, both ways, on a real control plane with real sidecars ------------------------


async def test_every_message_on_a_real_link_matches_the_contract(
    controlplane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What crosses the sidecars' WebSockets, recorded at the sidecar's end: the control
    plane's snapshots (one spoilt on purpose, which the sidecars nack), identities, a hold
    and a release; the sidecars' hellos, health, telemetry, acks and the nack, breakers,
    identity-acks, held, released and leaving."""
    from_sidecar: list[str] = []
    to_sidecar: list[str] = []
    send_text, receive = WebSocket.send_text, WebSocket.receive

    async def recording_send(self: WebSocket, text: str) -> None:
        from_sidecar.append(text)
        await send_text(self, text)

    async def recording_receive(self: WebSocket) -> str | None:
        text = await receive(self)
        if text is not None:
            to_sidecar.append(text)
        return text

    monkeypatch.setattr(WebSocket, "send_text", recording_send)
    monkeypatch.setattr(WebSocket, "receive", recording_receive)
    spoil = False
    snapshot_to_wire = sidecars.snapshot_to_wire

    def maybe_spoilt(snapshot: Any) -> dict[str, Any]:
        sent = snapshot_to_wire(snapshot)
        if spoil:
            sent["routes"]["catalog"]["policy"] = {"lb": "random"}
        return sent

    monkeypatch.setattr(sidecars, "snapshot_to_wire", maybe_spoilt)

    def sent(kind: str) -> list[dict[str, Any]]:
        return [m for m in map(json.loads, from_sidecar) if m.get("type") == kind]

    async def failing_app(request: web.BaseRequest) -> web.Response:
        return web.Response(status=500, text="down")

    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(controlplane.client())
        await client.set_policy("catalog", {"breaker": {"consecutive_5xx": 1}})
        port = await stack.enter_async_context(serve(failing_app))
        await stack.enter_async_context(
            sidecar(controlplane, "catalog-v1-1", "catalog", "v1", port)
        )
        frontend = await stack.enter_async_context(
            sidecar(controlplane, "frontend-1", "frontend", "default", None)
        )
        await wait_until(lambda: all_synced(client, 2), "both sidecars hold the snapshot")
        await wait_until(lambda: len(sent("identity-ack")) == 2, "both installed an identity")

        assert (await call_through(frontend, "catalog"))[0] == 500
        await wait_until(
            lambda: any(
                b["state"] == "open" for m in sent("breakers") for b in m["breakers"].values()
            ),
            "the frontend reports the breaker to catalog open",
        )
        await wait_until(
            lambda: (
                {r["direction"] for m in sent("telemetry") for r in m["records"]}
                == {"inbound", "outbound"}
            ),
            "records of both ends of the call",
        )

        spoil = True
        await client.set_split("catalog", {"v1": 100, "v2": 0})
        await wait_until(lambda: len(sent("nack")) == 2, "both sidecars nack the spoilt one")
        spoil = False
        await client.clear_split("catalog")
        await wait_until(lambda: all_synced(client, 2), "both take the next one")

        assert await client.hold("catalog-v1-1") == 0
        await client.release("catalog-v1-1")
        await wait_until(lambda: bool(sent("released")), "the hold's end is reported")
    assert len(sent("leaving")) == 2, "each sidecar said it was leaving"

    kinds_from = {json.loads(m)["type"] for m in from_sidecar}
    assert kinds_from == {
        "hello", "health", "telemetry", "ack", "nack", "breakers", "identity-ack", "leaving",
        "held", "released",
    }  # fmt: skip
    for text in from_sidecar:
        assert problems("from-sidecar", json.loads(text)) == [], text

    kinds_to = {json.loads(m)["type"] for m in to_sidecar}
    assert kinds_to == {"snapshot", "identity", "hold", "release"}
    refused = []
    for text in to_sidecar:
        message = json.loads(text)
        found = problems("to-sidecar", message)
        if message["type"] == "snapshot" and message["snapshot"]["routes"]["catalog"].get(
            "policy"
        ) == {"lb": "random"}:
            refused.append(message["snapshot"]["version"])
            assert found, "the schema refuses the snapshot the sidecars nacked"
        else:
            assert found == [], text
    assert sorted(refused) == sorted(m["version"] for m in sent("nack"))
    assert all("lb must be one of" in m["error"] for m in sent("nack"))


# -- bootstrap files ------------------------------------------------------------------------

RUNTIME_PROJECT: dict[str, Any] = {
    "name": "shop",
    "services": {
        "frontend": {"command": "true", "port": 8000, "expose": 8080, "health": {"path": "/h"}},
        "catalog": {
            "port": 8000,
            "versions": {"v1": {"command": "true"}, "v2": {"command": "true"}},
        },
        "db": {"image": "postgres:16", "port": 5432, "protocol": "tcp", "expose": 5432},
        "worker": {"command": "true"},
    },
}


def test_the_bootstrap_files_the_local_runtime_writes_match_the_schema(tmp_path: Path) -> None:
    """As ``LocalRuntime._start_proxies`` writes them: first with ports 0, then again with
    the ports bound."""
    project = parse_project(RUNTIME_PROJECT)
    workspace = Workspace(tmp_path)
    workspace.ensure()
    url = "http://127.0.0.1:41000"
    boots = [
        sidecar_bootstrap(
            workspace,
            spec.id,
            spec.service,
            spec.version,
            url,
            app_port=app_port_for(project, spec),
            health_path=spec.health.path,
        )
        for spec in plan_instances(project)
    ]
    boots.append(
        sidecar_bootstrap(
            workspace,
            "ingress",
            "ingress",
            "default",
            url,
            role="gateway",
            gateway=(GatewayListener(8080, "frontend"),),
        )
    )
    boots += [replace(boot, inbound_port=41001, outbound_port=41002) for boot in boots]
    assert any(boot.health_path is None for boot in boots)
    for boot in boots:
        data = json.loads(write_bootstrap(boot).read_text())
        assert problems("bootstrap", data) == [], data
        assert Bootstrap.from_dict(data) == boot


def test_the_bootstraps_the_docker_runtime_passes_match_the_schema() -> None:
    project = parse_project(RUNTIME_PROJECT)
    settings = MeshSettings(
        project_dir="/home/dev/shop",
        network="devmesh-shop",
        sidecar_image="devmesh-sidecar:0.1.0",
        controlplane_url="http://host.docker.internal:41000",
        token="t0ken",
    )
    images = {spec.id: f"sha256:{spec.id}" for spec in plan_instances(project)}
    boots = [
        json.loads(spec.env[BOOTSTRAP_ENV])
        for spec in desired_containers(project, images, settings)
        if BOOTSTRAP_ENV in spec.env
    ]
    assert {boot["role"] for boot in boots} == {"sidecar", "gateway"}
    for data in boots:
        assert problems("bootstrap", data) == [], data
        Bootstrap.from_dict(data)


@pytest.mark.parametrize(
    ("what", "data"),
    [
        ("no service", {"version": "v1", "instance": "i", "control_plane": "u", "state_dir": "."}),
        ("unknown role", {"service": "s", "version": "v1", "instance": "i", "control_plane": "u",
                          "state_dir": ".", "role": "mesh"}),
        ("gateway without port", {"service": "s", "version": "v1", "instance": "i",
                                  "control_plane": "u", "state_dir": ".",
                                  "gateway": [{"service": "web"}]}),
        ("port as a word", {"service": "s", "version": "v1", "instance": "i",
                            "control_plane": "u", "state_dir": ".", "inbound_port": "any"}),
    ],
)  # fmt: skip
def test_a_bootstrap_the_sidecar_refuses_the_schema_refuses(what: str, data: object) -> None:
    with pytest.raises(BootstrapError):
        Bootstrap.from_dict(data)
    assert problems("bootstrap", data), f"the schema takes a bootstrap with {what}"


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("from-sidecar", {"type": "hello", "snapshot_version": 0}),
        ("from-sidecar", {"type": "health", "state": "dead", "detail": ""}),
        ("from-sidecar", {"type": "ack", "version": 7, "extra": 1}),
        ("from-sidecar", {"type": "telemetry", "records": [{"ts": 1.0}], "dropped": 0}),
        ("from-sidecar", {"type": "goodbye"}),
        ("from-sidecar", {"type": "held"}),
        ("to-sidecar", {"type": "identity", "cert": "c", "key": "k", "ca": "a"}),
        ("to-sidecar", {"type": "snapshot"}),
        ("to-sidecar", {"type": "restart"}),
        ("to-sidecar", {"snapshot": {"version": 1}}),
    ],
)
def test_a_message_off_the_contract_is_refused_by_its_schema(
    schema: str, message: dict[str, Any]
) -> None:
    assert problems(schema, message)


def _boot(**fields: Any) -> dict[str, Any]:
    base = {"service": "s", "version": "v1", "instance": "i", "control_plane": "u"}
    return {**base, "state_dir": ".", **fields}


@pytest.mark.parametrize(
    ("what", "schema", "data"),
    [
        ("a port as text", "bootstrap", _boot(inbound_port="8080")),
        ("a port as a boolean", "bootstrap", _boot(outbound_port=True)),
        ("a port out of range", "bootstrap", _boot(app_port=70000)),
        ("a service as a number", "bootstrap", _boot(service=7)),
        ("a health path as a number", "bootstrap", _boot(health_path=7)),
    ],
)
def test_where_the_schema_is_stricter_than_the_sidecar(
    what: str, schema: str, data: dict[str, Any]
) -> None:
    """Listed in contract/README.md: the Python sidecar coerces these; the contract does not
    promise that it will."""
    Bootstrap.from_dict(data)
    assert problems(schema, data), f"the schema takes {what}"
