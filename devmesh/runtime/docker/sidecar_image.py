"""The sidecar image: devmesh's ``proxy/`` package and its wheels, on a Python base image.

Built locally, never pulled: the context holds the installed ``proxy`` package
and its wheels (httptools, multidict, uvloop) unpacked for the base image's
Python (see ``wheels``), so the build needs no package index. It holds nothing
else of devmesh. The tag names the hash of its inputs (base image, proxy sources, package versions,
Dockerfile), so an image is built once per change and reused after.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import docker
import docker.errors

import proxy
from devmesh.runtime.docker import labels
from devmesh.runtime.docker.builds import OnLine, base_image_id, image_exists, run_build
from devmesh.runtime.docker.wheels import fetch_wheels, python_of, requirement
from proxy.interception import PROXY_UID

REPOSITORY = "devmesh/sidecar"

DOCKERFILE = f"""\
ARG BASE_IMAGE
FROM ${{BASE_IMAGE}}
# Transparent interception needs iptables; a base without it gets it from its
# package manager if it can, else only `interception: env` works.
RUN command -v iptables >/dev/null 2>&1 \\
 || (apt-get update -qq && apt-get install -y -qq --no-install-recommends iptables \\
     && rm -rf /var/lib/apt/lists/*) \\
 || echo "devmesh: no iptables in this base image; only interception: env will work"
COPY lib /opt/devmesh/lib
RUN mkdir -p /var/lib/devmesh && chown {PROXY_UID}:{PROXY_UID} /var/lib/devmesh
ENV PYTHONPATH=/opt/devmesh/lib PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER {PROXY_UID}:{PROXY_UID}
ENTRYPOINT ["python3", "-m", "proxy"]
"""


def proxy_sources() -> list[Path]:
    root = Path(proxy.__file__).parent
    return sorted(root.glob("*.py"))


def inputs_hash(base_id: str, wanted: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    pins = " ".join(wanted).encode()
    digest.update(DOCKERFILE.encode() + b"\0" + base_id.encode() + b"\0" + pins)
    for path in proxy_sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def ensure_sidecar_image(
    client: docker.DockerClient, base_image: str, on_line: OnLine
) -> tuple[str, bool]:
    """The sidecar image for ``base_image`` (built if missing): ``(tag, built)``."""
    base_id = base_image_id(client, base_image)
    wanted = requirement()
    tag = f"{REPOSITORY}:{inputs_hash(base_id, wanted)}"
    if image_exists(client, tag):
        return tag, False
    on_line(f"asking {base_image} which Python it has")
    target = python_of(client, base_image)
    on_line(f"fetching {', '.join(wanted)} for Python {target.version} on {target.machine}")
    wheels = fetch_wheels(target, wanted)
    context = build_context(wheels)
    run_build(
        client,
        context,
        tag=tag,
        dockerfile="Dockerfile",
        buildargs={"BASE_IMAGE": base_image},
        image_labels={labels.INPUTS: tag.rpartition(":")[2]},
        what="the sidecar image",
        hint="check the base image (--base-image); `devmesh doctor` shows what is wrong",
        on_line=on_line,
    )
    return tag, True


def build_context(wheels: Iterable[Path]) -> io.BytesIO:
    """A tar: the Dockerfile, and ``lib/`` with the wheels unpacked and the proxy package."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add(tar, "Dockerfile", DOCKERFILE.encode())
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.infolist():
                    if not member.is_dir():
                        _add(tar, f"lib/{member.filename}", archive.read(member))
        for path in proxy_sources():
            _add(tar, f"lib/proxy/{path.name}", path.read_bytes())
    buffer.seek(0)
    return buffer


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
