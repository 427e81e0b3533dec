"""devmesh.runtime.docker.sidecar_image: what the sidecar images are made of, without Docker."""

from __future__ import annotations

from devmesh.runtime.docker.readiness import probe_argv
from devmesh.runtime.docker.sidecar_image import DOCKERFILE, RUST_DOCKERFILE, rust_inputs_hash
from devmesh.runtime.docker.topology import (
    RUST_SIDECAR_BINARY,
    RUST_SIDECAR_REPOSITORY,
    init_entrypoint,
)


def test_a_rebuilt_binary_or_another_base_gives_another_rust_image() -> None:
    first = rust_inputs_hash("sha256:base", b"\x7fELF one")
    assert first == rust_inputs_hash("sha256:base", b"\x7fELF one"), "same inputs, same tag"
    assert first != rust_inputs_hash("sha256:base", b"\x7fELF two")
    assert first != rust_inputs_hash("sha256:other", b"\x7fELF one")
    assert len(first) == 12


def test_the_rust_image_holds_the_binary_as_its_entrypoint_and_iptables_for_the_init_step() -> None:
    assert "FROM scratch" in RUST_DOCKERFILE
    assert f"COPY devmesh-proxy {RUST_SIDECAR_BINARY}" in RUST_DOCKERFILE
    assert f'ENTRYPOINT ["{RUST_SIDECAR_BINARY}"]' in RUST_DOCKERFILE
    assert "/rootfs/usr/sbin/iptables" in RUST_DOCKERFILE
    assert "USER 1337:1337" in RUST_DOCKERFILE
    assert "python3" not in RUST_DOCKERFILE
    assert init_entrypoint(f"{RUST_SIDECAR_REPOSITORY}:0123abcd")[0] == RUST_SIDECAR_BINARY


def test_the_python_image_is_unchanged() -> None:
    assert 'ENTRYPOINT ["python3", "-m", "proxy"]' in DOCKERFILE
    assert init_entrypoint("devmesh/sidecar:0123abcd") == ["python3", "-m", "proxy.interception"]


def test_the_probe_after_a_restart_is_the_binary_s_in_the_rust_image() -> None:
    rust = f"{RUST_SIDECAR_REPOSITORY}:0123abcd"
    assert probe_argv(rust, 8000, "/healthz") == [
        RUST_SIDECAR_BINARY,
        "probe",
        "--port",
        "8000",
        "--path",
        "/healthz",
    ]
    assert probe_argv(rust, 8000, None) == [RUST_SIDECAR_BINARY, "probe", "--port", "8000"]
    python = probe_argv("devmesh/sidecar:0123abcd", 8000, None)
    assert python[:2] == ["python3", "-c"]
    assert "8000" in python[2]
