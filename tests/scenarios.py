"""What issue 15 asks of the mesh under steady traffic, as scenarios on ``recipes/shop`` that
run the same on each runtime (``tests/e2e/test_steady_traffic.py`` on the local runtime,
``tests/docker/test_steady_traffic_docker.py`` on Docker).

Each drives the real processes as a user would: traffic through the exposed port
(``bench/openloop.py``, every request counted), the CLI, signals to the processes
or containers; the control plane is read through its API. What differs between
the runtimes (how to kill a sidecar, where the logs are) is a ``Runtime``.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.e2e.conftest import MeshProject
from tests.steady import LoadResult, SteadyLoad

RATE = 100.0
STEADY_SECONDS = 180.0
BACK_WITHIN = 5.0


@dataclass
class Runtime:
    up_args: tuple[str, ...]
    kill_sidecar: Callable[[str], None]
    """SIGKILL the sidecar of an instance (as a crash would)."""
    kill_app: Callable[[str], None]
    """SIGKILL the app of an instance, not through devmesh."""
    logs: Callable[[], dict[str, str]]
    """Every sidecar's and the gateway's log, by name."""


def wait_until(check: Callable[[], bool], within: float, what: str) -> float:
    """Poll ``check`` until it holds; the seconds it took. Fails naming ``what``."""
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < within, f"not within {within:g}s: {what}"
        time.sleep(0.05)
    return time.monotonic() - began


def link_drops(project: MeshProject, runtime: Runtime) -> list[str]:
    """Every sign of a control link that dropped: a sidecar giving up on the control plane,
    the control plane seeing a sidecar disconnect."""
    lines = [
        f"{name}: {line}"
        for name, text in runtime.logs().items()
        for line in text.splitlines()
        if "control plane unreachable" in line
    ]
    controlplane = project.dir / ".devmesh" / "logs" / "controlplane.log"
    lines += [line for line in controlplane.read_text().splitlines() if " disconnected" in line]
    return lines


def edge(project: MeshProject, source: str, destination: str) -> dict[str, Any]:
    status = project.api("/v1/status")
    for found in status["edges"]:
        if (found["source"], found["destination"]) == (source, destination):
            return dict(found)
    raise AssertionError(f"no edge {source} -> {destination} in {status['edges']}")


def instance(project: MeshProject, instance_id: str) -> dict[str, Any]:
    status = project.api("/v1/status")
    for service in status["services"]:
        for entry in service["instances"]:
            if entry["id"] == instance_id:
                return dict(entry)
    raise AssertionError(f"no instance {instance_id}")


def in_routing(project: MeshProject, instance_id: str) -> bool:
    """Ready, its sidecar connected and holding the snapshot every proxy holds."""
    status = project.api("/v1/status")
    proxies = {p["instance"]: p for p in status["proxies"]}
    ready = any(
        e["id"] == instance_id and e["state"] == "ready"
        for s in status["services"]
        for e in s["instances"]
    )
    synced = all(p["acked_version"] == status["snapshot_version"] for p in proxies.values())
    return ready and instance_id in proxies and synced


def hang_up(port: int) -> None:
    """A client that starts a POST, sends 2 of its 10 bytes of body and goes away."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: f\r\nContent-Length: 10\r\n\r\nab")
        time.sleep(0.3)  # the scenario: the client waits a little, then gives up


def controlplane_pid(project: MeshProject) -> int:
    entry = next(p for p in project.runtime()["processes"] if p["role"] == "controlplane")
    return int(entry["pid"])


# -- the scenarios -------------------------------------------------------------------------


def steady_traffic(project: MeshProject, runtime: Runtime, seconds: float) -> LoadResult:
    """``seconds`` of 100 req/s with nothing done but 20 clients hanging up midway: no
    request fails, no control link drops, the breaker stays closed."""
    assert project.expose is not None
    with SteadyLoad(project.url, seconds, RATE) as load:
        load.wait_until(seconds / 3)
        for _ in range(20):
            hang_up(project.expose)
        result = load.result()
    assert result.failed == 0, result.describe()
    assert link_drops(project, runtime) == []
    ingress = edge(project, "ingress", "frontend")
    assert ingress["breaker"]["state"] == "closed", ingress["breaker"]
    assert ingress["errors"] == 0, "a client hanging up is not the service's failure"
    assert ingress["requests"] >= result.sent, "every request was counted"
    return result


def controlplane_restart(project: MeshProject, runtime: Runtime) -> LoadResult:
    """The control plane SIGKILLed after 20 s of traffic and started again with `up` after
    40 s: no request fails, and telemetry resumes within 5 s of its return."""
    with SteadyLoad(project.url, 60, RATE) as load:
        load.wait_until(20)
        pid = controlplane_pid(project)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not os.path.exists(f"/proc/{pid}/stat"), 10, "the control plane died")
        load.wait_until(40)
        up = project.cli("up", "--detach", *runtime.up_args)
        assert up.returncode == 0, up.stdout + up.stderr
        counted = edge(project, "ingress", "frontend")["requests"]
        took = wait_until(
            lambda: edge(project, "ingress", "frontend")["requests"] > counted + 50,
            BACK_WITHIN,
            "telemetry to resume after the control plane came back",
        )
        result = load.result()
    assert result.failed == 0, result.describe()
    print(f"telemetry resumed {took:.2f}s after `up` returned")
    return result


def restarts_under_load(project: MeshProject) -> LoadResult:
    """`devmesh restart` of every service, one after the other, under 100 req/s: no request
    fails (each instance's calls wait at its sidecar while its app restarts)."""
    with SteadyLoad(project.url, 30, RATE) as load:
        load.wait_until(5)
        for service in ("catalog", "frontend", "pricing"):
            restarted = project.cli("restart", service)
            assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        result = load.result()
    assert result.failed == 0, result.describe()
    return result


def dead_processes_come_back(project: MeshProject, runtime: Runtime) -> dict[str, float]:
    """A SIGKILLed sidecar, and a SIGKILLed app, are back in routing within 5 s with no
    help; an instance killed with `devmesh kill` stays down until `up` converges the mesh."""
    took = {}
    for what, kill in (("sidecar", runtime.kill_sidecar), ("app", runtime.kill_app)):
        before = instance(project, "catalog-v1-1")["restarts"]
        kill("catalog-v1-1")
        began = time.monotonic()

        def restarted(than: int = before) -> bool:
            return int(instance(project, "catalog-v1-1")["restarts"]) > than

        wait_until(restarted, 10, f"{what}: its restart counted")
        wait_until(lambda: in_routing(project, "catalog-v1-1"), 10, f"{what}: back in routing")
        took[what] = time.monotonic() - began
        assert took[what] < BACK_WITHIN, f"the {what} came back after {took[what]:.1f}s"

    killed = project.cli("kill", "pricing-1")
    assert killed.returncode == 0, killed.stderr
    wait_until(lambda: instance(project, "pricing-1")["state"] == "stopped", 10, "held down")
    assert instance(project, "pricing-1")["restarts"] == 0, "a killed instance is left down"
    up = project.cli("up", "--detach", *runtime.up_args)
    assert up.returncode == 0, up.stdout + up.stderr
    wait_until(lambda: in_routing(project, "pricing-1"), 10, "`up` brought pricing-1 back")
    return took


def half_abort_and_reset(project: MeshProject) -> tuple[LoadResult, LoadResult]:
    """A 50 % abort fault on catalog shows as 50 % ± 6 % errors at the host (no endpoint is
    black-holed by the breaker), and `fault reset` gives 0 errors at once."""
    added = project.cli("fault", "add", "catalog", "--abort", "503", "--percent", "50")
    assert added.returncode == 0, added.stderr
    with SteadyLoad(project.url, 12, RATE) as load:
        faulted = load.result()
    assert 0.44 <= faulted.failed / faulted.sent <= 0.56, faulted.describe()
    reset = project.cli("fault", "reset")
    assert reset.returncode == 0, reset.stderr
    with SteadyLoad(project.url, 6, RATE) as load:
        after = load.result()
    assert after.failed == 0, after.describe()
    return faulted, after
