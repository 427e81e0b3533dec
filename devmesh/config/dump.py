"""The config-shaped dict of a ``Project``: what ``parse_project`` reads back to the same project.

Used to send a project as JSON (the control plane) and to show it to users,
so it is written as a user would write ``devmesh.yaml``: durations as ``2s``,
defaults left out, ``versions:`` only for a versioned service.
"""

from __future__ import annotations

from devmesh.config.model import (
    DEFAULT_MTLS,
    AuthzRule,
    Build,
    FaultSpec,
    Health,
    Policy,
    Project,
    Service,
    Version,
)
from devmesh.units import format_duration, format_size, parse_duration


def dump_project(project: Project) -> dict[str, object]:
    """A JSON-serialisable dict that ``parse_project`` turns back into ``project``.

    Only ``source`` and the ``line`` fields are lost.
    """
    data: dict[str, object] = {
        "name": project.name,
        "services": {name: _service(service) for name, service in project.services.items()},
    }
    if project.base_image is not None:
        data["base_image"] = project.base_image
    if project.interception != "transparent":
        data["interception"] = project.interception
    if project.policies:
        data["policies"] = {name: dump_policy(policy) for name, policy in project.policies.items()}
    if project.mtls != DEFAULT_MTLS:
        data["mtls"] = project.mtls
    if project.authorization:
        data["authorization"] = [dump_rule(rule) for rule in project.authorization]
    return data


def dump_duration(seconds: float) -> str | float:
    """``"250ms"``-style text when it reads back exactly, else the number of seconds."""
    text = format_duration(seconds)
    try:
        exact = parse_duration(text) == seconds
    except ValueError:
        exact = False
    return text if exact else seconds


def _service(service: Service) -> dict[str, object]:
    data: dict[str, object] = {}
    if service.versioned:
        data["versions"] = {version.name: _run(version) for version in service.versions}
    else:
        data.update(_run(service.versions[0]))
    if service.port is not None:
        data["port"] = service.port
    if service.expose is not None:
        data["expose"] = service.expose
    if service.depends_on:
        data["depends_on"] = list(service.depends_on)
    if service.health != Health():
        data["health"] = _health(service.health)
    if service.interception is not None:
        data["interception"] = service.interception
    if service.protocol != "http":
        data["protocol"] = service.protocol
    if service.mtls is not None:
        data["mtls"] = service.mtls
    return data


def _run(version: Version) -> dict[str, object]:
    data: dict[str, object] = {}
    if version.command is not None:
        data["command"] = version.command
    if version.image is not None:
        data["image"] = version.image
    if version.build is not None:
        data["build"] = _build(version.build)
    if version.env:
        data["env"] = dict(version.env)
    if version.replicas != 1:
        data["replicas"] = version.replicas
    return data


def _build(build: Build) -> str | dict[str, object]:
    if build.dockerfile is None and not build.args:
        return build.context
    data: dict[str, object] = {"context": build.context}
    if build.dockerfile is not None:
        data["dockerfile"] = build.dockerfile
    if build.args:
        data["args"] = dict(build.args)
    return data


def _health(health: Health) -> dict[str, object]:
    data: dict[str, object] = {"start_timeout": dump_duration(health.start_timeout)}
    if health.path is not None:
        data["path"] = health.path
    return data


def dump_rule(rule: AuthzRule) -> dict[str, object]:
    data: dict[str, object] = {"name": rule.name, "service": rule.service, "action": rule.action}
    if rule.mode != "enforce":
        data["mode"] = rule.mode
    for key, values in (("from", rule.sources), ("paths", rule.paths), ("methods", rule.methods)):
        if values:
            data[key] = list(values)
    return data


def dump_policy(policy: Policy) -> dict[str, object]:
    data: dict[str, object] = {}
    if policy.timeout is not None:
        data["timeout"] = dump_duration(policy.timeout)
    if policy.retries is not None:
        retries: dict[str, object] = {
            "attempts": policy.retries.attempts,
            "retry_on": list(policy.retries.retry_on),
        }
        if policy.retries.per_try_timeout is not None:
            retries["per_try_timeout"] = dump_duration(policy.retries.per_try_timeout)
        data["retries"] = retries
    if policy.breaker is not None:
        breaker = policy.breaker
        data["breaker"] = {
            "consecutive_5xx": breaker.consecutive_5xx,
            "interval": dump_duration(breaker.interval),
            "base_ejection_time": dump_duration(breaker.base_ejection_time),
            "max_ejection_time": dump_duration(breaker.max_ejection_time),
            "max_ejection_percent": breaker.max_ejection_percent,
            "panic_threshold": breaker.panic_threshold,
        }
    if policy.split is not None:
        data["split"] = dict(policy.split)
    if policy.lb is not None:
        data["lb"] = policy.lb
    if policy.pool is not None:
        data["pool"] = {
            "max_connections": policy.pool.max_connections,
            "max_pending": policy.pool.max_pending,
            "max_requests": policy.pool.max_requests,
        }
    if policy.faults:
        data["faults"] = [dump_fault(fault) for fault in policy.faults]
    return data


def dump_fault(fault: FaultSpec) -> dict[str, object]:
    """A fault as `devmesh.yaml` writes it (Istio's shape)."""
    data: dict[str, object] = {}
    if fault.delay is not None:
        delay: dict[str, object] = {"fixed": dump_duration(fault.delay)}
        if fault.jitter:
            delay["jitter"] = dump_duration(fault.jitter)
        if fault.delay_percent != 100:
            delay["percent"] = fault.delay_percent
        data["delay"] = delay
    if fault.abort_status is not None or fault.abort_reset:
        abort: dict[str, object] = (
            {"reset": True} if fault.abort_reset else {"http_status": fault.abort_status}
        )
        if fault.abort_percent != 100:
            abort["percent"] = fault.abort_percent
        data["abort"] = abort
    if fault.bandwidth is not None:
        data["bandwidth"] = format_size(fault.bandwidth)
    if fault.hang is not None:
        data["hang"] = dump_duration(fault.hang)
    match: dict[str, object] = {}
    if fault.match.path is not None:
        match["path"] = fault.match.path
    if fault.match.method is not None:
        match["method"] = fault.match.method
    if fault.match.headers:
        match["headers"] = dict(fault.match.headers)
    if fault.match.source is not None:
        match["source"] = fault.match.source
    if match:
        data["match"] = match
    return data
