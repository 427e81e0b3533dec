"""When `devmesh up` cannot bring a project up: a clear sentence, and nothing left behind."""

from __future__ import annotations

import socket
import textwrap

import pytest

from tests.e2e.conftest import ProjectFactory, processes_in

pytestmark = pytest.mark.e2e

HEALTHY = "python3 -m http.server $PORT --bind 127.0.0.1"


def two_services(broken_command: str, extra: str = "") -> str:
    return textwrap.dedent(
        f"""\
        name: failing
        services:
          web:
            command: {HEALTHY}
            depends_on: [db]
          db:
            command: {broken_command}
        {extra}"""
    )


def assert_nothing_left(project_dir: object, output: str) -> None:
    assert "Traceback" not in output
    assert processes_in(project_dir) == []  # type: ignore[arg-type]


def test_a_command_that_exits_fails_up_naming_it_with_its_log(projects: ProjectFactory) -> None:
    crash = (
        "python3 -c \"import sys; print('cannot reach the database at db:5432', file=sys.stderr); "
        'sys.exit(3)"'
    )
    project = projects.from_yaml(two_services(crash))
    result = project.cli("up", "--detach")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "error: db-1 exited with code 3 before it was ready" in result.stderr
    assert "cannot reach the database at db:5432" in result.stderr, "its last log lines"
    assert "hint: fix the command of db (devmesh.yaml:7)" in result.stderr
    assert "web-1" not in result.stderr, "web depends on db, so it never started"
    assert_nothing_left(project.dir, output)
    assert not (project.dir / ".devmesh" / "runtime.json").exists()


def test_a_command_that_does_not_exist(projects: ProjectFactory) -> None:
    project = projects.from_yaml(two_services("no-such-program-devmesh --serve"))
    result = project.cli("up", "--detach")
    assert result.returncode == 1
    assert "db-1 exited with code 127 before it was ready" in result.stderr
    assert "not found" in result.stderr
    assert_nothing_left(project.dir, result.stdout + result.stderr)


def test_an_instance_that_never_gets_ready_times_out_with_the_probe_result(
    projects: ProjectFactory,
) -> None:
    never_listens = "sleep 600"
    project = projects.from_yaml(
        two_services(never_listens).replace(
            "    command: sleep 600",
            "    command: sleep 600\n    port: 8000\n    health: {start_timeout: 1s}",
        )
    )
    result = project.cli("up", "--detach")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "db-1 did not become ready within 1s: TCP connect to 127.0.0.1:" in result.stderr
    assert "failed: Connect call failed" in result.stderr or "refused" in result.stderr
    assert "health.start_timeout" in result.stderr
    assert_nothing_left(project.dir, result.stdout + result.stderr)


def test_an_exposed_port_already_taken_is_refused_before_anything_starts(
    projects: ProjectFactory,
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        project = projects.from_yaml(
            two_services(HEALTHY).replace("    depends_on: [db]", f"    expose: {port}")
        )
        result = project.cli("up", "--detach")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"port {port} on 127.0.0.1, where web is exposed, is already in use" in result.stderr
    assert "(devmesh.yaml:5)" in result.stderr
    assert "hint: stop what listens there" in result.stderr
    assert_nothing_left(project.dir, result.stdout + result.stderr)
    assert not (project.dir / ".devmesh" / "runtime.json").exists()


def test_up_twice_is_harmless_and_a_changed_config_is_refused(projects: ProjectFactory) -> None:
    project = projects.from_yaml(two_services(HEALTHY))
    assert project.cli("up", "--detach").returncode == 0
    before = sorted(processes_in(project.dir))

    again = project.cli("up", "--detach")
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stdout
    assert sorted(processes_in(project.dir)) == before

    config = project.dir / "devmesh.yaml"
    config.write_text(config.read_text().replace("name: failing", "name: changed"))
    changed = project.cli("up", "--detach")
    assert changed.returncode == 2
    assert "already running with a different configuration" in changed.stderr
    assert "devmesh down" in changed.stderr
    assert sorted(processes_in(project.dir)) == before
