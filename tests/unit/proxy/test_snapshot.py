"""proxy.snapshot: the wire schema a sidecar accepts, and the last good snapshot on disk."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from proxy.snapshot import (
    Endpoint,
    Route,
    Snapshot,
    SnapshotError,
    load_snapshot,
    parse_snapshot,
    save_snapshot,
    snapshot_to_wire,
)

WIRE: dict[str, Any] = {
    "version": 7,
    "routes": {
        "catalog": {
            "endpoints": [
                {"instance": "catalog-v1-1", "version": "v1", "address": "127.0.0.1:41234"},
                {"instance": "catalog-v2-1", "version": "v2", "address": "localhost:41235"},
            ],
            "split": {"v1": 90, "v2": 10},
        },
        "pricing": {
            "endpoints": [
                {"instance": "pricing-1", "version": "default", "address": "10.0.0.2:8000"}
            ]
        },
        "idle": {"endpoints": []},
    },
}


def wire(**changes: Any) -> dict[str, Any]:
    """A deep copy of ``WIRE``; ``changes`` maps a dotted path (``routes.catalog.split``) to a
    new value, or to ``...`` to delete the key."""
    data = copy.deepcopy(WIRE)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        key_or_index: Any = int(last) if last.isdigit() else last
        if value is ...:
            del node[key_or_index]
        else:
            node[key_or_index] = value
    return data


def test_parse_builds_the_typed_snapshot() -> None:
    snap = parse_snapshot(WIRE)
    assert snap.version == 7
    assert set(snap.routes) == {"catalog", "pricing", "idle"}
    catalog = snap.routes["catalog"]
    assert catalog.endpoints[0] == Endpoint("catalog-v1-1", "v1", "127.0.0.1:41234")
    assert (catalog.endpoints[1].host, catalog.endpoints[1].port) == ("localhost", 41235)
    assert catalog.split == {"v1": 90.0, "v2": 10.0}
    assert snap.routes["pricing"].split is None
    assert snap.routes["idle"] == Route()


def test_to_wire_then_parse_round_trips() -> None:
    snap = parse_snapshot(WIRE)
    wired = snapshot_to_wire(snap)
    assert json.loads(json.dumps(wired)) == wired
    assert parse_snapshot(wired) == snap
    assert wired == WIRE  # ints and floats compare equal; nothing is added or lost


def test_versions_of_a_route_are_carried() -> None:
    wire = {"version": 1, "routes": {"catalog": {"endpoints": [], "versions": ["v1", "v2"]}}}
    snap = parse_snapshot(wire)
    assert snap.routes["catalog"].versions == ("v1", "v2")
    assert snapshot_to_wire(snap) == wire
    with pytest.raises(SnapshotError, match=r"snapshot.routes.catalog.versions must be a list"):
        parse_snapshot({"version": 1, "routes": {"catalog": {"versions": "v1"}}})


def test_routes_may_be_omitted() -> None:
    assert parse_snapshot({"version": 0}) == Snapshot(version=0)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (wire(version=-1), "snapshot.version"),
        (wire(version=True), "snapshot.version"),
        (wire(version=1.5), "snapshot.version"),
        (wire(version="7"), "snapshot.version"),
        (wire(version=...), "snapshot.version"),
        ([], "snapshot"),
        (wire(routes=[]), "snapshot.routes"),
        (wire(**{"routes.catalog": "x"}), "snapshot.routes.catalog"),
        (wire(**{"routes.catalog.endpoints": {}}), "snapshot.routes.catalog.endpoints"),
        (wire(**{"routes.catalog.endpoints.0": "a"}), "snapshot.routes.catalog.endpoints[0]"),
        (
            wire(**{"routes.catalog.endpoints.1.address": "nohost"}),
            "snapshot.routes.catalog.endpoints[1].address",
        ),
        (
            wire(**{"routes.catalog.endpoints.0.address": "h:0"}),
            "snapshot.routes.catalog.endpoints[0].address",
        ),
        (
            wire(**{"routes.catalog.endpoints.0.address": "h:99999"}),
            "snapshot.routes.catalog.endpoints[0].address",
        ),
        (
            wire(**{"routes.catalog.endpoints.0.address": ":80"}),
            "snapshot.routes.catalog.endpoints[0].address",
        ),
        (
            wire(**{"routes.catalog.endpoints.0.address": "h:8o"}),
            "snapshot.routes.catalog.endpoints[0].address",
        ),
        (
            wire(**{"routes.catalog.endpoints.0.instance": ""}),
            "snapshot.routes.catalog.endpoints[0].instance",
        ),
        (
            wire(**{"routes.catalog.endpoints.0.version": ...}),
            "snapshot.routes.catalog.endpoints[0].version",
        ),
        (
            wire(**{"routes.catalog.endpoints.0.address": 8000}),
            "snapshot.routes.catalog.endpoints[0].address",
        ),
        (wire(**{"routes.catalog.split": {"v1": 90, "v2": 20}}), "snapshot.routes.catalog.split"),
        (wire(**{"routes.catalog.split": {"v1": 50}}), "snapshot.routes.catalog.split"),
        (
            wire(**{"routes.catalog.split": {"v1": 110, "v2": -10}}),
            "snapshot.routes.catalog.split.v2",
        ),
        (
            wire(**{"routes.catalog.split": {"v1": 100, "v2": False}}),
            "snapshot.routes.catalog.split.v2",
        ),
        (
            wire(**{"routes.catalog.split": {"v1": "90", "v2": 10}}),
            "snapshot.routes.catalog.split.v1",
        ),
        (wire(**{"routes.catalog.split": [90, 10]}), "snapshot.routes.catalog.split"),
    ],
)
def test_malformed_snapshot_raises_naming_the_field(data: object, field: str) -> None:
    with pytest.raises(SnapshotError) as caught:
        parse_snapshot(data)
    message = str(caught.value)
    assert message.startswith(field + " "), f"{message!r} does not name {field}"


def test_save_then_load_gives_the_same_snapshot(tmp_path: Path) -> None:
    snap = parse_snapshot(WIRE)
    path = tmp_path / "state" / "snapshot.json"
    save_snapshot(snap, path)
    assert load_snapshot(path) == snap
    assert [p.name for p in path.parent.iterdir()] == ["snapshot.json"]


def test_save_replaces_the_previous_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    save_snapshot(parse_snapshot(WIRE), path)
    save_snapshot(Snapshot(version=8), path)
    assert load_snapshot(path) == Snapshot(version=8)


def test_load_of_a_missing_file_is_none(tmp_path: Path) -> None:
    assert load_snapshot(tmp_path / "absent.json") is None


def test_load_of_a_torn_file_is_none(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    text = json.dumps(WIRE)
    path.write_text(text[: len(text) // 2])
    assert load_snapshot(path) is None


@pytest.mark.parametrize(
    "content", [b"", b"\xff\xfe\x00garbage", b"[1, 2]", b'{"version": -3}', b"null"]
)
def test_load_of_an_unusable_file_is_none(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "snapshot.json"
    path.write_bytes(content)
    assert load_snapshot(path) is None
