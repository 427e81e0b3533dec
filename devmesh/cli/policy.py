"""``devmesh policy SERVICE``: show, or change live, how calls to a service are handled.

Timeout, retries, circuit breaker (outlier detection), load balancing and
connection-pool limits. A change overrides devmesh.yaml until ``--clear`` and
is kept across control-plane restarts; the split has its own command.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from devmesh import payloads
from devmesh.cli.app import app, call_api, context
from devmesh.cli.layout import Listing
from devmesh.cli.output import console, print_json
from devmesh.errors import UsageError
from devmesh.forms.policies import DEFAULTS, settings_from_fields


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
    panic_threshold: Annotated[
        float | None,
        typer.Option(help="Below this % of instances healthy, route to all (0: never)."),
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
    settings = settings_from_fields(
        dict(
            timeout=timeout,
            retries=retries,
            per_try_timeout=per_try_timeout,
            retry_on=retry_on,
            consecutive_5xx=consecutive_5xx,
            interval=interval,
            base_ejection_time=base_ejection_time,
            max_ejection_time=max_ejection_time,
            max_ejection_percent=max_ejection_percent,
            panic_threshold=panic_threshold,
            lb=lb,
            max_connections=max_connections,
            max_pending=max_pending,
            max_requests=max_requests,
        )
    )
    if clear and settings:
        raise UsageError(
            "give settings or --clear, not both", f"e.g. devmesh policy {service} --clear"
        )
    workspace = context(ctx).workspace
    if clear:
        result = asyncio.run(call_api(workspace, lambda c: c.clear_policy(service)))
    elif settings:
        result = asyncio.run(call_api(workspace, lambda c: c.set_policy(service, settings)))
    else:
        result = asyncio.run(call_api(workspace, lambda c: c.policy(service)))
    if json_out:
        print_json(result)
        return
    console.print(_table(result))


def _table(result: payloads.PolicyAnswer) -> Listing:
    table = Listing(title=f"calls to {result['service']}")
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
