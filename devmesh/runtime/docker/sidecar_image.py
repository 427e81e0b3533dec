"""The sidecar image: devmesh's ``proxy/`` package and its wheels, on a Python base image;
or, for the Rust data plane, the static ``devmesh-proxy`` binary alone.

Built locally, never pulled: the context holds the installed ``proxy`` package
and its wheels (httptools, multidict, uvloop) unpacked for the base image's
Python (see ``wheels``), so the build needs no package index. It holds nothing
else of devmesh. The tag names the hash of its inputs (base image, proxy sources, package versions,
Dockerfile), so an image is built once per change and reused after.

The Rust sidecar image (``DEVMESH_DATAPLANE=rust``) is built ``FROM scratch``: the
musl binary (``devmesh.runtime.dataplane.MUSL_BINARY``), and ``iptables`` with the
libraries it loads, copied from the base image, for the init step
(``devmesh-proxy intercept``). Its tag names the hash of the binary's bytes, the
base image and the Dockerfile, so a rebuilt binary gives a new image.
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
from devmesh.runtime.docker.topology import RUST_SIDECAR_BINARY, RUST_SIDECAR_REPOSITORY
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


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


RUST_DOCKERFILE = f"""\
ARG BASE_IMAGE
FROM ${{BASE_IMAGE}} AS tools
RUN command -v iptables >/dev/null 2>&1 \\
 || (apt-get update -qq && apt-get install -y -qq --no-install-recommends iptables \\
     && rm -rf /var/lib/apt/lists/*)
# iptables (the program its name points at), every library it and its extensions
# load, and the extensions, into /rootfs: all the init step needs.
RUN set -eu; real=$(readlink -f "$(command -v iptables)"); \\
    ext=$(dirname "$(find / -xdev -name libxt_owner.so -print -quit)"); \\
    mkdir -p /rootfs/usr/sbin /rootfs/etc /rootfs/run /rootfs/tmp /rootfs/var/lib/devmesh; \\
    cp "$real" /rootfs/usr/sbin/; ln -s "$(basename "$real")" /rootfs/usr/sbin/iptables; \\
    cp -a --parents "$ext" /rootfs; \\
    for f in "$real" "$ext"/*.so; do \\
      ldd "$f" | awk '/=>/ {{print $3}} /^[[:space:]]*\\// {{print $1}}'; done \\
      | sort -u | while read -r lib; do cp -L --parents "$lib" /rootfs; done; \\
    for f in /etc/protocols /etc/services /etc/ethertypes; do \\
      if [ -f "$f" ]; then cp "$f" /rootfs/etc/; fi; done; \\
    chown {PROXY_UID}:{PROXY_UID} /rootfs/var/lib/devmesh; chmod 1777 /rootfs/tmp
FROM scratch
COPY --from=tools /rootfs /
COPY devmesh-proxy {RUST_SIDECAR_BINARY}
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER {PROXY_UID}:{PROXY_UID}
ENTRYPOINT ["{RUST_SIDECAR_BINARY}"]
"""


def rust_inputs_hash(base_id: str, binary: bytes) -> str:
    """The Rust sidecar image's inputs: its Dockerfile, the base image, the binary's bytes."""
    digest = hashlib.sha256()
    digest.update(RUST_DOCKERFILE.encode() + b"\0" + base_id.encode() + b"\0" + binary)
    return digest.hexdigest()[:12]


def ensure_rust_sidecar_image(
    client: docker.DockerClient, base_image: str, binary: Path, on_line: OnLine
) -> tuple[str, bool]:
    """The Rust sidecar image of ``binary`` (built if missing): ``(tag, built)``."""
    data = binary.read_bytes()
    tag = f"{RUST_SIDECAR_REPOSITORY}:{rust_inputs_hash(base_image_id(client, base_image), data)}"
    if image_exists(client, tag):
        return tag, False
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add(tar, "Dockerfile", RUST_DOCKERFILE.encode())
        _add(tar, "devmesh-proxy", data, mode=0o755)
    buffer.seek(0)
    run_build(
        client,
        buffer,
        tag=tag,
        dockerfile="Dockerfile",
        buildargs={"BASE_IMAGE": base_image},
        image_labels={labels.INPUTS: tag.rpartition(":")[2]},
        what="the Rust sidecar image",
        hint="check the base image (--base-image): it must have iptables or apt-get",
        on_line=on_line,
    )
    return tag, True
