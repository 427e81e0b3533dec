"""Fault injection for the sidecar, in Istio's shape, plus Toxiproxy's connection faults.

A ``Fault`` is scoped by a ``Match`` and may delay (fixed, with jitter, for a
percentage of requests), abort (an HTTP status or a connection reset, for a
percentage of requests, independent of the delay), limit the response body's
bandwidth, or hang (accept the request, never answer for a while, then reset).
It may be time-boxed by ``expires_at`` (wall clock).

``decide`` is pure: it takes the faults in force, the request, a source of
randomness and the time, and says what to do to that one request. The few
async helpers that carry it out (``delay``, ``Throttle``, ``hang``,
``reset_connection``) are in ``proxy.toxics``.

Several matching faults combine so (``decide``):

* every matching, unexpired fault rolls its own dice, in fault order: the delay's
  percentage, then the jitter (only if the delay fired), then the abort's
  percentage; a roll with percent 0 or 100 draws nothing;
* the delays that fired add up (each one ``delay ± jitter``, never below 0);
* the first abort that fired (by fault order) ends the request: its status, or a reset;
* otherwise the longest hang ends it (accept, never answer, then reset);
* otherwise the request is forwarded, the response body held to the smallest bandwidth;
* ``Decision.fired`` holds the ids (in fault order) of the faults whose effect is
  in force, so injected failures are always told apart from real ones.

The data path, in order::

    decision = decide(faults, RequestInfo(method, path, headers, source), rand, time.time())
    if decision:
        await delay(decision.delay)
        if decision.abort_status is not None: answer decision.abort_status
        elif decision.abort_reset: reset_connection(transport)
        elif decision.hang is not None: await hang(decision.hang, reset)
        else: forward, writing the body through Throttle(decision.bandwidth) if set
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, TypeGuard

Rand = random.Random | Callable[[], float]
"""A source of floats in [0, 1): a ``random.Random`` or a function such as ``random.random``."""


class FaultError(ValueError):
    """A fault is invalid; the message names the field (or the fault) and what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        """Dotted path of the offending field, ``""`` when the fault as a whole is wrong."""
        self.problem = problem
        super().__init__(f"{field or 'the fault'} {problem}")

    def at(self, where: str) -> FaultError:
        """The same error, its field prefixed by where the fault sits (``faults[0]``)."""
        return FaultError(f"{where}.{self.field}" if self.field else where, self.problem)


# -- validation helpers (each raises FaultError naming ``field``) -----------------------


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_percent(value: object, field: str = "percent") -> float:
    if not _is_number(value) or not 0.0 <= value <= 100.0:
        raise FaultError(field, f"must be a percentage from 0 to 100, got {value!r}")
    return float(value)


def check_seconds(value: object, field: str = "delay") -> float:
    """A delay or jitter: a finite number of seconds, 0 or more."""
    if not _is_number(value) or not 0.0 <= value < math.inf:
        raise FaultError(field, f"must be a number of seconds, 0 or more, got {value!r}")
    return float(value)


def check_status(value: object, field: str = "abort_status") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 200 <= value <= 599:
        raise FaultError(field, f"must be an HTTP status from 200 to 599, got {value!r}")
    return value


def check_path_prefix(value: object, field: str = "path_prefix") -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise FaultError(field, f"must start with '/', got {value!r}")
    return value


def check_bandwidth(value: object, field: str = "bandwidth") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise FaultError(
            field, f"must be a whole number of bytes per second above 0, got {value!r}"
        )
    return value


def check_hang(value: object, field: str = "hang") -> float:
    if not _is_number(value) or not 0.0 < value < math.inf:
        raise FaultError(field, f"must be a number of seconds above 0, got {value!r}")
    return float(value)


def _check_name(value: object, field: str, what: str) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() or c == ":" for c in value):
        raise FaultError(field, f"must be {what} (non-empty, no spaces or ':'), got {value!r}")
    return value


# -- the model ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Match:
    """Which requests a fault applies to; every condition given must hold.

    ``path_prefix`` is a plain string prefix, as Istio's ``uri.prefix`` (``/item``
    matches ``/items``). ``method`` compares case-insensitively. ``headers``: the
    request must carry each header (name case-insensitive) with exactly that value
    (any one of its values, if repeated). ``source`` is the calling service.
    An empty match matches every request.
    """

    path_prefix: str | None = None
    method: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    source: str | None = None
    _method: str | None = field(init=False, repr=False, compare=False)
    _headers: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.path_prefix is not None:
            check_path_prefix(self.path_prefix)
        if self.method is not None:
            _check_name(self.method, "method", "an HTTP method")
        if not isinstance(self.headers, tuple):
            raise FaultError("headers", "must be a tuple of (name, value) pairs")
        seen: set[str] = set()
        for pair in self.headers:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], str)):
                raise FaultError("headers", f"must be (name, value) string pairs, got {pair!r}")
            name = _check_name(pair[0], "headers", "a header name").lower()
            if name in seen:
                raise FaultError("headers", f"names {pair[0]!r} twice; give each header once")
            seen.add(name)
        if self.source is not None:
            _check_name(self.source, "source", "a service name")
        object.__setattr__(self, "_method", self.method.upper() if self.method else None)
        object.__setattr__(self, "_headers", tuple((n.lower(), v) for n, v in self.headers))

    def matches(
        self, method: str, path: str, headers: Mapping[str, str], source: str | None
    ) -> bool:
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        if self._method is not None and method != self._method and method.upper() != self._method:
            return False
        if self.source is not None and source != self.source:
            return False
        return not self._headers or _headers_match(self._headers, headers)


def _headers_match(wanted: tuple[tuple[str, str], ...], headers: Mapping[str, str]) -> bool:
    getall = getattr(headers, "getall", None)  # a multidict: aiohttp's case-insensitive headers
    for name, value in wanted:
        if getall is not None:
            if value not in getall(name, ()):
                return False
        elif headers.get(name) != value and not any(
            k.lower() == name and v == value for k, v in headers.items()
        ):
            return False
    return True


EVERYTHING = Match()


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One fault rule; constructing it validates it (``FaultError`` naming the field)."""

    id: str
    match: Match = EVERYTHING
    delay: float | None = None
    """Seconds added before the request goes on (or is aborted)."""
    jitter: float = 0.0
    """The delay varies uniformly within ± this many seconds, never below 0."""
    delay_percent: float = 100.0
    abort_status: int | None = None
    abort_reset: bool = False
    """Reset the connection instead of answering."""
    abort_percent: float = 100.0
    bandwidth: int | None = None
    """Bytes per second on the response body."""
    hang: float | None = None
    """Accept the request, never answer for this many seconds, then reset."""
    expires_at: float | None = None
    """Wall clock (``time.time()``); from then on the fault no longer applies."""

    def __post_init__(self) -> None:
        _check_name(self.id, "id", "a fault id")
        if not isinstance(self.match, Match):
            raise FaultError("match", f"must be a Match, got {self.match!r}")
        delays = self.delay is not None and check_seconds(self.delay, "delay") > 0
        if check_seconds(self.jitter, "jitter") > 0 and self.delay is None:
            raise FaultError("jitter", "is set but the fault has no delay; give it a delay too")
        if check_percent(self.delay_percent, "delay_percent") != 100.0 and self.delay is None:
            raise FaultError("delay_percent", "is set but the fault has no delay")
        if self.abort_status is not None:
            check_status(self.abort_status, "abort_status")
        if not isinstance(self.abort_reset, bool):
            raise FaultError("abort_reset", f"must be true or false, got {self.abort_reset!r}")
        if self.abort_reset and self.abort_status is not None:
            raise FaultError(
                "abort_reset",
                "cannot be set together with abort_status: an abort either answers "
                "with a status or resets the connection",
            )
        aborts = self.abort_status is not None or self.abort_reset
        if check_percent(self.abort_percent, "abort_percent") != 100.0 and not aborts:
            raise FaultError("abort_percent", "is set but the fault has no abort")
        if self.bandwidth is not None:
            check_bandwidth(self.bandwidth, "bandwidth")
        if self.hang is not None:
            check_hang(self.hang, "hang")
        if self.expires_at is not None and (
            not _is_number(self.expires_at) or not math.isfinite(self.expires_at)
        ):
            raise FaultError("expires_at", f"must be a time in seconds, got {self.expires_at!r}")
        jitters = self.jitter > 0
        if not (delays or jitters or aborts or self.bandwidth or self.hang):
            raise FaultError(
                "",
                "does nothing: give it a delay, an abort_status, abort_reset, "
                "a bandwidth or a hang",
            )

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class RequestInfo(NamedTuple):
    """What ``decide`` needs to know of a request (cheap to build: a tuple)."""

    method: str
    path: str
    headers: Mapping[str, str]
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do to one request. Falsy when no fault fired (``Decision.none``)."""

    none: ClassVar[Decision]

    delay: float = 0.0
    """Seconds to wait first (the fired delays, added up)."""
    abort_status: int | None = None
    abort_reset: bool = False
    hang: float | None = None
    """Seconds to hold the request unanswered before resetting (only if no abort)."""
    bandwidth: int | None = None
    """Bytes per second for the response body (only if neither abort nor hang)."""
    fired: tuple[str, ...] = ()
    """Ids of the faults whose effect is in force, in fault order."""

    def __bool__(self) -> bool:
        return bool(self.fired)


NO_FAULT = Decision()
Decision.none = NO_FAULT


# -- the decision -------------------------------------------------------------------------


def decide(faults: Sequence[Fault], request: RequestInfo, rand: Rand, now: float) -> Decision:
    """What the faults in force do to ``request`` (see the module's combination rule)."""
    if not faults:
        return NO_FAULT
    method, path, headers, source = request
    draw: Callable[[], float] | None = None
    total = 0.0
    delayed: list[int] = []
    abort = hang = slow = -1
    longest = 0.0
    narrowest = 0
    for i, fault in enumerate(faults):
        if fault.expires_at is not None and now >= fault.expires_at:
            continue
        if not fault.match.matches(method, path, headers, source):
            continue
        if draw is None:
            draw = rand.random if isinstance(rand, random.Random) else rand
        if fault.delay is not None and _rolls(fault.delay_percent, draw):
            seconds = fault.delay
            if fault.jitter:
                seconds = max(0.0, seconds + (2.0 * draw() - 1.0) * fault.jitter)
            total += seconds
            delayed.append(i)
        if fault.abort_status is not None or fault.abort_reset:
            fires = _rolls(fault.abort_percent, draw)  # rolled even when an abort already won
            if fires and abort < 0:
                abort = i
        if fault.hang is not None and (hang < 0 or fault.hang > longest):
            hang, longest = i, fault.hang
        if fault.bandwidth is not None and (slow < 0 or fault.bandwidth < narrowest):
            slow, narrowest = i, fault.bandwidth
    if abort >= 0:
        hang = slow = -1
    elif hang >= 0:
        slow = -1
    in_force = {*delayed, abort, hang, slow}
    in_force.discard(-1)
    if not in_force:
        return NO_FAULT
    return Decision(
        delay=total,
        abort_status=faults[abort].abort_status if abort >= 0 else None,
        abort_reset=abort >= 0 and faults[abort].abort_reset,
        hang=longest if hang >= 0 else None,
        bandwidth=narrowest if slow >= 0 else None,
        fired=tuple(faults[i].id for i in sorted(in_force)),
    )


def _rolls(percent: float, draw: Callable[[], float]) -> bool:
    if percent >= 100.0:
        return True
    if percent <= 0.0:
        return False
    return draw() * 100.0 < percent


# -- wire form ----------------------------------------------------------------------------

_WIRE_ORDER = (
    "delay", "jitter", "delay_percent", "abort_status", "abort_reset", "abort_percent",
    "bandwidth", "hang", "expires_at",
)  # fmt: skip
_KEYS = frozenset({"id", "match", *_WIRE_ORDER})
_MATCH_KEYS = frozenset({"path_prefix", "method", "headers", "source"})
_DEFAULTS: dict[str, object] = {
    "jitter": 0.0, "delay_percent": 100.0, "abort_reset": False, "abort_percent": 100.0
}  # fmt: skip


def fault_to_wire(fault: Fault) -> dict[str, Any]:
    """JSON-friendly form; keys left at their defaults are left out."""
    wire: dict[str, Any] = {"id": fault.id}
    m = fault.match
    match = {
        **({"path_prefix": m.path_prefix} if m.path_prefix is not None else {}),
        **({"method": m.method} if m.method is not None else {}),
        **({"headers": dict(m.headers)} if m.headers else {}),
        **({"source": m.source} if m.source is not None else {}),
    }
    if match:
        wire["match"] = match
    for key in _WIRE_ORDER:
        value = getattr(fault, key)
        if value is not None and value != _DEFAULTS.get(key):
            wire[key] = value
    return wire


def parse_fault(data: object, where: str = "fault") -> Fault:
    """Validate the wire form and build a ``Fault``; errors name the path under ``where``.

    Numbers stay as the wire has them (``20`` stays an int), so the wire form
    round-trips exactly: ``fault_to_wire(parse_fault(w)) == w`` for a canonical ``w``.
    """
    obj = _object(data, where)
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise FaultError(f"{where}.{unknown[0]}", "is not a fault field")
    if "id" not in obj:
        raise FaultError(f"{where}.id", "is missing; every fault needs an id")
    kwargs: dict[str, Any] = {k: v for k, v in obj.items() if k != "match"}
    if "match" in obj:
        kwargs["match"] = _parse_match(obj["match"], f"{where}.match")
    try:
        return Fault(**kwargs)
    except FaultError as e:
        raise e.at(where) from None


def parse_faults(data: object, where: str = "faults") -> tuple[Fault, ...]:
    """A list of faults with distinct ids, in order."""
    if not isinstance(data, list):
        raise FaultError(where, "must be a list")
    faults = tuple(parse_fault(raw, f"{where}[{i}]") for i, raw in enumerate(data))
    first: dict[str, int] = {}
    for i, fault in enumerate(faults):
        if fault.id in first:
            raise FaultError(
                f"{where}[{i}].id", f"{fault.id!r} is taken by {where}[{first[fault.id]}]"
            )
        first[fault.id] = i
    return faults


def faults_to_wire(faults: Sequence[Fault]) -> list[dict[str, Any]]:
    return [fault_to_wire(f) for f in faults]


def _parse_match(data: object, where: str) -> Match:
    obj = _object(data, where)
    unknown = sorted(set(obj) - _MATCH_KEYS)
    if unknown:
        raise FaultError(f"{where}.{unknown[0]}", "is not a match field")
    headers: list[tuple[str, str]] = []
    for name, value in _object(obj.get("headers", {}), f"{where}.headers").items():
        if not isinstance(value, str):
            raise FaultError(f"{where}.headers.{name}", f"must be a string, got {value!r}")
        headers.append((name, value))
    kwargs: dict[str, Any] = {k: v for k, v in obj.items() if k != "headers"}
    try:
        return Match(headers=tuple(headers), **kwargs)
    except FaultError as e:
        raise e.at(where) from None


def _object(data: object, where: str) -> Mapping[str, object]:
    if not isinstance(data, dict):
        raise FaultError(where, "must be an object")
    return data
