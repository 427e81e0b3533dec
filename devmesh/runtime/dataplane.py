"""Which data plane runs the sidecars, and the command that starts one.

Two data planes live side by side while the Rust sidecar is built (issue 17): the
Python one (``python -m proxy``), the default, and the Rust one (``devmesh-proxy``,
the binary of the ``proxy/`` crate). ``$DEVMESH_DATAPLANE`` picks one: ``python`` or
``rust``. It is a developer's switch, not for users yet. On the local runtime the
Rust sidecar is a process of the binary found by ``choose``; on the docker runtime
it is the static (musl) build of the crate, ``MUSL_BINARY``, in an image of its own
(``devmesh.runtime.docker.sidecar_image``), and ``docker_binary`` finds it.

The choice is made from values passed in (the environment, the crate's folder, a
test of which files exist), so that it is tested without files or processes;
``selected()`` passes this process's own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import proxy
from devmesh.errors import UsageError

DATAPLANE_ENV = "DEVMESH_DATAPLANE"
"""``python`` (the default) or ``rust``: which data plane runs the sidecars."""
PROXY_BIN_ENV = "DEVMESH_PROXY_BIN"
"""The Rust sidecar's binary, where it is not in the crate's ``target/`` folder."""
BUILD_COMMAND = "cargo build --release --manifest-path proxy/Cargo.toml"
MUSL_TARGET = "x86_64-unknown-linux-musl"
MUSL_BINARY = Path("target") / MUSL_TARGET / "release" / "devmesh-proxy"
"""The static binary the docker runtime's Rust sidecar image holds, in the crate's folder."""
MUSL_BUILD_COMMAND = (
    f"cargo build --release --target {MUSL_TARGET} --manifest-path proxy/Cargo.toml"
)

Kind = Literal["python", "rust"]
KINDS: tuple[Kind, ...] = ("python", "rust")


@dataclass(frozen=True)
class DataPlane:
    """A data plane: which one, and the program (with its first arguments) that runs a
    sidecar of it."""

    kind: Kind
    program: tuple[str, ...]

    def command(self, bootstrap: Path) -> list[str]:
        """The command line that starts one sidecar from the bootstrap file ``bootstrap``."""
        return [*self.program, "--bootstrap", str(bootstrap)]


def kind_of(env: Mapping[str, str]) -> Kind:
    """The data plane ``env`` asks for; an unknown value is refused."""
    value = env.get(DATAPLANE_ENV, "").strip()
    if value == "":
        return "python"
    for kind in KINDS:
        if value == kind:
            return kind
    raise UsageError(
        f"{DATAPLANE_ENV} is {value!r}, and it must be python or rust",
        f"set {DATAPLANE_ENV} to python or rust, or unset it for the Python sidecar",
    )


def rust_candidates(env: Mapping[str, str], crate_dir: Path) -> list[Path]:
    """Where the Rust sidecar's binary is looked for, in order: ``$DEVMESH_PROXY_BIN``
    alone if it is set, else the crate's release build, then its debug build."""
    given = env.get(PROXY_BIN_ENV, "").strip()
    if given:
        return [Path(given)]
    return [
        crate_dir / "target" / "release" / "devmesh-proxy",
        crate_dir / "target" / "debug" / "devmesh-proxy",
    ]


def choose(
    env: Mapping[str, str], crate_dir: Path, python: str, exists: Callable[[Path], bool]
) -> DataPlane:
    """The data plane ``env`` asks for: ``python`` runs ``python -m proxy`` on the
    interpreter ``python``; ``rust`` runs the first binary of ``rust_candidates`` that
    ``exists``, and is refused if there is none."""
    if kind_of(env) == "python":
        return DataPlane("python", (python, "-m", "proxy"))
    candidates = rust_candidates(env, crate_dir)
    for candidate in candidates:
        if exists(candidate):
            return DataPlane("rust", (str(candidate),))
    if PROXY_BIN_ENV in env and env[PROXY_BIN_ENV].strip():
        raise UsageError(
            f"{DATAPLANE_ENV} is rust, but {PROXY_BIN_ENV} names {candidates[0]}, "
            "where there is no file",
            f"point {PROXY_BIN_ENV} at the devmesh-proxy binary, or unset it to use the "
            f"one `{BUILD_COMMAND}` builds",
        )
    raise UsageError(
        f"{DATAPLANE_ENV} is rust, but there is no devmesh-proxy binary at "
        f"{candidates[0]} nor at {candidates[1]}",
        f"build it with `{BUILD_COMMAND}`, set {PROXY_BIN_ENV} to the binary, "
        f"or unset {DATAPLANE_ENV} for the Python sidecar",
    )


def docker_binary(
    env: Mapping[str, str], crate_dir: Path, exists: Callable[[Path], bool]
) -> Path | None:
    """The static binary of the Rust sidecar for the docker runtime when ``env`` asks for
    the Rust data plane (``None``: the Python one); refused if it is not built."""
    if kind_of(env) == "python":
        return None
    binary = crate_dir / MUSL_BINARY
    if not exists(binary):
        raise UsageError(
            f"{DATAPLANE_ENV} is rust, but the docker runtime needs the static devmesh-proxy "
            f"binary at {binary}, and there is none",
            f"build it with `rustup target add {MUSL_TARGET}`, `apt-get install musl-tools` "
            f"and `{MUSL_BUILD_COMMAND}`, or unset {DATAPLANE_ENV} for the Python sidecar",
        )
    return binary


def crate_dir() -> Path:
    """The ``proxy/`` folder: the Python sidecar's package, and the Rust sidecar's crate."""
    return Path(proxy.__file__).resolve().parent


def selected() -> DataPlane:
    """The data plane this process's environment asks for (see ``choose``)."""
    return choose(os.environ, crate_dir(), sys.executable, Path.is_file)
