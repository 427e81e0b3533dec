"""This sidecar's identity: the certificate and key the control plane issued to its service.

Each new one (at start, then at half of each one's life) is written under the
state folder in files of its own (the key readable by its owner only; what the
folder says is kept, ``identity.json``, changes only once it has loaded) and
loaded into fresh TLS
contexts, so that a bad one is refused before it replaces a good one, and
connections already open keep the context they began with. A sidecar that
restarts while the control plane is away starts with the identity it kept, as
it starts with its last good snapshot, until that one expires.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class IdentityError(Exception):
    """An identity the sidecar cannot use; the one it had stays."""


@dataclass(frozen=True)
class Installed:
    spiffe_id: str
    fingerprint: str
    not_after: float
    server: ssl.SSLContext
    """For the inbound listener: presents this identity, requires the caller's."""
    client: ssl.SSLContext
    """For calls to other sidecars: presents this identity, checks theirs."""

    @property
    def trust_prefix(self) -> str:
        """``spiffe://devmesh.local/<project>/``: the IDs of this identity's mesh."""
        return self.spiffe_id.rpartition("/")[0] + "/"

    def peer_id(self, service: str) -> str:
        """The SPIFFE ID a sidecar of ``service`` in this mesh must present."""
        return self.trust_prefix + service


_KEPT = "identity.json"


class IdentityStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.current: Installed | None = None

    def load_kept(self, now: float | None = None) -> Installed | None:
        """The identity kept in the folder by an earlier run, if it is still valid."""
        try:
            kept = json.loads((self.folder / _KEPT).read_text())
            if float(kept["not_after"]) <= (time.time() if now is None else now):
                return None
            message = dict(kept)
            for part in ("cert", "key", "ca"):
                message[part] = (self.folder / kept["files"][part]).read_text()
            return self.install(message)
        except (OSError, ValueError, KeyError, TypeError, IdentityError):
            return None

    def install(self, message: dict[str, Any]) -> Installed:
        """Write and load the identity in ``message`` (cert, key, ca, spiffe_id, ...)."""
        try:
            cert, key, ca = str(message["cert"]), str(message["key"]), str(message["ca"])
            spiffe_id, fingerprint = str(message["spiffe_id"]), str(message["fingerprint"])
            not_after = float(message["not_after"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IdentityError(f"an identity message without {exc}") from None
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        files = {
            "cert": self._write(f"{fingerprint[:16]}.crt", cert.encode()),
            "key": self._write(f"{fingerprint[:16]}.key", key.encode()),
            "ca": self._write(f"{fingerprint[:16]}.ca.crt", ca.encode()),
        }
        try:
            server = _context(ssl.Purpose.CLIENT_AUTH, files)
            client = _context(ssl.Purpose.SERVER_AUTH, files)
        except (ssl.SSLError, OSError) as exc:
            raise IdentityError(f"the identity does not load: {exc}") from None
        kept = {"spiffe_id": spiffe_id, "fingerprint": fingerprint, "not_after": not_after}
        kept["files"] = {part: path.name for part, path in files.items()}
        self._write(_KEPT, json.dumps(kept).encode())
        previous = self.current
        self.current = Installed(spiffe_id, fingerprint, not_after, server, client)
        if previous is not None and previous.fingerprint != fingerprint:
            for suffix in (".crt", ".key", ".ca.crt"):  # loaded already: not read again
                (self.folder / f"{previous.fingerprint[:16]}{suffix}").unlink(missing_ok=True)
        return self.current

    def _write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        tmp.replace(path)
        return path


def _context(purpose: ssl.Purpose, files: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose, cafile=str(files["ca"]))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # TLS 1.2: forward-secret AEAD suites only (OpenSSL's defaults still allow CBC ones,
    # which a scanner found here); TLS 1.3's are all of that kind.
    context.set_ciphers(TLS12_CIPHERS)
    context.load_cert_chain(str(files["cert"]), str(files["key"]))
    context.verify_mode = ssl.CERT_REQUIRED
    if purpose is ssl.Purpose.SERVER_AUTH:
        context.check_hostname = False  # peers are named by SPIFFE ID, checked by the caller
    return context
