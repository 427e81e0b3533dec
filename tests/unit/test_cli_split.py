"""devmesh.forms.splits: the weights `devmesh split` reads from its arguments."""

from __future__ import annotations

import pytest

from devmesh.errors import UsageError
from devmesh.forms.splits import parse_weights


def test_weights_are_read_as_numbers() -> None:
    assert parse_weights(["v1=90", "v2=10.5"]) == {"v1": 90.0, "v2": 10.5}


@pytest.mark.parametrize("item", ["v1=nan", "v1=inf", "v1=-Infinity", "v1=1e400", "v1=", "v1"])
def test_a_weight_that_is_no_number_is_refused_before_it_is_sent(item: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_weights([item, "v2=100"])
    assert caught.value.message == f"{item!r} is not VERSION=WEIGHT"
