"""How a runtime tells the user what it is doing, without knowing how it is shown."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def begin(self, what: str) -> None:
        """A step started (e.g. ``starting catalog-v1-1``)."""

    def done(self, what: str, detail: str, seconds: float) -> None:
        """A step finished, with how long it took."""

    def note(self, text: str) -> None:
        """Something worth a line of its own."""


class SilentProgress:
    def begin(self, what: str) -> None:
        pass

    def done(self, what: str, detail: str, seconds: float) -> None:
        pass

    def note(self, text: str) -> None:
        pass
