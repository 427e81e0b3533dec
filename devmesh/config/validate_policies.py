"""Pass 1 for ``policies:``: the shape of each traffic policy (timeout, retries, breaker, split,
load balancing, connection-pool limits, faults).

Whether a policy names a real service, and a split real versions adding up to
100, is pass 2's business (``validate_refs``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TypeVar

from devmesh.config.model import (
    LB_POLICIES,
    RETRY_ON_VALUES,
    BreakerPolicy,
    FaultMatch,
    FaultSpec,
    Policy,
    PoolPolicy,
    RetryPolicy,
)
from devmesh.config.readers import Section, describe
from devmesh.config.report import did_you_mean
from devmesh.units import parse_size

POLICY_KEYS = ("timeout", "retries", "breaker", "split", "lb", "pool", "faults")
POOL_KEYS = ("max_connections", "max_pending", "max_requests")
FAULT_KEYS = ("delay", "abort", "bandwidth", "hang", "match")
DELAY_KEYS = ("fixed", "jitter", "percent")
ABORT_KEYS = ("http_status", "reset", "percent")
MATCH_KEYS = ("path", "method", "headers", "source")
RETRY_KEYS = ("attempts", "per_try_timeout", "retry_on")
BREAKER_KEYS = (
    "consecutive_5xx",
    "interval",
    "base_ejection_time",
    "max_ejection_time",
    "max_ejection_percent",
    "panic_threshold",
)
MAX_ATTEMPTS = 10

T = TypeVar("T")


def _or(value: T | None, default: T) -> T:
    return value if value is not None else default


def read_policy(policies: Section, service: str, raw: object) -> Policy:
    """The policy for calls to ``service``, from its entry under ``policies:``."""
    section = Section.open(
        policies.problems,
        raw,
        policies.at(service),
        f"the policy for {service}",
        allowed=POLICY_KEYS,
        example="timeout: 2s",
    )
    if section is None:
        return Policy()
    return Policy(
        timeout=section.duration("timeout", example="timeout: 2s"),
        retries=_retries(section, service),
        breaker=_breaker(section, service),
        split=_split(section),
        lb=section.choice("lb", LB_POLICIES, example="lb: least-request"),
        pool=_pool(section, service),
        faults=_faults(section, service),
    )


def _pool(policy: Section, service: str) -> PoolPolicy | None:
    section = policy.mapping(
        "pool",
        f"the connection pool of the policy for {service}",
        allowed=POOL_KEYS,
        example="pool: {max_requests: 100}",
    )
    if section is None:
        return None
    default = PoolPolicy()
    return PoolPolicy(
        **{
            key: _or(section.integer(key, 1, None, example=f"{key}: 100"), getattr(default, key))
            for key in POOL_KEYS
        }
    )


def _faults(policy: Section, service: str) -> tuple[FaultSpec, ...]:
    value = policy.get("faults")
    if value is None:
        return ()
    if not isinstance(value, list):
        policy.wrong(
            "faults",
            f"faults of the policy for {service} must be a list, not {describe(value)}",
            "write each fault as an item: `faults: [{abort: {http_status: 503, percent: 10}}]`",
        )
        return ()
    faults = []
    for index, raw in enumerate(value):
        path = f"{policy.at('faults')}[{index}]"
        section = Section.open(
            policy.problems,
            raw,
            path,
            f"fault {index + 1} of the policy for {service}",
            allowed=FAULT_KEYS,
            example="abort: {http_status: 503, percent: 10}",
        )
        if section is not None:
            faults.append(_fault(section))
    return tuple(faults)


def _fault(section: Section) -> FaultSpec:
    spec = FaultSpec(
        bandwidth=_size(section, "bandwidth", "bandwidth: 64kB"),
        hang=section.duration("hang", example="hang: 5s"),
        match=_match(section),
    )
    delay = section.get("delay")
    if isinstance(delay, dict):
        sub = section.mapping("delay", f"the delay of {section.owner}", allowed=DELAY_KEYS,
                              example="delay: {fixed: 200ms, percent: 50}")  # fmt: skip
        if sub is not None:
            fixed = sub.duration("fixed", example="fixed: 200ms")
            if fixed is None and "fixed" not in sub.data:
                sub.missing("fixed", "fixed: 200ms")
            spec = replace(
                spec,
                delay=fixed,
                jitter=_or(sub.duration("jitter", example="jitter: 50ms"), 0.0),
                delay_percent=_or(sub.number("percent", 0, 100, example="percent: 50"), 100.0),
            )
    elif delay is not None:
        spec = replace(spec, delay=section.duration("delay", example="delay: 200ms"))
    abort = section.get("abort")
    if isinstance(abort, dict):
        sub = section.mapping("abort", f"the abort of {section.owner}", allowed=ABORT_KEYS,
                              example="abort: {http_status: 503, percent: 10}")  # fmt: skip
        if sub is not None:
            status = sub.integer("http_status", 200, 599, example="http_status: 503")
            reset = sub.get("reset") is True
            if sub.get("reset") is not None and not isinstance(sub.get("reset"), bool):
                sub.wrong("reset", f"reset of {sub.owner} must be true or false", "`reset: true`")
            if (status is None) == (not reset) and not sub.problems.any_under(sub.path):
                sub.problems.add(
                    sub.path,
                    f"the abort of {section.owner} needs one of http_status and reset",
                    "write `abort: {http_status: 503}` or `abort: {reset: true}`",
                )
            spec = replace(
                spec,
                abort_status=status,
                abort_reset=reset,
                abort_percent=_or(sub.number("percent", 0, 100, example="percent: 10"), 100.0),
            )
    elif abort == "reset":
        spec = replace(spec, abort_reset=True)
    elif abort is not None:
        spec = replace(spec, abort_status=section.integer("abort", 200, 599, example="abort: 503"))
    if spec == FaultSpec(match=spec.match) and not section.problems.any_under(section.path):
        section.problems.add(
            section.path,
            f"{section.owner} does nothing",
            "give it a delay, an abort, a bandwidth or a hang",
        )
    return spec


def _size(section: Section, key: str, example: str) -> int | None:
    value = section.get(key)
    if value is None:
        return None
    try:
        size = parse_size(value)
    except ValueError:
        section.wrong(
            key,
            f"{key} of {section.owner} must be a size, not {describe(value)}",
            f"write it like 512B, 64kB or 1MB, e.g. `{example}`",
        )
        return None
    if size <= 0:
        section.wrong(key, f"{key} of {section.owner} must be more than 0", f"e.g. `{example}`")
        return None
    return size


def _match(fault: Section) -> FaultMatch:
    section = fault.mapping(
        "match", f"the match of {fault.owner}", allowed=MATCH_KEYS, example="match: {path: /x}"
    )
    if section is None:
        return FaultMatch()
    path = section.string("path", example="path: /prices")
    if path is not None and not path.startswith("/"):
        section.wrong("path", f"path of {section.owner} must start with '/'", f"write `/{path}`")
        path = None
    method = section.string("method", example="method: GET")
    return FaultMatch(
        path=path,
        method=method.upper() if method else None,
        headers=section.text_map("headers", names=None, example="headers: {x-test: '1'}"),
        source=section.string("source", example="source: frontend"),
    )


def _retries(policy: Section, service: str) -> RetryPolicy | None:
    section = policy.mapping(
        "retries",
        f"the retries of the policy for {service}",
        allowed=RETRY_KEYS,
        example="retries: {attempts: 3}",
    )
    if section is None:
        return None
    default = RetryPolicy()
    retry_on = _retry_on(section)
    return RetryPolicy(
        attempts=_or(
            section.integer("attempts", 1, MAX_ATTEMPTS, example="attempts: 3"), default.attempts
        ),
        per_try_timeout=section.duration("per_try_timeout", example="per_try_timeout: 500ms"),
        retry_on=tuple(retry_on) if retry_on is not None else default.retry_on,
    )


def _retry_on(section: Section) -> list[str] | None:
    values = section.strings("retry_on", example="retry_on: [5xx, connect-failure]")
    seen: set[str] = set()
    for index, value in enumerate(values or []):
        path = f"{section.at('retry_on')}[{index}]"
        if value not in RETRY_ON_VALUES:
            otherwise = f"use some of: {', '.join(RETRY_ON_VALUES)}"
            section.problems.add(
                path,
                f"retry_on of {section.owner} has an unknown condition '{value}'",
                did_you_mean(value, RETRY_ON_VALUES, otherwise),
            )
        elif value in seen:
            section.problems.add(
                path, f"retry_on of {section.owner} lists '{value}' twice", "remove the repeat"
            )
        seen.add(value)
    return values


def _breaker(policy: Section, service: str) -> BreakerPolicy | None:
    section = policy.mapping(
        "breaker",
        f"the breaker of the policy for {service}",
        allowed=BREAKER_KEYS,
        example="breaker: {consecutive_5xx: 5}",
    )
    if section is None:
        return None
    default = BreakerPolicy()
    return BreakerPolicy(
        consecutive_5xx=_or(
            section.integer("consecutive_5xx", 1, None, example="consecutive_5xx: 5"),
            default.consecutive_5xx,
        ),
        interval=_or(section.duration("interval", example="interval: 10s"), default.interval),
        base_ejection_time=_or(
            section.duration("base_ejection_time", example="base_ejection_time: 30s"),
            default.base_ejection_time,
        ),
        max_ejection_time=_or(
            section.duration("max_ejection_time", example="max_ejection_time: 300s"),
            default.max_ejection_time,
        ),
        max_ejection_percent=_or(
            section.number("max_ejection_percent", 0, 100, example="max_ejection_percent: 10"),
            default.max_ejection_percent,
        ),
        panic_threshold=_or(
            section.number("panic_threshold", 0, 100, example="panic_threshold: 50"),
            default.panic_threshold,
        ),
    )


def _split(policy: Section) -> dict[str, float] | None:
    section = policy.mapping(
        "split", f"the split of {policy.owner}", allowed=None, example="split: {v1: 90, v2: 10}"
    )
    if section is None:
        return None
    weights: dict[str, float] = {}
    for version, value in section.data.items():
        weight = section.check_number(
            section.at(version),
            f"the weight of {version} in {section.owner}",
            value,
            0,
            100,
            f"{version}: 50",
        )
        if weight is not None:
            weights[version] = weight
    return weights
