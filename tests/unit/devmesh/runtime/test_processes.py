"""devmesh.runtime.processes: starting, recognising and stopping background processes.

Real short-lived subprocesses; every test stops and reaps what it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path

import pytest

from devmesh.runtime.processes import (
    ProcessRecord,
    describe_exit,
    group_members,
    is_alive,
    launch,
    stop_all,
    tail,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

SLEEPER = [sys.executable, "-c", "import time; time.sleep(30)"]


def pid_running(pid: int) -> bool:
    """True if ``pid`` exists and is neither a zombie nor dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


@contextmanager
def started(
    argv: list[str], tmp_path: Path, name: str = "svc"
) -> Iterator[tuple[subprocess.Popen[bytes], ProcessRecord]]:
    log = tmp_path / "logs" / f"{name}.log"
    process, record = launch(
        argv, env=dict(os.environ), cwd=tmp_path, log_path=log, name=name, role="service"
    )
    try:
        yield process, record
    finally:
        for pid in [process.pid, *group_members(process.pid)]:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        process.wait(timeout=10)


def test_a_spawned_process_is_alive_until_stop_all(tmp_path: Path) -> None:
    with started(SLEEPER, tmp_path) as (process, record):
        assert record.pid == process.pid
        assert record.started is not None
        assert is_alive(record)
        assert stop_all([record], timeout=5.0) == ["svc"]
        assert not is_alive(record)
        assert process.wait(timeout=5) == -signal.SIGTERM


def test_spawn_writes_output_to_the_log_and_runs_in_its_own_session(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import os; print('hello', os.getcwd()); print(os.getsid(0))"]
    with started(argv, tmp_path, "echo") as (process, _):
        assert process.wait(timeout=10) == 0
    lines = (tmp_path / "logs" / "echo.log").read_text().splitlines()
    assert lines[0] == f"hello {tmp_path}"
    assert int(lines[1]) == process.pid, "the process must lead its own session"


def test_a_record_with_another_start_time_is_not_alive(tmp_path: Path) -> None:
    with started(SLEEPER, tmp_path) as (_, record):
        assert record.started is not None
        reused = replace(record, started=record.started + 1)
        assert not is_alive(reused), "a pid reused by another process must not count as ours"


def test_stop_all_leaves_alone_a_reused_pid_that_leads_its_own_group(tmp_path: Path) -> None:
    # The recorded process is gone and its pid now belongs to another session
    # leader (say, another project's service): same pid, another start time.
    # While any member of the old group lived, the kernel could not have
    # reused the pid, so this group is not ours and must not be signalled.
    with started(SLEEPER, tmp_path) as (_, record):
        assert record.started is not None
        reused = replace(record, started=record.started + 1)
        stopped = stop_all([reused], timeout=1.0)
        assert is_alive(record), "stop_all signalled a process group that is not the recorded one"
        assert stopped == []


def test_a_record_without_start_time_trusts_the_pid(tmp_path: Path) -> None:
    with started(SLEEPER, tmp_path) as (_, record):
        assert is_alive(replace(record, started=None))


def test_a_process_that_exited_is_not_alive(tmp_path: Path) -> None:
    with started([sys.executable, "-c", "pass"], tmp_path) as (process, record):
        process.wait(timeout=10)
        assert not is_alive(record)
        assert stop_all([record], timeout=1.0) == []


def test_stop_all_stops_the_whole_process_group(tmp_path: Path) -> None:
    with started(["sh", "-c", "sleep 30 & sleep 30"], tmp_path) as (process, record):
        wait_until(
            lambda: len(group_members(process.pid)) >= 2,
            what="the shell to fork its background sleep",
        )
        members = group_members(process.pid)
        assert process.pid in members
        children = [pid for pid in members if pid != process.pid]
        stop_all([record], timeout=5.0)
        process.wait(timeout=5)
        still = [pid for pid in children if pid_running(pid)]
        assert not still, f"forked children {still} survived stop_all"
        assert group_members(process.pid) == []


def test_stop_all_kills_a_process_that_ignores_sigterm_after_the_timeout(tmp_path: Path) -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring SIGTERM', flush=True)\n"
        "time.sleep(30)\n",
    ]
    with started(stubborn, tmp_path, "stubborn") as (process, record):
        log = tmp_path / "logs" / "stubborn.log"
        wait_until(lambda: "ignoring SIGTERM" in log.read_text(), what="the SIGTERM handler")
        begin = time.monotonic()
        assert stop_all([record], timeout=0.3) == ["stubborn"]
        took = time.monotonic() - begin
        assert process.wait(timeout=5) == -signal.SIGKILL
        assert not is_alive(record)
        assert 0.3 <= took < 3.0, f"stop_all took {took:.2f}s with a 0.3s timeout"


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (None, "is still running"),
        (0, "exited with code 0"),
        (3, "exited with code 3"),
        (-signal.SIGTERM, "was killed by SIGTERM"),
        (-signal.SIGKILL, "was killed by SIGKILL"),
        (-99, "was killed by signal 99"),
    ],
)
def test_describe_exit(code: int | None, text: str) -> None:
    assert describe_exit(code) == text


def test_describe_exit_of_a_real_killed_process(tmp_path: Path) -> None:
    with started(SLEEPER, tmp_path) as (process, _):
        process.kill()
        assert describe_exit(process.wait(timeout=5)) == "was killed by SIGKILL"


def long_log(path: Path, count: int) -> list[str]:
    lines = [f"line {i:06d} " + "x" * (i % 50) for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return lines


def test_tail_of_a_long_file_gives_its_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    lines = long_log(path, 20_000)
    assert path.stat().st_size > 256 * 1024
    assert tail(path) == lines[-10:]
    assert tail(path, 3) == lines[-3:]


def test_tail_of_a_short_file_and_of_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "short.log"
    path.write_text("one\ntwo\n")
    assert tail(path, 10) == ["one", "two"]
    assert tail(tmp_path / "absent.log") == []


def test_tail_never_returns_a_cut_line(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    lines = long_log(path, 20_000)
    got = tail(path, 5000)
    assert got, "tail returned nothing"
    whole = set(lines)
    cut = [line for line in got if line not in whole]
    assert not cut, f"tail returned {len(cut)} line(s) that are not lines of the file: {cut[:3]}"
    assert got == lines[-len(got) :]
