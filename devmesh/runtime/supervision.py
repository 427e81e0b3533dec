"""When a process (or container) that died is started again. Pure logic: the clock is given.

Docker's restart policy, in effect: the first restart comes at once (after
``FIRST_DELAY``), each next one waits twice as long as the one before, at most
``MOST_DELAY``; a process that has run ``STABLE_AFTER`` seconds since it was
last started is doing well, and its next death starts the count again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

FIRST_DELAY = 0.1
MOST_DELAY = 30.0
STABLE_AFTER = 10.0

Verdict = Literal["running", "wait", "start"]


@dataclass
class _Track:
    delay: float = FIRST_DELAY
    """The wait before the next restart."""
    due: float | None = None
    """When the dead process is to be started again (``None``: it runs)."""
    started_at: float | None = None
    """When it was last started again."""


class RestartSchedule:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._tracks: dict[str, _Track] = {}

    def observe(self, name: str, alive: bool) -> Verdict:
        """What to do about ``name`` now that it is seen alive or dead: nothing (``running``),
        wait (``wait``: see ``due``), or start it again (``start``, then call ``started``)."""
        now = self._clock()
        track = self._tracks.setdefault(name, _Track())
        if alive:
            track.due = None  # back (started again by someone else, or never gone)
            if track.started_at is not None and now - track.started_at >= STABLE_AFTER:
                track.delay, track.started_at = FIRST_DELAY, None
            return "running"
        if track.due is None:
            track.due = now + track.delay
        return "start" if now >= track.due else "wait"

    def due(self, name: str) -> float | None:
        """When ``name``, seen dead, is to be started again."""
        track = self._tracks.get(name)
        return track.due if track is not None else None

    def started(self, name: str) -> None:
        """``name`` was started again: the next restart, if it dies, waits longer."""
        track = self._tracks.setdefault(name, _Track())
        track.due = None
        track.started_at = self._clock()
        track.delay = min(track.delay * 2, MOST_DELAY)

    def forget(self, name: str) -> None:
        """``name`` was stopped on purpose, or restarted by hand: it starts afresh."""
        self._tracks.pop(name, None)


@dataclass(frozen=True)
class Down:
    """An instance with a process (or container) that is not running."""

    detail: str
    sidecar: bool
    """Its sidecar is down: it cannot take traffic, whatever it said last."""
    seen_at: float = 0.0
    """When it was seen down (wall clock): a sidecar that said hello since is a new one."""


@dataclass
class Report:
    """What one pass of a runtime's supervisor saw, for the mesh to show."""

    down: dict[str, Down] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)
    """Instances stopped on purpose (``devmesh kill``), left down."""
    restarting: set[str] = field(default_factory=set)
    """Instances a ``devmesh restart`` is restarting."""
    restarts: dict[str, int] = field(default_factory=dict)
    """Times each instance's processes were started again, by instance."""

    def add_down(self, instance: str, down: Down) -> None:
        """Note ``instance`` down; with both its sidecar and its app down, the sidecar's
        word wins (it cannot take traffic at all)."""
        known = self.down.get(instance)
        if known is None or not known.sidecar:
            self.down[instance] = down
