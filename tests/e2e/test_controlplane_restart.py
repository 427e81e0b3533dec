"""What the user changed survives a control-plane restart, and the sidecars carry on."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ProjectFactory
from tests.e2e.test_shop import get_json

pytestmark = pytest.mark.e2e


def test_split_survives_a_killed_control_plane_and_traffic_never_stops(
    projects: ProjectFactory,
) -> None:
    shop = projects.recipe("shop")
    assert shop.cli("up", "--detach", "--runtime", "local").returncode == 0

    split = shop.cli("split", "catalog", "v1=0", "v2=100")
    assert split.returncode == 0, split.stderr
    assert "catalog: v1=0 v2=100" in split.stdout
    assert {get_json(shop.url + "/")["catalog_version"] for _ in range(20)} == {"v2"}

    controlplane = next(p for p in shop.runtime()["processes"] if p["role"] == "controlplane")
    os.kill(controlplane["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{controlplane['pid']}") and time.monotonic() < deadline:
        time.sleep(0.05)

    # Without a control plane the sidecars keep routing on their last snapshot...
    assert {get_json(shop.url + "/")["catalog_version"] for _ in range(10)} == {"v2"}
    # ...and the CLI says what is wrong instead of failing with a traceback.
    down_status = shop.cli("status")
    assert down_status.returncode == 1
    assert "is not answering" in down_status.stderr
    assert "Traceback" not in down_status.stderr

    restarted = shop.cli("up", "--detach", "--runtime", "local")
    assert restarted.returncode == 0, restarted.stderr
    assert "restarted the control plane" in restarted.stdout

    shown = shop.cli("split", "catalog", "--json")
    assert json.loads(shown.stdout)["split"] == {"v1": 0.0, "v2": 100.0}
    status = shop.status()
    assert all(i["state"] == "ready" for s in status["services"] for i in s["instances"])
    assert {get_json(shop.url + "/")["catalog_version"] for _ in range(20)} == {"v2"}

    cleared = shop.cli("split", "catalog", "--clear")
    assert cleared.returncode == 0
    assert "even (no split)" in cleared.stdout
    assert {get_json(shop.url + "/")["catalog_version"] for _ in range(20)} == {"v1", "v2"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["catalog", "v1=50", "v2=40"],
            "the split weights of the policy for catalog add up to 90, not 100",
        ),
        (
            ["catalog", "v1=50", "v3=50"],
            "the split of the policy for catalog names version 'v3', which catalog does not have",
        ),
        (
            ["pricing", "default=100"],
            "the policy for pricing splits traffic between versions, but pricing has no versions",
        ),
        (["catalog", "v1:100"], "'v1:100' is not VERSION=WEIGHT"),
        (["nope", "v1=100"], "there is no service named 'nope'"),
    ],
)
def test_a_bad_split_is_refused_and_changes_nothing(
    projects: ProjectFactory, args: list[str], message: str
) -> None:
    shop = projects.recipe("shop")
    assert shop.cli("up", "--detach", "--runtime", "local").returncode == 0
    before = shop.status()["snapshot_version"]
    result = shop.cli("split", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"error: {message}" in result.stderr
    assert "hint: " in result.stderr
    assert shop.status()["snapshot_version"] == before


def test_up_refuses_a_state_file_it_cannot_use_in_its_own_sentence(
    projects: ProjectFactory,
) -> None:
    project = projects.from_yaml("name: demo\nservices:\n  web: {command: 'true'}\n")
    state = project.dir / ".devmesh" / "state.json"
    state.parent.mkdir(mode=0o700)
    bad = (
        Path(__file__).parents[1]
        / "unit"
        / "devmesh"
        / "controlplane"
        / "states"
        / "bad_nan_expiry.json"
    )
    shutil.copy(bad, state)
    result = project.cli("up", "--detach", "--runtime", "local")
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        f"error: the control plane's state file {state} is not JSON devmesh wrote: "
        "`overrides.faults.f1.expires_at` is NaN, which is not a JSON number"
    ) in result.stderr
    assert f"hint: move it aside (mv {state} {state}.bak)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project.dir / ".devmesh" / "runtime.json").exists(), "nothing was started"
    assert state.read_bytes() == bad.read_bytes()
