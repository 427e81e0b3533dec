"""Every bad config, through the CLI: one sentence with file:line and the fix, no traceback,
and nothing started or written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from devmesh.cli import run
from tests.e2e.conftest import ProjectFactory
from tests.unit.devmesh.config.test_config import BAD, CONFIGS


@pytest.mark.parametrize(("name", "line", "path", "message", "hint"), BAD, ids=[b[0] for b in BAD])
def test_validate_and_up_report_the_problem_and_start_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    line: int,
    path: str,
    message: str,
    hint: str,
) -> None:
    shutil.copy(CONFIGS / name, tmp_path / "devmesh.yaml")
    for command in (["validate"], ["up", "--detach"]):
        code = run(["-C", str(tmp_path), *command])
        out, err = capsys.readouterr()
        assert code == 2, (command, out, err)
        assert "Traceback" not in out + err
        assert f"devmesh.yaml:{line}: " in err, err
        assert message in err
        assert hint in err
    assert not (tmp_path / ".devmesh").exists(), "a bad config must not leave anything behind"


def test_validate_json_lists_the_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(CONFIGS / "bad_many_problems.yaml", tmp_path / "devmesh.yaml")
    assert run(["-C", str(tmp_path), "validate", "--json"]) == 2
    result = json.loads(capsys.readouterr().out)
    assert result["valid"] is False
    assert len(result["problems"]) > 1
    assert all(p.startswith(str(tmp_path / "devmesh.yaml") + ":") for p in result["problems"])


@pytest.mark.e2e
def test_a_real_user_sees_no_traceback(projects: ProjectFactory) -> None:
    project = projects.from_yaml("services:\n  web:\n    comand: python3 app.py\n")
    result = project.cli("up")
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert "devmesh.yaml:3: services.web.comand: " in result.stderr
    assert "did you mean 'command'?" in result.stderr


def test_no_config_file_suggests_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["-C", str(tmp_path), "up"]) == 2
    err = capsys.readouterr().err
    assert f"error: there is no devmesh.yaml in {tmp_path}" in err
    assert "devmesh init" in err


def test_init_writes_a_config_that_validates_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["-C", str(tmp_path), "init", "--name", "demo"]) == 0
    assert run(["-C", str(tmp_path), "validate"]) == 0
    assert "project demo, 1 services, 1 instances" in capsys.readouterr().out
    assert run(["-C", str(tmp_path), "init"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert run(["-C", str(tmp_path), "init", "--force"]) == 0


def test_status_without_a_mesh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["-C", str(tmp_path), "status"]) == 1
    err = capsys.readouterr().err
    assert f"no mesh is running for {tmp_path}" in err
    assert "devmesh up" in err
