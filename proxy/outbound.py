"""A call to a mesh service, under its route policy: the heart of the calling sidecar.

In order, for one request to ``catalog``:

1. the version: ``x-devmesh-version`` pins one, a ``catalog-v2`` host names one,
   else the split draws one;
2. the connection pool admits the request, queues it, or overflows (503);
3. attempts, as many as the retry policy allows (a request whose body cannot be
   replayed gets one), each on an endpoint the breaker lets through (a retry
   prefers one not tried yet): faults are rolled per attempt and act as the
   destination failing would for the caller (delays count against the per-try
   timeout, and retries react to injected aborts — unlike Istio, where faults
   turn retries off); every real attempt's result feeds the outlier detector,
   as far as it tells of the endpoint (an injected failure, a caller that hung
   up or did not send its body whole, a request the mesh refused say nothing
   of it: Envoy counts only what the upstream did);
4. each attempt goes over mTLS to the endpoint's sidecar unless the service's
   mode is ``off`` (or, ``permissive``, this sidecar has no identity yet), and
   the endpoint must prove it is of the service (its SPIFFE ID);
5. the answer is relayed (at the fault's bandwidth, if one limits it), all
   within the route's timeout (a timeout that fires while the request's body is
   still arriving is the caller's: 408, not the endpoint's 504).

A request that never reached an app (connect failure) and can be replayed is
tried once more on another endpoint even without a retry policy.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from multidict import CIMultiDict

from proxy.balancer import Unavailable
from proxy.body import Body, BodyError
from proxy.deadline import deadline
from proxy.destinations import Destination, Destinations
from proxy.faults import NO_FAULT, Decision, RequestInfo, decide
from proxy.headers import ERROR_HEADER, VERSION_HEADER
from proxy.httpclient import Pool, RequestBody, Tls
from proxy.httpserver import Request
from proxy.identity import IdentityStore
from proxy.outlier import Outcome as AttemptResult
from proxy.policy import Retries
from proxy.pool import Overflow
from proxy.router import NoEndpoint, Router
from proxy.snapshot import Endpoint
from proxy.toxics import Throttle, reset_connection
from proxy.upstream import Injected, NoAnswer, Outcome, Refusal, Sent, discard, relay, send

log = logging.getLogger("devmesh.proxy")

REPLAYABLE_BODY = 64 * 1024
"""Bodies up to this size (with a Content-Length) are kept so that a retry can resend them."""
_GATEWAY_ERRORS = (502, 503, 504)


@dataclass
class Call:
    """One request to a service, as the outbound pipeline sees it."""

    request: Request
    service: str
    source: str
    headers: CIMultiDict[str]
    version: str | None


class OutboundCalls:
    def __init__(
        self,
        pool: Pool,
        router: Router,
        destinations: Destinations,
        rand: random.Random | None = None,
        identity: IdentityStore | None = None,
    ) -> None:
        self._pool = pool
        self.router = router
        self.destinations = destinations
        self._rand = rand or random.Random()
        self.identity = identity

    async def call(self, call: Call, outcome: Outcome) -> None:
        request = call.request
        pinned = request.headers.get(VERSION_HEADER)
        target = self.router.target(call.service, call.version or pinned or None)
        destination = self.destinations.get(call.service)
        if isinstance(target, NoEndpoint) or destination is None:
            reason = target.reason if isinstance(target, NoEndpoint) else "no route yet"
            await relay(request, NoAnswer("no-healthy-upstream", reason), outcome, trusted=True)
            return
        version, candidates = target
        policy = destination.route.policy
        try:
            await destination.gate.acquire()
        except Overflow:
            limits = policy.pool
            await relay(
                request,
                NoAnswer(
                    "overflow",
                    f"too many requests to {call.service} at once (pool limits: "
                    f"{limits.max_connections} connections, {limits.max_pending} pending)",
                ),
                outcome,
                trusted=True,
            )
            return
        try:
            with deadline(request.loop, _task(request), policy.timeout):
                body = await _body(request, policy.retries is not None)
                sent, decision = await self._attempts(
                    call, destination, version, candidates, body, outcome
                )
                if isinstance(sent, NoAnswer) and sent.fault is not None:
                    # An injected reset or hang ends as the real thing would: a reset.
                    outcome.error = "reset"
                    reset_connection(request.transport)
                    request.finished = True
                    return
                throttle = Throttle(decision.bandwidth) if decision.bandwidth else None
                await relay(request, sent, outcome, trusted=True, throttle=throttle)
        except BodyError as exc:  # a body kept for retries broke off while read whole
            await relay(request, NoAnswer("downstream-reset", str(exc)), outcome, trusted=True)
        except TimeoutError:
            if request.started:  # the answer had begun: it cannot end normally
                request.abort()
                outcome.error = "timeout"
                return
            if request.body.waiting_on_sender:  # the caller's body is late, not the answer
                await relay(
                    request, _body_timeout(call.service, policy.timeout), outcome, trusted=True
                )
                return
            await relay(
                request,
                NoAnswer(
                    "timeout",
                    f"upstream request timeout: {call.service} did not answer within "
                    f"{policy.timeout:g}s",
                    status=504,
                ),
                outcome,
                trusted=True,
            )
        finally:
            destination.gate.release()

    async def _attempts(
        self,
        call: Call,
        destination: Destination,
        version: str | None,
        candidates: tuple[Endpoint, ...],
        body: RequestBody,
        outcome: Outcome,
    ) -> tuple[Sent, Decision]:
        policy = destination.route.policy
        replayable = not isinstance(body, Body)
        attempts = policy.retries.attempts if policy.retries is not None and replayable else 1
        failover = 1 if replayable else 0  # one more try when nothing reached an app
        tried: list[str] = []
        fired: list[str] = []
        while True:
            endpoint = destination.pick(candidates, version, avoid=tried)
            if isinstance(endpoint, Unavailable):
                what = call.service if version is None else f"{call.service} version {version}"
                code: Refusal = (
                    "breaker-open" if endpoint.why == "all-ejected" else "no-healthy-upstream"
                )
                sent: Sent = NoAnswer(code, endpoint.describe(what, time.monotonic()))
                decision = NO_FAULT
                break
            tried.append(endpoint.instance)
            outcome.instance, outcome.version = endpoint.instance, endpoint.version
            decision = self._decide(call, destination)
            fired += [f for f in decision.fired if f not in fired]
            sent = await self._attempt(
                call, destination, version, endpoint, body, decision, outcome
            )
            if not decision:  # an injected failure says nothing of the endpoint's health
                destination.detector.record(endpoint.instance, endpoint_result(sent))
            left = attempts - len(tried)
            if left > 0 and _should_retry(sent, policy.retries):
                outcome.retries += 1
            elif failover and _never_reached_an_app(sent) and len(candidates) > 1:
                failover = 0
                outcome.retries += 1
            else:
                break
            log.info(
                "retrying %s %s to %s (after %s on %s)",
                call.request.method,
                call.request.path,
                call.service,
                _describe(sent),
                endpoint.instance,
            )
            await discard(sent)
        outcome.fault = ",".join(fired) or None
        return sent, decision

    def _decide(self, call: Call, destination: Destination) -> Decision:
        faults = destination.route.policy.faults
        if not faults:
            return NO_FAULT
        request = call.request
        info = RequestInfo(request.method, request.path, request.headers, call.source)
        return decide(faults, info, self._rand, time.time())

    async def _attempt(
        self,
        call: Call,
        destination: Destination,
        version: str | None,
        endpoint: Endpoint,
        body: RequestBody,
        decision: Decision,
        outcome: Outcome,
    ) -> Sent:
        retries = destination.route.policy.retries
        per_try = retries.per_try_timeout if retries is not None else None
        fault = ",".join(decision.fired)
        try:
            with deadline(call.request.loop, _task(call.request), per_try):
                if decision.delay:
                    await asyncio.sleep(decision.delay)
                if decision.abort_reset:
                    return NoAnswer("reset", f"fault {fault} injected a reset", fault=fault)
                if decision.abort_status is not None:
                    return Injected(decision.abort_status, fault)
                if decision.hang is not None:
                    await asyncio.sleep(decision.hang)
                    return NoAnswer("reset", f"fault {fault} hung the request", fault=fault)
                tls = self._tls(call.service, destination.route.mtls)
                if isinstance(tls, NoAnswer):
                    return tls
                outcome.mtls = tls is not None
                destination.started(endpoint, version)
                try:
                    host, _, port = endpoint.address.rpartition(":")
                    return await send(
                        self._pool,
                        call.request,
                        host,
                        int(port),
                        call.headers,
                        body,
                        endpoint.instance,
                        tls,
                    )
                finally:
                    destination.finished(endpoint, version)
        except TimeoutError:  # this attempt's own: the route's would not be caught here
            if isinstance(body, Body) and body.waiting_on_sender:
                return _body_timeout(call.service, per_try)
            return NoAnswer(
                "timeout", f"{endpoint.instance} did not answer within {per_try:g}s", status=504
            )

    def _tls(self, service: str, mode: str) -> Tls | NoAnswer | None:
        """How to call ``service``: over mTLS (``Tls``), plaintext (``None``), or not at all."""
        if mode == "off":
            return None
        current = self.identity.current if self.identity is not None else None
        if current is not None:
            return Tls(current.client, current.peer_id(service))
        if mode == "strict":
            return NoAnswer(
                "no-identity",
                f"{service} takes only mTLS calls and this sidecar has no identity yet "
                "(its control plane gives it one)",
            )
        return None


async def _body(request: Request, keep: bool) -> RequestBody:
    """The body to send: none, the bytes (kept for a retry), or the stream (sent once)."""
    body = request.body
    if body.length == 0:
        return None
    if body.complete and body.received == 0:
        return b""  # a chunked body that had ended empty on arrival: nothing to stream
    if keep and body.length is not None and body.length <= REPLAYABLE_BODY:
        return await body.read_all()
    return body


def _task(request: Request) -> asyncio.Task[None]:
    assert request.task is not None, "a request is handled in its own task"
    return request.task


def _body_timeout(service: str, seconds: float | None) -> NoAnswer:
    """A timeout that ran out while the request's body was still arriving: the caller's."""
    return NoAnswer(
        "body-timeout",
        f"the request body was still arriving when the {seconds:g}s timeout of the call to "
        f"{service} ran out",
        status=408,
    )


def endpoint_result(sent: Sent) -> AttemptResult:
    """What one attempt tells the outlier detector of its endpoint: the upstream's status, or
    its failure to answer (it could not be reached, it reset, it did not answer a request
    sent whole in time); what the caller did (it hung up, its body did not arrive whole in
    time) or the mesh refused says nothing of the endpoint. (An attempt a fault shaped is not
    recorded at all.)"""
    if isinstance(sent, Injected):
        return AttemptResult.status(sent.status)
    if isinstance(sent, NoAnswer):
        match sent.code:
            case "connect-failure" | "reset" | "timeout" as failure:
                return AttemptResult.local_failure(failure)
            case code:
                return AttemptResult.not_the_endpoint(code)
    return AttemptResult.status(sent.status)


def _status(sent: Sent) -> int | None:
    if isinstance(sent, Injected):
        return sent.status
    if isinstance(sent, NoAnswer):
        return None
    return sent.status


def _should_retry(sent: Sent, retries: Retries | None) -> bool:
    """Envoy's retry_on conditions, for what this attempt got."""
    if retries is None:
        return False
    on = retries.retry_on
    status = _status(sent)
    lost = isinstance(sent, NoAnswer) and sent.code in ("reset", "timeout")
    if "5xx" in on and (isinstance(sent, NoAnswer) or (status is not None and status >= 500)):
        return True
    if "gateway-error" in on and (lost or status in _GATEWAY_ERRORS):
        return True
    if "reset" in on and lost:
        return True
    return "connect-failure" in on and _never_reached_an_app(sent)


def _never_reached_an_app(sent: Sent) -> bool:
    """Nothing was sent (the endpoint's sidecar refused the connection), or the endpoint's
    sidecar answered that it could not connect to its app (a trusted, mesh-made 503)."""
    if isinstance(sent, NoAnswer):
        return sent.code == "connect-failure"
    if isinstance(sent, Injected):
        return False
    return sent.status == 503 and sent.headers.get(ERROR_HEADER) == "connect-failure"


def _describe(sent: Sent) -> str:
    if isinstance(sent, NoAnswer):
        return sent.code
    return str(_status(sent))
