"""Outlier detection (circuit breaking) per endpoint of one destination service. Pure logic.

It follows Envoy's outlier detection (consecutive 5xx), with Envoy's defaults:

* ``consecutive_5xx`` failures in a row eject an endpoint. A failure is a 5xx from
  the upstream or a locally-originated one (connect failure, reset, timeout of a
  request sent whole), which Envoy maps to a 5xx; a success (any other status)
  resets the run. What says nothing of the endpoint neither counts nor resets:
  as in Envoy, only upstream results count, not a caller that hung up or never
  sent its body whole, nor a request the mesh refused itself (the caller's own
  connection-pool limit overflowing, say).
* An ejection is refused if it would take more than ``max_ejection_percent`` of
  the endpoints out, but one endpoint may always be ejected. Either way the run
  starts again from zero, as in Envoy.
* The n-th ejection lasts ``base_ejection_time * n``, at most ``max_ejection_time``.
  Each full ``interval`` an endpoint spends closed without a failure lowers n by one.
* When its time is up the endpoint is *half-open*: it takes traffic again and its
  first result decides: a success closes it, a failure ejects it again at once
  (where Envoy would wait for a new run of failures).
* The panic threshold (Envoy's ``healthy_panic_threshold``): when fewer than
  ``panic_threshold`` percent of a pool's endpoints are healthy (not open), the
  caller routes to all of them, ejected or not (``in_panic``); 0 never does.
  Ejections go on as before: panic only overrides them for picking.

Time comes from an injected monotonic ``clock``; time-driven changes happen
lazily, whenever a method looks at the clock (there are no timers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Container, Iterable
from dataclasses import dataclass
from typing import Any, Literal

State = Literal["closed", "open", "half-open"]
LocalFailure = Literal["connect-failure", "reset", "timeout"]
Kind = Literal["success", "5xx", "local-failure", "not-the-endpoint"]


@dataclass(frozen=True)
class OutlierSettings:
    """Envoy's ``outlier_detection`` settings and defaults (times in seconds).

    A plain value object: the snapshot parser validates it.
    """

    consecutive_5xx: int = 5
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 10.0
    panic_threshold: float = 50.0
    """Below this percent of a pool healthy, route to all of it (0: never)."""


def in_panic(pool: Collection[str], ejected: Container[str], threshold: float) -> bool:
    """Whether fewer than ``threshold`` percent of ``pool`` (instance ids) are healthy, that
    is not in ``ejected``: then the caller routes to the whole pool, as Envoy does."""
    if threshold <= 0 or not pool:
        return False
    healthy = sum(1 for instance in pool if instance not in ejected)
    return 100.0 * healthy / len(pool) < threshold


@dataclass(frozen=True)
class Outcome:
    """How one attempt on an endpoint ended; build it with the class methods."""

    kind: Kind
    detail: str
    """The status (``"503"``), the local failure (``"connect-failure"``), or why it says
    nothing of the endpoint (``"downstream-reset"``)."""

    @classmethod
    def status(cls, code: int) -> Outcome:
        """The upstream answered: 500-599 is a failure, anything else a success."""
        return cls("5xx" if 500 <= code <= 599 else "success", str(code))

    @classmethod
    def local_failure(cls, what: LocalFailure) -> Outcome:
        """The attempt failed before an answer: counted like a 5xx."""
        return cls("local-failure", what)

    @classmethod
    def not_the_endpoint(cls, why: str) -> Outcome:
        """It ended by the caller's doing or the mesh's (the caller hung up, its body never
        came whole, the mesh refused the request): neither counts nor resets."""
        return cls("not-the-endpoint", why)

    @classmethod
    def overflow(cls) -> Outcome:
        """The caller's own connection-pool limit answered 503."""
        return cls.not_the_endpoint("overflow")

    @property
    def failed(self) -> bool:
        return self.kind in ("5xx", "local-failure")


@dataclass(frozen=True)
class EndpointState:
    """What the user sees of one endpoint."""

    instance: str
    state: State
    reason: str | None
    """Why it was last ejected (kept while half-open); ``None`` when closed."""
    retry_at: float | None
    """Monotonic time an open endpoint turns half-open; ``None`` unless open."""
    ejections: int
    """Times ejected since it joined (never decays)."""
    multiplier: int
    """Envoy's ejection-time multiplier: the next ejection lasts ``base * (multiplier + 1)``."""
    consecutive_failures: int

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "state": self.state,
            "reason": self.reason,
            "retry_in": _seconds_until(self.retry_at, now),
            "ejections": self.ejections,
            "consecutive_failures": self.consecutive_failures,
        }


@dataclass(frozen=True)
class BreakerSummary:
    """The breaker state of the edge to the destination service.

    ``open`` if any endpoint is open (with the reason and retry time of the one
    that retries soonest), else ``half-open`` if any is, else ``closed``.
    """

    state: State
    instance: str | None
    """The endpoint the reason and retry time are about."""
    reason: str | None
    retry_at: float | None
    ejected: int
    """Endpoints open now."""
    half_open: int
    total: int
    ejections: int = 0
    """Ejections on this edge since the sidecar started, over every endpoint."""
    panic: bool = False
    """A pool the caller picks among is under its panic threshold: it routes to all of it,
    ejected endpoints too (the detector alone cannot say: the destination fills it in)."""

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "state": self.state,
            "instance": self.instance,
            "reason": self.reason,
            "retry_in": _seconds_until(self.retry_at, now),
            "ejected": self.ejected,
            "half_open": self.half_open,
            "total": self.total,
            "ejections": self.ejections,
            "panic": self.panic,
        }


class _Endpoint:
    __slots__ = (
        "consecutive",
        "ejections",
        "healthy_since",
        "local_in_run",
        "multiplier",
        "reason",
        "retry_at",
        "state",
    )

    def __init__(self, now: float) -> None:
        self.state: State = "closed"
        self.consecutive = 0
        self.local_in_run = False
        self.multiplier = 0
        self.ejections = 0
        self.reason: str | None = None
        self.retry_at = 0.0
        self.healthy_since = now
        """Start of the interval now running without ejection or failure (for the decay)."""


class OutlierDetector:
    """Outlier detection over the endpoints (instance ids) of one destination service.

    ``on_change`` is called with the new summary whenever its state or its number
    of open endpoints changes, from within whichever call noticed it.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        settings: OutlierSettings | None = None,
        instances: Iterable[str] = (),
        on_change: Callable[[BreakerSummary], None] | None = None,
    ) -> None:
        self._clock = clock
        self._settings = settings or OutlierSettings()
        self._on_change = on_change
        now = clock()
        self._endpoints = {instance: _Endpoint(now) for instance in instances}
        self._reported = self._key(self._summary())

    @property
    def settings(self) -> OutlierSettings:
        return self._settings

    def set_settings(self, settings: OutlierSettings) -> None:
        """New settings apply to later decisions; running ejections keep their end."""
        self._settings = settings

    def set_endpoints(self, instances: Iterable[str]) -> None:
        """The destination's endpoints changed: new ones start closed, removed ones are
        forgotten (one coming back later starts afresh)."""
        now = self._advance()
        wanted = list(instances)
        self._endpoints = {i: self._endpoints.get(i) or _Endpoint(now) for i in wanted}
        self._notify()

    def record(self, instance: str, outcome: Outcome) -> EndpointState | None:
        """Account for one attempt on ``instance``; ``None`` if it is not an endpoint (any
        more). Results arriving while the endpoint is open (requests that were already
        in flight) change nothing."""
        now = self._advance()
        ep = self._endpoints.get(instance)
        if ep is None:
            return None
        if outcome.kind == "not-the-endpoint" or ep.state == "open":
            return self._state(instance, ep)
        if not outcome.failed and ep.state == "closed":
            ep.consecutive = 0  # the common case, which changes no state: nothing to report
            ep.local_in_run = False
            return self._state(instance, ep)
        if not outcome.failed:
            if ep.state == "half-open":
                ep.state = "closed"
                ep.healthy_since = now
            ep.consecutive = 0
            ep.local_in_run = False
        else:
            ep.consecutive += 1
            ep.local_in_run = ep.local_in_run or outcome.kind == "local-failure"
            ep.healthy_since = now
            if ep.state == "half-open":
                self._try_eject(ep, now, f"failed while half-open (last: {outcome.detail})")
            elif ep.consecutive >= self._settings.consecutive_5xx:
                what = "failures" if ep.local_in_run else "5xx"
                reason = f"{ep.consecutive} consecutive {what} (last: {outcome.detail})"
                self._try_eject(ep, now, reason)
        self._notify()
        return self._state(instance, ep)

    def tick(self) -> BreakerSummary:
        """Apply what the clock says (ejections ending) and return the summary; call it
        now and then, or at ``next_change()``, to be told of time-driven changes."""
        self._advance()
        return self._notify()

    def next_change(self) -> float | None:
        """The monotonic time of the next time-driven change (an open endpoint turning
        half-open), if any."""
        self.tick()
        return min((ep.retry_at for ep in self._open()), default=None)

    def is_ejected(self, instance: str) -> bool:
        self.tick()
        ep = self._endpoints.get(instance)
        return ep is not None and ep.state == "open"

    def eligible(self, instances: Iterable[str]) -> list[str]:
        """``instances`` without the open ones (unknown ids count as eligible)."""
        self.tick()
        return [i for i in instances if not self._is_open(i)]

    def ejected(self) -> dict[str, float]:
        """Open endpoints and the monotonic time each turns half-open."""
        self.tick()
        return {i: ep.retry_at for i, ep in self._endpoints.items() if ep.state == "open"}

    def endpoint(self, instance: str) -> EndpointState | None:
        self.tick()
        ep = self._endpoints.get(instance)
        return None if ep is None else self._state(instance, ep)

    def endpoints(self) -> list[EndpointState]:
        self.tick()
        return [self._state(i, ep) for i, ep in self._endpoints.items()]

    def summary(self) -> BreakerSummary:
        return self.tick()

    def to_json(self) -> dict[str, Any]:
        """The summary with an ``endpoints`` list; times as seconds from now."""
        summary = self.tick()
        now = self._clock()
        data = summary.to_json(now)
        data["endpoints"] = [self._state(i, ep).to_json(now) for i, ep in self._endpoints.items()]
        return data

    # internals

    def _try_eject(self, ep: _Endpoint, now: float, reason: str) -> None:
        """Eject ``ep`` unless the max ejection percent forbids it; either way its run of
        failures starts again (as Envoy resets the counter after an ejection attempt)."""
        settings = self._settings
        ep.consecutive = 0
        ep.local_in_run = False
        active = len(self._open())
        percent = 100.0 * (active + 1) / len(self._endpoints)
        if active > 0 and percent > settings.max_ejection_percent:
            ep.state = "closed"  # refused: a half-open endpoint is simply back in service
            ep.reason = None
            return
        base, cap = settings.base_ejection_time, settings.max_ejection_time
        # Envoy stops growing the multiplier once base * multiplier has passed the cap.
        if ep.multiplier * base < cap + base:
            ep.multiplier += 1
        ep.ejections += 1
        ep.state = "open"
        ep.reason = reason
        ep.retry_at = now + min(base * ep.multiplier, cap)

    def _advance(self) -> float:
        """Bring every endpoint to the clock's time: ejections that ended turn half-open,
        and the multiplier drops by one per full healthy interval."""
        now = self._clock()
        interval = self._settings.interval
        for ep in self._endpoints.values():
            if ep.state == "open" and now >= ep.retry_at:
                ep.state = "half-open"
                ep.consecutive = 0
                ep.local_in_run = False
            elif ep.state == "closed" and ep.multiplier > 0 and interval > 0:
                intervals = math.floor((now - ep.healthy_since) / interval)
                if intervals > 0:
                    ep.multiplier = max(0, ep.multiplier - intervals)
                    ep.healthy_since += intervals * interval
        return now

    def _open(self) -> list[_Endpoint]:
        return [ep for ep in self._endpoints.values() if ep.state == "open"]

    def _is_open(self, instance: str) -> bool:
        ep = self._endpoints.get(instance)
        return ep is not None and ep.state == "open"

    def _state(self, instance: str, ep: _Endpoint) -> EndpointState:
        return EndpointState(
            instance=instance,
            state=ep.state,
            reason=None if ep.state == "closed" else ep.reason,
            retry_at=ep.retry_at if ep.state == "open" else None,
            ejections=ep.ejections,
            multiplier=ep.multiplier,
            consecutive_failures=ep.consecutive,
        )

    def _summary(self) -> BreakerSummary:
        opened = [(ep.retry_at, i, ep) for i, ep in self._endpoints.items() if ep.state == "open"]
        half = [(i, ep) for i, ep in self._endpoints.items() if ep.state == "half-open"]
        total = len(self._endpoints)
        ejections = sum(ep.ejections for ep in self._endpoints.values())
        if opened:
            retry_at, instance, ep = min(opened, key=lambda t: (t[0], t[1]))
            return BreakerSummary(
                state="open",
                instance=instance,
                reason=ep.reason,
                retry_at=retry_at,
                ejected=len(opened),
                half_open=len(half),
                total=total,
                ejections=ejections,
            )
        if half:
            instance, ep = half[0]
            return BreakerSummary(
                state="half-open",
                instance=instance,
                reason=ep.reason,
                retry_at=None,
                ejected=0,
                half_open=len(half),
                total=total,
                ejections=ejections,
            )
        return BreakerSummary(
            "closed", None, None, None, ejected=0, half_open=0, total=total, ejections=ejections
        )

    @staticmethod
    def _key(summary: BreakerSummary) -> tuple[State, int, int]:
        return summary.state, summary.ejected, summary.ejections

    def _notify(self) -> BreakerSummary:
        summary = self._summary()
        key = self._key(summary)
        if key != self._reported:
            self._reported = key
            if self._on_change is not None:
                self._on_change(summary)
        return summary


def _seconds_until(at: float | None, now: float) -> float | None:
    return None if at is None else round(max(0.0, at - now), 3)
