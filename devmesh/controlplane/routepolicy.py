"""The route policy a sidecar gets for one destination, from devmesh.yaml and the overrides.

The config model (``devmesh.config.model.Policy``, ``FaultSpec``) is what users
write; ``proxy.policy.RoutePolicy`` is the data plane's contract. This is the
one place that turns the former into the latter.
"""

from __future__ import annotations

from collections.abc import Iterable

from devmesh.config.model import ANY_SOURCE, AuthzRule, BreakerPolicy, FaultSpec, Policy
from devmesh.controlplane.overrides import ActiveFault
from devmesh.pki import spiffe_id
from proxy.authz import AuthzPolicy
from proxy.faults import Fault, Match
from proxy.outlier import OutlierSettings
from proxy.policy import Pool, Retries, RoutePolicy


def route_policy(policy: Policy, faults: Iterable[ActiveFault]) -> RoutePolicy:
    breaker = policy.breaker or BreakerPolicy()
    pool = policy.pool
    return RoutePolicy(
        timeout=policy.timeout,
        retries=(
            Retries(
                attempts=policy.retries.attempts,
                per_try_timeout=policy.retries.per_try_timeout,
                retry_on=policy.retries.retry_on,
            )
            if policy.retries is not None
            else None
        ),
        outlier=OutlierSettings(
            consecutive_5xx=breaker.consecutive_5xx,
            interval=breaker.interval,
            base_ejection_time=breaker.base_ejection_time,
            max_ejection_time=breaker.max_ejection_time,
            max_ejection_percent=breaker.max_ejection_percent,
            panic_threshold=breaker.panic_threshold,
        ),
        pool=(
            Pool(pool.max_connections, pool.max_pending, pool.max_requests)
            if pool is not None
            else Pool()
        ),
        lb="least-request" if policy.lb == "least-request" else "round-robin",
        faults=tuple(sidecar_fault(f.id, f.spec, f.expires_at) for f in faults),
    )


def sidecar_fault(fault_id: str, spec: FaultSpec, expires_at: float | None) -> Fault:
    match = spec.match
    return Fault(
        id=fault_id,
        match=Match(
            path_prefix=match.path,
            method=match.method,
            headers=tuple(match.headers.items()),
            source=match.source,
        ),
        delay=spec.delay,
        jitter=spec.jitter,
        delay_percent=spec.delay_percent if spec.delay is not None else 100.0,
        abort_status=spec.abort_status,
        abort_reset=spec.abort_reset,
        abort_percent=(
            spec.abort_percent if spec.abort_status is not None or spec.abort_reset else 100.0
        ),
        bandwidth=spec.bandwidth,
        hang=spec.hang,
        expires_at=expires_at,
    )


def sidecar_authz(project: str, rules: Iterable[AuthzRule]) -> tuple[AuthzPolicy, ...]:
    """The rules for one service as its sidecar judges them: callers named by SPIFFE ID."""
    return tuple(
        AuthzPolicy(
            name=rule.name,
            action=rule.action,
            audit=rule.mode == "audit",
            sources=tuple(s if s == ANY_SOURCE else spiffe_id(project, s) for s in rule.sources),
            paths=rule.paths,
            methods=rule.methods,
        )
        for rule in rules
    )
