"""devmesh.controlplane.overrides: runtime faults and policy settings over devmesh.yaml."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from devmesh.config import dump_project, parse_project
from devmesh.config.model import BreakerPolicy, FaultMatch, FaultSpec, RetryPolicy
from devmesh.controlplane.overrides import Overrides, UnknownFault, fault_lifetime
from devmesh.errors import ConfigError, UsageError

PROJECT = parse_project(
    {
        "name": "shop",
        "services": {
            "frontend": {"image": "f:1", "port": 8000},
            "catalog": {"image": "c:1", "port": 8000},
            "pricing": {"image": "p:1", "port": 8000},
        },
        "policies": {
            "pricing": {
                "timeout": "1s",
                "retries": {"attempts": 2, "per_try_timeout": "300ms"},
                "faults": [{"delay": "100ms"}],
            }
        },
    }
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def overrides(state: dict[str, Any] | None = None) -> tuple[Overrides, Clock]:
    clock = Clock()
    return Overrides(state if state is not None else {}, clock), clock


def test_a_fault_gets_an_id_and_applies_with_the_configs_own() -> None:
    live, _ = overrides()
    added = live.add_fault(
        PROJECT, "catalog", {"abort": {"http_status": 503, "percent": 20}}, lasts=None
    )
    assert added.id == "f1"
    assert added.spec == FaultSpec(abort_status=503, abort_percent=20.0)
    active = {f.id: f for f in live.active(PROJECT)}
    assert set(active) == {"pricing-config-1", "f1"}
    assert active["pricing-config-1"].spec == FaultSpec(delay=0.1)
    assert active["pricing-config-1"].origin == "config"
    assert active["f1"].origin == "cli"


def test_ids_never_repeat_after_a_removal() -> None:
    live, _ = overrides()
    first = live.add_fault(PROJECT, "catalog", {"abort": 503}, None)
    live.remove_fault(PROJECT, first.id)
    assert live.add_fault(PROJECT, "catalog", {"abort": 503}, None).id == "f2"


def test_a_time_boxed_fault_expires_by_the_clock() -> None:
    live, clock = overrides()
    fault = live.add_fault(PROJECT, "catalog", {"hang": "5s"}, lasts=5.0)
    assert fault.expires_at == 1005.0
    clock.now = 1004.9
    assert live.expire() == []
    clock.now = 1005.0
    assert live.expire() == ["f1"]
    assert [f.id for f in live.active(PROJECT)] == ["pricing-config-1"]
    assert fault.to_json(1003.0)["expires_in"] == 2.0


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"abort": {"http_status": 503, "percent": 120}}, "must be from 0 to 100, not 120"),
        ({"delay": "banana"}, "must be a duration"),
        ({"match": {"path": "/x"}}, "does nothing"),
        ({"abort": 503, "match": {"source": "fronted"}}, "'fronted', which is not a service"),
    ],
)
def test_a_bad_fault_is_refused_and_changes_nothing(fault: dict[str, Any], message: str) -> None:
    state: dict[str, Any] = {}
    live, _ = overrides(state)
    with pytest.raises(ConfigError) as caught:
        live.add_fault(PROJECT, "catalog", fault, None)
    assert message in caught.value.message
    assert state["faults"] == {}
    assert state["next_fault"] == 1


def test_a_config_fault_cannot_be_removed_at_run_time_and_an_unknown_one_says_so() -> None:
    live, _ = overrides()
    with pytest.raises(UsageError, match=r"declared in devmesh\.yaml"):
        live.remove_fault(PROJECT, "pricing-config-1")
    with pytest.raises(UnknownFault, match="there is no fault 'f9'"):
        live.remove_fault(PROJECT, "f9")


def test_reset_removes_runtime_faults_of_one_service_or_all() -> None:
    live, _ = overrides()
    for service in ("catalog", "pricing", "catalog"):
        live.add_fault(PROJECT, service, {"abort": 503}, None)
    assert live.reset_faults("catalog") == ["f1", "f3"]
    assert live.reset_faults() == ["f2"]
    assert [f.origin for f in live.active(PROJECT)] == ["config"]


def test_a_policy_setting_overrides_devmesh_yaml_and_keeps_its_other_values() -> None:
    live, _ = overrides()
    policy = live.set_policy(
        PROJECT, "pricing", {"retries": {"attempts": 4}, "lb": "least-request"}
    )
    assert policy.timeout == 1.0, "untouched settings stay as devmesh.yaml says"
    assert policy.retries == RetryPolicy(
        attempts=4, per_try_timeout=0.3, retry_on=RetryPolicy().retry_on
    ), "--retries 4 keeps the per-try timeout"
    assert policy.lb == "least-request"
    assert live.clear_policy("pricing")
    assert live.policy(PROJECT, "pricing").retries == RetryPolicy(attempts=2, per_try_timeout=0.3)


def test_the_panic_threshold_is_a_breaker_setting_changed_live() -> None:
    live, _ = overrides()
    policy = live.set_policy(PROJECT, "catalog", {"breaker": {"consecutive_5xx": 3}})
    policy = live.set_policy(PROJECT, "catalog", {"breaker": {"panic_threshold": 0}})
    assert policy.breaker == BreakerPolicy(consecutive_5xx=3, panic_threshold=0.0)
    with pytest.raises(ConfigError, match=r"panic_threshold of the breaker .* from 0 to 100"):
        live.set_policy(PROJECT, "catalog", {"breaker": {"panic_threshold": 101}})
    assert live.policy(PROJECT, "catalog").breaker == policy.breaker


def test_a_bad_policy_setting_is_refused_and_changes_nothing() -> None:
    state: dict[str, Any] = {}
    live, _ = overrides(state)
    with pytest.raises(ConfigError, match="must be one of round-robin, least-request"):
        live.set_policy(PROJECT, "catalog", {"lb": "random"})
    with pytest.raises(UsageError, match="'split' is not a policy setting"):
        live.set_policy(PROJECT, "catalog", {"split": {"v1": 100}})
    assert state["policies"] == {}


def test_overrides_of_a_service_that_is_gone_are_forgotten() -> None:
    live, _ = overrides()
    live.add_fault(PROJECT, "catalog", {"abort": 503}, None)
    live.set_policy(PROJECT, "catalog", {"timeout": "2s"})
    smaller = parse_project({"name": "shop", "services": {"pricing": {"image": "p:1"}}})
    live.forget_unknown(smaller)
    assert live.state["faults"] == {}
    assert live.state["policies"] == {}


def test_the_state_is_plain_json_so_it_survives_a_restart() -> None:

    state: dict[str, Any] = {}
    live, _ = overrides(state)
    live.add_fault(
        PROJECT, "catalog", {"delay": "50ms", "match": {"headers": {"x-test": "1"}}}, 60.0
    )
    restored, _ = overrides(json.loads(json.dumps(state)))
    [fault] = [f for f in restored.active(PROJECT) if f.origin == "cli"]
    assert fault.spec == FaultSpec(delay=0.05, match=FaultMatch(headers={"x-test": "1"}))
    assert fault.expires_at == 1060.0


@pytest.mark.parametrize(
    ("value", "seconds"), [(None, None), (30, 30.0), (0.5, 0.5), ("2m", 120.0), ("250ms", 0.25)]
)
def test_a_fault_lasts_the_duration_its_for_gives(value: object, seconds: float | None) -> None:
    assert fault_lifetime(value) == seconds


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (True, "the boolean true"),
        (False, "the boolean false"),
        (math.nan, "NaN"),
        (math.inf, "infinity"),
        (-math.inf, "-infinity"),
        (10**400, "a 401-digit number"),
        (0, "0"),
        (-5, "-5"),
        ("banana", "the text 'banana'"),
        ([30], "a list"),
    ],
)
def test_a_fault_lifetime_that_is_no_duration_is_refused_by_name(value: object, shown: str) -> None:
    """`true` is not one second, NaN no time at all: each is refused in one sentence."""
    with pytest.raises(UsageError) as caught:
        fault_lifetime(value)
    assert caught.value.message == f"`for` must be a duration above 0, not {shown}"
    assert '"for": "30s"' in str(caught.value.hint)


@pytest.mark.parametrize("lasts", [math.nan, math.inf, True, 0])
def test_a_fault_with_a_bad_lifetime_is_refused_and_changes_nothing(lasts: object) -> None:
    state: dict[str, Any] = {}
    live, _ = overrides(state)
    with pytest.raises(UsageError, match="`for` must be a duration above 0"):
        live.add_fault(PROJECT, "catalog", {"abort": 503}, lasts)
    assert state["faults"] == {}
    assert state["next_fault"] == 1
    json.dumps(state, allow_nan=False)  # nothing that is not JSON was kept


SPLIT_PROJECT = parse_project(
    {
        "services": {
            "catalog": {"image": "c:1", "versions": {"v1": {}, "v2": {}}},
            "pricing": {"image": "p:1"},
        }
    }
)


def test_a_split_is_taken_as_floats() -> None:
    split = Overrides({}).check_split(SPLIT_PROJECT, "catalog", {"v1": 90, "v2": 10.0})
    assert split == {"v1": 90.0, "v2": 10.0}


def split_problem(service: str, weights: dict[str, object]) -> tuple[str, str]:
    """The first problem a runtime split has, and the one the same split in devmesh.yaml
    has: they must be the same."""
    with pytest.raises(ConfigError) as runtime:
        Overrides({}).check_split(SPLIT_PROJECT, service, weights)
    data = dump_project(SPLIT_PROJECT)
    data["policies"] = {service: {"split": weights}}
    with pytest.raises(ConfigError) as config:
        parse_project(data)
    assert [str(p) for p in runtime.value.problems] == [str(p) for p in config.value.problems]
    first = runtime.value.problems[0]
    return first.path, first.message


@pytest.mark.parametrize(
    ("service", "weights", "path", "message"),
    [
        (
            "catalog",
            {"v1": True, "v2": 99},
            "policies.catalog.split.v1",
            "the weight of v1 in the split of the policy for catalog must be a number, "
            "not the boolean true",
        ),
        (
            "catalog",
            {"v1": math.nan, "v2": 100},
            "policies.catalog.split.v1",
            "the weight of v1 in the split of the policy for catalog must be a number, not NaN",
        ),
        (
            "catalog",
            {"v1": 0, "v2": math.inf},
            "policies.catalog.split.v2",
            "the weight of v2 in the split of the policy for catalog must be a number, "
            "not infinity",
        ),
        (
            "catalog",
            {"v1": "50", "v2": 50},
            "policies.catalog.split.v1",
            "the weight of v1 in the split of the policy for catalog must be a number, "
            "not the text '50'",
        ),
        (
            "catalog",
            {"v1": 10**400, "v2": 0},
            "policies.catalog.split.v1",
            "the weight of v1 in the split of the policy for catalog must be a number, "
            "not a 401-digit number",
        ),
        (
            "catalog",
            {"v1": 150, "v2": -50},
            "policies.catalog.split.v1",
            "the weight of v1 in the split of the policy for catalog must be from 0 to 100, "
            "not 150",
        ),
        (
            "catalog",
            {"v1": 50, "v2": 40},
            "policies.catalog.split",
            "the split weights of the policy for catalog add up to 90, not 100",
        ),
        (
            "catalog",
            {"v1": 50, "v3": 50},
            "policies.catalog.split.v3",
            "the split of the policy for catalog names version 'v3', which catalog does not have",
        ),
        (
            "pricing",
            {"default": 100},
            "policies.pricing.split",
            "the policy for pricing splits traffic between versions, but pricing has no versions",
        ),
    ],
)
def test_a_bad_runtime_split_is_refused_in_the_words_of_a_bad_devmesh_yaml(
    service: str, weights: dict[str, object], path: str, message: str
) -> None:
    assert split_problem(service, weights) == (path, message)


def test_a_rule_named_false_is_refused_not_renamed() -> None:
    state: dict[str, Any] = {}
    live, _ = overrides(state)
    with pytest.raises(ConfigError, match="name of an authorization rule must be a string"):
        live.add_rule(PROJECT, {"name": False, "service": "catalog", "action": "deny"})
    assert state["authorization"] == []
