"""Each runtime supervises what it started: what dies is started again, with backoff.

The control plane runs the supervisor (it is the project's one long-lived
process, and the one that knows the instances' health). Each pass looks at
what the runtime record says runs and starts again, when ``RestartSchedule``
says so, what died:

* local runtime: a sidecar, the gateway or a service process, started again
  with the very command, environment and folder it was started with (a
  sidecar binds the ports it had, so its app and the mesh find it where it
  was);
* Docker: containers, see ``devmesh.runtime.docker.supervisor``.

Nothing is supervised until ``up`` has brought the mesh up (``up`` reports a
process that dies while it starts things), and an instance stopped on purpose
(``devmesh kill``) is left down until ``restart`` or ``up``.

Each pass returns what the mesh should show: the instances with a process
down (``restarting``, with why), those held down, and how often each was
started again.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable

from devmesh.config.model import Project
from devmesh.runtime.docker.supervisor import DockerSupervisor
from devmesh.runtime.processes import (
    ProcessRecord,
    RuntimeRecord,
    describe_exit,
    is_alive,
    relaunch,
    restartable,
)
from devmesh.runtime.supervision import Down, Report, RestartSchedule
from devmesh.workspace import Workspace

log = logging.getLogger("devmesh.supervisor")

PASS_INTERVAL = 0.2
"""How often the processes are looked at."""


class LocalSupervisor:
    def __init__(self, workspace: Workspace, clock: Callable[[], float] = time.monotonic) -> None:
        self.ws = workspace
        self._clock = clock
        self.schedule = RestartSchedule(clock)
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        """What this supervisor started, by name: reaped as they end."""
        self._exits: dict[str, str] = {}
        """How each of those ended (``exited with code 1``), by name."""

    def check(self) -> Report | None:
        """One pass (blocking: run it in a thread). ``None`` if there is nothing to
        supervise (no local mesh is up)."""
        self._reap()
        with RuntimeRecord.locked(self.ws.runtime_file) as record:
            if record is None or record.runtime != "local" or not record.supervised:
                return None
            report = Report(held=set(record.held))
            changed = False
            for process in record.processes:
                instance = process.instance
                if process.role == "controlplane" or instance is None:
                    continue
                if process.restarts:
                    report.restarts[instance] = report.restarts.get(instance, 0) + process.restarts
                if process.role == "service" and instance in record.held:
                    self.schedule.forget(process.name)
                    continue
                verdict = self.schedule.observe(process.name, is_alive(process))
                if verdict == "running":
                    continue
                what = "its sidecar" if process.role in ("sidecar", "gateway") else "its process"
                how = self._exits.get(process.name, "is not running")
                due = self.schedule.due(process.name)
                if not restartable(process):
                    detail = f"{what} {how}; `devmesh up` starts it again"
                elif verdict == "wait" and due is not None:
                    detail = (
                        f"{what} {how}; starting it again in {max(0.0, due - self._clock()):.1f}s"
                    )
                else:
                    detail = f"{what} {how}; starting it again"
                report.down[instance] = Down(
                    detail, sidecar=what == "its sidecar", seen_at=time.time()
                )
                if verdict == "start" and restartable(process):
                    self._start_again(process)
                    changed = True
            if changed:
                record.save()
        return report

    def _start_again(self, process: ProcessRecord) -> None:
        try:
            child = relaunch(process)
        except OSError as exc:
            log.error("could not start %s again: %s", process.name, exc)
        else:
            self._children[process.name] = child
            self._exits.pop(process.name, None)
            process.restarts += 1
            log.info("started %s again (restart %d)", process.name, process.restarts)
        self.schedule.started(process.name)

    def _reap(self) -> None:
        """Collect the exit of every child that ended (no zombie is left)."""
        for name, child in list(self._children.items()):
            code = child.poll()
            if code is not None:
                del self._children[name]
                self._exits[name] = describe_exit(code)


class Supervisor:
    """The supervision of whichever runtime the project's mesh runs on."""

    def __init__(self, workspace: Workspace, project: Callable[[], Project | None]) -> None:
        self.ws = workspace
        self.local = LocalSupervisor(workspace)
        self.docker = DockerSupervisor(workspace, project)

    def check(self) -> Report | None:
        """One pass (blocking: run it in a thread); ``None`` if nothing is supervised."""
        record = RuntimeRecord.load(self.ws.runtime_file)
        if record is None:
            return None
        if record.runtime == "docker":
            return self.docker.check(record)
        return self.local.check()

    def close(self) -> None:
        self.docker.close()
