"""Every number the control plane's API takes, sent as a client could: JSON's NaN and
Infinity (which are not JSON), 1e400 (infinity to Python), booleans where a number is asked.

Each is refused with a 400 and one sentence naming the field, and leaves the state as it
was, in memory and in state.json, so that every later change still works.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from devmesh.controlplane.store import StateStore
from tests.integration.meshkit import ControlPlane

FAULT = '{"service": "catalog", "fault": %s, "for": %s}'

BODIES = [
    # POST /v1/faults: its duration, and the fault's own numbers
    ("POST", "/v1/faults", FAULT % ('{"abort": 503}', "NaN"), "`for` is NaN"),
    ("POST", "/v1/faults", FAULT % ('{"abort": 503}', "Infinity"), "`for` is Infinity"),
    ("POST", "/v1/faults", FAULT % ('{"abort": 503}', "-Infinity"), "`for` is -Infinity"),
    ("POST", "/v1/faults", FAULT % ('{"abort": 503}', "1e400"), "`for` is 1e400"),
    (
        "POST",
        "/v1/faults",
        FAULT % ('{"abort": 503}', "true"),
        "`for` must be a duration above 0, not the boolean true",
    ),
    (
        "POST",
        "/v1/faults",
        FAULT % ('{"abort": {"http_status": 503, "percent": NaN}}', "null"),
        "`fault.abort.percent` is NaN",
    ),
    (
        "POST",
        "/v1/faults",
        FAULT % ('{"abort": {"http_status": true}}', "null"),
        "http_status of the abort of fault 1 of the policy for catalog must be a whole number, "
        "not the boolean true",
    ),
    (
        "POST",
        "/v1/faults",
        FAULT % ('{"delay": {"fixed": 1e400}}', "null"),
        "`fault.delay.fixed` is 1e400",
    ),
    (
        "POST",
        "/v1/faults",
        FAULT % ('{"delay": {"fixed": "1s", "jitter": Infinity}}', "null"),
        "`fault.delay.jitter` is Infinity",
    ),
    (
        "POST",
        "/v1/faults",
        FAULT % ('{"delay": {"fixed": "1s", "percent": false}}', "null"),
        "percent of the delay of fault 1 of the policy for catalog must be a number, "
        "not the boolean false",
    ),
    (
        "POST",
        "/v1/faults",
        FAULT % ('{"bandwidth": -Infinity}', "null"),
        "`fault.bandwidth` is -Infinity",
    ),
    (
        "POST",
        "/v1/faults",
        FAULT % ('{"hang": true}', "null"),
        "hang of fault 1 of the policy for catalog must be a duration, not the boolean true",
    ),
    # PUT /v1/services/S/split
    (
        "PUT",
        "/v1/services/catalog/split",
        '{"weights": {"v1": NaN, "v2": 100}}',
        "`weights.v1` is NaN",
    ),
    (
        "PUT",
        "/v1/services/catalog/split",
        '{"weights": {"v1": true, "v2": 99}}',
        "the weight of v1 in the split of the policy for catalog must be a number, "
        "not the boolean true",
    ),
    # PUT /v1/services/S/policy
    (
        "PUT",
        "/v1/services/catalog/policy",
        '{"settings": {"timeout": Infinity}}',
        "`settings.timeout` is Infinity",
    ),
    (
        "PUT",
        "/v1/services/catalog/policy",
        '{"settings": {"timeout": true}}',
        "timeout of the policy for catalog must be a duration, not the boolean true",
    ),
    (
        "PUT",
        "/v1/services/catalog/policy",
        '{"settings": {"retries": {"attempts": true}}}',
        "attempts of the retries of the policy for catalog must be a whole number, "
        "not the boolean true",
    ),
    (
        "PUT",
        "/v1/services/catalog/policy",
        '{"settings": {"breaker": {"max_ejection_percent": 1e400}}}',
        "`settings.breaker.max_ejection_percent` is 1e400",
    ),
    (
        "PUT",
        "/v1/services/catalog/policy",
        '{"settings": {"pool": {"max_connections": NaN}}}',
        "`settings.pool.max_connections` is NaN",
    ),
    # POST /v1/authz, PUT /v1/mtls: no numbers, and none slips in
    (
        "POST",
        "/v1/authz",
        '{"rule": {"name": false, "service": "catalog", "action": "deny"}}',
        "name of an authorization rule must be a string, not the boolean false",
    ),
    (
        "POST",
        "/v1/authz",
        '{"rule": {"service": "catalog", "action": "deny", "from": [NaN]}}',
        "`rule.from[0]` is NaN",
    ),
    ("PUT", "/v1/mtls", '{"service": null, "mode": Infinity}', "`mode` is Infinity"),
    # PUT /v1/project: the project's own numbers
    (
        "PUT",
        "/v1/project",
        '{"services": {"web": {"command": "true", "port": NaN}}}',
        "`services.web.port` is NaN",
    ),
    (
        "PUT",
        "/v1/project",
        '{"services": {"web": {"command": "true", "replicas": true}}}',
        "replicas of service web must be a whole number, not the boolean true",
    ),
]


async def send(plane: ControlPlane, method: str, path: str, body: str) -> tuple[int, Any]:
    headers = {
        "Authorization": f"Bearer {plane.workspace.token()}",
        "Content-Type": "application/json",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, plane.url + path, data=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


@pytest.mark.parametrize(
    ("method", "path", "body", "says"), BODIES, ids=[f"{b[1]} {b[2]}" for b in BODIES]
)
async def test_a_number_that_is_none_is_refused_and_changes_nothing(
    controlplane: ControlPlane, method: str, path: str, body: str, says: str
) -> None:
    state_before = controlplane.workspace.state_file.read_bytes()
    status, reply = await send(controlplane, method, path, body)
    assert status == 400, reply
    assert says in reply["error"]
    assert reply["hint"] or reply["problems"], "what to send instead"
    assert controlplane.workspace.state_file.read_bytes() == state_before


@pytest.mark.parametrize(
    "path",
    [
        "/v1/status?window=nan",
        "/v1/status?window=inf",
        "/v1/traces?limit=1e400",
        "/v1/instances/frontend-1/logs?lines=nan",
        "/v1/events?window=-inf",
        "/v1/tap?min_latency_ms=nan",
        "/v1/tap?rate=inf",
    ],
)
async def test_a_query_number_that_is_none_is_refused(
    controlplane: ControlPlane, path: str
) -> None:
    status, reply = await send(controlplane, "GET", path, "")
    assert status == 400, reply
    name = path.partition("?")[2].partition("=")[0]
    assert f"{name} " in reply["error"]
    assert "not a number" in reply["error"] or "must be a number" in reply["error"]


async def test_a_refused_nan_duration_keeps_the_state_usable(controlplane: ControlPlane) -> None:
    """The reported bug: `"for": NaN` answered 500, kept the fault with an expiry of NaN
    in state.json, and every later change then failed until the fault was removed."""
    async with controlplane.client() as client:
        await client.add_fault("catalog", {"abort": 503}, None)
        faults_before = await client.faults()
    state_before = controlplane.workspace.state_file.read_bytes()

    status, reply = await send(
        controlplane, "POST", "/v1/faults", FAULT % ('{"abort": 503}', "NaN")
    )

    assert status == 400
    assert reply["error"] == "in the request body, `for` is NaN, which is not a JSON number"
    assert controlplane.workspace.state_file.read_bytes() == state_before
    async with controlplane.client() as client:
        assert await client.faults() == faults_before
        split = await client.set_split("catalog", {"v1": 80, "v2": 20})
        assert split["split"] == {"v1": 80.0, "v2": 20.0}
        added = await client.add_fault("catalog", {"abort": 503}, 30.0)
    assert 0 < added["expires_in"] <= 30.0
    saved = json.loads(controlplane.workspace.state_file.read_text())
    assert saved["splits"] == {"catalog": {"v1": 80.0, "v2": 20.0}}
    # ...and a control plane started on it takes it whole.
    assert StateStore(controlplane.workspace.state_file).load().splits == saved["splits"]
