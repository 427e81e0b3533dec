"""Reaching the Docker daemon, and the one place Docker's errors become devmesh's.

The docker SDK raises its own exceptions (``DockerException``, ``APIError``,
``ImageNotFound``, requests' connection errors). Everything that calls Docker
goes through ``connect`` and ``docker_errors``, so a user sees one sentence
saying what failed and what to do, never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import docker
import docker.errors
import requests

from devmesh.errors import DevmeshError

PING_TIMEOUT = 5
API_TIMEOUT = 120


class DaemonUnavailable(DevmeshError):
    """No Docker daemon answers."""


def daemon_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(timeout: int = API_TIMEOUT) -> docker.DockerClient:
    """A client of a daemon that answered a ping; ``DaemonUnavailable`` otherwise."""
    try:
        client = docker.from_env(timeout=timeout)
    except docker.errors.DockerException as exc:
        raise _unavailable(exc) from None
    try:
        client.api.timeout = PING_TIMEOUT
        client.ping()
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        client.close()
        raise _unavailable(exc) from None
    client.api.timeout = timeout
    return client


def probe() -> tuple[bool, str]:
    """Whether a daemon answers, and what was seen (for ``doctor`` and runtime choice)."""
    try:
        client = connect()
    except DaemonUnavailable as exc:
        return False, exc.message
    try:
        version = client.version().get("Version", "?")
    except (docker.errors.DockerException, requests.RequestException):
        version = "?"
    finally:
        client.close()
    return True, f"Docker Engine {version} answers at {daemon_address()}"


def _unavailable(exc: BaseException) -> DaemonUnavailable:
    return DaemonUnavailable(
        f"no Docker daemon answers at {daemon_address()} ({_reason(exc)})",
        "start Docker (or set DOCKER_HOST), or run the services as local processes with "
        "`devmesh up --runtime local`",
    )


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "No such file or directory", "Permission denied"):
        if marker in text:
            return marker.lower() if marker != "No such file or directory" else "no socket there"
    if isinstance(exc, requests.Timeout):
        return "it did not answer in time"
    return text.splitlines()[0][:200] if text else type(exc).__name__


@contextmanager
def docker_errors(doing: str, hint: str | None = None) -> Iterator[None]:
    """Turn a Docker failure while ``doing`` something into a ``DevmeshError``."""
    try:
        yield
    except DevmeshError:
        raise
    except docker.errors.APIError as exc:
        explanation = exc.explanation or str(exc)
        if isinstance(explanation, bytes):
            explanation = explanation.decode("utf-8", "replace")
        raise DevmeshError(
            f"Docker refused {doing}: {explanation}",
            hint or "fix what Docker says and run the command again",
        ) from None
    except (requests.RequestException, docker.errors.DockerException) as exc:
        raise DevmeshError(
            f"Docker failed while {doing}: {_reason(exc)}",
            hint or "check that the Docker daemon is running (`devmesh doctor`)",
        ) from None
