"""devmesh.forms.policies: `devmesh policy` flags and the TUI's form in devmesh.yaml's shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devmesh.cli import run
from devmesh.errors import UsageError
from devmesh.forms.policies import DEFAULTS, settings_from_fields
from tui.policy import NAMES, PolicyScreen, changed_fields, current_values

NO_FLAGS: dict[str, Any] = dict.fromkeys(
    (
        "timeout",
        "retries",
        "per_try_timeout",
        "retry_on",
        "consecutive_5xx",
        "interval",
        "base_ejection_time",
        "max_ejection_time",
        "max_ejection_percent",
        "panic_threshold",
        "lb",
        "max_connections",
        "max_pending",
        "max_requests",
    )
)


def flags(**given: Any) -> dict[str, Any]:
    return settings_from_fields({**NO_FLAGS, **given})


@pytest.mark.parametrize("threshold", [0.0, 50.0, 100.0])
def test_panic_threshold_is_a_breaker_setting(threshold: float) -> None:
    assert flags(panic_threshold=threshold) == {"breaker": {"panic_threshold": threshold}}


@pytest.mark.parametrize("threshold", [-1.0, 100.5])
def test_a_panic_threshold_out_of_0_to_100_names_the_flag(threshold: float) -> None:
    with pytest.raises(UsageError, match=r"^--panic-threshold must be from 0 to 100, not "):
        flags(panic_threshold=threshold)


def test_the_default_panic_threshold_is_shown_as_envoy_s() -> None:
    assert DEFAULTS["breaker"]["panic_threshold"] == 50.0


def test_the_cli_refuses_a_bad_panic_threshold_before_calling_anyone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "devmesh.yaml").write_text("services:\n  web:\n    command: python3 app.py\n")
    code = run(["-C", str(tmp_path), "policy", "web", "--panic-threshold", "150"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--panic-threshold must be from 0 to 100, not 150" in err
    assert "Traceback" not in err


def test_the_tui_form_sends_a_changed_panic_threshold_as_a_number() -> None:
    before = current_values({"breaker": {"panic_threshold": 50.0}})
    assert before["panic_threshold"] == "50"
    after = {**before, "panic_threshold": "0"}
    changed = changed_fields(before, after)
    assert settings_from_fields(changed, NAMES) == {"breaker": {"panic_threshold": 0.0}}


@pytest.mark.parametrize(
    ("field", "typed", "message"),
    [
        ("retries", "three", "retries must be a whole number, not 'three'"),
        ("retries", "11", "retries must be from 1 to 10, not 11"),
        ("panic_threshold", "150", "panic % must be from 0 to 100, not 150"),
        ("timeout", "soon", "timeout: 'soon' is not a duration"),
        ("lb", "random", "balancing must be one of round-robin, least-request, not 'random'"),
    ],
)
def test_the_tui_form_is_read_by_the_same_code_naming_its_labels(
    field: str, typed: str, message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        settings_from_fields({field: typed}, NAMES)
    assert caught.value.message.startswith(message)
    assert {key for key, _, _ in PolicyScreen.FIELDS} == set(current_values({}))


def test_the_flags_and_the_form_give_the_same_settings() -> None:
    typed = {"timeout": "2s", "retries": "3", "retry_on": "5xx, reset", "consecutive_5xx": "5"}
    assert settings_from_fields(typed, NAMES) == flags(
        timeout="2s", retries=3, retry_on="5xx,reset", consecutive_5xx=5
    )
