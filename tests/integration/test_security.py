"""mTLS between real sidecars, with identities from the real control plane: a strict service
lets in only mesh callers (every other client is closed before a byte reaches the service),
a permissive one takes mTLS and plaintext on one port, ``off`` takes plaintext only, and
certificates renewed every few seconds under steady traffic fail no request."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devmesh.pki import CertificateAuthority, Identity
from devmesh.workspace import Workspace
from proxy.runner import SidecarRunner
from proxy.telemetry import Record
from tests.integration.meshkit import ControlPlane, sidecar, wait_until

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


Mesh = tuple[SidecarRunner, SidecarRunner, CountingApp]


@asynccontextmanager
async def mesh(
    plane: ControlPlane,
) -> AsyncIterator[tuple[SidecarRunner, SidecarRunner, CountingApp]]:
    """A catalog instance (its app counting bytes) and a frontend, both with identities."""
    async with (
        counting_app() as app,
        sidecar(plane, "catalog-1", "catalog", "default", app.port) as catalog,
        sidecar(plane, "frontend-1", "frontend", "default", None) as frontend,
    ):
        await wait_until(
            lambda: catalog.identity.current is not None and frontend.identity.current is not None,
            "both sidecars hold an identity",
        )

        def routed() -> bool:
            route = frontend.router.snapshot.routes.get("catalog")
            return route is not None and len(route.endpoints) == 1

        await wait_until(routed, "the frontend's sidecar can route to the catalog")
        yield catalog, frontend, app


def watch_records(runner: SidecarRunner) -> list[Record]:
    """Every record ``runner`` makes from now on (its control link still sends them)."""
    seen: list[Record] = []
    buffer = runner.telemetry
    add = buffer.add

    def observed(record: Record) -> None:
        seen.append(record)
        add(record)

    buffer.add = observed  # type: ignore[method-assign]
    return seen


async def mode_is(runner: SidecarRunner, service: str, mode: str) -> None:
    def applied() -> bool:
        route = runner.router.snapshot.routes.get(service)
        return route is not None and route.mtls == mode

    await wait_until(applied, f"{runner.boot.instance} has {service} {mode}")


async def through(frontend: SidecarRunner, path: str = "/items") -> tuple[int, dict[str, str]]:
    proxy = f"http://127.0.0.1:{frontend.sidecar.ports.outbound}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://catalog{path}", proxy=proxy) as response,
    ):
        await response.read()
        return response.status, dict(response.headers)


async def direct(port: int, context: ssl.SSLContext | None) -> bytes | str:
    """One request straight to an inbound listener; what came back, or the error's name."""
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="" if context else None
        )
        writer.write(b"GET /items HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
        return answer
    except (OSError, ssl.SSLError) as exc:
        return type(exc).__name__


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
    async with mesh(plane) as (_, frontend, app), plane.client() as client:
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
    async with mesh(plane) as (catalog, _, app):
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
        port = catalog.sidecar.ports.inbound
        assert port is not None
        answer = await direct(port, context)
        assert not (isinstance(answer, bytes) and answer.startswith(b"HTTP/")), answer
        assert catalog.sidecar.inbound is not None
        await wait_until(
            lambda: (
                catalog.sidecar.inbound is not None
                and catalog.sidecar.inbound.refusals.counts[expected_reason] == 1
            ),
            f"the sidecar counted the refusal as {expected_reason}",
        )
        assert app.received == 0, "not a byte may reach the service"

        # The same listener still takes a mesh caller.
        good = client_context(tmp_path, ca.cert_pem, ca.issue("demo", "frontend", now))
        answer = await direct(port, good)
        assert_ok(answer)


async def test_permissive_takes_mtls_and_plaintext_on_one_port(
    plane: ControlPlane, tmp_path: Path
) -> None:
    async with mesh(plane) as (catalog, frontend, _), plane.client() as client:
        records = watch_records(catalog)
        modes = await client.set_mtls("catalog", "permissive")
        assert modes["catalog"] == "permissive"
        await mode_is(catalog, "catalog", "permissive")
        port = catalog.sidecar.ports.inbound
        assert port is not None
        plain = await direct(port, None)
        assert_ok(plain)
        ca = mesh_ca(plane)
        good = client_context(tmp_path, ca.cert_pem, ca.issue("demo", "frontend", time.time()))
        secure = await direct(port, good)
        assert_ok(secure)
        # Callers in the mesh still use mTLS to a permissive service.
        await mode_is(frontend, "catalog", "permissive")
        assert (await through(frontend))[0] == 200
        await wait_until(lambda: len(records) == 3, "three inbound records")
        assert [r.mtls for r in records] == [False, True, True]
        assert [r.source for r in records] == ["external", "frontend", "frontend"]


async def test_off_is_plaintext_only(plane: ControlPlane, tmp_path: Path) -> None:
    async with mesh(plane) as (catalog, frontend, _), plane.client() as client:
        await client.set_mtls("catalog", "off")
        await mode_is(catalog, "catalog", "off")
        await mode_is(frontend, "catalog", "off")
        records = watch_records(frontend)
        assert (await through(frontend))[0] == 200
        await wait_until(lambda: len(records) == 1, "the outbound record")
        assert records[0].direction == "outbound"
        assert records[0].mtls is False
        port = catalog.sidecar.ports.inbound
        assert port is not None
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


async def test_renewals_under_steady_traffic_fail_no_request(tmp_path: Path) -> None:
    plane = await make_plane(tmp_path, cert_ttl=3.0)  # renewed every 1.5 s
    try:
        async with mesh(plane) as (catalog, frontend, _):
            seen_catalog, seen_frontend = set(), set()
            statuses: list[int | str] = []
            deadline = time.monotonic() + 8.0
            port = catalog.sidecar.ports.inbound
            assert port is not None
            while time.monotonic() < deadline or len(seen_catalog) < 4:
                assert time.monotonic() < deadline + 10, "too few renewals"
                statuses.append((await through(frontend))[0])
                # A new connection each time, with the caller's identity of the moment:
                # each renewal's certificates complete a handshake.
                current = frontend.identity.current
                assert current is not None
                assert catalog.identity.current is not None
                seen_frontend.add(current.fingerprint)
                seen_catalog.add(catalog.identity.current.fingerprint)
                answer = await direct(port, current.client)
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
    async with mesh(plane) as (catalog, frontend, app), plane.client() as client:
        rule = {"name": "no-admin", "service": "catalog", "action": "deny", "paths": ["/admin/*"]}
        added = await client.add_authz_rule(rule)
        assert added["origin"] == "cli"

        def judged() -> bool:
            route = catalog.router.snapshot.routes.get("catalog")
            return route is not None and len(route.authz) == 1

        await wait_until(judged, "the catalog's sidecar has the rule")
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
            return edge is not None and edge["security"]["denied"] == 1

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
        await wait_until(lambda: not catalog.router.snapshot.routes["catalog"].authz, "removed")
        assert (await through(frontend, "/admin/users"))[0] == 200


async def test_audit_mode_lets_through_and_reports_what_it_would_deny(
    plane: ControlPlane,
) -> None:
    async with mesh(plane) as (catalog, frontend, _), plane.client() as client:
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
        await wait_until(
            lambda: bool(catalog.router.snapshot.routes["catalog"].authz), "the rule applied"
        )
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


async def raw_through(frontend: SidecarRunner, target: str) -> bytes:
    """A request line sent as is to the frontend's outbound listener (no client library
    normalises it on the way); the status line of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", frontend.sidecar.ports.outbound)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    return answer.split(b"\r\n", 1)[0]


async def test_a_rule_judges_the_path_the_service_gets(plane: ControlPlane) -> None:
    async with mesh(plane) as (catalog, frontend, app), plane.client() as client:
        await client.add_authz_rule(
            {"name": "no-admin", "service": "catalog", "action": "deny", "paths": ["/admin/*"]}
        )
        await wait_until(
            lambda: bool(catalog.router.snapshot.routes["catalog"].authz), "the rule applied"
        )
        for sneaky in ("/x/../admin/u", "/x/%2e%2E/admin/u", "//admin//u", "/./admin/u"):
            assert await raw_through(frontend, sneaky) == b"HTTP/1.1 403 Forbidden", sneaky
        for unjudgeable in ("/admin%2fu", "/admin%5Cu"):
            assert await raw_through(frontend, unjudgeable) == b"HTTP/1.1 400 Bad Request"
        assert app.lines == [], "none of them reached the service"
        assert await raw_through(frontend, "/items/./a//b/../c?q=1") == b"HTTP/1.1 200 OK"
        assert app.lines == [b"GET /items/a/c?q=1 HTTP/1.1"], "the path the rule judged"
