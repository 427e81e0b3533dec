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
down (``restarting``, with why), those stopped on purpose or being restarted,
and how often each was started again.
"""

from __future__ import annotations

import logging
import subprocess
import threading
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
"""How often the local runtime's processes are looked at (reading /proc: cheap)."""
DOCKER_PASS_INTERVAL = 0.5
"""How often the Docker runtime's containers are listed (a call to the daemon)."""


class LocalSupervisor:
    def __init__(self, workspace: Workspace, clock: Callable[[], float] = time.monotonic) -> None:
        self.ws = workspace
        self._clock = clock
        self.schedule = RestartSchedule(clock)
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        """What this supervisor started, by name: reaped as they end."""
        self._exits: dict[str, str] = {}
        """How each of those ended (``exited with code 1``), by name."""

    def check(self, record: RuntimeRecord) -> Report:
        """One pass over ``record`` (held locked by the caller; blocking). While ``up`` or
        ``down`` changes the mesh, a report of what is stopped or restarting, nothing done."""
        self._reap()
        report = Report(stopped=set(record.stopped), restarting=set(record.restarting))
        workers = [p for p in record.processes if p.role != "controlplane" and p.instance]
        for process in workers:
            if process.restarts and process.instance:
                counted = report.restarts.get(process.instance, 0)
                report.restarts[process.instance] = counted + process.restarts
        if not record.supervised:  # `up` or `down` is at work: it has the last word
            return report
        left_alone = {*record.stopped, *record.restarting}
        started = [p for p in workers if self._look_at(p, left_alone, report)]
        if started:
            record.save()
        return report

    def _look_at(self, process: ProcessRecord, left_alone: set[str], report: Report) -> bool:
        """Note ``process`` in ``report`` if it is down, and start it again when it is due;
        True if it was started."""
        instance = process.instance
        assert instance is not None
        if process.role == "service" and instance in left_alone:
            self.schedule.forget(process.name)
            return False
        verdict = self.schedule.observe(process.name, is_alive(process))
        if verdict == "running":
            return False
        sidecar = process.role in ("sidecar", "gateway")
        how = f"{'its sidecar' if sidecar else 'its process'} "
        how += self._exits.get(process.name, "is not running")
        due = self.schedule.due(process.name)
        if not restartable(process):
            detail = f"{how}; `devmesh up` starts it again"
        elif verdict == "wait" and due is not None:
            detail = f"{how}; starting it again in {max(0.0, due - self._clock()):.1f}s"
        else:
            detail = f"{how}; starting it again"
        report.add_down(instance, Down(detail, sidecar=sidecar, seen_at=time.time()))
        if verdict != "start" or not restartable(process):
            return False
        self._start_again(process)
        return True

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

    def running(self) -> list[str]:
        """What this supervisor started and still runs (what ended is reaped first)."""
        self._reap()
        return list(self._children)

    def _reap(self) -> None:
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
        self.interval = PASS_INTERVAL
        """The wait before the next pass, for the runtime the last one found."""
        self._passing = threading.Lock()

    def check(self) -> Report | None:
        """One pass, with the runtime record held against every other writer (blocking: run
        it in a thread); ``None`` if no mesh runs."""
        with self._passing, RuntimeRecord.locked(self.ws.runtime_file) as record:
            if record is None:
                return None
            if record.runtime == "docker":
                self.interval = DOCKER_PASS_INTERVAL
                return self.docker.check(record)
            self.interval = PASS_INTERVAL
            return self.local.check(record)

    def close(self) -> None:
        """Once a pass in progress has ended (blocking)."""
        with self._passing:
            self.docker.close()
