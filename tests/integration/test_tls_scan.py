"""The TLS a strict sidecar offers, checked by a real scanner (sslyze, on nassl's own
OpenSSL builds, which still speak SSL 2.0 to TLS 1.1): TLS 1.2 or newer only, forward-secret
AEAD suites only, no compression, not vulnerable to Heartbleed or CCS injection."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from sslyze import (
    ClientAuthenticationCredentials,
    ScanCommand,
    Scanner,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)

from tests.integration.meshkit import ControlPlane
from tests.integration.test_security import mesh, mesh_ca
from tests.integration.test_security import plane as plane

LEGACY = {
    ScanCommand.SSL_2_0_CIPHER_SUITES: "SSL 2.0",
    ScanCommand.SSL_3_0_CIPHER_SUITES: "SSL 3.0",
    ScanCommand.TLS_1_0_CIPHER_SUITES: "TLS 1.0",
    ScanCommand.TLS_1_1_CIPHER_SUITES: "TLS 1.1",
}
MODERN = {
    ScanCommand.TLS_1_2_CIPHER_SUITES: "TLS 1.2",
    ScanCommand.TLS_1_3_CIPHER_SUITES: "TLS 1.3",
}
CHECKS = {ScanCommand.TLS_COMPRESSION, ScanCommand.HEARTBLEED, ScanCommand.OPENSSL_CCS_INJECTION}


def scan(port: int, cert: Path, key: Path) -> Any:
    """One sslyze scan of 127.0.0.1:``port``, presenting a mesh certificate (a strict
    listener ends the handshake of a client without one). Blocking: run it in a thread."""
    request = ServerScanRequest(
        server_location=ServerNetworkLocation("localhost", port, ip_address="127.0.0.1"),
        network_configuration=ServerNetworkConfiguration(
            tls_server_name_indication="catalog",
            tls_client_auth_credentials=ClientAuthenticationCredentials(cert, key),
        ),
        scan_commands={*LEGACY, *MODERN, *CHECKS},
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    [result] = list(scanner.get_results())
    return result


def accepted(result: Any, command: ScanCommand) -> list[str]:
    attempt = getattr(result.scan_result, command.value)
    assert attempt.error_reason is None, (command, attempt.error_trace)
    return [suite.cipher_suite.name for suite in attempt.result.accepted_cipher_suites]


async def test_a_strict_sidecar_offers_only_tls_1_2_and_newer(
    plane: ControlPlane, tmp_path: Path
) -> None:
    async with mesh(plane) as (catalog, _, app, _tap):
        identity = mesh_ca(plane).issue("demo", "frontend", time.time())
        cert, key = tmp_path / "scanner.crt", tmp_path / "scanner.key"
        cert.write_text(identity.cert_pem)
        key.write_text(identity.key_pem)
        port = catalog.inbound
        result = await asyncio.to_thread(scan, port, cert, key)

        assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
        for command, protocol in LEGACY.items():
            assert accepted(result, command) == [], f"{protocol} must be refused"
        tls12, tls13 = (accepted(result, command) for command in MODERN)
        assert tls13, "TLS 1.3 is offered"
        assert tls12, "TLS 1.2 is offered"
        for suite in tls12:
            assert "ECDHE" in suite, f"{suite}: not forward-secret"
            assert "GCM" in suite or "CHACHA20" in suite, f"{suite}: not an AEAD"
        compression = result.scan_result.tls_compression.result
        assert not compression.supports_compression
        assert not result.scan_result.heartbleed.result.is_vulnerable_to_heartbleed
        ccs = result.scan_result.openssl_ccs_injection.result
        assert not ccs.is_vulnerable_to_ccs_injection
        assert app.received == 0, "the scanner's handshakes never reached the service"
