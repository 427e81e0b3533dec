"""Starting and stopping the local runtime's background processes, and remembering them.

Each process is started in its own session (so its process group is its
pid, and ``killpg`` reaches whatever it forks) and recorded with its start
time, so that ``down`` never signals an unrelated process that happened to
reuse the pid, and with what started it (command, environment, folder), so
that its supervisor can start it again the same way when it dies.

Whoever changes the record on disk (``up``, ``restart``, ``kill``, the
supervisor) does so under ``RuntimeRecord.locked``, so that no change is lost
to another made at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from devmesh.workspace import read_json, write_json

Role = Literal["controlplane", "sidecar", "service", "gateway"]

STOP_TIMEOUT = 5.0


@dataclass
class ProcessRecord:
    name: str
    """``controlplane``, ``ingress``, an instance id, or ``<instance>.sidecar``."""
    role: Role
    pid: int
    started: int | None
    """The kernel's start time of the process (clock ticks since boot), if known."""
    log: str
    instance: str | None = None
    ports: list[int] = field(default_factory=list)
    argv: list[str] | None = None
    """What started it, to start it again the same way (``None``: not known)."""
    env: dict[str, str] | None = None
    cwd: str | None = None
    restarts: int = 0
    """Times its supervisor started it again after it died."""


@dataclass
class RuntimeRecord:
    """What one ``devmesh up`` started, kept in ``.devmesh/runtime.json``.

    The local runtime records every process; the Docker runtime records the
    control plane process and its network, and finds its containers by label.
    """

    path: Path
    project: str
    config_hash: str
    processes: list[ProcessRecord] = field(default_factory=list)
    runtime: str = "local"
    supervised: bool = False
    """Set once ``up`` has brought everything up: from then on what dies is started again.
    (While ``up`` starts things, a process that dies is ``up``'s failure to report.)"""
    stopped: list[str] = field(default_factory=list)
    """Instances whose service was stopped on purpose (``devmesh kill``): left down until
    ``restart`` or ``up`` (as Docker leaves a killed container with a restart policy)."""
    restarting: list[str] = field(default_factory=list)
    """Instances a ``restart`` stops and starts: its supervisor keeps off meanwhile."""

    @classmethod
    def load(cls, path: Path) -> RuntimeRecord | None:
        data = read_json(path)
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                path=path,
                project=str(data["project"]),
                config_hash=str(data["config_hash"]),
                processes=[ProcessRecord(**p) for p in data["processes"]],
                runtime=str(data.get("runtime", "local")),
                supervised=data.get("supervised") is True,
                stopped=[str(i) for i in data.get("stopped") or []],
                restarting=[str(i) for i in data.get("restarting") or []],
            )
        except (KeyError, TypeError):
            return None

    @classmethod
    @contextlib.contextmanager
    def locked(cls, path: Path) -> Iterator[RuntimeRecord | None]:
        """The record at ``path``, held against other writers until the block ends (save
        it in the block to keep a change)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield cls.load(path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def save(self) -> None:
        write_json(
            self.path,
            {
                "runtime": self.runtime,
                "project": self.project,
                "config_hash": self.config_hash,
                "supervised": self.supervised,
                "stopped": self.stopped,
                "restarting": self.restarting,
                "processes": [asdict(p) for p in self.processes],
            },
        )

    def add(self, record: ProcessRecord) -> None:
        self.processes.append(record)
        self.save()

    def find(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name), None)


def set_supervised(path: Path, supervised: bool) -> None:
    """Turn the supervisor on (``up`` is done) or off (``up`` or ``down`` is at work); a pass
    in progress ends first."""
    with RuntimeRecord.locked(path) as record:
        if record is not None and record.supervised != supervised:
            record.supervised = supervised
            record.save()


@contextlib.contextmanager
def restarting(path: Path, instance: str) -> Iterator[RuntimeRecord]:
    """For the block, ``instance`` is being restarted: its supervisor keeps off, and it is no
    longer stopped on purpose. Yields the record as it is once that is said (locked only
    while it is read and saved: write changes under ``RuntimeRecord.locked``)."""
    with RuntimeRecord.locked(path) as record:
        if record is None:
            raise ValueError(f"no runtime record at {path}")
        if instance not in record.restarting:
            record.restarting.append(instance)
        record.stopped = [i for i in record.stopped if i != instance]
        record.save()
    try:
        yield record
    finally:
        with RuntimeRecord.locked(path) as current:
            if current is not None and instance in current.restarting:
                current.restarting.remove(instance)
                current.save()


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    append: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached from the terminal, output to ``log_path`` (truncated, or
    ``append``ed to: a process started again keeps its predecessor's last words)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab" if append else "wb") as log:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def launch(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    name: str,
    role: Role,
    instance: str | None = None,
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """``spawn`` it, and the record of it (with what started it, to start it again)."""
    process = spawn(argv, env=env, cwd=cwd, log_path=log_path)
    record = ProcessRecord(
        name=name,
        role=role,
        pid=process.pid,
        started=start_time(process.pid),
        log=str(log_path),
        instance=instance,
        argv=list(argv),
        env=dict(env),
        cwd=str(cwd),
    )
    return process, record


def relaunch(record: ProcessRecord) -> subprocess.Popen[bytes]:
    """Start the recorded process again the way it was started (its log appended to);
    ``record`` takes the new pid. ``ValueError`` if the record does not say how."""
    if record.argv is None or record.env is None or record.cwd is None:
        raise ValueError(f"the record of {record.name} does not say how it was started")
    if group_members(record.pid):  # what the dead one left running (its children) goes too
        _signal_group(record, signal.SIGKILL)
    process = spawn(
        record.argv, env=record.env, cwd=Path(record.cwd), log_path=Path(record.log), append=True
    )
    record.pid, record.started = process.pid, start_time(process.pid)
    return process


def restartable(record: ProcessRecord) -> bool:
    return record.argv is not None and record.env is not None and record.cwd is not None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name, or ``None``."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22 of stat


def is_alive(record: ProcessRecord) -> bool:
    """True if the recorded process still runs (not a zombie, not a reused pid)."""
    fields = _stat_fields(record.pid)
    if fields is None:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no /proc (not Linux): the pid is all there is to go on
            os.kill(record.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):
        return False
    return record.started is None or int(fields[19]) == record.started


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in process group ``pgid`` (Linux; empty elsewhere)."""
    members = []
    for entry in Path("/proc").iterdir() if Path("/proc/self").exists() else ():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def stop_all(records: Iterable[ProcessRecord], timeout: float = STOP_TIMEOUT) -> list[str]:
    """SIGTERM every recorded process group, SIGKILL what is left after ``timeout``.

    Returns the names of the processes that were still running and were stopped.
    """
    targets = [r for r in records if _running(r)]
    for record in targets:
        _signal_group(record, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_running(r) for r in targets):
        time.sleep(0.05)
    for record in targets:
        if _running(record):
            _signal_group(record, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_running(r) for r in targets):
        time.sleep(0.05)
    return [r.name for r in targets]


def _group_is_ours(record: ProcessRecord) -> bool:
    """True while the process group the record leads is still the one we started.

    The kernel does not reuse a pid while a process group of that id exists. So
    if the pid now belongs to a process with another start time, our group is
    gone and that process's group (it may lead one) belongs to someone else.
    """
    fields = _stat_fields(record.pid)
    if fields is None or record.started is None:
        return True
    return int(fields[19]) == record.started


def _running(record: ProcessRecord) -> bool:
    if not _group_is_ours(record):
        return False
    return is_alive(record) or bool(group_members(record.pid))


def _signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    # The group is the recorded pid's own (start_new_session); signal it only
    # while it is ours: the leader alive with its start time, or members left.
    if not _group_is_ours(record):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, sig)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


_TAIL_CHUNK = 64 * 1024


def tail(path: Path, lines: int = 10) -> list[str]:
    """The last ``lines`` whole lines of a log file (empty if it does not exist).

    Reads backwards a chunk at a time until it holds ``lines`` line breaks
    before the last line, so a line is never returned cut at a chunk edge.
    """
    if lines <= 0:
        return []
    try:
        with open(path, "rb") as handle:
            offset = handle.seek(0, os.SEEK_END)
            data = b""
            while offset > 0 and data.count(b"\n") <= lines:
                step = min(_TAIL_CHUNK, offset)
                offset -= step
                handle.seek(offset)
                data = handle.read(step) + data
    except OSError:
        return []
    if offset > 0:  # the first line read may be the end of a longer one
        data = data[data.index(b"\n") + 1 :]
    return data.decode("utf-8", "replace").splitlines()[-lines:]


def to_json(records: Iterable[ProcessRecord]) -> list[dict[str, Any]]:
    return [asdict(r) for r in records]
