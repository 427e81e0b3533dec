"""``authorization:``: the project's authorization rules, their shape (pass 1) and the services
they name (pass 2). The CLI's ``devmesh authz add`` goes through the same checks.

    authorization:
      - name: only-frontend-reads
        service: catalog          # the service being called
        action: allow             # allow | deny
        mode: audit               # enforce (the default) | audit: report, do not deny
        from: [frontend]          # calling services, or "*" (any mesh identity)
        paths: ["/items/*"]       # exact, /prefix/*, *.suffix or *
        methods: [GET]
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from devmesh.config.model import ANY_SOURCE, AUTHZ_ACTIONS, AUTHZ_MODES, GATEWAY, AuthzRule
from devmesh.config.readers import Section, describe
from devmesh.config.report import Problems, did_you_mean, quoted_list

RULE_KEYS = ("name", "service", "action", "mode", "from", "paths", "methods")
RULE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
METHOD = re.compile(r"^[A-Z]{1,20}$")
GATEWAY_SOURCE = GATEWAY
"""The source name of calls from outside the mesh through the gateway (its identity)."""
_EXAMPLE = "{name: readers, service: catalog, action: allow, from: [frontend]}"


def read_authorization(top: Section) -> tuple[AuthzRule, ...]:
    raw = top.get("authorization")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        top.wrong(
            "authorization",
            f"authorization must be a list of rules, not {describe(raw)}",
            f"write each rule as an item: `- {_EXAMPLE}`",
        )
        return ()
    rules = []
    for index, item in enumerate(raw):
        rule = read_rule(top.problems, item, f"authorization[{index}]")
        if rule is not None:
            rules.append(rule)
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        if rule.name in seen:
            top.problems.add(
                f"authorization[{index}].name",
                f"two authorization rules are named '{rule.name}'",
                "give each rule its own name",
            )
        seen.add(rule.name)
    return tuple(rules)


def read_rule(problems: Problems, raw: object, path: str) -> AuthzRule | None:
    """One rule (``None``, reported, if it cannot be read at all)."""
    section = Section.open(
        problems, raw, path, "an authorization rule", allowed=RULE_KEYS, example=_EXAMPLE
    )
    if section is None:
        return None
    name = section.string("name", example="name: readers", required=True)
    if name is not None and not RULE_NAME.match(name):
        section.wrong(
            "name",
            f"the authorization rule name '{name}' is not valid",
            "use lowercase letters, digits and '-' (at most 63)",
        )
    owner = f"the authorization rule {name}" if name else "an authorization rule"
    section.owner = owner
    service = section.string("service", example="service: catalog", required=True)
    action = section.choice("action", AUTHZ_ACTIONS, example="action: deny")
    if action is None and section.get("action") is None:
        section.missing("action", "action: allow")
    mode = section.choice("mode", AUTHZ_MODES, example="mode: audit") or "enforce"
    sources = section.strings("from", example="from: [frontend]") or []
    paths = section.strings("paths", example='paths: ["/items/*"]') or []
    for index, pattern in enumerate(paths):
        problem = path_problem(pattern)
        if problem is not None:
            problems.add(f"{section.at('paths')}[{index}]", f"{owner}: {problem}", _PATH_HINT)
    methods = [m.upper() for m in section.strings("methods", example="methods: [GET]") or []]
    for index, method in enumerate(methods):
        if not METHOD.match(method):
            problems.add(
                f"{section.at('methods')}[{index}]",
                f"{owner} names the method '{method}', which is not an HTTP method",
                "write methods like GET, POST or DELETE",
            )
    if name is None or service is None or action is None:
        return None
    return AuthzRule(
        name=name,
        service=service,
        action=action,
        mode=mode,
        sources=tuple(sources),
        paths=tuple(paths),
        methods=tuple(methods),
        line=problems.lines.get(path) if problems.lines is not None else None,
    )


_PATH_HINT = "write an exact path (/items), a prefix (/items/*), a suffix (*.json) or *"


def path_problem(pattern: str) -> str | None:
    """What is wrong with a path pattern, or ``None``."""
    if pattern == "*":
        return None
    inner = pattern[1:-1] if len(pattern) > 1 else ""
    if "*" in inner:
        return f"the path '{pattern}' has a '*' inside it; one is allowed only at its start or end"
    if pattern.startswith("*") and pattern.endswith("*"):
        return f"the path '{pattern}' has a '*' at both ends"
    if not pattern.startswith(("/", "*")):
        return f"the path '{pattern}' does not start with '/'"
    return None


def check_rules(
    problems: Problems, rules: Collection[AuthzRule], services: Mapping[str, object]
) -> None:
    """Pass 2: each rule names a service of the project, and calls from services of it."""
    names = list(services)
    for index, rule in enumerate(rules):
        path = f"authorization[{index}]"
        if rule.service not in services:
            problems.add(
                f"{path}.service",
                f"the authorization rule {rule.name} is for '{rule.service}', "
                "which is not a service",
                did_you_mean(rule.service, names, f"the services are: {quoted_list(names)}"),
            )
        for at, source in enumerate(rule.sources):
            if source in services or source in (ANY_SOURCE, GATEWAY_SOURCE):
                continue
            problems.add(
                f"{path}.from[{at}]",
                f"the authorization rule {rule.name} names calls from '{source}', "
                "which is not a service",
                did_you_mean(
                    source,
                    names,
                    f"name services ({quoted_list(names)}), 'ingress' (the gateway) or '*'",
                ),
            )
