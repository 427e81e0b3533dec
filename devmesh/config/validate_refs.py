"""Pass 2 of validation: what values say about each other.

Dependencies on unknown services, dependency cycles, two services on one host
port, services or versions with nothing to run, policies and splits naming
things that do not exist. It runs on whatever pass 1 could read, and stays
quiet about anything pass 1 already reported, so one mistake gives one problem.
"""

from __future__ import annotations

from collections.abc import Mapping

from devmesh.config.model import GATEWAY, RESERVED_PORTS, Policy, Service
from devmesh.config.report import Problems, did_you_mean, quoted_list
from devmesh.config.validate_authz import check_rules
from devmesh.config.validate_shape import Shape

SPLIT_TOLERANCE = 1e-6
NOTHING_TO_RUN_HINT = (
    "add `command:` (run it as a local process) or `image:`/`build:` (run it in Docker)"
)


def check_references(problems: Problems, shape: Shape) -> None:
    """Add a problem for every cross-reference in ``shape`` that does not hold."""
    services = shape.services
    if shape.services_known:
        _check_depends_on(problems, services)
        _check_cycles(problems, services)
        for name, policy in shape.policies.items():
            _check_policy(problems, services, name, policy)
        check_rules(problems, shape.authorization, services)
    _check_expose(problems, services)
    for service in services.values():
        _check_runnable(problems, service)
        _check_ports(problems, service)


def _check_depends_on(problems: Problems, services: Mapping[str, Service]) -> None:
    for service in services.values():
        for index, dependency in enumerate(service.depends_on):
            path = f"services.{service.name}.depends_on[{index}]"
            if problems.any_under(path):
                continue
            if dependency == service.name:
                problems.add(
                    path,
                    f"{service.name} depends on itself",
                    f"remove '{dependency}' from the depends_on of {service.name}",
                )
            elif dependency not in services:
                others = [name for name in services if name != service.name]
                problems.add(
                    path,
                    f"{service.name} depends on '{dependency}', which is not a service",
                    did_you_mean(dependency, others, _declare_hint(others)),
                )


def _declare_hint(services: list[str]) -> str:
    return f"declare it under `services:` or remove it (services: {quoted_list(services)})"


def _check_cycles(problems: Problems, services: Mapping[str, Service]) -> None:
    order = {name: index for index, name in enumerate(services)}
    for cycle in find_cycles(
        {
            name: [dep for dep in service.depends_on if dep in services and dep != name]
            for name, service in services.items()
        }
    ):
        start = min(range(len(cycle)), key=lambda i: order[cycle[i]])
        cycle = cycle[start:] + cycle[:start]
        first, second = cycle[0], cycle[1 % len(cycle)]
        index = services[first].depends_on.index(second)
        problems.add(
            f"services.{first}.depends_on[{index}]",
            f"depends_on forms a cycle: {' -> '.join([*cycle, first])}",
            "remove one of these dependencies, so the services can start one after another",
        )


def find_cycles(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """Dependency cycles of ``graph`` (each once, as found by a depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    found.append(cycle)
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    return found


def _check_expose(problems: Problems, services: Mapping[str, Service]) -> None:
    owners: dict[int, str] = {}
    for service in services.values():
        port = service.expose
        if port is None:
            continue
        if port in owners:
            other = owners[port]
            problems.add(
                f"services.{service.name}.expose",
                f"{service.name} exposes host port {port}, which {other} already exposes"
                f"{problems.where(f'services.{other}.expose')}",
                f"give {service.name} or {other} {problems.origin.wording.other_host_port}",
            )
        else:
            owners[port] = service.name


def _check_ports(problems: Problems, service: Service) -> None:
    path = f"services.{service.name}"
    if service.port in RESERVED_PORTS and not problems.any_under(f"{path}.port"):
        problems.add(
            f"{path}.port",
            f"port {service.port} of {service.name} is reserved for devmesh's sidecar "
            f"({RESERVED_PORTS.start}-{RESERVED_PORTS.stop - 1})",
            "have the service listen on another port",
        )
    if service.protocol != "tcp":
        return
    if service.health.path is not None:
        problems.add(
            f"{path}.health.path",
            f"{service.name} speaks tcp, so it has no HTTP health check",
            "remove `path:` (devmesh then checks that its port accepts connections), "
            "or set `protocol: http`",
        )
    instances = sum(version.replicas for version in service.versions)
    if service.expose is not None and instances > 1:
        problems.add(
            f"{path}.expose",
            f"{service.name} speaks tcp and runs {instances} instances, but a tcp port can be "
            "exposed for one instance only",
            f"run one instance of it, or {problems.origin.wording.no_host_port}",
        )


def _check_runnable(problems: Problems, service: Service) -> None:
    path = f"services.{service.name}"
    if not service.versioned:
        version = service.versions[0]
        if not (version.command or version.image or version.build) and not problems.any_under(path):
            problems.add(path, f"{service.name} has nothing to run", NOTHING_TO_RUN_HINT)
        return
    version_paths = [f"{path}.versions.{version.name}" for version in service.versions]
    for version, version_path in zip(service.versions, version_paths, strict=True):
        if version.command or version.image or version.build:
            continue
        others = [p for p in version_paths if p != version_path]
        if not problems.any_under(path, except_under=others):
            problems.add(
                version_path,
                f"version {version.name} of {service.name} has nothing to run",
                NOTHING_TO_RUN_HINT,
            )


def _check_policy(
    problems: Problems, services: Mapping[str, Service], name: str, policy: Policy
) -> None:
    path = f"policies.{name}"
    service = services.get(name)
    if service is None:
        problems.add(
            path,
            f"there is a policy for '{name}', which is not a service",
            did_you_mean(
                name,
                services,
                f"policies are keyed by service name; the services are: {quoted_list(services)}",
            ),
        )
        return
    for index, fault in enumerate(policy.faults):
        source = fault.match.source
        if source is not None and source not in services and source != GATEWAY:
            at = f"{path}.faults[{index}].match.source"
            if not problems.any_under(at):
                problems.add(
                    at,
                    f"a fault of the policy for {name} matches calls from '{source}', "
                    "which is not a service",
                    did_you_mean(source, services, f"the services are: {quoted_list(services)}"),
                )
    split = policy.split
    if split is None or problems.any_under(f"services.{name}.versions"):
        return
    if not service.versioned:
        problems.add(
            f"{path}.split",
            f"the policy for {name} splits traffic between versions, but {name} has no versions",
            f"declare `versions:` under service {name}, or remove `split:`",
        )
        return
    weights_ok = not problems.any_under(f"{path}.split")
    versions = [version.name for version in service.versions]
    for version in split:
        if version not in versions:
            problems.add(
                f"{path}.split.{version}",
                f"the split of the policy for {name} names version '{version}', "
                f"which {name} does not have",
                did_you_mean(
                    version, versions, f"the versions of {name} are: {quoted_list(versions)}"
                ),
            )
    total = sum(split.values())
    if weights_ok and abs(total - 100) > SPLIT_TOLERANCE:
        problems.add(
            f"{path}.split",
            f"the split weights of the policy for {name} add up to {total:g}, not 100",
            "change the weights so that they add up to 100",
        )
