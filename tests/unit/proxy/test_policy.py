"""proxy.policy: the route policy part of a snapshot, as the sidecar accepts it."""

from __future__ import annotations

import json

import pytest

from proxy.outlier import OutlierSettings
from proxy.policy import DEFAULT, PolicyError, RoutePolicy, parse_policy, policy_to_wire


def test_the_default_policy_is_an_empty_object() -> None:
    assert policy_to_wire(DEFAULT) == {}
    assert parse_policy({}, "p") == DEFAULT


@pytest.mark.parametrize("threshold", [0.0, 12.5, 100.0])
def test_a_panic_threshold_goes_in_the_outlier_object_and_back(threshold: float) -> None:
    policy = RoutePolicy(outlier=OutlierSettings(panic_threshold=threshold))
    wired = json.loads(json.dumps(policy_to_wire(policy)))
    assert wired["outlier"]["panic_threshold"] == threshold
    assert parse_policy(wired, "p") == policy


def test_an_outlier_object_without_a_panic_threshold_means_envoy_s_50() -> None:
    parsed = parse_policy({"outlier": {"consecutive_5xx": 3}}, "p")
    assert parsed.outlier == OutlierSettings(consecutive_5xx=3, panic_threshold=50.0)


@pytest.mark.parametrize("value", [-1, 100.5, "50", True, None, float("nan")])
def test_a_panic_threshold_out_of_0_to_100_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(PolicyError, match=r"^p\.outlier\.panic_threshold must be from 0 to 100$"):
        parse_policy({"outlier": {"panic_threshold": value}}, "p")
