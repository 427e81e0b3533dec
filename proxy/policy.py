"""How a sidecar handles calls to one destination: the route policy part of a snapshot.

Timeout, retries, outlier detection (the circuit breaker), connection-pool
limits, load balancing and faults. Like the rest of the snapshot this schema
belongs to the data plane: the control plane builds it, the sidecar validates
it whole (``parse_policy``) and rejects a snapshot with a bad one.

Wire form (JSON; every key optional, absent means the default)::

    {"timeout": 2.0,
     "retries": {"attempts": 3, "per_try_timeout": 0.5,
                 "retry_on": ["5xx", "connect-failure"]},
     "outlier": {"consecutive_5xx": 5, "interval": 10.0, "base_ejection_time": 30.0,
                 "max_ejection_time": 300.0, "max_ejection_percent": 10.0,
                 "panic_threshold": 50.0},
     "pool": {"max_connections": 1024, "max_pending": 1024, "max_requests": 1024},
     "lb": "round-robin",
     "faults": [{"id": "f1", "abort_status": 503, "abort_percent": 20.0}]}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard

from proxy.balancer import Policy as LbPolicy
from proxy.faults import Fault, FaultError, faults_to_wire, parse_faults
from proxy.outlier import OutlierSettings

RETRY_ON = ("5xx", "gateway-error", "reset", "connect-failure")
LB_POLICIES: tuple[LbPolicy, ...] = ("round-robin", "least-request")
RetryOn = Literal["5xx", "gateway-error", "reset", "connect-failure"]


class PolicyError(ValueError):
    """A route policy does not match the schema; the message says where."""


@dataclass(frozen=True)
class Retries:
    attempts: int = 2
    """Attempts in all, the first included."""
    per_try_timeout: float | None = None
    retry_on: tuple[str, ...] = ("5xx", "connect-failure")


@dataclass(frozen=True)
class Pool:
    """Connection-pool limits towards the destination (Envoy's circuit-breaker thresholds)."""

    max_connections: int = 1024
    max_pending: int = 1024
    max_requests: int = 1024


@dataclass(frozen=True)
class RoutePolicy:
    timeout: float | None = None
    retries: Retries | None = None
    outlier: OutlierSettings = field(default_factory=OutlierSettings)
    pool: Pool = field(default_factory=Pool)
    lb: LbPolicy = "round-robin"
    faults: tuple[Fault, ...] = ()


DEFAULT = RoutePolicy()


def parse_policy(data: object, where: str) -> RoutePolicy:
    obj = _object(data, where)
    unknown = sorted(set(obj) - {"timeout", "retries", "outlier", "pool", "lb", "faults"})
    if unknown:
        raise PolicyError(f"{where}.{unknown[0]} is not a policy field")
    lb = obj.get("lb", "round-robin")
    if lb not in LB_POLICIES:
        raise PolicyError(f"{where}.lb must be one of {', '.join(LB_POLICIES)}")
    try:
        faults = parse_faults(obj.get("faults", []), f"{where}.faults")
    except FaultError as exc:
        raise PolicyError(str(exc)) from None
    return RoutePolicy(
        timeout=_seconds(obj.get("timeout"), f"{where}.timeout"),
        retries=_retries(obj.get("retries"), f"{where}.retries"),
        outlier=_outlier(obj.get("outlier"), f"{where}.outlier"),
        pool=_pool(obj.get("pool"), f"{where}.pool"),
        lb=lb,
        faults=faults,
    )


def policy_to_wire(policy: RoutePolicy) -> dict[str, Any]:
    wire: dict[str, Any] = {}
    if policy.timeout is not None:
        wire["timeout"] = policy.timeout
    if policy.retries is not None:
        retries = policy.retries
        wire["retries"] = {"attempts": retries.attempts, "retry_on": list(retries.retry_on)}
        if retries.per_try_timeout is not None:
            wire["retries"]["per_try_timeout"] = retries.per_try_timeout
    if policy.outlier != OutlierSettings():
        o = policy.outlier
        wire["outlier"] = {
            "consecutive_5xx": o.consecutive_5xx,
            "interval": o.interval,
            "base_ejection_time": o.base_ejection_time,
            "max_ejection_time": o.max_ejection_time,
            "max_ejection_percent": o.max_ejection_percent,
            "panic_threshold": o.panic_threshold,
        }
    if policy.pool != Pool():
        p = policy.pool
        wire["pool"] = {
            "max_connections": p.max_connections,
            "max_pending": p.max_pending,
            "max_requests": p.max_requests,
        }
    if policy.lb != "round-robin":
        wire["lb"] = policy.lb
    if policy.faults:
        wire["faults"] = faults_to_wire(policy.faults)
    return wire


def _retries(data: object, where: str) -> Retries | None:
    if data is None:
        return None
    obj = _object(data, where)
    attempts = obj.get("attempts", Retries().attempts)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 10:
        raise PolicyError(f"{where}.attempts must be a whole number from 1 to 10")
    retry_on = obj.get("retry_on", list(Retries().retry_on))
    if not isinstance(retry_on, list) or any(c not in RETRY_ON for c in retry_on):
        raise PolicyError(f"{where}.retry_on must be a list of {', '.join(RETRY_ON)}")
    return Retries(
        attempts=attempts,
        per_try_timeout=_seconds(obj.get("per_try_timeout"), f"{where}.per_try_timeout"),
        retry_on=tuple(retry_on),
    )


def _outlier(data: object, where: str) -> OutlierSettings:
    if data is None:
        return OutlierSettings()
    obj = _object(data, where)
    default = OutlierSettings()
    consecutive = obj.get("consecutive_5xx", default.consecutive_5xx)
    if not isinstance(consecutive, int) or isinstance(consecutive, bool) or consecutive < 1:
        raise PolicyError(f"{where}.consecutive_5xx must be a whole number of 1 or more")
    percent = obj.get("max_ejection_percent", default.max_ejection_percent)
    if not _number(percent) or not 0 <= percent <= 100:
        raise PolicyError(f"{where}.max_ejection_percent must be from 0 to 100")
    panic = obj.get("panic_threshold", default.panic_threshold)
    if not _number(panic) or not 0 <= panic <= 100:
        raise PolicyError(f"{where}.panic_threshold must be from 0 to 100")
    return OutlierSettings(
        consecutive_5xx=consecutive,
        interval=_seconds(obj.get("interval"), f"{where}.interval") or default.interval,
        base_ejection_time=_seconds(obj.get("base_ejection_time"), f"{where}.base_ejection_time")
        or default.base_ejection_time,
        max_ejection_time=_seconds(obj.get("max_ejection_time"), f"{where}.max_ejection_time")
        or default.max_ejection_time,
        max_ejection_percent=float(percent),
        panic_threshold=float(panic),
    )


def _pool(data: object, where: str) -> Pool:
    if data is None:
        return Pool()
    obj = _object(data, where)
    values = {}
    for key in ("max_connections", "max_pending", "max_requests"):
        value = obj.get(key, getattr(Pool(), key))
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PolicyError(f"{where}.{key} must be a whole number of 1 or more")
        values[key] = value
    return Pool(**values)


def _seconds(value: object, where: str) -> float | None:
    if value is None:
        return None
    if not _number(value) or not math.isfinite(value) or value <= 0:
        raise PolicyError(f"{where} must be a number of seconds above 0")
    return float(value)


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _object(data: object, where: str) -> Mapping[str, object]:
    if not isinstance(data, dict):
        raise PolicyError(f"{where} must be an object")
    return data
