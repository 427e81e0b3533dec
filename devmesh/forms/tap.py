"""The tap's filters as a user writes them (``devmesh tap``'s flags, or the one line the
TUI's tap reads: ``catalog 5xx /items >100ms``), as the API's query takes them."""

from __future__ import annotations

import math

from devmesh.errors import UsageError
from devmesh.forms.fields import FLAGS, Names, given
from devmesh.units import parse_duration

Filters = dict[str, str | float | None]
"""``service``, ``path``, ``status``, ``min_latency_ms`` and ``rate``, as ``client.tap``
takes them."""

WORDS = Names(
    {"path": "a path", "status": "a status", "min_latency": "the latency after >"},
    examples={"path": "/items", "status": "503 or 5xx", "min_latency": ">100ms or >1.5s"},
)
"""The names of the one-line filter's words."""


def tap_filters(
    *,
    service: str | None = None,
    path: str | None = None,
    status: str | None = None,
    min_latency: str | None = None,
    rate: float | None = None,
    names: Names = FLAGS,
) -> Filters:
    """The filters, checked; ``UsageError`` naming the field."""
    found: Filters = {}
    if (service := given(service)) is not None:
        found["service"] = service
    if (path := given(path)) is not None:
        if not path.startswith("/"):
            raise UsageError(
                f"{names.name('path')} {path} does not start with /",
                names.example("path", f"/{path}"),
            )
        found["path"] = path
    if (status := given(status)) is not None:
        if not is_status(status):
            raise UsageError(
                f"{names.name('status')} {status} is not a status or a class",
                names.example("status", "503"),
            )
        found["status"] = status.lower()
    if (latency := given(min_latency)) is not None:
        try:
            found["min_latency_ms"] = parse_duration(latency) * 1000.0
        except ValueError:
            raise UsageError(
                f"{names.name('min_latency')} {latency} is not a duration",
                names.example("min_latency", "100ms"),
            ) from None
    if rate is not None:
        if not math.isfinite(rate) or rate <= 0:
            raise UsageError(
                f"{names.name('rate')} {rate:g} must be a number above 0",
                names.example("rate", "50"),
            )
        found["rate"] = rate
    return found


def is_status(text: str) -> bool:
    """``503`` or a class, ``5xx``."""
    shape = text.lower()
    return shape[:1] in "12345" and len(shape) == 3 and (shape[1:] == "xx" or shape.isdigit())


def filters_from_words(text: str) -> Filters:
    """``catalog 5xx /items >100ms``: a service, a status or class, a path prefix and a
    minimum latency, in any order; ``UsageError`` naming a word it cannot read."""
    words: dict[str, str] = {}
    for word in text.split():
        if word.startswith("/"):
            words["path"] = word
        elif word.startswith(">"):
            latency = word[1:].lower()
            if latency.replace(".", "", 1).isdigit():
                raise UsageError(
                    f"{word!r} has no unit: after > comes a latency with its unit",
                    "e.g. >100ms or >1.5s",
                )
            words["min_latency"] = latency
        elif is_status(word):
            words["status"] = word
        elif word.replace("-", "").replace("_", "").isalnum():
            words["service"] = word
        else:
            raise UsageError(
                f"{word!r} is not a service, a status (503, 5xx), a /path or a >latency"
            )
    return tap_filters(
        service=words.get("service"),
        path=words.get("path"),
        status=words.get("status"),
        min_latency=words.get("min_latency"),
        names=WORDS,
    )
