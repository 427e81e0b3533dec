"""What the API does to instances for the TUI: their latest log lines, kill, restart.

Logs are read where `devmesh logs` reads them (the instance's log file on the local
runtime, its container's log on Docker). Kill and restart run the CLI's own
commands on the project, as a user in another terminal would: the instances a
restart starts are that command's, never the control plane's children, and the
command's error sentence is the answer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

from devmesh.errors import DevmeshError, UsageError
from devmesh.runtime.docker import labels
from devmesh.runtime.docker.daemon import connect
from devmesh.runtime.docker.logs import read_all
from devmesh.runtime.processes import RuntimeRecord, tail
from devmesh.workspace import Workspace

MAX_LINES = 500
COMMAND_TIMEOUT = 300.0


def latest_logs(workspace: Workspace, instance: str, lines: int) -> list[str]:
    """The last ``lines`` lines of the instance's own log (blocking: run it in a thread)."""
    lines = max(0, min(lines, MAX_LINES))
    record = RuntimeRecord.load(workspace.runtime_file)
    if record is not None and record.runtime == "docker":
        name = labels.container_name(record.project, instance, "service")
        client = connect()
        try:
            return [line for _, line in read_all(client, {instance: name}, lines)]
        finally:
            client.close()
    return tail(workspace.log_file(instance), lines)


async def run_cli(workspace: Workspace, *args: str) -> str:
    """``devmesh -C <project> ARGS``; its output, or its error sentence as a ``DevmeshError``
    (a ``UsageError`` when the command says the input was wrong)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "devmesh",
        "-C",
        str(workspace.project_dir),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    except BaseException as exc:
        # Timed out, or the request was cancelled (the caller left, the control plane is
        # stopping): the command and whatever it started in its session stop too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await asyncio.shield(process.wait())
        if isinstance(exc, TimeoutError):
            raise DevmeshError(
                f"devmesh {' '.join(args)} did not finish within {COMMAND_TIMEOUT:g}s"
            ) from None
        raise
    if process.returncode == 0:
        return out.decode(errors="replace")
    text = err.decode(errors="replace").splitlines()
    message = next((line[7:] for line in text if line.startswith("error: ")), None)
    hint = next((line[6:] for line in text if line.startswith("hint: ")), None)
    failed = UsageError if process.returncode == 2 else DevmeshError
    raise failed(message or f"devmesh {' '.join(args)} failed", hint)
