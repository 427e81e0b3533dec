"""An hour of a busy mesh's telemetry, replayed quickly, leaves the control plane's memory flat.

The records go in through the API's own ingest (metrics, tap, traces), with a
tap whose reader never reads, on a simulated clock; the idle-series sweep runs
each simulated second, as the control plane's ticker does. Memory is what
``tracemalloc`` sees allocated by devmesh's own code.
"""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path
from typing import Any

from devmesh.controlplane.api import ControlPlaneAPI
from devmesh.controlplane.mesh import Mesh
from devmesh.controlplane.store import StateStore
from devmesh.controlplane.streams import TapFilter

T0 = 1_700_000_000.0
RATE = 30
"""Requests a simulated second, spread over the edges below."""
EDGES = [("ingress", "frontend"), ("frontend", "catalog"), ("catalog", "pricing")] + [
    (f"svc-{i}", f"svc-{i + 1}") for i in range(12)
]
GROWTH_LIMIT = 0.05
"""The second half-hour may add at most this share to what the first left allocated."""


def records_of_second(second: int, rng: random.Random) -> list[object]:
    made: list[object] = []
    for n in range(RATE):
        source, destination = EDGES[n % len(EDGES)]
        version = rng.choice(("v1", "v2"))
        status = 503 if rng.random() < 0.05 else 200
        trace = f"{rng.getrandbits(128):032x}"
        common: dict[str, Any] = {
            "ts": T0 + second + n / RATE,
            "source": source,
            "destination": destination,
            "version": version,
            "instance": f"{destination}-{version}-1",
            "status": status,
            "latency_ms": rng.lognormvariate(2.0, 1.0),
            "method": "GET",
            "path": f"/items/{rng.randrange(10_000)}",  # many distinct paths
            "error": None,
            "fault": "f1" if status == 503 else None,
            "retries": 0,
            "trace_id": trace,
        }
        made.append({**common, "direction": "outbound", "span_id": f"{n + 1:016x}"})
        made.append({**common, "direction": "inbound", "span_id": f"{n + 1001:016x}"})
    return made


def devmesh_bytes(snapshot: tracemalloc.Snapshot) -> int:
    """What devmesh's code allocated and still holds."""
    only = snapshot.filter_traces([tracemalloc.Filter(True, "*/devmesh/*")])
    return sum(stat.size for stat in only.statistics("filename"))


def test_an_hour_of_traffic_leaves_memory_flat(tmp_path: Path) -> None:
    clock = [T0]
    mesh = Mesh(StateStore(tmp_path / "state.json"), clock=lambda: clock[0])
    api = ControlPlaneAPI(mesh, "token")
    api.tap.subscribe(TapFilter(), rate=1_000_000)  # a reader that never reads
    rng = random.Random(5)
    tracemalloc.start(1)
    try:
        sizes = {}
        for second in range(3600):
            clock[0] = T0 + second
            api.ingest(records_of_second(second, rng))
            mesh.metrics.forget_idle(clock[0])
            if second in (1799, 3599):
                sizes[second] = devmesh_bytes(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
    assert mesh.metrics.records == 3600 * RATE * 2
    growth = (sizes[3599] - sizes[1799]) / sizes[1799]
    assert growth <= GROWTH_LIMIT, f"{sizes[1799]:,} -> {sizes[3599]:,} bytes ({growth:+.1%})"
    assert len(api.traces) == api.traces.capacity
