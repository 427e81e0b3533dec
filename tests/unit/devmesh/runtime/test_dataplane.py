"""devmesh.runtime.dataplane: which data plane runs the sidecars, and the command that starts
one, from the environment, the crate's folder and a test of which files exist (no files)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from devmesh.config import parse_project
from devmesh.errors import UsageError
from devmesh.runtime.dataplane import (
    BUILD_COMMAND,
    DATAPLANE_ENV,
    MUSL_BINARY,
    MUSL_BUILD_COMMAND,
    PROXY_BIN_ENV,
    DataPlane,
    choose,
    crate_dir,
    docker_binary,
    kind_of,
    rust_candidates,
)
from devmesh.runtime.docker.runtime import DockerRuntime
from devmesh.runtime.local import LocalRuntime
from devmesh.workspace import Workspace

CRATE = Path("/src/devmesh/proxy")
RELEASE = CRATE / "target" / "release" / "devmesh-proxy"
DEBUG = CRATE / "target" / "debug" / "devmesh-proxy"
PYTHON = "/usr/bin/python3"


def existing(*paths: Path) -> set[Path]:
    return set(paths)


def pick(env: dict[str, str], *files: Path) -> DataPlane:
    return choose(env, CRATE, PYTHON, existing(*files).__contains__)


@pytest.mark.parametrize("env", [{}, {DATAPLANE_ENV: ""}, {DATAPLANE_ENV: "python"}])
def test_python_is_the_default_and_runs_python_m_proxy(env: dict[str, str]) -> None:
    plane = pick(env, RELEASE)
    assert plane == DataPlane("python", (PYTHON, "-m", "proxy"))
    assert plane.command(Path("/w/b.json")) == [PYTHON, "-m", "proxy", "--bootstrap", "/w/b.json"]


def test_a_value_is_read_without_the_spaces_around_it() -> None:
    assert kind_of({DATAPLANE_ENV: " rust\n"}) == "rust"


@pytest.mark.parametrize("value", ["go", "Rust", "pyhton"])
def test_an_unknown_value_is_refused_naming_the_variable_and_the_choices(value: str) -> None:
    with pytest.raises(UsageError) as refused:
        kind_of({DATAPLANE_ENV: value})
    assert refused.value.message == f"DEVMESH_DATAPLANE is {value!r}, and it must be python or rust"
    assert refused.value.hint is not None
    assert "set DEVMESH_DATAPLANE to python or rust" in refused.value.hint
    with pytest.raises(UsageError):
        pick({DATAPLANE_ENV: value}, RELEASE)


def test_rust_prefers_the_release_build() -> None:
    plane = pick({DATAPLANE_ENV: "rust"}, RELEASE, DEBUG)
    assert plane == DataPlane("rust", (str(RELEASE),))
    assert plane.command(Path("/w/b.json")) == [str(RELEASE), "--bootstrap", "/w/b.json"]


def test_rust_takes_the_debug_build_when_there_is_no_release_one() -> None:
    assert pick({DATAPLANE_ENV: "rust"}, DEBUG).program == (str(DEBUG),)


def test_devmesh_proxy_bin_comes_before_the_crate_s_builds() -> None:
    given = Path("/opt/devmesh-proxy")
    env = {DATAPLANE_ENV: "rust", PROXY_BIN_ENV: str(given)}
    assert rust_candidates(env, CRATE) == [given]
    assert pick(env, given, RELEASE, DEBUG).program == (str(given),)


def test_rust_with_no_binary_says_where_it_looked_and_how_to_build_one() -> None:
    with pytest.raises(UsageError) as refused:
        pick({DATAPLANE_ENV: "rust"})
    assert refused.value.message == (
        f"DEVMESH_DATAPLANE is rust, but there is no devmesh-proxy binary at {RELEASE} "
        f"nor at {DEBUG}"
    )
    assert refused.value.hint is not None
    assert f"`{BUILD_COMMAND}`" in refused.value.hint
    assert BUILD_COMMAND == "cargo build --release --manifest-path proxy/Cargo.toml"


def test_a_devmesh_proxy_bin_where_no_file_is_is_refused_not_passed_over() -> None:
    given = Path("/opt/none")
    with pytest.raises(UsageError) as refused:
        pick({DATAPLANE_ENV: "rust", PROXY_BIN_ENV: str(given)}, RELEASE)
    assert refused.value.message == (
        f"DEVMESH_DATAPLANE is rust, but DEVMESH_PROXY_BIN names {given}, where there is no file"
    )
    assert refused.value.hint is not None
    assert "DEVMESH_PROXY_BIN" in refused.value.hint


def test_an_empty_devmesh_proxy_bin_counts_as_unset() -> None:
    env = {DATAPLANE_ENV: "rust", PROXY_BIN_ENV: " "}
    assert rust_candidates(env, CRATE) == [RELEASE, DEBUG]


def test_the_python_data_plane_ignores_devmesh_proxy_bin() -> None:
    assert pick({PROXY_BIN_ENV: "/opt/none"}).kind == "python"


MUSL = CRATE / "target" / "x86_64-unknown-linux-musl" / "release" / "devmesh-proxy"


@pytest.mark.parametrize("env", [{}, {DATAPLANE_ENV: "python"}])
def test_the_docker_runtime_takes_the_python_data_plane_by_default(env: dict[str, str]) -> None:
    assert docker_binary(env, CRATE, existing(MUSL).__contains__) is None


def test_the_docker_runtime_takes_the_static_rust_binary_when_it_is_built() -> None:
    assert CRATE / MUSL_BINARY == MUSL
    env = {DATAPLANE_ENV: "rust", PROXY_BIN_ENV: "/opt/none"}
    assert docker_binary(env, CRATE, existing(MUSL, RELEASE).__contains__) == MUSL


def test_the_docker_runtime_refuses_rust_without_the_static_binary_saying_how_to_build_it() -> None:
    with pytest.raises(UsageError) as refused:
        docker_binary({DATAPLANE_ENV: "rust"}, CRATE, existing(RELEASE, DEBUG).__contains__)
    assert refused.value.message == (
        f"DEVMESH_DATAPLANE is rust, but the docker runtime needs the static devmesh-proxy "
        f"binary at {MUSL}, and there is none"
    )
    assert refused.value.hint is not None
    assert f"`{MUSL_BUILD_COMMAND}`" in refused.value.hint
    assert MUSL_BUILD_COMMAND == (
        "cargo build --release --target x86_64-unknown-linux-musl --manifest-path proxy/Cargo.toml"
    )
    assert "musl-tools" in refused.value.hint
    with pytest.raises(UsageError, match="must be python or rust"):
        docker_binary({DATAPLANE_ENV: "go"}, CRATE, existing(MUSL).__contains__)


def test_the_crate_is_the_folder_of_the_python_sidecar() -> None:
    assert (crate_dir() / "Cargo.toml").is_file()
    assert (crate_dir() / "__main__.py").is_file()


# -- where the runtimes ask -----------------------------------------------------------------

PROJECT = {"name": "demo", "services": {"web": {"image": "web:1", "command": "true"}}}


def test_docker_up_refuses_rust_without_its_binary_before_it_touches_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATAPLANE_ENV, "rust")
    monkeypatch.setattr("devmesh.runtime.docker.runtime.crate_dir", lambda: tmp_path / "crate")
    workspace = Workspace(tmp_path)
    with pytest.raises(UsageError, match="needs the static devmesh-proxy binary"):
        asyncio.run(DockerRuntime(parse_project(PROJECT), workspace).up())
    assert not workspace.root.exists(), "nothing was made"


def test_local_up_refuses_an_unknown_data_plane_before_it_touches_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATAPLANE_ENV, "go")
    workspace = Workspace(tmp_path)
    with pytest.raises(UsageError, match="must be python or rust"):
        asyncio.run(LocalRuntime(parse_project(PROJECT), workspace).up())
    assert not workspace.root.exists(), "nothing was made"
