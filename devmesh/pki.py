"""The project's own certificate authority, and the identities it gives services.

Each project gets a CA under ``.devmesh/ca/`` on its first ``up`` (an ECDSA P-256
key, readable by its owner only, and a self-signed certificate valid ten years).
Each service's sidecars get a leaf certificate (ECDSA P-256, valid
``DEFAULT_TTL`` unless said otherwise) whose only name is a SPIFFE ID,
``spiffe://devmesh.local/<project>/<service>``, as Istio's and Linkerd's
identities are: a certificate names a workload, not a host.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devmesh.errors import DevmeshError

TRUST_DOMAIN = "devmesh.local"
DEFAULT_TTL = 24 * 3600.0
"""How long a service's certificate is valid; its sidecar gets a new one at half of it."""
CA_TTL = 10 * 365 * 24 * 3600.0
CLOCK_SKEW = 60.0
"""Certificates start this long before they are issued, for clocks a little apart."""


def spiffe_id(project: str, service: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/{project}/{service}"


@dataclass(frozen=True)
class Identity:
    """A service's certificate and key, in PEM, with the CA's certificate to trust."""

    spiffe_id: str
    cert_pem: str
    key_pem: str
    ca_pem: str
    not_before: float
    not_after: float
    fingerprint: str
    """SHA-256 of the certificate (DER), in hex."""
    serial: int

    def to_wire(self) -> dict[str, object]:
        return {
            "spiffe_id": self.spiffe_id,
            "cert": self.cert_pem,
            "key": self.key_pem,
            "ca": self.ca_pem,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "fingerprint": self.fingerprint,
        }


class CertificateAuthority:
    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self._key = key
        self.cert = cert

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()

    @classmethod
    def create(cls, project: str, now: float) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "devmesh"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"devmesh {project} local CA"),
            ]
        )
        start = _time(now - CLOCK_SKEW)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(_time(now + CA_TTL))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(signs_certificates=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load_or_create(cls, folder: Path, project: str, now: float) -> CertificateAuthority:
        """The CA kept in ``folder`` (``ca.key``, 0600; ``ca.crt``), made there if absent."""
        key_file, cert_file = folder / "ca.key", folder / "ca.crt"
        if key_file.exists() and cert_file.exists():
            try:
                key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
                cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            except (OSError, ValueError) as exc:
                raise DevmeshError(
                    f"the project's CA in {folder} cannot be read: {exc}",
                    f"remove {folder} and run `devmesh up` again to make a new one",
                ) from exc
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise DevmeshError(f"{key_file} is not an ECDSA key", f"remove {folder}")
            return cls(key, cert)
        authority = cls.create(project, now)
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        _write_private(key_file, _key_pem(authority._key))
        cert_file.write_text(authority.cert_pem)
        return authority

    def issue(self, project: str, service: str, now: float, ttl: float = DEFAULT_TTL) -> Identity:
        """A new key and certificate for ``service``, valid ``ttl`` seconds from ``now``."""
        key = ec.generate_private_key(ec.SECP256R1())
        identity = spiffe_id(project, service)
        not_before, not_after = now - CLOCK_SKEW, now + ttl
        ca_key_id = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_time(not_before))
            .not_valid_after(_time(not_after))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]),
                critical=True,  # the subject is empty: the SAN is the name (RFC 5280 4.2.1.6)
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(signs_certificates=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id.value),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return Identity(
            spiffe_id=identity,
            cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            key_pem=_key_pem(key).decode(),
            ca_pem=self.cert_pem,
            not_before=not_before,
            not_after=not_after,
            fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
            serial=cert.serial_number,
        )


def _key_usage(signs_certificates: bool) -> x509.KeyUsage:
    """Signatures only; the CA's also sign certificates and revocation lists."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _time(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by its owner only, from its first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    path.chmod(0o600)
