"""The sidecar's Python packages, downloaded on the host for the base image's Python.

Containers reach no package index (here, and in many companies), so the host
downloads wheels that match the base image (its Python version, machine and
C library, asked of the image itself) and the image build only copies them.
Downloads are cached per target, so the network is needed once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path

import docker
import docker.errors

from devmesh.errors import DevmeshError
from devmesh.runtime.docker import labels
from devmesh.runtime.docker.builds import base_image_id
from devmesh.runtime.docker.daemon import docker_errors

PROBE = (
    "import json, platform, sys; "
    "print(json.dumps({'version': '%d.%d' % sys.version_info[:2], "
    "'abi': 'cp%d%d' % sys.version_info[:2], 'machine': platform.machine(), "
    "'libc': platform.libc_ver()[0] or 'musl'}))"
)
SIDECAR_PACKAGES = {"httptools": (0, 6, 4), "multidict": (6, 0, 0), "uvloop": (0, 19, 0)}
"""What the sidecar runs on besides the standard library, with the oldest release it accepts
(httptools before 0.6.4 bundles an llhttp with known request-smuggling fixes missing)."""


@dataclass(frozen=True)
class PythonTarget:
    version: str
    """``3.12``"""
    abi: str
    """``cp312``"""
    machine: str
    """``x86_64``, ``aarch64``"""
    libc: str
    """``glibc`` or ``musl``"""

    @property
    def platforms(self) -> list[str]:
        if self.libc == "musl":
            return [f"musllinux_1_2_{self.machine}", f"musllinux_1_1_{self.machine}"]
        return [
            f"manylinux_2_28_{self.machine}",
            f"manylinux_2_17_{self.machine}",
            f"manylinux2014_{self.machine}",
        ]

    def key(self) -> str:
        return f"{self.abi}-{self.machine}-{self.libc}"


def requirement() -> tuple[str, ...]:
    """The sidecar's packages as the host runs them (the ones devmesh is tested with), pinned."""
    pins = []
    for package, minimum in SIDECAR_PACKAGES.items():
        host = installed_version(package)
        parts = tuple(int(p) for p in host.split(".")[:3] if p.isdigit())
        if parts < minimum:
            wanted = ".".join(str(p) for p in minimum)
            raise DevmeshError(
                f"this machine has {package} {host}, older than {wanted}, which the sidecar needs",
                f"upgrade it: pip install '{package}>={wanted}'",
            )
        pins.append(f"{package}=={host}")
    return tuple(pins)


def python_of(client: docker.DockerClient, image: str) -> PythonTarget:
    """Ask ``image`` (which must be on this machine: nothing is pulled) which Python it has."""
    base_image_id(client, image)  # says so if it is not here: the API would pull it
    not_python = DevmeshError(
        f"the base image {image} cannot run python3",
        "use a Python image as the base, e.g. python:3.12-slim (--base-image)",
    )
    api = client.api
    with docker_errors(f"running {image} to see its Python"):
        created = api.create_container(
            image,
            ["python3", "-c", PROBE],
            entrypoint=[],
            labels={labels.ROLE: "probe"},
            host_config=api.create_host_config(network_mode="none"),
        )
        try:
            try:
                api.start(created["Id"])
            except docker.errors.APIError as exc:  # "executable file not found"
                raise not_python from exc
            code = api.wait(created["Id"], timeout=60).get("StatusCode", -1)
            text = api.logs(created["Id"], stdout=True, stderr=False).decode("utf-8", "replace")
        finally:
            api.remove_container(created["Id"], force=True)
    if code != 0:
        raise not_python
    try:
        data = json.loads(text.strip().splitlines()[-1])
        return PythonTarget(data["version"], data["abi"], data["machine"], data["libc"])
    except (ValueError, KeyError, IndexError):
        raise DevmeshError(
            f"could not tell which Python the base image {image} has (it printed {text[:80]!r})",
            "use a Python image as the base, e.g. python:3.12-slim (--base-image)",
        ) from None


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "devmesh" / "wheels"


def fetch_wheels(
    target: PythonTarget, wanted: tuple[str, ...], cache: Path | None = None
) -> list[Path]:
    """Wheels of ``wanted`` and their dependencies for ``target``, from the cache or PyPI."""
    folder = (cache or cache_dir()) / target.key() / "_".join(w.replace("==", "-") for w in wanted)
    done = folder / "complete"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"]
        for platform in target.platforms:
            argv += ["--platform", platform]
        argv += ["--python-version", target.version, "--implementation", "cp"]
        argv += ["--abi", target.abi, "--dest", str(folder), *wanted]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DevmeshError(
                f"could not download the sidecar's packages ({', '.join(wanted)}) for Python "
                f"{target.version} on {target.machine}: {last[0]}",
                f"check that this machine reaches PyPI, or put the wheels in {folder}",
            )
        done.write_text(" ".join(wanted) + "\n")
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise DevmeshError(
            f"the wheel cache {folder} is empty", f"remove {folder} and run `devmesh up` again"
        )
    return wheels


def main(argv: list[str] | None = None) -> int:
    """``python -m devmesh.runtime.docker.wheels IMAGE``: fill the cache ahead of time.

    For CI and offline machines: afterwards, building the sidecar image on IMAGE
    needs no network.
    """
    import argparse

    from devmesh.runtime.docker.daemon import connect

    parser = argparse.ArgumentParser(prog="python -m devmesh.runtime.docker.wheels")
    parser.add_argument("image", help="the base image the sidecar image will be built on")
    args = parser.parse_args(argv)
    try:
        client = connect()
        try:
            target = python_of(client, args.image)
        finally:
            client.close()
        wheels = fetch_wheels(target, requirement())
    except DevmeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    where = wheels[0].parent
    print(f"{len(wheels)} wheels for Python {target.version} on {target.machine} in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
