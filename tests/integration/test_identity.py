"""Identities through the real control plane and sidecars: each sidecar gets its service's
certificate on connecting, renews it at half of its life (a sidecar process, seen through
the control plane), and two sidecars' identities complete a mutual TLS handshake naming
each other's SPIFFE ID (sidecars in this process, whose TLS contexts the test uses)."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from devmesh.client import ControlPlaneClient
from devmesh.workspace import Workspace
from proxy.runner import SidecarRunner
from tests.integration.meshkit import PROJECT, ControlPlane, sidecar, sidecar_process, wait_until


def identity_of(runner: SidecarRunner) -> str | None:
    link = runner.link
    assert link is not None
    current = link.identity.current
    return None if current is None else current.fingerprint


async def held(client: ControlPlaneClient) -> dict[str, dict[str, object]]:
    return {i["instance"]: i for i in (await client.certs())["identities"]}


async def test_each_sidecar_gets_and_holds_its_services_identity(
    controlplane: ControlPlane,
) -> None:
    async with (
        sidecar(controlplane, "catalog-v1-1", "catalog", "v1", None) as catalog,
        sidecar(controlplane, "frontend-1", "frontend", "default", None) as frontend,
        controlplane.client() as client,
    ):
        await wait_until(
            lambda: identity_of(catalog) is not None and identity_of(frontend) is not None,
            "both sidecars installed an identity",
        )

        async def acknowledged() -> bool:
            found = await held(client)
            return all(found.get(i, {}).get("installed") for i in ("catalog-v1-1", "frontend-1"))

        await wait_until(acknowledged, "the control plane knows both hold theirs")
        certs = await client.certs()
        found = await held(client)
        assert found["catalog-v1-1"]["spiffe_id"] == "spiffe://devmesh.local/demo/catalog"
        assert found["frontend-1"]["spiffe_id"] == "spiffe://devmesh.local/demo/frontend"
        assert found["catalog-v1-1"]["fingerprint"] == identity_of(catalog)
        ca_dir = Workspace(controlplane.workspace.project_dir).ca_dir
        assert stat.S_IMODE((ca_dir / "ca.key").stat().st_mode) == 0o600
        assert certs["ca"]["folder"] == str(ca_dir)
        keys = list((catalog.boot.state_dir / "identity").glob("*.key"))
        assert len(keys) == 1
        assert stat.S_IMODE(keys[0].stat().st_mode) == 0o600

        # The two identities complete a mutual TLS handshake, each naming the other.
        assert catalog.link is not None
        assert frontend.link is not None
        catalog_tls, frontend_tls = catalog.link.identity.current, frontend.link.identity.current
        assert catalog_tls is not None
        assert frontend_tls is not None
        seen: list[object] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("peercert"))
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=catalog_tls.server)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=frontend_tls.client
            )
            peer = writer.get_extra_info("peercert")
            await reader.read()
            writer.close()
        assert ("URI", "spiffe://devmesh.local/demo/catalog") in peer["subjectAltName"]
        caller = seen[0]
        assert isinstance(caller, dict)
        assert ("URI", "spiffe://devmesh.local/demo/frontend") in caller["subjectAltName"]


async def test_identities_are_renewed_at_half_of_their_life(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    workspace.ensure()
    workspace.token(create=True)
    plane = ControlPlane(workspace, cert_ttl=4.0)
    await plane.start()
    try:
        async with plane.client() as client:
            await client.apply_project(PROJECT)
        async with (
            sidecar_process(plane, "catalog-v1-1", "catalog", "v1", None, listening=False),
            plane.client() as client,
        ):
            # What the sidecar says it installed, as the control plane reports it.
            async def installed() -> str | None:
                entry = (await held(client)).get("catalog-v1-1", {})
                return str(entry["fingerprint"]) if entry.get("installed") else None

            async def first_installed() -> bool:
                return await installed() is not None

            await wait_until(first_installed, "a first identity")
            seen = {await installed()} - {None}

            async def renewed() -> bool:
                seen.add(await installed())
                return len(seen - {None}) >= 3

            await wait_until(renewed, "two renewals of a 4 s certificate", within=10)
    finally:
        await plane.stop()
