"""``up`` without ``--detach``: follow the services' logs until Ctrl-C, then stop the mesh.

As ``docker compose up`` does. It returns by itself if the mesh is stopped
from elsewhere (``devmesh down`` in another terminal), and a second Ctrl-C
cannot leave half the mesh running: stopping is bounded anyway.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from rich.text import Text

from devmesh.cli.output import console
from devmesh.plan import plan_instances
from devmesh.runtime.docker import containers, labels
from devmesh.runtime.docker.daemon import connect
from devmesh.runtime.docker.logs import ContainerLogs
from devmesh.runtime.docker.runtime import DockerRuntime
from devmesh.runtime.docker.teardown import down as docker_down
from devmesh.runtime.local import LocalRuntime
from devmesh.runtime.logs import LineSource, LogFollower
from devmesh.runtime.processes import RuntimeRecord, is_alive

POLL = 0.2


def attach(runner: LocalRuntime | DockerRuntime) -> None:
    workspace = runner.ws
    if isinstance(runner, DockerRuntime):
        follower, stopped, width, stop_mesh = _docker(runner)
    else:
        follower, stopped, width, stop_mesh = _local(runner)
    console.print("following logs; Ctrl-C stops the mesh")
    reported: set[str] = set()
    signal.signal(signal.SIGTERM, _interrupt)  # a supervisor's stop means the same as Ctrl-C
    try:
        while workspace.runtime_file.exists():
            for name, line in follower.poll():
                console.print(Text(f"{name:<{width}} | ", style="cyan") + Text(line))
            for name in stopped():
                if name not in reported:
                    reported.add(name)
                    console.print(Text(f"{name} stopped", style="red"))
            time.sleep(POLL)
        console.print("the mesh was stopped")
        return
    except KeyboardInterrupt:
        console.print("stopping the mesh")
    finally:
        follower.close()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        count = stop_mesh()
    finally:
        signal.signal(signal.SIGINT, previous)
    console.print(f"stopped {count} processes and containers")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


Parts = tuple[LineSource, Callable[[], list[str]], int, Callable[[], int]]


def _local(runner: LocalRuntime) -> Parts:
    record = RuntimeRecord.load(runner.ws.runtime_file)
    services = [p for p in (record.processes if record else []) if p.role == "service"]
    width = max((len(p.name) for p in services), default=8)
    follower = LogFollower({p.name: Path(p.log) for p in services}, from_end=False)

    def stopped() -> list[str]:
        return [p.name for p in services if not is_alive(p)]

    return follower, stopped, width, lambda: len(runner.down())


def _docker(runner: DockerRuntime) -> Parts:
    client = connect()
    project = runner.project.name
    instances = [spec.id for spec in plan_instances(runner.project)]
    names = {i: labels.container_name(project, i, "service") for i in instances}
    width = max((len(i) for i in instances), default=8)
    follower = ContainerLogs(client, names)
    last_check = [0.0]
    seen_stopped: list[str] = []

    def stopped() -> list[str]:
        if time.monotonic() - last_check[0] < 1.0:  # one Docker call a second is plenty
            return seen_stopped
        last_check[0] = time.monotonic()
        found = containers.list_project(client, runner.project_dir)
        running = {f.name for f in found if f.status == "running"}
        seen_stopped[:] = [i for i, name in names.items() if name not in running]
        return seen_stopped

    def stop_mesh() -> int:
        client.close()
        return len(docker_down(runner.ws))

    return follower, stopped, width, stop_mesh
