"""Policy settings as a user writes them (``devmesh policy``'s flags, or the TUI's policy
editor) turned into devmesh.yaml's shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devmesh.config.dump import dump_policy
from devmesh.config.model import LB_POLICIES, RETRY_ON_VALUES, BreakerPolicy, Policy, PoolPolicy
from devmesh.config.report import did_you_mean
from devmesh.errors import UsageError
from devmesh.forms.fields import FLAGS, Names, duration, given, items, percentage, whole

DEFAULTS: dict[str, Any] = {
    "timeout": "none",
    "retries": "none",
    **dump_policy(Policy(breaker=BreakerPolicy(), lb=LB_POLICIES[0], pool=PoolPolicy())),
}
"""What each setting is when neither devmesh.yaml nor `devmesh policy` gives it."""

Value = str | int | float | None
"""A setting as typed (text), or as a flag already read it (a number)."""


def settings_from_fields(fields: Mapping[str, Value], names: Names = FLAGS) -> dict[str, Any]:
    """The settings the fields change, in devmesh.yaml's shape; ``UsageError`` naming a field.

    ``fields`` by setting (``timeout``, ``retries``, ``per_try_timeout``, ``retry_on``, the
    breaker's, ``lb``, the pool's): missing or ``None`` (or empty text) changes nothing,
    but an empty ``retry_on`` is a list of no conditions (``--retry-on ''``).
    """

    def text(key: str) -> str | None:
        value = fields.get(key)
        return given(value) if isinstance(value, str) else None

    def whole_from(key: str, low: int, high: int | None, example: str) -> int | None:
        value = fields.get(key)
        found = whole(value if not isinstance(value, float) else str(value), key, names)
        if found is not None and (found < low or (high is not None and found > high)):
            limits = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise UsageError(
                f"{names.name(key)} must be {limits}, not {found}", names.example(key, example)
            )
        return found

    def percent_from(key: str, example: str) -> float | None:
        value = fields.get(key)
        number = value if not isinstance(value, int) else float(value)
        return percentage(number, key, names, example=example)

    settings: dict[str, Any] = {}
    if (timeout := duration(text("timeout"), "timeout", names, example="2s")) is not None:
        settings["timeout"] = timeout
    retries: dict[str, Any] = {}
    if (attempts := whole_from("retries", 1, 10, "3")) is not None:
        retries["attempts"] = attempts
    if (per_try := duration(text("per_try_timeout"), "per_try_timeout", names)) is not None:
        retries["per_try_timeout"] = per_try
    if isinstance(fields.get("retry_on"), str):  # empty text: retry on no condition
        conditions = items(str(fields["retry_on"]))
        for condition in conditions:
            if condition not in RETRY_ON_VALUES:
                raise UsageError(
                    f"{names.name('retry_on')}: {condition!r} is not a retry condition",
                    did_you_mean(condition, RETRY_ON_VALUES, f"use: {', '.join(RETRY_ON_VALUES)}"),
                )
        retries["retry_on"] = conditions
    if retries:
        settings["retries"] = retries
    breaker: dict[str, Any] = {}
    for key in ("interval", "base_ejection_time", "max_ejection_time"):
        if (found := duration(text(key), key, names, example="30s")) is not None:
            breaker[key] = found
    if (consecutive := whole_from("consecutive_5xx", 1, None, "5")) is not None:
        breaker["consecutive_5xx"] = consecutive
    for key, example in (
        ("max_ejection_percent", "50"),
        ("panic_threshold", "50 (0: never route to ejected instances)"),
    ):
        if (share := percent_from(key, example)) is not None:
            breaker[key] = share
    if breaker:
        settings["breaker"] = breaker
    if (lb := text("lb")) is not None:
        if lb not in LB_POLICIES:
            raise UsageError(
                f"{names.name('lb')} must be one of {', '.join(LB_POLICIES)}, not {lb!r}",
                did_you_mean(lb, LB_POLICIES, names.example("lb", "least-request")),
            )
        settings["lb"] = lb
    pool: dict[str, Any] = {}
    for key in ("max_connections", "max_pending", "max_requests"):
        if (limit := whole_from(key, 1, None, "100")) is not None:
            pool[key] = limit
    if pool:
        settings["pool"] = pool
    return settings
