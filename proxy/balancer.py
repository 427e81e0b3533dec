"""Picking an endpoint of one pool (a service, or one version of it). Pure logic.

Two policies, with Envoy's meaning, over the endpoints the circuit breaker has
not ejected (the caller passes plain instance ids and the ejected ones, see
``proxy.outlier.OutlierDetector.ejected``):

* ``round-robin``: each eligible endpoint in turn, in the order given; ejected
  endpoints are skipped, so the others keep taking turns evenly.
* ``least-request``: Envoy's power of two choices: two endpoints drawn at random
  (with replacement, as Envoy does), the one with fewer active requests wins; on
  a tie the first drawn. Active requests are counted with ``started``/``finished``
  or ``with balancer.track(instance):``.

With nothing to pick, ``pick`` says why: there are no endpoints at all, or all
of them are ejected (with the soonest time one is tried again).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Policy = Literal["round-robin", "least-request"]
POLICIES: tuple[Policy, ...] = ("round-robin", "least-request")

_NOTHING_EJECTED: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True)
class Unavailable:
    """Why no endpoint could be picked."""

    why: Literal["no-endpoints", "all-ejected"]
    ejected: int
    """How many endpoints the breaker holds out (all of them, for ``all-ejected``)."""
    retry_at: float | None
    """Monotonic time the first of them is tried again (``all-ejected`` only)."""

    def describe(self, what: str, now: float) -> str:
        """One sentence for a 503 body or a log line; ``what`` names the pool."""
        if self.why == "no-endpoints":
            return f"no healthy instance of {what}"
        wait = max(0.0, (self.retry_at or now) - now)
        if self.ejected == 1:
            return (
                f"the only instance of {what} is ejected by the circuit breaker; "
                f"it is tried again in {wait:.1f}s"
            )
        return (
            f"all {self.ejected} instances of {what} are ejected by the circuit breaker; "
            f"the first is tried again in {wait:.1f}s"
        )


class Balancer:
    """Endpoint choice and active-request counts for one pool."""

    def __init__(
        self,
        policy: Policy = "round-robin",
        rand: Callable[[], float] = random.random,
        choices: int = 2,
    ) -> None:
        self.policy: Policy = policy
        self._rand = rand
        self._choices = max(1, choices)
        self._cursor = -1
        self._active: dict[str, int] = {}

    def pick(
        self, endpoints: Sequence[str], ejected: Mapping[str, float] = _NOTHING_EJECTED
    ) -> str | Unavailable:
        """An endpoint of ``endpoints`` not in ``ejected`` (instance -> retry time)."""
        eligible = [e for e in endpoints if e not in ejected]
        if not eligible:
            if not endpoints:
                return Unavailable("no-endpoints", ejected=0, retry_at=None)
            return Unavailable(
                "all-ejected",
                ejected=len(endpoints),
                retry_at=min(ejected[e] for e in endpoints),
            )
        if self.policy == "least-request":
            return self._least_request(eligible)
        return self._round_robin(endpoints, ejected)

    def started(self, instance: str) -> None:
        self._active[instance] = self._active.get(instance, 0) + 1

    def finished(self, instance: str) -> None:
        count = self._active.get(instance, 0) - 1
        if count > 0:
            self._active[instance] = count
        else:
            self._active.pop(instance, None)

    @contextmanager
    def track(self, instance: str) -> Iterator[None]:
        """Count a request as active on ``instance`` for the ``with`` block."""
        self.started(instance)
        try:
            yield
        finally:
            self.finished(instance)

    def active(self, instance: str) -> int:
        return self._active.get(instance, 0)

    def _round_robin(self, endpoints: Sequence[str], ejected: Mapping[str, float]) -> str:
        n = len(endpoints)
        for step in range(1, n + 1):
            index = (self._cursor + step) % n
            if endpoints[index] not in ejected:
                self._cursor = index
                return endpoints[index]
        raise AssertionError("pick() checked that an endpoint is eligible")

    def _least_request(self, eligible: Sequence[str]) -> str:
        n = len(eligible)
        if n == 1:
            return eligible[0]
        best: str | None = None
        for _ in range(self._choices):
            sampled = eligible[min(int(self._rand() * n), n - 1)]
            if best is None or self.active(sampled) < self.active(best):
                best = sampled
        assert best is not None
        return best
