"""Pass 1 for ``policies:``: the shape of each traffic policy (timeout, retries, breaker, split).

Whether a policy names a real service, and a split real versions adding up to
100, is pass 2's business (``validate_refs``).
"""

from __future__ import annotations

from typing import TypeVar

from devmesh.config.model import RETRY_ON_VALUES, BreakerPolicy, Policy, RetryPolicy
from devmesh.config.readers import Section
from devmesh.config.report import did_you_mean

POLICY_KEYS = ("timeout", "retries", "breaker", "split")
RETRY_KEYS = ("attempts", "per_try_timeout", "retry_on")
BREAKER_KEYS = (
    "consecutive_5xx",
    "interval",
    "base_ejection_time",
    "max_ejection_time",
    "max_ejection_percent",
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
