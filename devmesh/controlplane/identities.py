"""The identity of each sidecar: issued by the project's CA when it connects, renewed at half
of its life, and what each sidecar says it installed.

Sidecars hold no crypto library (``proxy/`` imports only the standard library and
its three HTTP packages), so the control plane makes each key with its
certificate and sends both over the sidecar's authenticated stream (loopback,
or the project's own Docker network).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devmesh import payloads
from devmesh.pki import DEFAULT_TTL, CertificateAuthority, Identity


@dataclass
class Issued:
    instance: str
    service: str
    identity: Identity
    installed: str | None = None
    """The fingerprint the sidecar last said it installed."""

    def renew_at(self) -> float:
        identity = self.identity
        return identity.not_before + (identity.not_after - identity.not_before) / 2

    def to_json(self, now: float) -> payloads.IssuedIdentity:
        identity = self.identity
        return {
            "instance": self.instance,
            "service": self.service,
            "spiffe_id": identity.spiffe_id,
            "fingerprint": identity.fingerprint,
            "serial": f"{identity.serial:x}",
            "not_after": identity.not_after,
            "expires_in": round(identity.not_after - now, 3),
            "renews_in": round(max(0.0, self.renew_at() - now), 3),
            "installed": self.installed == identity.fingerprint,
        }


class Identities:
    """The CA (made in ``folder`` on first use) and the identity issued to each instance."""

    def __init__(
        self, folder: Path, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.time
    ) -> None:
        self.folder = folder
        self.ttl = ttl
        self._clock = clock
        self._ca: CertificateAuthority | None = None
        self.issued: dict[str, Issued] = {}
        self._lock = threading.Lock()
        """Identities are issued in threads (key generation blocks): one CA, made once."""

    def authority(self, project: str) -> CertificateAuthority:
        with self._lock:
            if self._ca is None:
                self._ca = CertificateAuthority.load_or_create(self.folder, project, self._clock())
            return self._ca

    def issue(self, project: str, service: str, instance: str) -> Issued:
        """A new identity for ``instance`` of ``service`` (replacing the one it had)."""
        identity = self.authority(project).issue(project, service, self._clock(), self.ttl)
        issued = Issued(instance, service, identity)
        with self._lock:
            self.issued[instance] = issued
        return issued

    def _all(self) -> list[Issued]:
        with self._lock:
            return list(self.issued.values())

    def due(self, instances: set[str]) -> list[Issued]:
        """Of ``instances``, those whose identity has reached half of its life."""
        now = self._clock()
        return [i for i in self._all() if i.instance in instances and now >= i.renew_at()]

    def installed(self, instance: str, fingerprint: str) -> None:
        issued = self.issued.get(instance)
        if issued is not None:
            issued.installed = fingerprint

    def to_json(self) -> payloads.Certs:
        now = self._clock()
        ca: payloads.Authority | None = None
        if self._ca is not None:
            ca = {
                "fingerprint": self._ca.fingerprint,
                "not_after": self._ca.cert.not_valid_after_utc.timestamp(),
                "folder": str(self.folder),
            }
        return {
            "ca": ca,
            "identities": [i.to_json(now) for i in sorted(self._all(), key=_order)],
        }


def _order(issued: Issued) -> tuple[str, str]:
    return issued.service, issued.instance
