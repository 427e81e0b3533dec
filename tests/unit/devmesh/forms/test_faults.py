"""devmesh.forms.faults: `devmesh fault add`'s flags and the TUI's fault editor in
devmesh.yaml's shape, each problem naming the field as its caller does."""

from __future__ import annotations

import pytest

from devmesh.errors import UsageError
from devmesh.forms.faults import KEYS, KINDS, describe, describe_match, fault_from_fields, lasts
from tui.editors import FIELDS, NAMES


def test_every_kind_of_fault_is_read_into_devmesh_yaml_s_shape() -> None:
    fault = fault_from_fields(
        {
            "delay": "0.2s",
            "jitter": "0.05",
            "abort": "503",
            "percent": "20",
            "bandwidth": "64000",
            "hang": "10s",
            "path": "/items",
            "method": "get",
            "source": "frontend",
        },
        headers=["x-debug=1"],
    )
    assert fault == {
        "delay": {"fixed": "200ms", "jitter": "50ms", "percent": 20.0},
        "abort": {"http_status": 503, "percent": 20.0},
        "bandwidth": "64kB",
        "hang": "10s",
        "match": {
            "path": "/items",
            "method": "GET",
            "headers": {"x-debug": "1"},
            "source": "frontend",
        },
    }
    assert describe(fault) == "delay 200ms ±50ms (20%), abort 503 (20%), bandwidth 64kB/s, hang 10s"
    assert describe_match(fault) == "GET /items* x-debug=1 from frontend"


def test_reset_is_an_abort() -> None:
    assert fault_from_fields({"abort": "Reset"}) == {"abort": {"reset": True, "percent": 100.0}}


@pytest.mark.parametrize(
    ("fields", "flag_message", "form_message"),
    [
        ({"delay": "banana"}, "--delay: 'banana' is not a duration", "delay: 'banana'"),
        ({"hang": "0s"}, "--hang must be more than 0, not 0s", "hang must be more than 0"),
        ({"bandwidth": "fast"}, "--bandwidth: 'fast' is not a size", "bandwidth: 'fast'"),
        ({"abort": "600"}, "--abort must be an HTTP status from 200 to 599", "abort must be"),
        ({"jitter": "5ms"}, "--jitter goes with --delay", "jitter goes with delay"),
        ({"delay": "1s", "percent": "150"}, "--percent must be from 0 to 100", "percent must"),
        ({"delay": "1s", "path": "items"}, "--path must start with '/'", "path must start"),
        ({"delay": "1s", "header": "x"}, "--header 'x' is not NAME=VALUE", "header 'x' is not"),
        ({}, "the fault does nothing", "the fault does nothing"),
    ],
)
def test_a_problem_names_the_flag_or_the_form_s_label(
    fields: dict[str, str], flag_message: str, form_message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        fault_from_fields(fields)
    assert caught.value.message.startswith(flag_message)
    with pytest.raises(UsageError) as caught:
        fault_from_fields(fields, names=NAMES)
    assert caught.value.message.startswith(form_message)


def test_the_editor_has_a_field_for_every_kind_of_fault() -> None:
    keys = {key for key, _, _ in FIELDS}
    assert set(KINDS) <= keys
    assert keys == set(KEYS), "and a field for every part of a fault"
    with pytest.raises(UsageError) as caught:
        fault_from_fields({}, names=NAMES)
    assert caught.value.hint == "give delay, abort, bandwidth or hang"


def test_how_long_a_fault_lasts_is_a_duration_above_0() -> None:
    assert lasts("2m") == 120.0
    assert lasts("") is None
    with pytest.raises(UsageError, match=r"^--for must be more than 0"):
        lasts("0")
