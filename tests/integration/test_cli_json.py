"""The CLI's read commands on a real mesh, as a script reads them: piped, their tables are
whole (no ``…``, no box, every name in full on every row, durations as people read them),
and with ``--json`` they print JSON that parses, with the seconds kept.

The control plane runs on an event loop of its own thread, so that the CLI
(``devmesh.cli.run``, which runs its own event loop) is called from the test as a user
calls it; its stdout is the test's capture: not a terminal, as in a pipe. The sidecars run
as processes (``$DEVMESH_DATAPLANE`` picks which).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from devmesh.cli import run
from devmesh.workspace import Workspace, write_json
from tests.helpers import closed_port
from tests.integration.meshkit import (
    ControlPlane,
    SidecarProcess,
    all_synced,
    app_server,
    call_through,
    endpoints_held,
    sidecar_process,
    wait_until,
)

FRONTEND = "storefront-web-frontend"
CATALOG = "inventory-catalog-service"
PROJECT_NAME = "pipes-and-scripts"
PROJECT: dict[str, Any] = {
    "name": PROJECT_NAME,
    "services": {
        FRONTEND: {
            "command": "true",
            "port": 8000,
            "expose": closed_port(),
            "depends_on": [CATALOG],
        },
        CATALOG: {
            "port": 8000,
            "versions": {"v1": {"command": "true"}, "v2": {"command": "true"}},
        },
    },
}
INSTANCES = {
    f"{FRONTEND}-1": (FRONTEND, "default"),
    f"{CATALOG}-v1-1": (CATALOG, "v1"),
    f"{CATALOG}-v2-1": (CATALOG, "v2"),
}
SPIFFE = f"spiffe://devmesh.local/{PROJECT_NAME}/"
REQUESTS = 20


class MeshInThread:
    """A control plane, a sidecar (and app) per instance, and traffic from the frontend to
    the catalog, on an event loop of their own thread until ``__exit__``."""

    def __init__(self, project_dir: Path) -> None:
        self.workspace = Workspace(project_dir)
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="mesh", daemon=True)

    def __enter__(self) -> MeshInThread:
        self._thread.start()
        self._ready.result(timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._done.result(timeout=30)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the test's thread
            if not self._ready.done():
                self._ready.set_exception(exc)
            self._done.set_exception(exc)
        else:
            self._done.set_result(None)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with AsyncExitStack() as stack:
            await self._up(stack)
            self._ready.set_result(None)
            await self._stop.wait()

    async def _up(self, stack: AsyncExitStack) -> None:
        workspace = self.workspace
        workspace.ensure()
        workspace.token(create=True)
        (workspace.project_dir / "devmesh.yaml").write_text(json.dumps(PROJECT))  # JSON is YAML
        plane = ControlPlane(workspace)
        await plane.start()
        stack.push_async_callback(plane.stop)
        write_json(
            workspace.controlplane_file, {"pid": os.getpid(), "port": plane.port, "url": plane.url}
        )
        async with plane.client() as client:
            await client.apply_project(PROJECT)
        runners: dict[str, SidecarProcess] = {}
        for instance, (service, version) in INSTANCES.items():
            app_port = None  # the frontend's app is the test, calling through its sidecar
            if service != FRONTEND:
                app_port = await stack.enter_async_context(app_server(instance))
            runners[instance] = await stack.enter_async_context(
                sidecar_process(plane, instance, service, version, app_port)
            )
        async with plane.client() as client:
            await wait_until(lambda: all_synced(client, len(INSTANCES)), "every sidecar synced")

            async def identities_held() -> bool:
                certs = await client.certs()
                installed = {i["instance"] for i in certs["identities"] if i["installed"]}
                return installed == set(runners)

            await wait_until(identities_held, "every sidecar holds an identity")
            frontend = runners[f"{FRONTEND}-1"]

            async def routed() -> bool:
                held = await endpoints_held(plane, client, frontend.instance, CATALOG)
                return held is not None and len(held) == 2

            await wait_until(routed, "the frontend's sidecar routes to both catalog instances")
            for _ in range(REQUESTS):
                status, _ = await call_through(frontend, CATALOG)
                assert status == 200

            async def seen() -> bool:
                status = await client.status()
                traces = await client.traces(5, None, False)
                return bool(traces) and any(e["requests"] >= REQUESTS for e in status["edges"])

            await wait_until(seen, "the control plane has the requests and their traces")


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("pipes")
    fault = ["fault", "add", CATALOG, "--delay", "1ms", "--path", "/never", "--for", "1h"]
    rule = ["authz", "add", CATALOG, "--deny", "--path", "/admin/*", "--audit"]
    with MeshInThread(folder):
        assert cli(folder, *fault) == 0, "a fault for `fault ls` (on no path called)"
        assert cli(folder, *rule) == 0, "a rule for `authz ls` (audit: denies nothing)"
        yield folder


@pytest.fixture(autouse=True)
def narrow_and_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    """A narrow COLUMNS that a pipe's output must not heed; nothing forcing a terminal."""
    monkeypatch.setenv("COLUMNS", "60")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)


def cli(project_dir: Path, *argv: str) -> int:
    return run(["-C", str(project_dir), *argv])


def piped(project_dir: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """What ``devmesh ARGV | cat`` prints, checked to be whole and plain."""
    capsys.readouterr()
    code = cli(project_dir, *argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "…" not in out, f"devmesh {' '.join(argv)} cut a value:\n{out}"
    assert not set("│┃━─┏┗") & set(out), f"devmesh {' '.join(argv)} drew a box:\n{out}"
    assert all(line == line.rstrip() for line in out.splitlines()), "no trailing spaces"
    return out


def as_json(project_dir: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    code = cli(project_dir, *argv, "--json")
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def rows(out: str, first: str) -> list[list[str]]:
    """The fields of each line that starts with ``first`` (as awk splits them)."""
    return [line.split() for line in out.splitlines() if line.startswith(first)]


def test_status_piped_shows_whole_service_instance_and_edge_names(
    project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = piped(project_dir, capsys, "status")
    instances = {fields[2]: fields[0] for fields in rows(out, CATALOG)}
    assert instances == {f"{CATALOG}-v1-1": CATALOG, f"{CATALOG}-v2-1": CATALOG}, (
        "each instance on its own line, with its service's name first (awk '{print $1}')"
    )
    edge = next(f for f in rows(out, FRONTEND) if f[1] == CATALOG)
    assert int(edge[6]) >= REQUESTS, "SOURCE DESTINATION RPS SUCCESS P50 P99 REQUESTS"


def test_status_json(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = as_json(project_dir, capsys, "status")
    assert [s["name"] for s in status["services"]] == [FRONTEND, CATALOG]
    assert status["window_s"] == 10


def test_certs_piped_has_one_line_per_identity_with_its_whole_spiffe_id(
    project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = piped(project_dir, capsys, "certs")
    lines = [line for line in out.splitlines() if SPIFFE in line]
    assert len(lines) == len(INSTANCES), "devmesh certs | grep -c spiffe://..."
    assert {f"{SPIFFE}{CATALOG}", f"{SPIFFE}{FRONTEND}"} <= set(out.split())
    assert re.search(r"  23h 5\dm  ", lines[0]), f"a 24 h certificate's expiry: {lines[0]}"
    assert not re.search(r"\d{4,}s\b", out), "no durations in thousands of seconds"
    fingerprints = [line.split()[3] for line in lines]
    assert all(re.fullmatch(r"[0-9a-f]{64}", f) for f in fingerprints), "whole fingerprints"


def test_certs_json_keeps_seconds(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = as_json(project_dir, capsys, "certs")
    assert {i["instance"] for i in data["identities"]} == set(INSTANCES)
    assert all(82800 < i["expires_in"] <= 86400 for i in data["identities"]), "seconds"


def test_top(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = piped(project_dir, capsys, "top", "--once", "--sort", "errors")
    assert [f[:2] for f in rows(out, FRONTEND)] == [[FRONTEND, CATALOG]]
    edges = as_json(project_dir, capsys, "top")
    assert [(e["source"], e["destination"]) for e in edges] == [(FRONTEND, CATALOG)]


def test_trace_lists_whole_trace_ids_and_shows_one_as_json(
    project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = as_json(project_dir, capsys, "trace")["traces"]
    assert listed
    out = piped(project_dir, capsys, "trace")
    assert listed[0]["trace_id"] in out.split(), "the whole id, to copy into `devmesh trace`"
    one = as_json(project_dir, capsys, "trace", listed[0]["trace_id"][:12])
    assert one["trace_id"] == listed[0]["trace_id"]
    assert one["span_list"]


def test_fault_ls_shows_the_expiry_as_people_read_it(
    project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = piped(project_dir, capsys, "fault", "ls")
    (fields,) = rows(out, "f")
    assert fields[1] == CATALOG
    assert re.search(r"  in 5\dm \d\ds  ", out), out
    (fault,) = as_json(project_dir, capsys, "fault", "ls")["faults"]
    assert 3500 < fault["expires_in"] <= 3600, "seconds"


def test_authz_ls(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = piped(project_dir, capsys, "authz", "ls")
    (fields,) = rows(out, f"{CATALOG}-deny-1")
    assert fields[1:3] == [CATALOG, "deny"]
    (rule,) = as_json(project_dir, capsys, "authz", "ls")["rules"]
    assert rule["name"] == f"{CATALOG}-deny-1"
    assert rule["mode"] == "audit"


def test_mtls(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = piped(project_dir, capsys, "mtls")
    table = sorted(line.split() for line in out.splitlines()[1:])
    assert table == [[CATALOG, "permissive"], [FRONTEND, "permissive"]]
    modes = as_json(project_dir, capsys, "mtls")["modes"]
    assert set(modes) == {FRONTEND, CATALOG}


def test_policy(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = piped(project_dir, capsys, "policy", CATALOG)
    assert out.splitlines()[0] == f"calls to {CATALOG}"
    assert rows(out, "lb ") == [["lb", "round-robin", "default"]]
    policy = as_json(project_dir, capsys, "policy", CATALOG)
    assert policy["service"] == CATALOG


def test_split_and_validate(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert as_json(project_dir, capsys, "split", CATALOG) == {"service": CATALOG, "split": None}
    valid = as_json(project_dir, capsys, "validate")
    assert valid["valid"] is True
    assert valid["services"] == [FRONTEND, CATALOG]


def test_trace_draws_one_as_a_tree_and_writes_it_as_otlp(
    project_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trace_id = as_json(project_dir, capsys, "trace")["traces"][0]["trace_id"]
    capsys.readouterr()
    assert cli(project_dir, "trace", trace_id) == 0
    assert f"trace {trace_id}" in capsys.readouterr().out
    written = tmp_path / "trace.json"
    assert cli(project_dir, "trace", trace_id, "--otlp", str(written)) == 0
    assert json.loads(written.read_text())["resourceSpans"], "OTLP/JSON, with its spans"


def test_fault_added_then_removed(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    added = as_json(project_dir, capsys, "fault", "add", CATALOG, "--abort", "503", "--path", "/x")
    assert added["service"] == CATALOG
    assert added["does"].startswith("abort 503")
    capsys.readouterr()
    assert cli(project_dir, "fault", "rm", added["id"]) == 0
    assert capsys.readouterr().out == f"removed fault {added['id']}\n"
    ids = [f["id"] for f in as_json(project_dir, capsys, "fault", "ls")["faults"]]
    assert added["id"] not in ids
