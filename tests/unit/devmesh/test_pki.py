"""devmesh.pki: the project's CA and the identities it issues, checked by real TLS."""

from __future__ import annotations

import asyncio
import ssl
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509

from devmesh.errors import DevmeshError
from devmesh.pki import CertificateAuthority, Identity, spiffe_id

NOW = time.time()


def write(folder: Path, identity: Identity) -> tuple[Path, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key, ca = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    cert.write_text(identity.cert_pem)
    key.write_text(identity.key_pem)
    ca.write_text(identity.ca_pem)
    return cert, key, ca


def test_the_ca_is_made_once_with_a_key_only_its_owner_reads(tmp_path: Path) -> None:
    folder = tmp_path / "ca"
    first = CertificateAuthority.load_or_create(folder, "shop", NOW)
    assert stat.S_IMODE((folder / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    again = CertificateAuthority.load_or_create(folder, "shop", NOW)
    assert again.fingerprint == first.fingerprint
    constraints = first.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca


def test_an_unreadable_ca_is_one_sentence_naming_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ca"
    CertificateAuthority.load_or_create(folder, "shop", NOW)
    (folder / "ca.key").write_text("not a key")
    with pytest.raises(DevmeshError, match="cannot be read") as caught:
        CertificateAuthority.load_or_create(folder, "shop", NOW)
    assert str(folder) in caught.value.message


def test_a_service_certificate_names_its_spiffe_id_and_nothing_else(tmp_path: Path) -> None:
    authority = CertificateAuthority.load_or_create(tmp_path / "ca", "shop", NOW)
    identity = authority.issue("shop", "catalog", NOW, ttl=3600)
    cert = x509.load_pem_x509_certificate(identity.cert_pem.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.critical
    assert names.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://devmesh.local/shop/catalog"
    ]
    assert identity.spiffe_id == spiffe_id("shop", "catalog")
    assert cert.subject == x509.Name([])
    assert cert.not_valid_after_utc.timestamp() == pytest.approx(NOW + 3600, abs=1)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    cert.verify_directly_issued_by(authority.cert)


async def test_two_services_complete_a_mutual_tls_handshake_with_their_identities(
    tmp_path: Path,
) -> None:
    authority = CertificateAuthority.load_or_create(tmp_path / "ca", "shop", NOW)
    server_files = write(tmp_path / "catalog", authority.issue("shop", "catalog", NOW))
    client_files = write(tmp_path / "frontend", authority.issue("shop", "frontend", NOW))

    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=server_files[2])
    server_context.load_cert_chain(server_files[0], server_files[1])
    server_context.verify_mode = ssl.CERT_REQUIRED
    seen: list[object] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peercert"))
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    client_context = ssl.create_default_context(cafile=client_files[2])
    client_context.check_hostname = False  # the identity is the SPIFFE ID, not a host name
    client_context.load_cert_chain(client_files[0], client_files[1])
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context)
        assert await reader.read() == b"hello"
        peer = writer.get_extra_info("peercert")
        writer.close()
    assert ("URI", "spiffe://devmesh.local/shop/catalog") in peer["subjectAltName"]
    caller = seen[0]
    assert isinstance(caller, dict)
    assert ("URI", "spiffe://devmesh.local/shop/frontend") in caller["subjectAltName"]
