"""The project's control plane as a background process on this machine, for every runtime.

``up`` starts it (``python -m devmesh.controlplane``), waits until it says where
it listens, then waits on its status API for instances to be ready and for
every proxy to hold the latest snapshot. The runtimes differ in what they
start around it, not in this.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from devmesh.client import ControlPlaneClient, Endpoint
from devmesh.controlplane.store import StateStore
from devmesh.errors import DevmeshError
from devmesh.plan import InstanceSpec
from devmesh.runtime.environment import infra_env
from devmesh.runtime.processes import RuntimeRecord, launch, tail
from devmesh.runtime.progress import Progress
from devmesh.workspace import Workspace, read_json

CONTROLPLANE_START_TIMEOUT = 15.0
CONVERGE_TIMEOUT = 15.0
POLL_INTERVAL = 0.05
LOG_LINES_ON_FAILURE = 12


class StartFailed(DevmeshError):
    """Something the runtime started did not come up; everything was stopped."""


def failure(
    message: str, log: Path | str, hint: str | None = None, lines: list[str] | None = None
) -> StartFailed:
    """A ``StartFailed`` showing the last lines of the log file ``log``, or the ``lines``
    given of the log ``log`` names (``docker logs shop-catalog-1``)."""
    if lines is None:
        lines = tail(log, LOG_LINES_ON_FAILURE) if isinstance(log, Path) else []
    details = (
        [f"last lines of {log}:"] + [f"  {line}" for line in lines]
        if lines
        else [f"{log} is empty."]
    )
    return StartFailed(
        message, hint or "fix what its log shows and run `devmesh up` again", details
    )


async def start_controlplane(
    workspace: Workspace,
    record: RuntimeRecord,
    port: int,
    progress: Progress,
    *,
    listen: Sequence[str] = (),
    allow: Sequence[str] = (),
) -> Endpoint:
    """Start the control plane (``port`` 0: any free one) and wait until it listens.

    ``listen`` adds addresses besides 127.0.0.1 (the Docker network's gateway);
    ``allow`` the networks whose peers it answers besides loopback. A state file it would
    refuse is refused here first, in its own sentence rather than in its log's last lines.
    """
    StateStore(workspace.state_file).load()
    began = time.monotonic()
    progress.begin("starting the control plane")
    workspace.controlplane_file.unlink(missing_ok=True)
    log_path = workspace.log_file("controlplane")
    argv = [
        sys.executable,
        "-m",
        "devmesh.controlplane",
        "--project-dir",
        str(workspace.project_dir),
        "--port",
        str(port),
    ]
    for host in listen:
        argv += ["--listen", host]
    for network in allow:
        argv += ["--allow", network]
    process, entry = launch(
        argv,
        env=infra_env(),
        cwd=workspace.project_dir,
        log_path=log_path,
        name="controlplane",
        role="controlplane",
    )
    record.add(entry)
    deadline = time.monotonic() + CONTROLPLANE_START_TIMEOUT
    while True:
        info = read_json(workspace.controlplane_file)
        if isinstance(info, dict) and info.get("pid") == process.pid:
            entry.ports = [int(info["port"])]
            record.save()
            endpoint = Endpoint.of(workspace)
            progress.done("control plane", endpoint.url, time.monotonic() - began)
            return endpoint
        code = process.poll()
        if code is not None:
            raise failure(f"the control plane exited with code {code} before it listened", log_path)
        if time.monotonic() > deadline:
            raise failure(
                f"the control plane did not start within {CONTROLPLANE_START_TIMEOUT:g}s", log_path
            )
        await asyncio.sleep(POLL_INTERVAL)


async def wait_converged(
    client: ControlPlaneClient, expected: int, logs_hint: str, within: float = CONVERGE_TIMEOUT
) -> None:
    """Wait until ``expected`` proxies are connected and all hold the latest snapshot."""
    deadline = time.monotonic() + within
    while True:
        status = await client.status()
        proxies = status["proxies"]
        if len(proxies) >= expected and all(
            p["acked_version"] == status["snapshot_version"] for p in proxies
        ):
            return
        if time.monotonic() > deadline:
            lagging = [
                p["instance"] for p in proxies if p["acked_version"] != status["snapshot_version"]
            ]
            raise StartFailed(
                f"the sidecars did not all take the routing config within "
                f"{within:g}s ({len(proxies)} of {expected} connected"
                + (f"; behind: {', '.join(lagging)}" if lagging else "")
                + ")",
                logs_hint,
            )
        await asyncio.sleep(POLL_INTERVAL)


UNPROBED_UPTIME = 1.0
"""An instance with no port has nothing to probe: it counts as started once its command has
run this long without exiting (supervisord's ``startsecs``), so one that crashes at once
fails ``up`` instead of passing for ready."""


def is_ready(state: Mapping[str, Any], spec: InstanceSpec, up_for: float) -> bool:
    """An instance's status entry says it is ready: its health check passes, or it has no
    port and has been up for ``UNPROBED_UPTIME`` seconds."""
    return state.get("state") == "ready" and (spec.port is not None or up_for >= UNPROBED_UPTIME)


def instance_states(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each instance's entry in a status reply, by instance id."""
    return {i["id"]: i for svc in status["services"] for i in svc["instances"]}


def connected_proxies(status: Mapping[str, Any]) -> set[str]:
    return {p["instance"] for p in status["proxies"]}


@contextlib.asynccontextmanager
async def held_for_restart(
    client: ControlPlaneClient, instance: str, note: Callable[[str], None]
) -> AsyncIterator[None]:
    """Around the restart of ``instance``'s app: its calls wait at its sidecar (or go to
    another instance of its version) instead of failing, and go on once the block ends.
    Without a control plane to ask, the restart goes on unheld, and ``note`` says so."""
    try:
        await client.hold(instance)
    except DevmeshError as exc:
        note(f"{instance}: its calls are not held for the restart ({exc.message})")
    try:
        yield
    finally:
        with contextlib.suppress(DevmeshError):  # a release is harmless where nothing is held
            await client.release(instance)
