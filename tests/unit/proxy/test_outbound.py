"""proxy.outbound: what one attempt tells the outlier detector of its endpoint.

Only what the upstream did counts, as in Envoy: its status, or its failure to
answer (unreachable, reset, no answer in time to a request sent whole). A caller
that hung up or did not send its body whole, and a request the mesh refused,
say nothing of the endpoint; neither do injected faults (never recorded at all).
"""

from __future__ import annotations

from typing import cast

import pytest
from multidict import CIMultiDict

from proxy.body import Body
from proxy.headers import ERROR_HEADER
from proxy.httpclient import ClientConnection, Response
from proxy.outbound import endpoint_result
from proxy.outlier import Outcome
from proxy.upstream import Code, NoAnswer


def response(status: int, **headers: str) -> Response:
    """A response's head as the client hands it over (its connection is never used here)."""
    unused = cast(ClientConnection, object())
    return Response(unused, status, "", CIMultiDict(headers), Body.empty())


@pytest.mark.parametrize("status", [200, 404, 429])
def test_an_answer_below_500_is_a_success(status: int) -> None:
    assert endpoint_result(response(status)) == Outcome.status(status)
    assert not endpoint_result(response(status)).failed


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_of_the_upstream_is_a_failure(status: int) -> None:
    assert endpoint_result(response(status)).failed


@pytest.mark.parametrize("code", ["connect-failure", "reset", "timeout"])
def test_an_upstream_that_could_not_be_reached_reset_or_did_not_answer_failed(
    code: Code,
) -> None:
    result = endpoint_result(NoAnswer(code, "the upstream's doing"))
    assert (result.kind, result.detail) == ("local-failure", code)


@pytest.mark.parametrize(
    "code",
    [
        "downstream-reset",  # the caller hung up, or its body broke off
        "body-timeout",  # a timeout ran out while the caller's body was still arriving
        "no-identity",  # the mesh refused: this sidecar cannot call over mTLS yet
        "no-healthy-upstream",
        "breaker-open",
        "overflow",
        "body-too-large",
        "denied",
        "loop",
    ],
)
def test_what_the_caller_did_or_the_mesh_refused_says_nothing_of_the_endpoint(
    code: Code,
) -> None:
    result = endpoint_result(NoAnswer(code, "not the upstream's doing"))
    assert (result.kind, result.detail) == ("not-the-endpoint", code)
    assert not result.failed


def test_a_503_the_endpoint_s_own_sidecar_made_is_the_endpoint_s() -> None:
    # Its sidecar could not reach its app: the endpoint cannot serve, so it counts.
    assert endpoint_result(response(503, **{ERROR_HEADER: "connect-failure"})).failed
