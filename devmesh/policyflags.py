"""Policy settings as a user writes them (``devmesh policy`` flags, or the TUI's form) turned
into devmesh.yaml's shape. Shared by the CLI and the TUI."""

from __future__ import annotations

from typing import Any

from devmesh.config.dump import dump_policy
from devmesh.config.model import LB_POLICIES, RETRY_ON_VALUES, BreakerPolicy, Policy, PoolPolicy
from devmesh.config.report import did_you_mean
from devmesh.errors import UsageError
from devmesh.faultflags import parse_flag_duration

DEFAULTS: dict[str, Any] = {
    "timeout": "none",
    "retries": "none",
    **dump_policy(Policy(breaker=BreakerPolicy(), lb=LB_POLICIES[0], pool=PoolPolicy())),
}
"""What each setting is when neither devmesh.yaml nor `devmesh policy` gives it."""


def settings_from_flags(**flags: Any) -> dict[str, Any]:
    """The settings the flags change, in devmesh.yaml's shape; ``UsageError`` naming a flag."""
    settings: dict[str, Any] = {}
    if flags["timeout"] is not None:
        settings["timeout"] = parse_flag_duration("--timeout", flags["timeout"])
    retries: dict[str, Any] = {}
    if flags["retries"] is not None:
        if not 1 <= flags["retries"] <= 10:
            raise UsageError(
                f"--retries must be from 1 to 10 attempts, not {flags['retries']}",
                "e.g. --retries 3",
            )
        retries["attempts"] = flags["retries"]
    if flags["per_try_timeout"] is not None:
        retries["per_try_timeout"] = parse_flag_duration(
            "--per-try-timeout", flags["per_try_timeout"]
        )
    if flags["retry_on"] is not None:
        conditions = [c.strip() for c in flags["retry_on"].split(",") if c.strip()]
        for condition in conditions:
            if condition not in RETRY_ON_VALUES:
                raise UsageError(
                    f"--retry-on: {condition!r} is not a retry condition",
                    did_you_mean(condition, RETRY_ON_VALUES, f"use: {', '.join(RETRY_ON_VALUES)}"),
                )
        retries["retry_on"] = conditions
    if retries:
        settings["retries"] = retries
    breaker: dict[str, Any] = {}
    for key in ("interval", "base_ejection_time", "max_ejection_time"):
        if flags[key] is not None:
            breaker[key] = parse_flag_duration(f"--{key.replace('_', '-')}", flags[key])
    if flags["consecutive_5xx"] is not None:
        if flags["consecutive_5xx"] < 1:
            raise UsageError("--consecutive-5xx must be 1 or more", "e.g. --consecutive-5xx 5")
        breaker["consecutive_5xx"] = flags["consecutive_5xx"]
    if flags["max_ejection_percent"] is not None:
        if not 0 <= flags["max_ejection_percent"] <= 100:
            raise UsageError(
                f"--max-ejection-percent must be from 0 to 100, not "
                f"{flags['max_ejection_percent']:g}",
                "e.g. --max-ejection-percent 50",
            )
        breaker["max_ejection_percent"] = flags["max_ejection_percent"]
    if flags["panic_threshold"] is not None:
        if not 0 <= flags["panic_threshold"] <= 100:
            raise UsageError(
                f"--panic-threshold must be from 0 to 100, not {flags['panic_threshold']:g}",
                "e.g. --panic-threshold 50 (0: never route to ejected instances)",
            )
        breaker["panic_threshold"] = flags["panic_threshold"]
    if breaker:
        settings["breaker"] = breaker
    if flags["lb"] is not None:
        if flags["lb"] not in LB_POLICIES:
            raise UsageError(
                f"--lb must be one of {', '.join(LB_POLICIES)}, not {flags['lb']!r}",
                did_you_mean(flags["lb"], LB_POLICIES, "e.g. --lb least-request"),
            )
        settings["lb"] = flags["lb"]
    pool: dict[str, Any] = {}
    for key in ("max_connections", "max_pending", "max_requests"):
        if flags[key] is not None:
            if flags[key] < 1:
                raise UsageError(f"--{key.replace('_', '-')} must be 1 or more", "e.g. 100")
            pool[key] = flags[key]
    if pool:
        settings["pool"] = pool
    return settings
