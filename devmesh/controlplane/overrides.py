"""What the user changes at run time on top of devmesh.yaml: faults, policy settings,
authorization rules, mTLS modes, and splits.

Each is kept in the control plane's persisted state in config form (the same
dicts devmesh.yaml holds), so they survive a restart, and is validated by the
very code that validates devmesh.yaml: a change is applied to a copy of the
project's config and parsed; if that fails, nothing changes and every problem
is reported, in the words a bad devmesh.yaml gets. (The splits are kept by the
mesh, apart, but checked the same way: ``Overrides.check_split``.)

A runtime fault has an id (``f1``, ``f2``...) and may be time-boxed: it
expires by itself (``expire``). A fault declared in devmesh.yaml has the id
``<service>-config-<n>`` and lasts as long as the config says it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from devmesh import payloads
from devmesh.config import dump_project, parse_project
from devmesh.config.dump import dump_fault, dump_policy, dump_rule
from devmesh.config.model import MTLS_MODES, AuthzRule, FaultSpec, Policy, Project
from devmesh.config.readers import describe as describe_value
from devmesh.config.validate_policies import POLICY_KEYS
from devmesh.errors import UsageError
from devmesh.forms.authz import describe_rule
from devmesh.forms.faults import describe, describe_match
from devmesh.units import parse_duration

OVERRIDABLE = tuple(key for key in POLICY_KEYS if key not in ("split", "faults"))
"""The policy settings `devmesh policy` may change (the split and faults have their own
commands)."""
MESH_WIDE = "*"
"""The key of the mesh-wide mTLS mode among the services' in ``state["mtls"]``."""


class UnknownFault(UsageError):
    """A fault id that does not exist."""


@dataclass(frozen=True)
class ActiveFault:
    id: str
    service: str
    spec: FaultSpec
    origin: payloads.Origin
    """``cli`` (added at run time) or ``config`` (declared in devmesh.yaml)."""
    expires_at: float | None = None
    """Wall-clock time it removes itself, if time-boxed."""

    def to_json(self, now: float) -> payloads.Fault:
        """The fault in devmesh.yaml's shape, and in words (``does``, ``matches``) for every
        client to show the same way."""
        fault = dump_fault(self.spec)
        return {
            "id": self.id,
            "service": self.service,
            "origin": self.origin,
            "fault": fault,
            "does": describe(fault),
            "matches": describe_match(fault),
            "expires_in": None if self.expires_at is None else max(0.0, self.expires_at - now),
        }


def fault_lifetime(value: object) -> float | None:
    """The seconds a runtime fault lasts (``None``: until removed), from the API's ``for``:
    a duration as a user writes it (``"2m"``) or a number of seconds, above 0."""
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise UsageError(
            f"`for` must be a duration above 0, not {describe_value(value)}",
            'send a number of seconds or a duration such as "2m", e.g. "for": "30s"',
        )
    return seconds


class UnknownRule(UsageError):
    """An authorization rule name that does not exist."""


@dataclass(frozen=True)
class ActiveRule:
    rule: AuthzRule
    origin: payloads.Origin
    """``cli`` (added at run time) or ``config`` (declared in devmesh.yaml)."""

    def to_json(self) -> payloads.Rule:
        """The rule in devmesh.yaml's shape, and in words (``does``) for every client to
        show the same way (its action and mode are the config's, validated)."""
        data = {
            **dump_rule(self.rule),
            "mode": self.rule.mode,
            "origin": self.origin,
            "does": describe_rule(self.rule),
        }
        return cast(payloads.Rule, data)


class Overrides:
    """Runtime faults and policy settings, over a project; ``state`` is the persisted dict part.

    ``state`` holds ``faults`` ({id: {service, fault, expires_at}}), ``next_fault``,
    ``policies`` ({service: {setting: value}}), ``authorization`` (rules in config
    form, in the order added) and ``mtls`` ({service, or "*" for the mesh: mode}),
    all JSON.
    """

    def __init__(self, state: dict[str, Any], clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.state.setdefault("faults", {})
        self.state.setdefault("next_fault", 1)
        self.state.setdefault("policies", {})
        self.state.setdefault("authorization", [])
        self.state.setdefault("mtls", {})
        self._clock = clock
        self._revision = 0
        self._resolved: tuple[tuple[int, int], Project, list[ActiveFault]] | None = None

    def resolve(self, project: Project) -> tuple[Project, list[ActiveFault]]:
        """The project with the overrides applied, and the faults in force (cached until the
        next change: the control plane asks for them on every snapshot)."""
        key = (id(project), self._revision)
        if self._resolved is None or self._resolved[0] != key:
            self._resolved = (key, self._candidate(project), self._active(project))
        return self._resolved[1], self._resolved[2]

    def _changed(self) -> None:
        self._revision += 1

    def check(self, project: Project) -> None:
        """Whether every override applies to ``project``, by the validation every change goes
        through: ``ConfigError`` naming each problem otherwise (``state`` must have the
        shape above)."""
        self.resolve(project)

    # -- policies ----------------------------------------------------------------

    def policy(self, project: Project, service: str) -> Policy:
        """The policy in force for calls to ``service``: devmesh.yaml's, then the overrides."""
        return self.resolve(project)[0].policy(service)

    def set_policy(self, project: Project, service: str, settings: dict[str, Any]) -> Policy:
        """Override some of ``service``'s policy settings (config form); validated first."""
        unknown = [key for key in settings if key not in OVERRIDABLE]
        if unknown:
            raise UsageError(
                f"{unknown[0]!r} is not a policy setting devmesh policy changes",
                f"change one of: {', '.join(OVERRIDABLE)}",
            )
        current = dump_policy(self.policy(project, service))
        merged = dict(self.state["policies"].get(service, {}))
        for key, value in settings.items():
            before = current.get(key)
            if isinstance(value, dict) and isinstance(before, dict):
                value = {**before, **value}  # --retries 3 keeps the per-try timeout
            merged[key] = value
        candidate = self._candidate(project, policies={service: merged})
        self.state["policies"][service] = merged
        self._changed()
        return candidate.policy(service)

    def check_split(
        self, project: Project, service: str, weights: Mapping[str, object]
    ) -> dict[str, float]:
        """The weights of a runtime split of ``service``'s calls between its versions,
        validated as a ``split:`` of devmesh.yaml is: ``ConfigError`` naming each problem in
        devmesh.yaml's words otherwise. (The mesh keeps the splits.)"""
        split = self._candidate(project, splits={service: weights}).policy(service).split
        return dict(split) if split is not None else {}

    def clear_policy(self, service: str) -> bool:
        self._changed()
        return self.state["policies"].pop(service, None) is not None

    # -- authorization and mTLS ------------------------------------------------------

    def rules(self, project: Project) -> list[ActiveRule]:
        """Every authorization rule in force: devmesh.yaml's, then the runtime ones."""
        configured = {rule.name for rule in project.authorization}
        return [
            ActiveRule(rule, "config" if rule.name in configured else "cli")
            for rule in self.resolve(project)[0].authorization
        ]

    def add_rule(self, project: Project, rule: dict[str, Any]) -> ActiveRule:
        """Add an authorization rule (config form); validated with the others first. One
        without a name is named ``<service>-<action>-<n>``, the first such name free."""
        if rule.get("name") is None:
            taken = {active.rule.name for active in self.rules(project)}
            number = 1
            while f"{rule.get('service')}-{rule.get('action')}-{number}" in taken:
                number += 1
            rule = {**rule, "name": f"{rule.get('service')}-{rule.get('action')}-{number}"}
        added = [*self.state["authorization"], rule]
        candidate = self._candidate(project, authorization=added)
        self.state["authorization"] = added
        self._changed()
        return ActiveRule(candidate.authorization[-1], "cli")

    def remove_rule(self, project: Project, name: str) -> ActiveRule:
        found = next((r for r in self.rules(project) if r.rule.name == name), None)
        if found is None:
            raise UnknownRule(
                f"there is no authorization rule named {name!r}", "see `devmesh authz ls`"
            )
        if found.origin == "config":
            raise UsageError(
                f"the authorization rule {name} is declared in devmesh.yaml",
                "remove it from `authorization:` there, and run `devmesh up`",
            )
        self.state["authorization"] = [
            r for r in self.state["authorization"] if r.get("name") != name
        ]
        self._changed()
        return found

    def set_mtls(self, project: Project, service: str | None, mode: str | None) -> Project:
        """Set the mTLS mode of ``service`` (``None``: mesh-wide); ``mode`` ``None``: back to
        devmesh.yaml's. The project as it is then."""
        if mode is not None and mode not in MTLS_MODES:
            raise UsageError(
                f"{mode!r} is not an mTLS mode", f"give one of: {', '.join(MTLS_MODES)}"
            )
        key = service or MESH_WIDE
        modes = {k: v for k, v in self.state["mtls"].items() if k != key}
        if mode is not None:
            modes[key] = mode
        candidate = self._candidate(project, mtls=modes)
        self.state["mtls"] = modes
        self._changed()
        return candidate

    # -- faults ------------------------------------------------------------------

    def add_fault(
        self, project: Project, service: str, fault: dict[str, Any], lasts: object
    ) -> ActiveFault:
        """Add a fault (config form) on calls to ``service``, for ``lasts`` (a duration, see
        ``fault_lifetime``) or until removed (``None``)."""
        seconds = fault_lifetime(lasts)
        fault_id = f"f{self.state['next_fault']}"
        entry = {
            "service": service,
            "fault": fault,
            "expires_at": None if seconds is None else self._clock() + seconds,
        }
        self._candidate(project, faults={**self.state["faults"], fault_id: entry})
        self.state["faults"][fault_id] = entry
        self.state["next_fault"] += 1
        self._changed()
        return next(f for f in self.active(project) if f.id == fault_id)

    def remove_fault(self, project: Project, fault_id: str) -> ActiveFault:
        found = next((f for f in self.active(project) if f.id == fault_id), None)
        if found is None:
            raise UnknownFault(f"there is no fault {fault_id!r}", "see `devmesh fault ls`")
        if found.origin == "config":
            raise UsageError(
                f"fault {fault_id} is declared in devmesh.yaml",
                f"remove it from policies.{found.service}.faults there, and run `devmesh up`",
            )
        del self.state["faults"][fault_id]
        self._changed()
        return found

    def reset_faults(self, service: str | None = None) -> list[str]:
        """Remove every runtime fault (of ``service``, if given); their ids."""
        gone = [
            fault_id
            for fault_id, entry in self.state["faults"].items()
            if service is None or entry["service"] == service
        ]
        for fault_id in gone:
            del self.state["faults"][fault_id]
        self._changed()
        return gone

    def expire(self) -> list[str]:
        """Remove the time-boxed faults whose time is up; their ids."""
        now = self._clock()
        gone = [
            fault_id
            for fault_id, entry in self.state["faults"].items()
            if entry["expires_at"] is not None and entry["expires_at"] <= now
        ]
        for fault_id in gone:
            del self.state["faults"][fault_id]
        if gone:
            self._changed()
        return gone

    def active(self, project: Project) -> list[ActiveFault]:
        """Every fault in force: devmesh.yaml's, then the runtime ones in the order added."""
        return list(self.resolve(project)[1])

    def _active(self, project: Project) -> list[ActiveFault]:
        found = [
            ActiveFault(f"{service}-config-{index}", service, spec, "config")
            for service, policy in project.policies.items()
            for index, spec in enumerate(policy.faults, start=1)
        ]
        parsed = self._candidate(project, with_config_faults=False)
        by_service: dict[str, list[FaultSpec]] = {
            service: list(policy.faults) for service, policy in parsed.policies.items()
        }
        for fault_id, entry in self.state["faults"].items():
            spec = by_service[entry["service"]].pop(0)
            found.append(ActiveFault(fault_id, entry["service"], spec, "cli", entry["expires_at"]))
        return found

    def forget_unknown(self, project: Project) -> None:
        """Drop overrides of services the project no longer has (after a config change)."""
        for fault_id in [
            i for i, e in self.state["faults"].items() if e["service"] not in project.services
        ]:
            del self.state["faults"][fault_id]
        for service in [s for s in self.state["policies"] if s not in project.services]:
            del self.state["policies"][service]
        configured = {rule.name for rule in project.authorization}
        self.state["authorization"] = [
            r
            for r in self.state["authorization"]
            if r.get("service") in project.services and r.get("name") not in configured
        ]
        for service in [
            s for s in self.state["mtls"] if s != MESH_WIDE and s not in project.services
        ]:
            del self.state["mtls"][service]
        self._changed()

    # -- the one validation path --------------------------------------------------

    def _candidate(
        self,
        project: Project,
        *,
        policies: dict[str, dict[str, Any]] | None = None,
        faults: dict[str, dict[str, Any]] | None = None,
        with_config_faults: bool = True,
        authorization: list[dict[str, Any]] | None = None,
        mtls: dict[str, str] | None = None,
        splits: Mapping[str, Mapping[str, object]] | None = None,
    ) -> Project:
        """The project with the overrides (and the proposed change) applied, parsed.

        Raises ``ConfigError`` naming the setting, as for devmesh.yaml.
        """
        data = copy.deepcopy(dump_project(project))
        config_policies: dict[str, Any] = data.setdefault("policies", {})  # type: ignore[assignment]
        for service, settings in {**self.state["policies"], **(policies or {})}.items():
            config_policies.setdefault(service, {}).update(settings)
        for service, weights in (splits or {}).items():
            config_policies.setdefault(service, {})["split"] = dict(weights)
        if not with_config_faults:
            for policy in config_policies.values():
                policy.pop("faults", None)
        for entry in (faults if faults is not None else self.state["faults"]).values():
            policy = config_policies.setdefault(entry["service"], {})
            policy.setdefault("faults", []).append(entry["fault"])
        rules: list[Any] = data.setdefault("authorization", [])  # type: ignore[assignment]
        rules.extend(authorization if authorization is not None else self.state["authorization"])
        for key, mode in (mtls if mtls is not None else self.state["mtls"]).items():
            if key == MESH_WIDE:
                data["mtls"] = mode
            else:
                services: dict[str, Any] = data["services"]  # type: ignore[assignment]
                services[key]["mtls"] = mode
        return parse_project(data, default_name=project.name)
