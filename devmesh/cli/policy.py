"""``devmesh policy SERVICE``: show, or change live, how calls to a service are handled.

Timeout, retries, circuit breaker (outlier detection), load balancing and
connection-pool limits. A change overrides devmesh.yaml until ``--clear`` and
is kept across control-plane restarts; the split has its own command.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.table import Table

from devmesh.cli.app import app, context
from devmesh.cli.faults import call_api
from devmesh.cli.output import console, print_json
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


@app.command()
def policy(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="The service whose incoming calls to shape.")],
    timeout: Annotated[str | None, typer.Option(help="Whole-call timeout, e.g. 2s.")] = None,
    retries: Annotated[int | None, typer.Option(help="Attempts in all (1-10).")] = None,
    per_try_timeout: Annotated[str | None, typer.Option(help="Timeout of each attempt.")] = None,
    retry_on: Annotated[
        str | None, typer.Option(help="When to retry: 5xx,gateway-error,reset,connect-failure.")
    ] = None,
    consecutive_5xx: Annotated[
        int | None, typer.Option("--consecutive-5xx", help="Failures in a row that eject.")
    ] = None,
    interval: Annotated[str | None, typer.Option(help="Breaker sweep interval.")] = None,
    base_ejection_time: Annotated[str | None, typer.Option(help="First ejection time.")] = None,
    max_ejection_time: Annotated[str | None, typer.Option(help="Longest ejection time.")] = None,
    max_ejection_percent: Annotated[
        float | None, typer.Option(help="Most instances ejected at once, in %.")
    ] = None,
    lb: Annotated[str | None, typer.Option(help="round-robin or least-request.")] = None,
    max_connections: Annotated[int | None, typer.Option(help="Pool: connections.")] = None,
    max_pending: Annotated[int | None, typer.Option(help="Pool: requests waiting.")] = None,
    max_requests: Annotated[int | None, typer.Option(help="Pool: requests at once.")] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="Go back to devmesh.yaml's settings.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the policy as JSON.")] = False,
) -> None:
    """Show how calls to SERVICE are handled, or change it live (until --clear)."""
    settings = settings_from_flags(
        timeout=timeout,
        retries=retries,
        per_try_timeout=per_try_timeout,
        retry_on=retry_on,
        consecutive_5xx=consecutive_5xx,
        interval=interval,
        base_ejection_time=base_ejection_time,
        max_ejection_time=max_ejection_time,
        max_ejection_percent=max_ejection_percent,
        lb=lb,
        max_connections=max_connections,
        max_pending=max_pending,
        max_requests=max_requests,
    )
    if clear and settings:
        raise UsageError(
            "give settings or --clear, not both", f"e.g. devmesh policy {service} --clear"
        )
    workspace = context(ctx).workspace
    if clear:
        result = asyncio.run(call_api(workspace, "clear_policy", service))
    elif settings:
        result = asyncio.run(call_api(workspace, "set_policy", service, settings))
    else:
        result = asyncio.run(call_api(workspace, "policy", service))
    if json_out:
        print_json(result)
        return
    console.print(_table(result))


def _table(result: dict[str, Any]) -> Table:
    table = Table(title=f"calls to {result['service']}", title_justify="left")
    for column in ("SETTING", "VALUE", "FROM"):
        table.add_column(column)
    policy, overrides = result["policy"], result["overrides"]
    for key, default in DEFAULTS.items():
        value = policy.get(key)
        source = "devmesh policy" if key in overrides else "devmesh.yaml" if value else "default"
        shown = value if value is not None else default
        if isinstance(shown, dict):
            for sub, sub_value in shown.items():
                table.add_row(f"{key}.{sub}", _text(sub_value), source)
        else:
            table.add_row(key, _text(shown), source)
    return table


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
