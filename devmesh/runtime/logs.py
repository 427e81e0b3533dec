"""Reading instance logs: the last lines, and following new ones as they are written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol


class LineSource(Protocol):
    """New complete log lines as ``(whose, line)``: log files, or containers' logs."""

    def poll(self) -> list[tuple[str, str]]: ...

    def close(self) -> None: ...


@dataclass
class LogFollower:
    """Hands out new complete lines from several log files, like ``tail -f``.

    Files that do not exist yet are picked up when they appear; a file that
    shrinks (truncated by a new ``up``) is read again from its start.
    """

    files: dict[str, Path]
    from_end: bool = True
    _handles: dict[str, BinaryIO] = field(default_factory=dict)
    _partial: dict[str, bytes] = field(default_factory=dict)

    def poll(self) -> list[tuple[str, str]]:
        lines: list[tuple[str, str]] = []
        for name, path in self.files.items():
            handle = self._handles.get(name)
            if handle is None:
                try:
                    handle = open(path, "rb")  # noqa: SIM115 - kept open across polls
                except OSError:
                    continue
                if self.from_end:
                    handle.seek(0, 2)
                self._handles[name] = handle
            try:
                if path.stat().st_size < handle.tell():
                    handle.seek(0)
                    self._partial.pop(name, None)
            except OSError:
                pass
            data = self._partial.pop(name, b"") + handle.read()
            *complete, rest = data.split(b"\n")
            if rest:
                self._partial[name] = rest
            lines.extend((name, raw.decode("utf-8", "replace")) for raw in complete)
        self.from_end = False  # files that appear later are read from their start
        return lines

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
