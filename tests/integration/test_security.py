"""mTLS between real sidecars, with identities from the real control plane: a strict service
lets in only mesh callers (every other client is closed before a byte reaches the service),
a permissive one takes mTLS and plaintext on one port, ``off`` takes plaintext only, and
certificates renewed every few seconds under steady traffic fail no request. The sidecars
are processes (``$DEVMESH_DATAPLANE`` picks which), black boxes: what they route by is read
from the control plane (the snapshot each acked), their identities and records from a tap
on their links (``meshkit.WireTap``), why the gate refused a connection from its log."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devmesh.pki import CertificateAuthority, Identity
from devmesh.workspace import Workspace
from proxy.snapshot import Route
from tests.integration.meshkit import (
    ControlPlane,
    SidecarProcess,
    Wire,
    WireTap,
    endpoints_held,
    snapshot_held,
    tapped_sidecar,
    wait_until,
    wire_tap,
)

PROJECT = {
    "name": "demo",
    "services": {
        "frontend": {"command": "true", "port": 8000, "depends_on": ["catalog"]},
        "catalog": {"command": "true", "port": 8000, "mtls": "strict"},
    },
}
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class CountingApp:
    """A stand-in for the catalog process that counts every byte it is sent."""

    port: int = 0
    received: int = 0
    lines: list[bytes] = field(default_factory=list)
    """The request line of each request it answered."""


@asynccontextmanager
async def counting_app() -> AsyncIterator[CountingApp]:
    app = CountingApp()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = b""
        try:
            while data := await reader.read(65536):
                app.received += len(data)
                pending += data
                while b"\r\n\r\n" in pending:  # requests without bodies: one answer per head
                    head, _, pending = pending.partition(b"\r\n\r\n")
                    app.lines.append(head.split(b"\r\n", 1)[0])
                    writer.write(OK)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    app.port = server.sockets[0].getsockname()[1]
    async with server:
        yield app


async def make_plane(tmp_path: Path, cert_ttl: float | None = None) -> ControlPlane:
    workspace = Workspace(tmp_path)
    workspace.ensure()
    workspace.token(create=True)
    plane = ControlPlane(workspace) if cert_ttl is None else ControlPlane(workspace, cert_ttl)
    await plane.start()
    async with plane.client() as client:
        await client.apply_project(PROJECT)
    return plane


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    plane = await make_plane(tmp_path)
    yield plane
    await plane.stop()


Mesh = tuple[SidecarProcess, SidecarProcess, CountingApp, WireTap]


@asynccontextmanager
async def mesh(plane: ControlPlane) -> AsyncIterator[Mesh]:
    """A catalog instance (its app counting bytes) and a frontend, both with identities,
    sidecar processes linked through a tap (what each is told and says)."""
    async with (
        counting_app() as app,
        wire_tap(plane) as tap,
        tapped_sidecar(tap, "catalog-1", "catalog", "default", app.port) as catalog,
        tapped_sidecar(tap, "frontend-1", "frontend", "default", None) as frontend,
        plane.client() as client,
    ):
        await tap.wait(
            lambda: tap.link("catalog-1").installed() and tap.link("frontend-1").installed(),
            "both sidecars to hold an identity",
        )

        async def routed() -> bool:
            held = await endpoints_held(plane, client, "frontend-1", "catalog")
            return held is not None and len(held) == 1

        await wait_until(routed, "the frontend's sidecar can route to the catalog")
        yield catalog, frontend, app, tap


def watch_records(tap: WireTap, instance: str) -> Callable[[], list[Wire]]:
    """The records ``instance``'s sidecar sends from now on, as they came so far."""
    link = tap.link(instance)
    since = len(link.said)
    return lambda: link.records(since)


async def route_of(plane: ControlPlane, instance: str, service: str) -> Route | None:
    """The route to ``service`` in the snapshot ``instance``'s sidecar acked, if it holds
    the one in force."""
    async with plane.client() as client:
        snapshot = await snapshot_held(plane, client, instance)
    return snapshot.routes.get(service) if snapshot is not None else None


async def route_is(
    plane: ControlPlane, instance: str, service: str, check: Callable[[Route], bool], what: str
) -> None:
    async def applied() -> bool:
        route = await route_of(plane, instance, service)
        return route is not None and check(route)

    await wait_until(applied, f"{instance} has {what}")


async def mode_is(plane: ControlPlane, instance: str, service: str, mode: str) -> None:
    await route_is(plane, instance, service, lambda r: r.mtls == mode, f"{service} {mode}")


async def through(frontend: SidecarProcess, path: str = "/items") -> tuple[int, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://catalog{path}", proxy=frontend.proxy_url) as response,
    ):
        await response.read()
        return response.status, dict(response.headers)


async def direct_from(port: int, context: ssl.SSLContext | None) -> tuple[bytes | str, int]:
    """One request straight to an inbound listener; what came back, or the error's name,
    and the port it came from."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    local = sock.getsockname()[1]
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=context, server_hostname="" if context else None
        )
        writer.write(b"GET /items HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
        return answer, local
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        return type(exc).__name__, local


async def direct(port: int, context: ssl.SSLContext | None) -> bytes | str:
    """One request straight to an inbound listener; what came back, or the error's name."""
    return (await direct_from(port, context))[0]


REFUSAL_WORDS = {
    "plaintext": "a plaintext client, and this service is mTLS strict",
    "handshake": "the TLS handshake failed",
    "identity": "its certificate names no identity of this mesh",
}
"""How each reason the inbound gate counts a refusal under begins its line in the log."""


def refusals_logged(sidecar: SidecarProcess) -> list[str]:
    """What the sidecar logged of each connection its inbound gate refused (nothing outside
    it shows why it closed one: its log is the last resort)."""
    marker = "refused a connection from "
    return [line[line.index(marker) :] for line in sidecar.log().splitlines() if marker in line]


def assert_ok(answer: bytes | str) -> None:
    assert isinstance(answer, bytes), answer
    assert answer.startswith(b"HTTP/1.1 200"), answer


def client_context(tmp_path: Path, ca_pem: str, identity: Identity | None) -> ssl.SSLContext:
    """A TLS client that trusts the mesh's CA and presents ``identity`` (if any)."""
    ca = tmp_path / "trust.crt"
    ca.write_text(ca_pem)
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    if identity is not None:
        cert, key = tmp_path / "client.crt", tmp_path / "client.key"
        cert.write_text(identity.cert_pem)
        key.write_text(identity.key_pem)
        context.load_cert_chain(str(cert), str(key))
    return context


def mesh_ca(plane: ControlPlane) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(
        Workspace(plane.workspace.project_dir).ca_dir, "demo", time.time()
    )


async def test_mesh_callers_reach_a_strict_service_over_mtls(plane: ControlPlane) -> None:
    async with mesh(plane) as (_, frontend, app, _tap), plane.client() as client:
        for _ in range(2):
            assert (await through(frontend))[0] == 200
        assert app.received > 0

        async def shown() -> bool:
            edges = (await client.status())["edges"]
            edge = next((e for e in edges if e["destination"] == "catalog"), None)
            return edge is not None and edge["security"]["mtls_requests"] >= 2

        await wait_until(shown, "status counts the edge's mTLS requests")
        edge = next(e for e in (await client.status())["edges"] if e["destination"] == "catalog")
        assert edge["source"] == "frontend"
        assert edge["security"]["mode"] == "strict"
        assert edge["security"]["locked"] is True
        assert edge["security"]["last"] == "mtls"
        assert edge["security"]["plaintext_requests"] == 0


REFUSED = ["plaintext", "no certificate", "another CA", "expired", "wrong SAN"]


@pytest.mark.parametrize("client", REFUSED)
async def test_strict_refuses_every_other_client_before_a_byte_reaches_the_service(
    plane: ControlPlane, tmp_path: Path, client: str
) -> None:
    async with mesh(plane) as (catalog, _, app, _tap):
        ca = mesh_ca(plane)
        now = time.time()
        context: ssl.SSLContext | None = None
        expected_reason = "handshake"
        if client == "plaintext":
            expected_reason = "plaintext"
        elif client == "no certificate":
            context = client_context(tmp_path, ca.cert_pem, None)
        elif client == "another CA":
            other = CertificateAuthority.create("demo", now)
            context = client_context(tmp_path, ca.cert_pem, other.issue("demo", "frontend", now))
        elif client == "expired":
            stale = ca.issue("demo", "frontend", now - 7200, ttl=3600)
            context = client_context(tmp_path, ca.cert_pem, stale)
        else:
            expected_reason = "identity"
            foreign = ca.issue("other", "frontend", now)  # spiffe://devmesh.local/other/...
            context = client_context(tmp_path, ca.cert_pem, foreign)
        port = catalog.inbound
        answer, local = await direct_from(port, context)
        assert not (isinstance(answer, bytes) and answer.startswith(b"HTTP/")), answer
        expected = f"refused a connection from 127.0.0.1:{local}: {REFUSAL_WORDS[expected_reason]}"
        await wait_until(
            lambda: len(refusals_logged(catalog)) == 1,
            f"the sidecar to count the refusal as {expected_reason}",
        )
        [logged] = refusals_logged(catalog)
        assert logged.startswith(expected), logged
        assert app.received == 0, "not a byte may reach the service"

        # The same listener still takes a mesh caller.
        good = client_context(tmp_path, ca.cert_pem, ca.issue("demo", "frontend", now))
        answer = await direct(port, good)
        assert_ok(answer)
        assert len(refusals_logged(catalog)) == 1


async def test_permissive_takes_mtls_and_plaintext_on_one_port(
    plane: ControlPlane, tmp_path: Path
) -> None:
    async with mesh(plane) as (catalog, frontend, _, tap), plane.client() as client:
        records = watch_records(tap, "catalog-1")
        modes = await client.set_mtls("catalog", "permissive")
        assert modes["catalog"] == "permissive"
        await mode_is(plane, "catalog-1", "catalog", "permissive")
        port = catalog.inbound
        plain = await direct(port, None)
        assert_ok(plain)
        ca = mesh_ca(plane)
        good = client_context(tmp_path, ca.cert_pem, ca.issue("demo", "frontend", time.time()))
        secure = await direct(port, good)
        assert_ok(secure)
        # Callers in the mesh still use mTLS to a permissive service.
        await mode_is(plane, "frontend-1", "catalog", "permissive")
        assert (await through(frontend))[0] == 200
        await tap.wait(lambda: len(records()) >= 3, "three inbound records")
        assert [r["mtls"] for r in records()] == [False, True, True]
        assert [r["source"] for r in records()] == ["external", "frontend", "frontend"]


async def test_off_is_plaintext_only(plane: ControlPlane, tmp_path: Path) -> None:
    async with mesh(plane) as (catalog, frontend, _, tap), plane.client() as client:
        await client.set_mtls("catalog", "off")
        await mode_is(plane, "catalog-1", "catalog", "off")
        await mode_is(plane, "frontend-1", "catalog", "off")
        records = watch_records(tap, "frontend-1")
        assert (await through(frontend))[0] == 200
        await tap.wait(lambda: len(records()) >= 1, "the outbound record")
        assert len(records()) == 1
        assert records()[0]["direction"] == "outbound"
        assert records()[0]["mtls"] is False
        port = catalog.inbound
        ca = mesh_ca(plane)
        good = client_context(tmp_path, ca.cert_pem, ca.issue("demo", "frontend", time.time()))
        refused = await direct(port, good)
        assert not (isinstance(refused, bytes) and refused.startswith(b"HTTP/")), refused


async def test_an_unknown_mode_is_refused_and_changes_nothing(plane: ControlPlane) -> None:
    async with plane.client() as client:
        with pytest.raises(Exception, match="'locked' is not an mTLS mode"):
            await client.set_mtls("catalog", "locked")
        with pytest.raises(Exception, match="no service named 'catalgo'"):
            await client.set_mtls("catalgo", "strict")
        assert await client.mtls_modes() == {"frontend": "permissive", "catalog": "strict"}
        assert (await client.set_mtls(None, "strict"))["frontend"] == "strict"
        assert (await client.set_mtls(None, None))["frontend"] == "permissive"


def identity_context(tmp_path: Path, identity: Wire) -> ssl.SSLContext:
    """A TLS client presenting the identity a sidecar was sent (``cert``, ``key``, ``ca``)."""
    folder = tmp_path / "identities" / str(identity["fingerprint"])
    folder.mkdir(parents=True, exist_ok=True)
    ca, cert, key = folder / "ca.crt", folder / "cert.crt", folder / "cert.key"
    ca.write_text(str(identity["ca"]))
    cert.write_text(str(identity["cert"]))
    key.write_text(str(identity["key"]))
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    context.load_cert_chain(str(cert), str(key))
    return context


async def test_renewals_under_steady_traffic_fail_no_request(tmp_path: Path) -> None:
    plane = await make_plane(tmp_path, cert_ttl=3.0)  # renewed every 1.5 s
    try:
        async with mesh(plane) as (catalog, frontend, _, tap):
            catalog_link, frontend_link = tap.link("catalog-1"), tap.link("frontend-1")
            seen_catalog: set[object] = set()
            seen_frontend: set[object] = set()
            contexts: dict[str, ssl.SSLContext] = {}
            statuses: list[int | str] = []
            deadline = time.monotonic() + 8.0
            port = catalog.inbound
            while time.monotonic() < deadline or len(seen_catalog) < 4:
                assert time.monotonic() < deadline + 10, "too few renewals"
                statuses.append((await through(frontend))[0])
                # A new connection each time, with the caller's identity of the moment (the
                # last it said it installed): each renewal's certificates complete a handshake.
                current = frontend_link.installed()[-1]
                seen_frontend.add(current["fingerprint"])
                seen_catalog.add(catalog_link.installed()[-1]["fingerprint"])
                fingerprint = str(current["fingerprint"])
                if fingerprint not in contexts:
                    contexts[fingerprint] = identity_context(tmp_path, current)
                answer = await direct(port, contexts[fingerprint])
                statuses.append(
                    200
                    if isinstance(answer, bytes) and answer.startswith(b"HTTP/1.1 200")
                    else str(answer)
                )
                await asyncio.sleep(0.02)
            assert len(seen_catalog) >= 4, "several renewals"
            assert len(seen_frontend) >= 4, "several renewals"
            assert set(statuses) == {200}, [s for s in statuses if s != 200]
            assert len(statuses) > 100
    finally:
        await plane.stop()


async def test_a_deny_rule_answers_403_with_its_reason_and_is_counted(plane: ControlPlane) -> None:
    async with mesh(plane) as (_, frontend, app, _tap), plane.client() as client:
        rule = {"name": "no-admin", "service": "catalog", "action": "deny", "paths": ["/admin/*"]}
        added = await client.add_authz_rule(rule)
        assert added["origin"] == "cli"

        await route_is(plane, "catalog-1", "catalog", lambda r: len(r.authz) == 1, "the rule")
        before = app.received
        status, headers = await through(frontend, "/admin/users")
        assert status == 403
        assert headers["x-devmesh-denied"] == "denied by policy no-admin"
        assert headers["x-devmesh-error"] == "denied"
        assert app.received == before, "a denied request never reaches the service"
        assert (await through(frontend, "/items"))[0] == 200

        async def counted() -> bool:
            edges = (await client.status())["edges"]
            edge = next((e for e in edges if e["destination"] == "catalog"), None)
            # Both requests' records came (the allowed one may come in a later message).
            return (
                edge is not None
                and edge["security"]["denied"] == 1
                and edge["security"]["mtls_requests"] >= 2
            )

        await wait_until(counted, "status counts the denial on frontend -> catalog")
        edge = next(e for e in (await client.status())["edges"] if e["destination"] == "catalog")
        assert edge["security"]["by_rule"] == {"deny:no-admin": 1}
        assert edge["errors"] == 0, "a policy's 403 is not the service failing"
        families = {f.name: f for f in text_string_to_metric_families(await client.metrics_text())}
        [denied] = families["devmesh_authz"].samples
        assert denied.labels == {
            "source": "frontend",
            "destination": "catalog",
            "decision": "deny",
            "rule": "no-admin",
        }
        assert denied.value == 1
        mtls = {s.labels["mtls"]: s.value for s in families["devmesh_mtls_requests"].samples}
        assert mtls == {"true": 2}

        assert (await client.remove_authz_rule("no-admin"))["name"] == "no-admin"
        await route_is(plane, "catalog-1", "catalog", lambda r: not r.authz, "the rule removed")
        assert (await through(frontend, "/admin/users"))[0] == 200


async def test_audit_mode_lets_through_and_reports_what_it_would_deny(
    plane: ControlPlane,
) -> None:
    async with mesh(plane) as (_, frontend, _app, _tap), plane.client() as client:
        # Only the gateway may call the catalog, in audit mode: the frontend is let through.
        await client.add_authz_rule(
            {
                "name": "gateway-only",
                "service": "catalog",
                "action": "allow",
                "mode": "audit",
                "from": ["ingress"],
            }
        )
        await route_is(plane, "catalog-1", "catalog", lambda r: bool(r.authz), "the rule")
        assert [(await through(frontend))[0] for _ in range(3)] == [200, 200, 200]

        async def reported() -> bool:
            edges = (await client.status())["edges"]
            edge = next((e for e in edges if e["destination"] == "catalog"), None)
            return edge is not None and edge["security"]["audited"] == 3

        await wait_until(reported, "status reports three requests the rule would deny")
        edge = next(e for e in (await client.status())["edges"] if e["destination"] == "catalog")
        assert edge["security"]["denied"] == 0
        assert edge["security"]["by_rule"] == {"audit:gateway-only": 3}


async def test_bad_rules_are_refused_and_change_nothing(plane: ControlPlane) -> None:
    async with plane.client() as client:
        for rule, message in [
            ({"name": "x", "service": "catalgo", "action": "deny"}, "did you mean 'catalog'"),
            ({"name": "x", "service": "catalog", "action": "block"}, "must be one of allow"),
            ({"name": "x", "service": "catalog", "action": "deny", "from": ["web"]}, "'web'"),
            ({"name": "x", "service": "catalog", "action": "deny", "paths": ["a*b"]}, "'*'"),
        ]:
            with pytest.raises(Exception, match=message):
                await client.add_authz_rule(rule)
        await client.add_authz_rule({"name": "x", "service": "catalog", "action": "deny"})
        with pytest.raises(Exception, match="two authorization rules are named 'x'"):
            await client.add_authz_rule({"name": "x", "service": "frontend", "action": "deny"})
        with pytest.raises(Exception, match="no authorization rule named 'y'"):
            await client.remove_authz_rule("y")
        assert [r["name"] for r in await client.authz_rules()] == ["x"]


async def raw_through(frontend: SidecarProcess, target: str) -> bytes:
    """A request line sent as is to the frontend's outbound listener (no client library
    normalises it on the way); the status line of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", frontend.outbound)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    return answer.split(b"\r\n", 1)[0]


async def test_a_rule_judges_the_path_the_service_gets(plane: ControlPlane) -> None:
    async with mesh(plane) as (_, frontend, app, _tap), plane.client() as client:
        await client.add_authz_rule(
            {"name": "no-admin", "service": "catalog", "action": "deny", "paths": ["/admin/*"]}
        )
        await route_is(plane, "catalog-1", "catalog", lambda r: bool(r.authz), "the rule")
        for sneaky in ("/x/../admin/u", "/x/%2e%2E/admin/u", "//admin//u", "/./admin/u"):
            assert await raw_through(frontend, sneaky) == b"HTTP/1.1 403 Forbidden", sneaky
        for unjudgeable in ("/admin%2fu", "/admin%5Cu"):
            assert await raw_through(frontend, unjudgeable) == b"HTTP/1.1 400 Bad Request"
        assert app.lines == [], "none of them reached the service"
        assert await raw_through(frontend, "/items/./a//b/../c?q=1") == b"HTTP/1.1 200 OK"
        assert app.lines == [b"GET /items/a/c?q=1 HTTP/1.1"], "the path the rule judged"
