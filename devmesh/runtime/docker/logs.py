"""Containers' logs, read and followed like the local runtime's log files.

``ContainerLogs.poll`` has the shape of ``devmesh.runtime.logs.LogFollower.poll``:
new complete lines, each with the name of whose they are. Following runs one
thread per container (the docker SDK streams are blocking); the threads end
when their container goes away or ``close`` is called.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Mapping
from typing import Any, Literal

import docker
import docker.errors
import requests


class ContainerLogs:
    def __init__(
        self,
        client: docker.DockerClient,
        containers: Mapping[str, str],
        *,
        tail: int | None = None,
        follow: bool = True,
    ) -> None:
        """``containers``: the name to show -> the container's name."""
        self._client = client
        self._lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self._stop = threading.Event()
        self._streams: list[Any] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._read,
                args=(shown, container, "all" if tail is None else tail, follow),
                daemon=True,
                name=f"logs-{container}",
            )
            for shown, container in containers.items()
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, shown: str, container: str, tail: int | Literal["all"], follow: bool) -> None:
        partial = b""
        try:
            stream = self._client.api.logs(
                container, stream=True, follow=follow, tail=tail, stdout=True, stderr=True
            )
            with self._lock:
                if self._stop.is_set():
                    stream.close()
                    return
                self._streams.append(stream)
            for chunk in stream:
                if self._stop.is_set():
                    return
                *complete, partial = (partial + chunk).split(b"\n")
                for raw in complete:
                    self._lines.put((shown, raw.decode("utf-8", "replace")))
        except (docker.errors.DockerException, requests.RequestException, OSError, ValueError):
            return  # the container went away, or close() closed the stream
        if partial:
            self._lines.put((shown, partial.decode("utf-8", "replace")))

    def poll(self) -> list[tuple[str, str]]:
        out = []
        while True:
            try:
                out.append(self._lines.get_nowait())
            except queue.Empty:
                return out

    def done(self) -> bool:
        """True once every stream has ended (without ``follow``: all lines were read)."""
        return not any(thread.is_alive() for thread in self._threads)

    def close(self) -> None:
        """Stop every stream: closing one ends its thread's blocking read."""
        with self._lock:
            self._stop.set()
            streams, self._streams = self._streams, []
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.close()


def read_all(
    client: docker.DockerClient, containers: Mapping[str, str], tail: int
) -> list[tuple[str, str]]:
    """The last ``tail`` lines of each container, container after container."""
    lines = []
    for shown, container in containers.items():
        try:
            raw = client.api.logs(container, tail=tail, stdout=True, stderr=True)
        except docker.errors.NotFound:
            continue
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        lines += [(shown, line) for line in text.splitlines()]
    return lines
