"""The JSON shapes that cross the control plane's API, one typed definition each.

The control plane builds its answers as these; the API client, the CLI's output
and the TUI read them as these. They describe JSON as it is on the wire, after
``json.loads``: a pair is a two-item list, a number a user wrote as ``30`` may
be an int where the type says ``float``. Keys that an answer leaves out at
times are ``NotRequired``; keys always present but possibly ``null`` are
``X | None``.

Only the standard library here: the module is shared by every side. No
``from __future__ import annotations`` either: with it, ``NotRequired`` would be a
string at run time, and ``__required_keys__`` would say every key is required.

Config-form values (a fault, a policy, a rule, as ``devmesh.yaml`` writes them)
are typed as the config's own dumps are (``devmesh.config.dump``): mappings of
its keys, whose meaning ``devmesh.config`` documents.
"""

from typing import Any, Literal, NotRequired, TypedDict

Origin = Literal["cli", "config"]
"""Where a fault or an authorization rule comes from: added at run time, or declared in
``devmesh.yaml``."""

# -- errors ------------------------------------------------------------------------


class Error(TypedDict):
    """Every refusal (4xx and 5xx): what is wrong, what to do, and for a config that
    does not validate, each problem (``path: message``)."""

    error: str
    hint: str | None
    problems: NotRequired[list[str]]


# -- traffic figures ---------------------------------------------------------------

StatusClasses = TypedDict(
    "StatusClasses",
    {"none": int, "1xx": int, "2xx": int, "3xx": int, "4xx": int, "5xx": int},
)
"""Answers counted by class; ``none``: a request that got no status (the caller left)."""


class Counts(TypedDict):
    """What happened to a set of requests."""

    requests: int
    errors: int
    injected: int
    """Of the errors, those an injected fault caused."""
    retries: int
    timeouts: int
    classes: StatusClasses


class History(TypedDict):
    """Requests and errors per whole second over the last minute, oldest first."""

    requests: list[int]
    errors: list[int]


class Traffic(Counts):
    """A series (an edge, a service, a version, an instance) read at one time: totals
    since the control plane started at the top level, the window's rates and
    percentiles beside them, the window's own counts under ``window``."""

    window_s: int
    rps: float
    success_rate: float | None
    """Of the window's requests, the share that did not fail; ``None``: none came."""
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    window: Counts
    latency_bins: list[tuple[float | None, int]]
    """``[upper bound in ms, count]`` per bin of the window's latencies; the last bin's
    bound is ``None`` (above every other)."""
    history: NotRequired[History]
    """With ``history=1`` (and in the event stream's status)."""


# -- status ------------------------------------------------------------------------

BreakerState = Literal["closed", "half-open", "open"]


class Breaker(TypedDict):
    """An edge's breaker: the worst of its callers' as they reported it (``closed``, with
    only the four first keys, when none did)."""

    state: BreakerState
    reason: str | None
    retry_in: float | None
    """Seconds until it tries again (``None`` unless open)."""
    panic: bool
    """The caller routes to all of the pool, ejected endpoints too (too few healthy)."""
    instance: NotRequired[str | None]
    """The endpoint ``reason`` and ``retry_in`` are about."""
    ejected: NotRequired[int]
    half_open: NotRequired[int]
    total: NotRequired[int]
    ejections: NotRequired[int]
    """Ejections since the reporting sidecar started."""


class SecurityCounts(TypedDict):
    """How an edge's requests travelled and what authorization made of them."""

    mtls_requests: int
    plaintext_requests: int
    """Outbound requests that reached an endpoint, by how they went."""
    last: Literal["mtls", "plaintext"] | None
    denied: int
    audited: int
    """Requests an audit-mode rule would have denied (let through)."""
    by_rule: dict[str, int]
    """Denials and audit reports by rule (``deny:NAME``, ``audit:NAME``)."""


class EdgeSecurity(SecurityCounts):
    """An edge's mTLS mode and how it is shown, with its counts."""

    mode: str | None
    """The destination's mTLS mode (``strict``, ``permissive``, ``off``)."""
    locked: bool
    """Strict: only mTLS from the mesh gets in."""
    shown: Literal["locked", "mtls", "plaintext"]


class BreakerEvent(TypedDict):
    """A breaker change (state, or new ejections) one caller reported, as the event stream
    sends it and ``breaker_history`` keeps it."""

    type: Literal["breaker"]
    ts: float
    source: str
    caller: str
    """The calling instance."""
    destination: str
    state: BreakerState
    was: BreakerState
    endpoint: str | None
    reason: str | None
    retry_in: float | None
    ejections: int


class Edge(Traffic):
    """Calls from one service to another."""

    source: str
    destination: str
    breaker: Breaker
    security: EdgeSecurity
    breaker_history: NotRequired[list[BreakerEvent]]
    """The edge's latest breaker changes, oldest first (with ``history=1``)."""


InstanceState = Literal["starting", "ready", "unhealthy", "restarting", "stopped", "disconnected"]


class Instance(TypedDict):
    """One planned instance of a service, as users read it."""

    id: str
    version: str
    state: InstanceState
    detail: str
    address: str | None
    """Its sidecar's inbound address, when it has one."""
    restarts: int
    """Times the supervisor started its processes again."""
    served: Traffic | None
    """What the instance itself served (``None``: nothing yet)."""


Rule = TypedDict(
    "Rule",
    {
        "name": str,
        "service": str,
        "action": Literal["allow", "deny"],
        "mode": Literal["enforce", "audit"],
        "from": NotRequired[list[str]],
        "paths": NotRequired[list[str]],
        "methods": NotRequired[list[str]],
        "origin": Origin,
        "does": str,
    },
)
"""An authorization rule in force: in ``devmesh.yaml``'s shape (``from``, ``paths`` and
``methods`` only when it gives them), with its mode, where it comes from (``origin``) and
what it does in words (``does``: ``deny GET /admin/* to catalog from frontend``)."""


class Fault(TypedDict):
    """A fault in force, in ``devmesh.yaml``'s shape and in words."""

    id: str
    """``f1``, ``f2``... (added at run time) or ``<service>-config-<n>``."""
    service: str
    origin: Origin
    fault: dict[str, object]
    """The fault as ``devmesh.yaml`` writes it (``devmesh.config.dump.dump_fault``)."""
    does: str
    """``abort 503 (20%), delay 200ms ±50ms``."""
    matches: str
    expires_in: float | None
    """Seconds until it removes itself; ``None``: until removed."""


class Service(TypedDict):
    name: str
    url: str | None
    """Where an exposed service is reached from this machine."""
    versions: list[str]
    split: dict[str, float] | None
    """Weight (0-100) per version, the runtime split or ``devmesh.yaml``'s."""
    mtls: str | None
    authz: list[Rule]
    instances: list[Instance]
    traffic: Traffic | None
    """Calls to the service, from every caller."""
    by_version: dict[str, Traffic | None]


class ProxyLink(TypedDict):
    """A connected proxy (sidecar or gateway) and the snapshot it runs."""

    instance: str
    role: str
    """``sidecar`` or ``gateway``."""
    health: str
    acked_version: int | None
    rejected: str | None
    """Why it refused the last snapshot, if it did."""


class TelemetryCounts(TypedDict):
    records: int
    dropped: int
    """Records sidecars dropped before sending them (their buffer was full)."""
    malformed: int


class Status(TypedDict):
    """``GET /v1/status``: the mesh as users read it."""

    project: str | None
    snapshot_version: int
    window_s: int
    services: list[Service]
    edges: list[Edge]
    proxies: list[ProxyLink]
    faults: list[Fault]
    telemetry: TelemetryCounts


# -- the event stream (``/v1/events``) and the tap (``/v1/tap``) --------------------


class StatusEvent(Status):
    """Once a second: the status over the stream's window, with history."""

    type: Literal["status"]
    ts: float


class ConfigEvent(TypedDict):
    """The sidecars were sent a new snapshot."""

    type: Literal["config"]
    ts: float
    version: int


Event = StatusEvent | BreakerEvent | ConfigEvent


class TapRequest(TypedDict):
    """One sampled request, as its caller's sidecar saw it."""

    type: Literal["request"]
    ts: float
    source: str
    destination: str
    method: str | None
    path: str | None
    status: int
    latency_ms: float
    version: str
    instance: str
    trace_id: str | None
    fault: str | None
    error: str | None
    retries: int | None


class TapStats(TypedDict):
    """Once a second: what this tap matched and did not show."""

    type: Literal["stats"]
    matched: int
    sampled_out: int
    """Matching requests not shown because the rate was reached."""
    lost: int
    """Messages dropped because the reader read too slowly."""
    rate: float


TapMessage = TapRequest | TapStats


# -- runtime changes -------------------------------------------------------------


class Faults(TypedDict):
    """``GET /v1/faults``."""

    faults: list[Fault]


class FaultAdded(TypedDict):
    """``POST /v1/faults``."""

    fault: Fault


class FaultRemoved(TypedDict):
    """``DELETE /v1/faults/{id}``: the one fault removed."""

    removed: list[Fault]


class FaultsReset(TypedDict):
    """``DELETE /v1/faults``: the ids of the runtime faults removed."""

    removed: list[str]


class Rules(TypedDict):
    """``GET /v1/authz``."""

    rules: list[Rule]


class RuleAdded(TypedDict):
    """``POST /v1/authz``."""

    rule: Rule


class RuleRemoved(TypedDict):
    """``DELETE /v1/authz/{name}``."""

    removed: Rule


class MtlsModes(TypedDict):
    """``GET`` and ``PUT /v1/mtls``: every service's mTLS mode."""

    modes: dict[str, str]


class PolicyAnswer(TypedDict):
    """``GET``, ``PUT`` and ``DELETE /v1/services/{service}/policy``."""

    service: str
    policy: dict[str, object]
    """The policy in force, in ``devmesh.yaml``'s shape (``dump_policy``)."""
    overrides: dict[str, object]
    """The settings changed at run time, in ``devmesh.yaml``'s shape."""


class SplitAnswer(TypedDict):
    """``PUT`` and ``DELETE /v1/services/{service}/split``: the split in force."""

    service: str
    split: dict[str, float] | None


class ProjectApplied(TypedDict):
    """``PUT /v1/project``."""

    project: str
    services: list[str]


class Healthz(TypedDict):
    """``GET /healthz`` (no token needed)."""

    status: Literal["ok"]
    project: str | None


# -- instances -------------------------------------------------------------------


class Logs(TypedDict):
    """``GET /v1/instances/{instance}/logs``."""

    instance: str
    lines: list[str]


class Killed(TypedDict):
    """``POST /v1/instances/{instance}/kill``."""

    killed: str


class Restarted(TypedDict):
    """``POST /v1/services/{service}/restart``: the instances restarted."""

    service: str
    restarted: list[str]


class Held(TypedDict):
    """``POST /v1/instances/{instance}/hold``: answered once it drained."""

    instance: str
    in_flight: int
    """Calls still in flight at its app when the drain ended."""


class Released(TypedDict):
    """``POST /v1/instances/{instance}/release``."""

    instance: str


# -- identities ------------------------------------------------------------------


class Authority(TypedDict):
    """The project's CA."""

    fingerprint: str
    not_after: float
    folder: str


class IssuedIdentity(TypedDict):
    """The identity issued to one sidecar."""

    instance: str
    service: str
    spiffe_id: str
    fingerprint: str
    serial: str
    """In hex."""
    not_after: float
    expires_in: float
    renews_in: float
    installed: bool
    """Whether the sidecar said it installed this very one."""


class Certs(TypedDict):
    """``GET /v1/certs``: the CA (``None`` until a sidecar needed it) and each identity."""

    ca: Authority | None
    identities: list[IssuedIdentity]


# -- traces ----------------------------------------------------------------------


class Span(TypedDict):
    """One sidecar's part of a request: ``client`` (the caller's sidecar) or ``server``
    (the callee's)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    kind: Literal["client", "server"]
    service: str
    """The service whose sidecar made the span."""
    source: str
    destination: str
    instance: str
    version: str
    method: str
    path: str
    status: int
    start: float
    """Wall-clock seconds since the epoch."""
    duration_ms: float
    error: str | None
    fault: str | None
    retries: int


class TraceSummary(TypedDict):
    trace_id: str
    start: float
    duration_ms: float
    spans: int
    root: str
    """``source → destination METHOD /path`` of its first span."""
    status: int
    failed: bool
    faults: list[str]


class Trace(TraceSummary):
    """``GET /v1/traces/{id}``: a trace with its spans, in the order they started."""

    truncated: int
    """Spans not kept: the trace had as many as the control plane keeps."""
    span_list: list[Span]


class Traces(TypedDict):
    """``GET /v1/traces``: the latest traces first."""

    traces: list[TraceSummary]


Otlp = dict[str, Any]
"""``format=otlp``: an OTLP/JSON ``ExportTraceServiceRequest``, OpenTelemetry's schema."""
