"""devmesh.workspace: what devmesh writes in .devmesh/ is JSON, written whole or not at all."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from devmesh.workspace import read_json, write_json


def test_write_json_writes_a_file_only_its_owner_reads(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_json(path, {"splits": {"web": {"v1": 90.0, "v2": 10.0}}})
    assert json.loads(path.read_text()) == {"splits": {"web": {"v1": 90.0, "v2": 10.0}}}
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_write_json_refuses_a_number_json_has_not_and_keeps_the_file_as_it_was(
    tmp_path: Path, number: float
) -> None:
    """A NaN in what devmesh writes is a bug: it fails loudly, and the file keeps what it had
    (no text only Python reads back, no torn temp file)."""
    path = tmp_path / "state.json"
    write_json(path, {"expires_at": None})
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_json(path, {"expires_at": number})
    assert read_json(path) == {"expires_at": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
