"""A service's split between its versions: the weights ``devmesh split`` reads from its
arguments, and the whole percentages the TUI's split editor moves by steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from devmesh.errors import UsageError
from devmesh.units import finite_number


def parse_weights(items: Sequence[str]) -> dict[str, float]:
    """``["v1=90", "v2=10"]`` -> ``{"v1": 90.0, "v2": 10.0}``; UsageError naming the bad item."""
    weights: dict[str, float] = {}
    for item in items:
        version, sep, weight = item.partition("=")
        try:
            value = finite_number(float(weight))  # nan, inf: not weights
        except ValueError:
            value = None
        if not sep or not version or value is None:
            raise UsageError(
                f"{item!r} is not VERSION=WEIGHT", "write the weights like v1=90 v2=10"
            )
        if version in weights:
            raise UsageError(f"version {version} is given twice", "give each version once")
        weights[version] = value
    return weights


def whole_split(names: Sequence[str], split: Mapping[str, float] | None) -> dict[str, int]:
    """The split in force as whole percentages of ``names`` summing to 100; an even one when
    there is none (or it does not round to 100)."""
    if split:
        weights = {name: round(split.get(name, 0)) for name in names}
        if sum(weights.values()) == 100:
            return weights
    return even_split(names)


def rebalance(weights: Mapping[str, int], version: str, step: int) -> dict[str, int]:
    """``weights`` (summing to 100) with ``version`` moved by ``step``, taken from (or given
    to) the other versions in turn, so that they still sum to 100 and none is negative."""
    names = list(weights)
    if version not in weights or len(names) < 2:
        return dict(weights)
    moved = dict(weights)
    wanted = max(-moved[version], min(step, 100 - moved[version]))
    left = abs(wanted)
    start = names.index(version)
    others = [names[(start + i) % len(names)] for i in range(1, len(names))]
    sign = 1 if wanted > 0 else -1
    for other in others:
        if left == 0:
            break
        room = moved[other] if sign > 0 else 100 - moved[other]
        take = min(room, left)
        moved[other] -= sign * take
        left -= take
    moved[version] += sign * (abs(wanted) - left)
    return moved


def even_split(names: Sequence[str]) -> dict[str, int]:
    """Whole percentages as even as they go, the remainder to the first versions."""
    if not names:
        return {}
    share, rest = divmod(100, len(names))
    return {name: share + (1 if index < rest else 0) for index, name in enumerate(names)}
