"""devmesh.runtime.choice: which runtime ``up`` uses, and why, without a Docker daemon."""

from __future__ import annotations

import gc
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devmesh.config import parse_project
from devmesh.config.model import Project
from devmesh.errors import UsageError
from devmesh.runtime.choice import RuntimeName, choose


class Listener:
    """A unix socket standing where Docker's would be; it counts connections and closes them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections = 0
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen()
        self._server.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._server.close()


@pytest.fixture
def docker_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    """``DOCKER_HOST`` points at a socket that tells whether anything tried to reach Docker."""
    listener = Listener(tmp_path / "docker.sock")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{listener.path}")
    yield listener
    listener.close()


@pytest.fixture
def no_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``DOCKER_HOST`` names a socket that is not there: no daemon answers."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'missing.sock'}")
    yield
    gc.collect()  # the socket docker-py leaks goes now, under the test's warning filter


# docker-py (7.2, transport/unixconn.py) does not close its socket when the connect
# fails, so asking a missing daemon leaves an unclosed socket behind: not devmesh's doing.
DOCKER_PY_LEAK = pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")


def project(services: dict[str, Any]) -> Project:
    return parse_project({"name": "shop", "services": services})


DOCKER_READY = project(
    {"web": {"image": "shop/web", "command": "python3 web.py"}, "db": {"image": "postgres"}}
)
COMMANDS_ONLY = project({"web": {"command": "python3 web.py"}})


@pytest.mark.parametrize("name", [RuntimeName.docker, RuntimeName.local])
def test_an_explicit_runtime_is_used_as_asked(docker_socket: Listener, name: RuntimeName) -> None:
    for given in (DOCKER_READY, COMMANDS_ONLY):
        choice = choose(given, name)
        assert choice.name is name
        assert choice.reason == f"--runtime {name.value}"
    assert docker_socket.connections == 0


def test_auto_runs_locally_when_a_service_has_no_image_or_build_without_asking_docker(
    docker_socket: Listener,
) -> None:
    mixed = project(
        {
            "catalog": {"build": "./catalog"},
            "pricing": {"command": "python3 pricing.py"},
            "web": {"image": "shop/web", "command": "python3 web.py"},
        }
    )
    choice = choose(mixed, RuntimeName.auto)
    assert choice.name is RuntimeName.local
    assert "pricing" in choice.reason
    assert "image or build" in choice.reason
    assert docker_socket.connections == 0


def test_auto_names_the_version_lacking_an_image(docker_socket: Listener) -> None:
    versioned = project(
        {
            "catalog": {
                "command": "python3 catalog.py",
                "versions": {"v1": {"image": "shop/catalog:v1"}, "v2": {}},
            }
        }
    )
    choice = choose(versioned, RuntimeName.auto)
    assert choice.name is RuntimeName.local
    assert "catalog" in choice.reason
    assert docker_socket.connections == 0


@DOCKER_PY_LEAK
def test_auto_without_a_daemon_runs_commands_locally(no_daemon: None) -> None:
    both = project({"web": {"image": "shop/web", "command": "python3 web.py"}})
    choice = choose(both, RuntimeName.auto)
    assert choice.name is RuntimeName.local
    assert "no Docker daemon answers" in choice.reason


@DOCKER_PY_LEAK
def test_auto_without_a_daemon_refuses_a_service_with_nothing_to_run_locally(
    no_daemon: None,
) -> None:
    with pytest.raises(UsageError) as caught:
        choose(DOCKER_READY, RuntimeName.auto)
    assert "db" in caught.value.message
    assert "no Docker daemon answers" in caught.value.message
    assert caught.value.hint is not None
