"""What a calling sidecar keeps about each destination service between requests.

Per destination: the outlier detector over its endpoints (the circuit
breaker), a balancer per version (round robin or least-request, over the
endpoints not ejected) and the connection-pool gate. ``sync`` brings them in
line with a new snapshot without losing what was learnt: an endpoint that
stays keeps its ejection history; settings change for the next request.

The pool a call picks among is the endpoints of the version the router chose
(all of the service's when it chose none). When fewer than the panic
threshold's share of that pool is healthy, the pick ignores the breaker's
ejections (Envoy's panic mode): a service with its only endpoint ejected, or
most of them, still gets the traffic rather than none.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from proxy.balancer import Balancer, Unavailable
from proxy.outlier import BreakerSummary, OutlierDetector, in_panic
from proxy.pool import PoolGate
from proxy.snapshot import Endpoint, Route, Snapshot

BreakerListener = Callable[[str, BreakerSummary], None]


@dataclass
class Destination:
    service: str
    route: Route
    detector: OutlierDetector
    gate: PoolGate
    balancers: dict[str | None, Balancer] = field(default_factory=dict)
    retry_turns: dict[str | None, Balancer] = field(default_factory=dict)
    """Round robin of retries, apart: a retry does not move the first tries' turn, so an
    endpoint that takes nothing is tried first no more often than its share."""

    def pick(
        self, candidates: Iterable[Endpoint], version: str | None, avoid: Iterable[str] = ()
    ) -> Endpoint | Unavailable:
        """An endpoint among ``candidates`` (the pool) that the breaker lets through, or any
        of them when the pool is in panic, preferring ones not in ``avoid`` (those a retry
        already tried)."""
        endpoints = {e.instance: e for e in candidates}
        ejected = self.detector.ejected()
        if ejected and in_panic(endpoints, ejected, self.detector.settings.panic_threshold):
            ejected = {}  # too few healthy: the breaker's ejections are ignored
        balancer = self.balancers.get(version)
        if balancer is None:
            balancer = self.balancers[version] = Balancer(self.route.policy.lb)
        # The tried ones are skipped like ejected ones while another is eligible.
        tried = {i: 0.0 for i in avoid if i in endpoints and i not in ejected}
        skipped = {**ejected, **tried}
        if all(i in skipped for i in endpoints):
            skipped = ejected
        elif tried and balancer.policy == "round-robin":
            balancer = self.retry_turns.setdefault(version, Balancer("round-robin"))
        chosen = balancer.pick(list(endpoints), skipped)
        if isinstance(chosen, Unavailable):
            return chosen
        return endpoints[chosen]

    def pools(self) -> list[list[str]]:
        """The pools calls pick among as the route stands: each version the split may
        choose, or the whole service without a split (a pinned version is a pool too,
        but only for the calls that pin it)."""
        endpoints = self.route.endpoints
        if not self.route.split:
            return [[e.instance for e in endpoints]]
        chosen = [v for v, weight in self.route.split.items() if weight > 0]
        return [[e.instance for e in endpoints if e.version == v] for v in chosen]

    def summary(self, summary: BreakerSummary | None = None) -> BreakerSummary:
        """The breaker's summary (``summary``, or the detector's now), saying whether one of
        its pools is in panic."""
        if summary is None:
            summary = self.detector.tick()
        if not summary.ejected:
            return summary
        ejected = self.detector.ejected()
        threshold = self.detector.settings.panic_threshold
        panic = any(in_panic(pool, ejected, threshold) for pool in self.pools())
        return replace(summary, panic=panic) if panic != summary.panic else summary

    def started(self, endpoint: Endpoint, version: str | None) -> None:
        balancer = self.balancers.get(version)
        if balancer is not None:
            balancer.started(endpoint.instance)

    def finished(self, endpoint: Endpoint, version: str | None) -> None:
        balancer = self.balancers.get(version)
        if balancer is not None:
            balancer.finished(endpoint.instance)


class Destinations:
    def __init__(
        self,
        on_breaker_change: BreakerListener = lambda service, summary: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._by_service: dict[str, Destination] = {}
        self._on_change = on_breaker_change
        self._clock = clock

    def get(self, service: str) -> Destination | None:
        return self._by_service.get(service)

    def sync(self, snapshot: Snapshot) -> None:
        """Follow a new snapshot: new destinations, changed endpoints and settings."""
        for service in [s for s in self._by_service if s not in snapshot.routes]:
            del self._by_service[service]
        for service, route in snapshot.routes.items():
            instances = [e.instance for e in route.endpoints]
            found = self._by_service.get(service)
            if found is None:
                detector = OutlierDetector(
                    self._clock,
                    route.policy.outlier,
                    instances,
                    on_change=self._listener(service),
                )
                self._by_service[service] = Destination(
                    service, route, detector, PoolGate(route.policy.pool)
                )
                continue
            found.route = route
            found.detector.set_settings(route.policy.outlier)
            found.detector.set_endpoints(instances)
            found.gate.set_limits(route.policy.pool)
            for balancer in found.balancers.values():
                balancer.policy = route.policy.lb

    def _listener(self, service: str) -> Callable[[BreakerSummary], None]:
        def changed(summary: BreakerSummary) -> None:
            found = self._by_service.get(service)
            self._on_change(service, found.summary(summary) if found is not None else summary)

        return changed

    def breakers(self) -> dict[str, BreakerSummary]:
        """Each destination's breaker, as the user reads it (closed, open, half-open; in
        panic or not)."""
        return {service: d.summary() for service, d in self._by_service.items()}
