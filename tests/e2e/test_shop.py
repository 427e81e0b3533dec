"""The shop recipe, run the way a user runs it: up, traffic, status, down."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from typing import Any

import pytest

from tests.e2e.conftest import ProjectFactory, port_open, processes_in

pytestmark = pytest.mark.e2e

REQUESTS = 40
# The test talks to the mesh directly, whatever proxy settings the machine has.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str) -> Any:
    with DIRECT.open(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def edges_by_pair(status: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["source"], e["destination"]): e for e in status["edges"]}


def test_shop_up_serves_counts_every_request_and_down_leaves_nothing(
    projects: ProjectFactory,
) -> None:
    shop = projects.recipe("shop")
    up = shop.cli("up", "--detach", "--runtime", "local")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "ready" in up.stdout
    assert shop.url in up.stdout

    versions = [get_json(shop.url + "/")["catalog_version"] for _ in range(REQUESTS)]
    assert set(versions) == {"v1", "v2"}, "round robin over catalog's two versions"

    deadline = time.monotonic() + 10
    while True:
        status = shop.status()
        edges = edges_by_pair(status)
        counted = [
            edges.get(pair, {}).get("requests", 0)
            for pair in (("frontend", "catalog"), ("catalog", "pricing"))
        ]
        # Rates cover whole seconds: the one the requests ended in must be over too.
        rated = all(edges.get(pair, {}).get("rps", 0) > 0 for pair in edges)
        if (min(counted) >= REQUESTS and rated) or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    for pair in (("ingress", "frontend"), ("frontend", "catalog"), ("catalog", "pricing")):
        edge = edges[pair]
        assert edge["requests"] == REQUESTS, (pair, edge)
        assert edge["errors"] == 0, (pair, edge)
        assert edge["success_rate"] == 1.0
        assert 0 < edge["p50_ms"] <= edge["p99_ms"]
        assert edge["rps"] > 0

    services = {s["name"]: s for s in status["services"]}
    assert list(services) == ["frontend", "catalog", "pricing"]
    assert services["frontend"]["url"] == shop.url
    assert services["catalog"]["url"] is None
    catalog = services["catalog"]["instances"]
    assert [(i["id"], i["version"], i["state"]) for i in catalog] == [
        ("catalog-v1-1", "v1", "ready"),
        ("catalog-v2-1", "v2", "ready"),
    ]
    served = sum(i["served"]["requests"] for i in catalog)
    assert served == REQUESTS, "the catalog instances' inbound records agree with the edge"

    # Everything that listened and ran, as the runtime recorded it.
    runtime = shop.runtime()
    ports = [port for proc in runtime["processes"] for port in proc["ports"]]
    assert shop.expose in ports
    assert len(ports) >= 1 + 4 * 3 + 1  # control plane, 4 x (app, inbound, outbound), gateway
    assert processes_in(shop.dir)

    down = shop.cli("down")
    assert down.returncode == 0, down.stderr
    assert processes_in(shop.dir) == []
    assert [p for p in ports if port_open(p)] == []
    assert not (shop.dir / ".devmesh" / "runtime.json").exists()


def test_nothing_listens_beyond_loopback(projects: ProjectFactory) -> None:
    shop = projects.recipe("shop")
    assert shop.cli("up", "--detach", "--runtime", "local").returncode == 0
    pids = set(processes_in(shop.dir))
    listening = _listening_sockets(pids)
    assert listening, "the mesh should be listening somewhere"
    assert {addr for addr, _ in listening} == {"127.0.0.1"}, listening


def _listening_sockets(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets in LISTEN state owned by ``pids`` (Linux /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            for fd in os.listdir(fd_dir):
                target = os.readlink(f"{fd_dir}/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and inode in inodes:  # 0A = LISTEN
                    host_hex, port_hex = local.split(":")
                    if len(host_hex) == 8:
                        host = ".".join(str(int(host_hex[i : i + 2], 16)) for i in (6, 4, 2, 0))
                    else:
                        host = "::" if set(host_hex) == {"0"} else host_hex
                    found.append((host, int(port_hex, 16)))
    return found
