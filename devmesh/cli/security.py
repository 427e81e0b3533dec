"""``devmesh mtls`` and ``devmesh authz add | ls | rm``: the mesh's mTLS modes and its
authorization rules, live.

A rule from the CLI is a rule in devmesh.yaml's shape (``authorization:``): the
control plane validates it with the config's own code, applies it to the
service's sidecars and keeps it across restarts.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.text import Text

from devmesh.cli.app import app, call_api, context
from devmesh.cli.layout import Listing
from devmesh.cli.output import console, print_json
from devmesh.config.model import MTLS_MODES
from devmesh.errors import UsageError
from devmesh.forms.authz import rule_from_fields
from devmesh.statetext import origin_text

authz_app = typer.Typer(
    help="Authorization rules: allow or deny calls to a service by caller, path and method "
    "(Istio's order: deny first; with any allow rule, only what one allows); --audit to see "
    "what a rule would deny before enforcing it.",
    no_args_is_help=True,
)
app.add_typer(authz_app, name="authz")


@app.command("mtls")
def mtls(
    ctx: typer.Context,
    mode: Annotated[
        str | None,
        typer.Argument(help=f"Set the mode: {', '.join(MTLS_MODES)}. Without it: show them."),
    ] = None,
    service: Annotated[
        str | None, typer.Option(help="Only this service (default: the whole mesh).")
    ] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Back to devmesh.yaml's mode.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the modes as JSON.")] = False,
) -> None:
    """Show or set mTLS between sidecars: strict (only mTLS from the mesh), permissive
    (mTLS or plaintext; the default) or off."""
    if mode is not None and reset:
        raise UsageError("give a mode or --reset, not both", "e.g. `devmesh mtls strict`")
    if mode is not None and mode not in MTLS_MODES:
        raise UsageError(f"{mode!r} is not an mTLS mode", f"give one of: {', '.join(MTLS_MODES)}")
    workspace = context(ctx).workspace
    if mode is None and not reset:
        modes = asyncio.run(call_api(workspace, lambda c: c.mtls_modes()))
    else:
        modes = asyncio.run(call_api(workspace, lambda c: c.set_mtls(service, mode)))
    if service is not None:
        if service not in modes:
            raise UsageError(
                f"there is no service named {service!r}", f"services: {', '.join(modes)}"
            )
        modes = {service: modes[service]}
    if json_out:
        print_json({"modes": modes})
        return
    if mode is not None or reset:
        what = service or "the mesh"
        console.print(f"mTLS of {what}: " + (mode or "back to devmesh.yaml's"))
    table = Listing()
    table.add_column("SERVICE")
    table.add_column("MTLS")
    for name, its in modes.items():
        table.add_row(name, Text(its + (" (locked)" if its == "strict" else ""),
                                 style="green" if its == "strict" else ""))  # fmt: skip
    console.print(table)


@authz_app.command("add")
def add(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="The service whose incoming calls it judges.")],
    allow: Annotated[bool, typer.Option("--allow", help="Let matching calls in.")] = False,
    deny: Annotated[bool, typer.Option("--deny", help="Refuse matching calls (403).")] = False,
    name: Annotated[
        str | None, typer.Option(help="The rule's name (default: SERVICE-ACTION-N).")
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option("--from", help="Calls from this service ('*': any mesh identity)."),
    ] = None,
    path: Annotated[
        list[str] | None, typer.Option(help="Calls to this path: /x, /x/*, *.json or *.")
    ] = None,
    method: Annotated[list[str] | None, typer.Option(help="Calls with this method.")] = None,
    audit: Annotated[
        bool, typer.Option("--audit", help="Report what it would deny; deny nothing.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rule as JSON.")] = False,
) -> None:
    """Add an authorization rule on calls to SERVICE (--allow or --deny)."""
    if allow == deny:
        raise UsageError(
            "give --allow or --deny (one of them)",
            f"e.g. `devmesh authz add {service} --deny --path '/admin/*'`",
        )
    rule = rule_from_fields(
        service,
        "allow" if allow else "deny",
        name=name,
        sources=source or [],
        paths=path or [],
        methods=method or [],
        audit=audit,
    )
    added = asyncio.run(call_api(context(ctx).workspace, lambda c: c.add_authz_rule(rule)))
    if json_out:
        print_json(added)
        return
    console.print(Text(f"added rule {added['name']}: {added['does']}"))


@authz_app.command("ls")
def list_rules(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rules as JSON.")] = False,
) -> None:
    """List the authorization rules in force: devmesh.yaml's and the runtime ones."""
    rules = asyncio.run(call_api(context(ctx).workspace, lambda c: c.authz_rules()))
    if json_out:
        print_json({"rules": rules})
        return
    if not rules:
        console.print("no authorization rules: every call is allowed")
        return
    table = Listing()
    for column in ("NAME", "SERVICE", "ACTION", "FROM", "PATHS", "METHODS", "MODE", "ORIGIN"):
        table.add_column(column)
    for rule in rules:
        table.add_row(
            Text(rule["name"]),
            Text(rule["service"]),
            Text(rule["action"], style="red" if rule["action"] == "deny" else "green"),
            Text(", ".join(rule.get("from") or []) or "anyone"),
            Text(", ".join(rule.get("paths") or []) or "any"),
            Text(", ".join(rule.get("methods") or []) or "any"),
            Text(rule["mode"], style="yellow" if rule["mode"] == "audit" else ""),
            origin_text(rule["origin"]),
        )
    console.print(table)


@authz_app.command("rm")
def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The rule's name (authz ls).")],
) -> None:
    """Remove one authorization rule added at run time."""
    asyncio.run(call_api(context(ctx).workspace, lambda c: c.remove_authz_rule(name)))
    console.print(Text(f"removed rule {name}"))
