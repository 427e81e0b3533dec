"""Fixtures for end-to-end tests: real projects in tmp folders, the real CLI in subprocesses.

Every project a test makes is torn down afterwards, even when the test fails:
first with ``devmesh down``, then by killing any process still running in the
project folder (which the test then reports as a leak).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devmesh.runtime.environment import without_proxy_settings

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
CLI_TIMEOUT = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def processes_in(folder: Path) -> list[int]:
    """Pids of live processes whose working directory or command line is in ``folder``."""
    found = []
    needle = str(folder)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat[stat.rindex(")") + 2] in "ZX":
                continue
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cwd == needle or cwd.startswith(needle + "/") or needle in cmdline:
            found.append(int(entry.name))
    return found


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class MeshProject:
    dir: Path
    expose: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Added to the CLI's environment (e.g. the Docker tests' base image)."""

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run ``devmesh -C <dir> ARGS`` as a user would, in a clean proxy-free environment."""
        env = without_proxy_settings()  # $DEVMESH_PROXY_BIN, a setting of ours, stays
        env["COLUMNS"] = "200"
        env.update(self.env)
        return subprocess.run(
            [sys.executable, "-m", "devmesh", "-C", str(self.dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )

    @property
    def url(self) -> str:
        assert self.expose is not None
        return f"http://127.0.0.1:{self.expose}"

    def runtime(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.dir / ".devmesh" / "runtime.json").read_text())
        return data

    def api(self, path: str) -> Any:
        """GET the control plane's API directly (no CLI start-up: for timing what changes)."""
        info = json.loads((self.dir / ".devmesh" / "controlplane.json").read_text())
        token = (self.dir / ".devmesh" / "token").read_text().strip()
        request = urllib.request.Request(
            f"http://127.0.0.1:{info['port']}{path}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data


class ProjectFactory:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[MeshProject] = []

    def recipe(self, name: str, project_name: str | None = None) -> MeshProject:
        """A copy of ``recipes/<name>`` with its host port moved to a free one (and the
        project renamed to ``project_name``, if given)."""
        target = self.root / name
        shutil.copytree(RECIPES / name, target, ignore=shutil.ignore_patterns(".devmesh"))
        config = target / "devmesh.yaml"
        port = free_port()
        text, count = re.subn(r"expose: \d+", f"expose: {port}", config.read_text(), count=1)
        if project_name is not None:
            text = re.sub(r"(?m)^name: .*$", f"name: {project_name}", text, count=1)
        config.write_text(text)
        return self._track(MeshProject(target, port if count else None))

    def from_yaml(self, text: str, name: str = "project", **files: str) -> MeshProject:
        target = self.root / name
        target.mkdir()
        (target / "devmesh.yaml").write_text(text)
        for filename, content in files.items():
            (target / filename).write_text(content)
        return self._track(MeshProject(target))

    def _track(self, project: MeshProject) -> MeshProject:
        self.made.append(project)
        return project

    def teardown(self) -> list[int]:
        leaked = []
        for project in self.made:
            if (project.dir / ".devmesh" / "runtime.json").exists():
                project.cli("down", timeout=60)
            for pid in processes_in(project.dir):
                leaked.append(pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return leaked


@pytest.fixture
def projects(tmp_path: Path) -> Iterator[ProjectFactory]:
    factory = ProjectFactory(tmp_path)
    yield factory
    leaked = factory.teardown()
    assert not leaked, f"processes left running after the test and `devmesh down`: {leaked}"


@pytest.fixture
def shop(projects: ProjectFactory) -> MeshProject:
    """recipes/shop, up on the local runtime (torn down with the other projects)."""
    project = projects.recipe("shop")
    up = project.cli("up", "--detach", "--runtime", "local")
    assert up.returncode == 0, up.stderr
    return project
