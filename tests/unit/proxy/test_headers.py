"""proxy.headers: what a sidecar forwards of a request's or a response's headers."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.headers import HOP_BY_HOP, append_forwarded_for, forwardable, trace_hop, without


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


def names(h: CIMultiDict[str]) -> set[str]:
    return {name.lower() for name in h}


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP))
def test_each_hop_by_hop_header_is_removed(name: str) -> None:
    out = forwardable(headers((name.title(), "x"), ("Accept", "text/plain")))
    assert name not in names(out)
    assert out["Accept"] == "text/plain"


def test_end_to_end_headers_are_kept_with_their_case_order_and_repeats() -> None:
    h = headers(("Accept", "a"), ("Set-Cookie", "1"), ("Set-Cookie", "2"), ("X-Thing", "t"))
    out = forwardable(h)
    assert list(out.items()) == list(h.items())


def test_headers_named_by_connection_are_removed_whatever_their_case() -> None:
    h = headers(("Connection", "X-Custom"), ("x-custom", "secret"), ("Accept", "a"))
    out = forwardable(h)
    assert "x-custom" not in names(out)
    assert out["Accept"] == "a"


def test_connection_may_name_several_headers_in_a_comma_list() -> None:
    h = headers(
        ("Connection", " x-one ,X-Two,, keep-alive "),
        ("X-One", "1"),
        ("X-Two", "2"),
        ("X-Three", "3"),
    )
    assert names(forwardable(h)) == {"x-three"}


def test_every_connection_header_counts_when_there_are_several() -> None:
    h = headers(
        ("Connection", "x-one"),
        ("Connection", "X-TWO"),
        ("X-One", "1"),
        ("x-two", "2"),
        ("X-Kept", "k"),
    )
    assert names(forwardable(h)) == {"x-kept"}


def test_works_on_an_immutable_request_header_proxy() -> None:
    proxy = CIMultiDictProxy(headers(("Connection", "x-a"), ("X-A", "1"), ("X-B", "2")))
    assert names(forwardable(proxy)) == {"x-b"}


def test_mesh_headers_are_kept_by_default() -> None:
    h = headers(("X-Devmesh-Source", "web"), ("x-devmesh-other", "o"))
    assert names(forwardable(h)) == {"x-devmesh-source", "x-devmesh-other"}


def test_mesh_headers_are_dropped_with_drop_mesh_in_any_case() -> None:
    h = headers(("X-DevMesh-Source", "forged"), ("x-devmesh-error", "e"), ("X-Devmeshy", "keep"))
    assert names(forwardable(h, drop_mesh=True)) == {"x-devmeshy"}


def test_forwardable_returns_a_copy() -> None:
    h = headers(("Connection", "close"), ("Accept", "a"))
    out = forwardable(h)
    out["Added"] = "1"
    assert names(h) == {"connection", "accept"}


def test_forwarded_for_is_set_when_absent() -> None:
    h = headers(("Accept", "a"))
    append_forwarded_for(h, "10.0.0.1")
    assert h.getall("X-Forwarded-For") == ["10.0.0.1"]


def test_forwarded_for_is_appended_once_to_an_existing_list() -> None:
    h = headers(("X-Forwarded-For", "1.1.1.1, 2.2.2.2"), ("x-forwarded-for", "3.3.3.3"))
    append_forwarded_for(h, "10.0.0.1")
    assert h.getall("X-Forwarded-For") == ["1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1"]


@pytest.mark.parametrize("peer", [None, ""])
def test_forwarded_for_is_untouched_without_a_peer(peer: str | None) -> None:
    h = headers(("X-Forwarded-For", "1.1.1.1"))
    append_forwarded_for(h, peer)
    assert h.getall("X-Forwarded-For") == ["1.1.1.1"]


def test_without_removes_every_occurrence() -> None:
    h = headers(("A", "1"), ("a", "2"), ("B", "3"))
    assert names(without(h, ["a", "missing"])) == {"b"}


def test_a_hop_starts_a_trace_and_a_request_id_when_there_are_none() -> None:
    headers: CIMultiDict[str] = CIMultiDict()
    hop = trace_hop(headers)
    version, trace_id, span, flags = headers["traceparent"].split("-")
    assert (version, trace_id, span, flags) == ("00", hop.trace_id, hop.span_id, "01")
    assert len(trace_id) == 32 and len(span) == 16  # noqa: PT018
    assert hop.parent_id is None, "the trace starts here"
    assert len(headers["x-request-id"]) == 36


def test_a_hop_keeps_the_trace_and_request_id_and_becomes_the_parent() -> None:
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = CIMultiDict({"traceparent": incoming, "X-Request-Id": "abc"})
    hop = trace_hop(headers)
    assert (hop.trace_id, hop.parent_id) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert headers.getall("traceparent") == [headers["traceparent"]], "exactly one"
    assert headers["traceparent"] == f"00-0af7651916cd43dd8448eb211c80319c-{hop.span_id}-01"
    assert hop.span_id != "b7ad6b7169203331", "a new span, the next hop's parent"
    assert headers["x-request-id"] == "abc"


@pytest.mark.parametrize(
    "bad",
    [
        "junk",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "ff-" + "a" * 32 + "-" + "b" * 16 + "-01",
        "00-" + "a" * 32 + "-" + "0" * 16 + "-01",
    ],
)
def test_a_malformed_traceparent_starts_a_new_trace(bad: str) -> None:
    headers = CIMultiDict({"traceparent": bad})
    hop = trace_hop(headers)
    assert headers["traceparent"] != bad
    assert hop.trace_id not in bad
    assert hop.parent_id is None
