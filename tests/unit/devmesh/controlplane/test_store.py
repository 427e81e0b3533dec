"""devmesh.controlplane.store: the control plane's state file, taken whole or refused.

One ``states/bad_*.json`` per error message: each test pins the sentence, which names
the file and what is wrong in it, and the hint to move it aside.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from devmesh.config.model import FaultSpec
from devmesh.controlplane.mesh import Mesh
from devmesh.controlplane.store import StateStore, StoredState
from devmesh.errors import DevmeshError

STATES = Path(__file__).parent / "states"
PROJECT = {
    "name": "demo",
    "services": {
        "frontend": {"command": "true", "port": 8000},
        "web": {"command": "true", "port": 8000, "versions": {"v1": {}, "v2": {}}},
    },
}

BAD = [
    ("bad_torn.json", "is not JSON devmesh wrote: Expecting ':' delimiter: line 5 column 13"),
    (
        "bad_nan_expiry.json",
        "is not JSON devmesh wrote: `overrides.faults.f1.expires_at` is NaN, "
        "which is not a JSON number",
    ),
    (
        "bad_infinity_weight.json",
        "is not JSON devmesh wrote: `splits.web.v1` is Infinity, which is not a JSON number",
    ),
    (
        "bad_huge_number.json",
        "is not JSON devmesh wrote: `snapshot_version` is 1e400, a number beyond what a float "
        "holds (about 1.8e308)",
    ),
    ("bad_not_utf8.json", "is not text (not UTF-8)"),
    ("bad_no_format.json", "is not a devmesh state file (it has no format)"),
    ("bad_format.json", "is of format 2, from another devmesh version (this one reads format 1)"),
    ("bad_format_boolean.json", "is of format the boolean true, from another devmesh version"),
    ("bad_unknown_key.json", "has an unknown key 'routes'"),
    (
        "bad_project.json",
        "holds a project devmesh refuses: services.web.port: port of service web must be a "
        "whole number, not the text 'http'",
    ),
    ("bad_snapshot_version.json", "has a snapshot_version of the boolean true, not a count"),
    ("bad_splits_mapping.json", "has splits as a list, not a mapping"),
    ("bad_split_service.json", "splits the calls to 'db', which is not a service"),
    (
        "bad_text_weight.json",
        "holds a split devmesh refuses: the weight of v1 in the split of the policy for web must "
        "be a number, not the text 'NaN'",
    ),
    (
        "bad_split_sum.json",
        "holds a split devmesh refuses: the split weights of the policy for web add up to 90, "
        "not 100",
    ),
    ("bad_next_fault.json", "has an overrides.next_fault of 0, not a count"),
    ("bad_fault_id.json", "has a fault named 'x1', not an id devmesh gives (f1, f2…)"),
    ("bad_fault_numbering.json", "has a fault f7 that its next_fault, 2, would give again"),
    ("bad_fault_entry.json", "has a fault f1 without its service, fault and expiry"),
    ("bad_expiry_text.json", "has a fault f1 that expires at the text 'soon', not a time"),
    (
        "bad_fault_percent.json",
        "holds a runtime change devmesh refuses: policies.web.faults[0].abort.percent: percent "
        "of the abort of fault 1 of the policy for web must be a number, not the boolean true",
    ),
    ("bad_policy_key.json", "has an unknown key 'split' in overrides.policies.web"),
    (
        "bad_policy_value.json",
        "holds a runtime change devmesh refuses: policies.web.timeout: timeout of the policy "
        "for web must be a duration, not the text 'banana'",
    ),
    ("bad_authorization.json", "has an overrides.authorization that is not a list of rules"),
    ("bad_mtls_service.json", "sets the mTLS mode of 'db', which is not a service"),
    ("bad_mtls_mode.json", "sets the mTLS mode of * to the boolean true, not a mode"),
    (
        "bad_changes_without_project.json",
        "holds runtime changes but no project to apply them to",
    ),
]


@pytest.mark.parametrize(("name", "what"), BAD, ids=[b[0] for b in BAD])
def test_a_state_file_that_cannot_be_used_whole_is_refused_in_a_sentence(
    name: str, what: str
) -> None:
    path = STATES / name
    with pytest.raises(DevmeshError) as caught:
        StateStore(path).load()
    assert caught.value.message.startswith(f"the control plane's state file {path} {what}")
    assert caught.value.hint == (
        f"move it aside (mv {path} {path}.bak) to start with no runtime changes"
    )


def test_every_bad_state_file_is_tested() -> None:
    assert {p.name for p in STATES.glob("bad_*.json")} == {b[0] for b in BAD}


def test_a_refused_state_file_is_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    shutil.copy(STATES / "bad_nan_expiry.json", path)
    before = path.read_bytes()
    with pytest.raises(DevmeshError):
        Mesh(StateStore(path))
    assert path.read_bytes() == before


def test_no_state_file_is_an_empty_state(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "state.json").load() == StoredState()


def test_a_good_state_file_is_taken_whole() -> None:
    state = StateStore(STATES / "good.json").load()
    assert state.splits == {"web": {"v1": 90.0, "v2": 10.0}}
    assert state.snapshot_version == 3
    assert state.overrides["faults"]["f2"]["expires_at"] == 1893456000.5
    assert state.overrides["mtls"] == {"*": "strict"}


def test_the_state_a_mesh_writes_loads_back_as_it_was(tmp_path: Path) -> None:
    """Every kind of runtime change, written by the control plane, read by the next one."""
    path = tmp_path / "state.json"
    mesh = Mesh(StateStore(path))
    mesh.apply_project(PROJECT)
    mesh.set_split("web", {"v1": 70, "v2": 30})
    mesh.add_fault("web", {"delay": {"fixed": "50ms", "percent": 25.5}}, "2m")
    mesh.add_fault("web", {"abort": 503, "match": {"source": "frontend"}}, None)
    mesh.set_policy("web", {"timeout": "2s", "retries": {"attempts": 3}})
    mesh.add_rule({"service": "web", "action": "deny", "from": ["ingress"]})
    mesh.set_mtls("web", "strict")
    mesh.rebuild()
    written = json.loads(path.read_text())

    loaded = StateStore(path).load()
    assert (loaded.project, loaded.splits, loaded.overrides) == (
        written["project"],
        written["splits"],
        written["overrides"],
    )
    assert loaded.snapshot_version == mesh.snapshot.version
    restarted = Mesh(StateStore(path))
    assert restarted.split_for("web") == {"v1": 70.0, "v2": 30.0}
    delay, abort = restarted.faults()
    assert delay.spec == FaultSpec(delay=0.05, delay_percent=25.5)
    assert delay.expires_at == written["overrides"]["faults"]["f1"]["expires_at"]
    assert abort.expires_at is None
    assert restarted.policy("web").timeout == 2.0
    assert [r.rule.name for r in restarted.rules()] == ["web-deny-1"]
    assert restarted.mtls_modes() == {"frontend": "permissive", "web": "strict"}
