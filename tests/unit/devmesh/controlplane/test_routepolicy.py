"""devmesh.controlplane.routepolicy: devmesh.yaml's policy as the sidecar's route policy."""

from __future__ import annotations

import json

from devmesh.config import parse_project
from devmesh.controlplane.routepolicy import route_policy
from proxy.policy import parse_policy, policy_to_wire


def test_the_breaker_s_panic_threshold_reaches_the_sidecar_on_the_wire() -> None:
    project = parse_project(
        {
            "services": {"catalog": {"image": "c:1", "port": 8000}},
            "policies": {"catalog": {"breaker": {"panic_threshold": 0}}},
        }
    )
    policy = route_policy(project.policy("catalog"), [])
    assert policy.outlier.panic_threshold == 0.0
    wired = json.loads(json.dumps(policy_to_wire(policy)))
    assert wired["outlier"]["panic_threshold"] == 0.0
    assert parse_policy(wired, "routes.catalog.policy") == policy


def test_a_default_breaker_sends_no_outlier_object() -> None:
    project = parse_project({"services": {"catalog": {"image": "c:1", "port": 8000}}})
    assert "outlier" not in policy_to_wire(route_policy(project.policy("catalog"), []))
