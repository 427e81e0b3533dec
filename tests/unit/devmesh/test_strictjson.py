"""devmesh.strictjson: JSON's own numbers only, and where the first one that is none is."""

from __future__ import annotations

import json

import pytest

from devmesh.strictjson import NotJsonNumber, loads


@pytest.mark.parametrize(
    "text",
    ['{"for": 30}', '{"for": 0.5}', '{"w": [1e308, -1e308, -0.0, 5e-324]}', "[]", '"NaN"', "null"],
)
def test_json_numbers_read_as_python_reads_them(text: str) -> None:
    assert loads(text) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"for": NaN}', "`for` is NaN, which is not a JSON number"),
        ('{"for": Infinity}', "`for` is Infinity, which is not a JSON number"),
        ('{"for": -Infinity}', "`for` is -Infinity, which is not a JSON number"),
        (
            '{"for": 1e400}',
            "`for` is 1e400, a number beyond what a float holds (about 1.8e308)",
        ),
        (
            '{"for": -1.5E+309}',
            "`for` is -1.5E+309, a number beyond what a float holds (about 1.8e308)",
        ),
        (
            '{"for": 1' + "0" * 400 + "}",
            "`for` is 100000000000…000000 (401 characters), a number beyond what a float "
            "holds (about 1.8e308)",
        ),
        ("NaN", "the value is NaN, which is not a JSON number"),
    ],
)
def test_a_number_json_has_not_is_refused_by_name(text: str, message: str) -> None:
    with pytest.raises(NotJsonNumber) as caught:
        loads(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('{"fault": {"delay": {"fixed": "1s", "percent": NaN}}}', "fault.delay.percent"),
        ('{"weights": {"v1": 50, "v2": Infinity}}', "weights.v2"),
        ('{"rule": {"from": ["a", NaN]}}', "rule.from[1]"),
        ('[{"a": 1}, {"b": [0, 1e999]}]', "[1].b[1]"),
    ],
)
def test_the_refusal_names_the_first_such_value_by_its_path(text: str, path: str) -> None:
    with pytest.raises(NotJsonNumber) as caught:
        loads(text)
    assert caught.value.path == path


def test_text_that_is_not_json_is_a_decode_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads('{"for": 30')
