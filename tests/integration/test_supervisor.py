"""The local runtime's supervisor over a real runtime record and real processes: what dies is
started again the way it was started (and what it left running goes), what was stopped on
purpose or is being restarted is left alone, nothing is done while `up` or `down` works."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devmesh.runtime.processes import (
    ProcessRecord,
    Role,
    RuntimeRecord,
    group_members,
    is_alive,
    launch,
    stop_all,
)
from devmesh.runtime.supervision import Report
from devmesh.runtime.supervisor import Supervisor
from devmesh.workspace import Workspace

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


class Started:
    """The processes a test starts (reaped at its end, whatever happened)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.children: list[subprocess.Popen[bytes]] = []

    def __call__(self, name: str, role: Role, argv: list[str] | None = None) -> ProcessRecord:
        child, entry = launch(
            argv or SLEEPER,
            env=dict(os.environ),
            cwd=self.ws.project_dir,
            log_path=self.ws.log_file(name),
            name=name,
            role=role,
            instance=name.removesuffix(".sidecar"),
        )
        self.children.append(child)
        return entry


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path)
    ws.ensure()
    return ws


@pytest.fixture
def start(workspace: Workspace) -> Iterator[Started]:
    started = Started(workspace)
    yield started
    for child in started.children:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)


@pytest.fixture
def supervisor(workspace: Workspace, start: Started) -> Iterator[Supervisor]:
    supervising = Supervisor(workspace, lambda: None)
    yield supervising
    record = RuntimeRecord.load(workspace.runtime_file)
    if record is not None:
        stop_all(record.processes, timeout=2)
    poll(lambda: not supervising.local.running(), "what it started to be reaped")


def record_of(ws: Workspace, *entries: ProcessRecord, supervised: bool = True) -> None:
    record = RuntimeRecord(ws.runtime_file, "demo", "hash", list(entries), supervised=supervised)
    record.save()


def current(ws: Workspace, name: str) -> ProcessRecord:
    record = RuntimeRecord.load(ws.runtime_file)
    assert record is not None
    found = record.find(name)
    assert found is not None
    return found


def poll(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within:g}s: {what}"
        time.sleep(0.05)


def passes_until(supervisor: Supervisor, done: Callable[[], bool], what: str) -> list[Report]:
    """Run passes until ``done``; the reports they made."""
    reports: list[Report] = []

    def one() -> bool:
        report = supervisor.check()
        assert report is not None
        reports.append(report)
        return done()

    poll(one, what)
    return reports


def test_a_dead_process_is_started_again_as_it_was_and_its_leftovers_go(
    workspace: Workspace, start: Started, supervisor: Supervisor
) -> None:
    # A service whose command forks: the leader dies, its child lives on.
    app = start("web-1", "service", ["/bin/sh", "-c", "sleep 60 & wait"])
    record_of(workspace, app)
    poll(lambda: len(group_members(app.pid)) == 2, "the shell and its sleep")
    orphan = next(pid for pid in group_members(app.pid) if pid != app.pid)
    os.kill(app.pid, signal.SIGKILL)
    reports = passes_until(
        supervisor, lambda: current(workspace, "web-1").pid != app.pid, "it is started again"
    )
    assert any("web-1" in r.down for r in reports), "it was reported down meanwhile"
    again = current(workspace, "web-1")
    assert is_alive(again)
    assert again.restarts == 1
    assert again.argv == app.argv
    assert again.env == app.env
    assert again.cwd == app.cwd
    poll(lambda: _gone(orphan), "what the dead one left running to be gone")
    report = supervisor.check()
    assert report is not None
    assert report.restarts == {"web-1": 1}


def test_with_both_its_processes_dead_an_instance_is_reported_without_its_sidecar(
    workspace: Workspace, start: Started, supervisor: Supervisor
) -> None:
    sidecar, app = (
        start("web-1.sidecar", "sidecar"),
        start("web-1", "service"),
    )
    record_of(workspace, sidecar, app)
    for entry in (sidecar, app):
        os.kill(entry.pid, signal.SIGKILL)
    poll(lambda: not is_alive(sidecar) and not is_alive(app), "both dead")
    report = supervisor.check()
    assert report is not None
    assert report.down["web-1"].sidecar, "the sidecar's death is what routing must hear of"


def test_an_instance_stopped_on_purpose_or_being_restarted_is_left_alone(
    workspace: Workspace, start: Started, supervisor: Supervisor
) -> None:
    killed, restarting = start("a-1", "service"), start("b-1", "service")
    record_of(workspace, killed, restarting)
    record = RuntimeRecord.load(workspace.runtime_file)
    assert record is not None
    record.stopped, record.restarting = ["a-1"], ["b-1"]
    record.save()
    for entry in (killed, restarting):
        os.kill(entry.pid, signal.SIGKILL)
    for _ in range(5):
        report = supervisor.check()
        assert report is not None
    assert (report.stopped, report.restarting, report.down) == ({"a-1"}, {"b-1"}, {})
    assert current(workspace, "a-1").pid == killed.pid, "not started again"
    assert current(workspace, "b-1").pid == restarting.pid, "not started again"


def test_nothing_is_started_while_up_or_down_is_at_work(
    workspace: Workspace, start: Started, supervisor: Supervisor
) -> None:
    app = start("web-1", "service")
    record_of(workspace, app, supervised=False)
    os.kill(app.pid, signal.SIGKILL)
    for _ in range(5):
        report = supervisor.check()
        assert report is not None
        assert report.down == {}
    assert current(workspace, "web-1").pid == app.pid


def test_one_that_keeps_dying_waits_longer_each_time(
    workspace: Workspace, start: Started, supervisor: Supervisor
) -> None:
    crasher = start("web-1", "service", [sys.executable, "-c", "raise SystemExit(3)"])
    record_of(workspace, crasher)
    passes_until(supervisor, lambda: current(workspace, "web-1").restarts >= 3, "3 restarts")

    def waiting() -> bool:
        report = supervisor.check()
        down = report.down.get("web-1") if report is not None else None
        return down is not None and "starting it again in" in down.detail

    poll(waiting, "a wait before the next restart")
    report = supervisor.check()
    assert report is not None
    assert "its process exited with code 3" in report.down["web-1"].detail


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"
