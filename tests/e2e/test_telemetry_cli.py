"""Watching the shop's traffic from the CLI, as a user does: tap, top, status, trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import MeshProject, ProjectFactory
from tests.e2e.test_shop import get_json

pytestmark = pytest.mark.e2e


def traffic(shop: MeshProject, stop: threading.Event) -> threading.Thread:
    """Requests to the shop, one after another, until ``stop``."""

    def run() -> None:
        while not stop.is_set():
            get_json(shop.url + "/")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def cli_json(shop: MeshProject, *args: str) -> Any:
    result = shop.cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_tap_top_status_and_trace_on_the_shop(projects: ProjectFactory, tmp_path: Path) -> None:
    shop = projects.recipe("shop")
    up = shop.cli("up", "--detach", "--runtime", "local")
    assert up.returncode == 0, up.stdout + up.stderr

    # tap: started first, it sees the requests that follow (one line each, JSON here).
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    argv = [sys.executable, "-m", "devmesh", "-C", str(shop.dir), "tap", "catalog", "--json"]
    tap = subprocess.Popen(
        [*argv, "--count", "5", "--status", "2xx"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    stop = threading.Event()
    sender = traffic(shop, stop)
    try:
        out, err = tap.communicate(timeout=30)
        assert tap.returncode == 0, err
        requests = [json.loads(line) for line in out.splitlines()]
        requests = [r for r in requests if r["type"] == "request"]
        assert len(requests) == 5
        for request in requests:
            assert "catalog" in (request["source"], request["destination"])
            assert 200 <= request["status"] < 300
            assert len(request["trace_id"]) == 32

        # status and top over the last second: the traffic is still flowing.
        def rated() -> dict[str, Any]:
            deadline = time.monotonic() + 10
            while True:
                status = cli_json(shop, "status", "--json", "--window", "1")
                edges = {(e["source"], e["destination"]): e for e in status["edges"]}
                edge = edges.get(("catalog", "pricing"))
                if edge and edge["rps"] > 0:
                    return status
                if time.monotonic() > deadline:
                    pytest.fail("the last second's window never showed the traffic")
                time.sleep(0.2)

        status = rated()
        assert status["window_s"] == 1
        catalog = {s["name"]: s for s in status["services"]}["catalog"]
        assert catalog["traffic"]["window"]["requests"] > 0, "the last second had traffic"
        assert catalog["traffic"]["rps"] == catalog["traffic"]["window"]["requests"]
        assert set(catalog["by_version"]) == {"v1", "v2"}
        top = cli_json(shop, "top", "--json", "--sort", "latency")
        assert {(e["source"], e["destination"]) for e in top} >= {
            ("ingress", "frontend"),
            ("frontend", "catalog"),
            ("catalog", "pricing"),
        }
        p99s = [e["p99_ms"] or 0 for e in top]
        assert p99s == sorted(p99s, reverse=True)
        plain = shop.cli("top", "--once")
        assert plain.returncode == 0, plain.stderr
        assert "catalog" in plain.stdout
    finally:
        stop.set()
        sender.join(timeout=10)
        if tap.poll() is None:
            tap.kill()
            tap.wait()

    # trace: the latest request, across the four hops of the shop.
    latest = cli_json(shop, "trace", "--json", "--limit", "1")["traces"][0]
    trace = cli_json(shop, "trace", latest["trace_id"], "--json")
    pairs = {(s["kind"], s["source"], s["destination"]) for s in trace["span_list"]}
    assert pairs == {
        ("client", "ingress", "frontend"),
        ("server", "ingress", "frontend"),
        ("client", "frontend", "catalog"),
        ("server", "frontend", "catalog"),
        ("client", "catalog", "pricing"),
        ("server", "catalog", "pricing"),
    }, "the shop's services pass traceparent on, so one request is one trace"
    tree = shop.cli("trace", latest["trace_id"][:10])
    assert tree.returncode == 0, tree.stderr
    lines = tree.stdout.splitlines()
    assert lines[0].startswith(f"trace {latest['trace_id']}")
    assert sum("pricing" in line for line in lines) == 2

    exported = tmp_path / "trace.json"
    written = shop.cli("trace", latest["trace_id"], "--otlp", str(exported))
    assert written.returncode == 0, written.stderr
    assert "wrote 6 spans" in written.stdout
    otlp = json.loads(exported.read_text())
    resources = otlp["resourceSpans"]
    services = {r["resource"]["attributes"][0]["value"]["stringValue"] for r in resources}
    assert services == {"ingress", "frontend", "catalog", "pricing"}

    # Each sidecar holds its service's identity from the project's CA.
    certs = cli_json(shop, "certs", "--json")
    held = {i["instance"]: i for i in certs["identities"]}
    assert set(held) >= {"frontend-1", "catalog-v1-1", "catalog-v2-1", "pricing-1"}
    assert held["catalog-v2-1"]["spiffe_id"] == "spiffe://devmesh.local/shop/catalog"
    assert all(i["installed"] for i in held.values())
    listed = shop.cli("certs")
    assert listed.returncode == 0, listed.stderr
    assert "spiffe://devmesh.local/shop/pricing" in listed.stdout
    shown = [line for line in listed.stdout.splitlines() if "spiffe://devmesh.local/shop/" in line]
    assert len(shown) == 5, "piped, every identity whole: `devmesh certs | grep -c` counts 5"
    assert "…" not in listed.stdout
    status = shop.cli("status")
    assert "…" not in status.stdout, "`devmesh status | cat` shows whole names"
    assert "frontend" in status.stdout

    # Mistakes get one sentence, and no traceback.
    for args, expected in (
        (("tap", "--status", "5zz"), "--status 5zz is not a status or a class"),
        (("tap", "--min-latency", "banana"), "--min-latency banana is not a duration"),
        (("top", "--window", "7"), "--window 7 is not 1, 10 or 60"),
        (("trace", "not-hex!"), "is not a trace id"),
        (("trace", "ffffffff"), "no trace ffffffff is kept"),
    ):
        result = shop.cli(*args)
        assert result.returncode != 0, args
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
