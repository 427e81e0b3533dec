"""Time from `devmesh up` to ready for recipes/shop on Docker, against the same containers
started with the docker SDK and no sidecars, measured in the same run.

    python bench/up_time.py [--rounds 5]

Both start from warm images (built once before timing), in dependency order,
and end when every instance answers its health check. The baseline is what
`docker compose up --wait` would do by hand: a network, the four service
containers, each level waited on until healthy. devmesh does that plus the
control plane, five sidecar containers, four interception steps and the
convergence of every sidecar's routing config. Prints both medians and the ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = os.environ.get("DEVMESH_BASE_IMAGE", "devmesh/python-base:bookworm")
LEVELS = [
    [("pricing", "pricing.py", {})],
    [
        ("catalog-v1", "catalog.py", {"CATALOG_VERSION": "v1"}),
        ("catalog-v2", "catalog.py", {"CATALOG_VERSION": "v2"}),
    ],
    [("frontend", "frontend.py", {})],
]


def devmesh(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["DEVMESH_BASE_IMAGE"] = BASE_IMAGE
    return subprocess.run(
        [sys.executable, "-m", "devmesh", "-C", str(project), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def copy_shop(root: Path) -> tuple[Path, str]:
    target = root / "shop"
    shutil.copytree(REPO / "recipes" / "shop", target, ignore=shutil.ignore_patterns(".devmesh"))
    name = f"bench-{secrets.token_hex(3)}"
    config = target / "devmesh.yaml"
    text = re.sub(r"(?m)^name: .*$", f"name: {name}", config.read_text())
    text = re.sub(r"expose: \d+", "expose: 18080", text)
    config.write_text(text)
    return target, name


def time_devmesh(project: Path) -> float:
    began = time.perf_counter()
    result = devmesh(project, "up", "--detach")
    elapsed = time.perf_counter() - began
    if result.returncode != 0:
        sys.exit(f"devmesh up failed:\n{result.stdout}{result.stderr}")
    devmesh(project, "down")
    return elapsed


def wait_healthy(address: str, deadline: float) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while True:
        try:
            with opener.open(f"http://{address}:8000/healthz", timeout=1) as response:
                if response.status < 500:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"{address} did not become healthy")
        time.sleep(0.02)


def time_plain(client: docker.DockerClient, image: str) -> float:
    """The shop's four containers on a network of their own, no sidecars, dependency order."""
    name = f"bench-plain-{secrets.token_hex(3)}"
    began = time.perf_counter()
    network = client.networks.create(name, driver="bridge")
    started = []
    try:
        for level in LEVELS:
            level_containers = []
            for instance, script, env in level:
                service = instance.split("-")[0]
                container = client.containers.run(
                    image,
                    ["python3", script],
                    name=f"{name}-{instance}",
                    environment={"HOST": "0.0.0.0", **env},
                    network=name,
                    detach=True,
                    init=True,
                )
                network.disconnect(container)
                network.connect(container, aliases=[service])
                started.append(container)
                level_containers.append(container)
            for container in level_containers:
                container.reload()
                address = container.attrs["NetworkSettings"]["Networks"][name]["IPAddress"]
                wait_healthy(address, time.monotonic() + 30)
        return time.perf_counter() - began
    finally:
        for container in started:
            container.remove(force=True)
        network.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    client = docker.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        project, name = copy_shop(Path(tmp))
        print(f"warming up: building the images of {name} (not timed)", flush=True)
        warm = devmesh(project, "up", "--detach")
        if warm.returncode != 0:
            sys.exit(f"devmesh up failed:\n{warm.stdout}{warm.stderr}")
        devmesh(project, "down")
        image = f"{name}-frontend:latest"
        mesh, plain = [], []
        for round_ in range(1, args.rounds + 1):
            mesh.append(time_devmesh(project))
            plain.append(time_plain(client, image))
            print(f"round {round_}: devmesh up {mesh[-1]:.2f}s, plain containers {plain[-1]:.2f}s")
        for tag in client.images.list(name=f"{name}-*"):
            for label in tag.tags:
                client.images.remove(label)
    m, p = statistics.median(mesh), statistics.median(plain)
    print(f"\nrecipes/shop, warm images, median of {args.rounds} rounds")
    print(f"  devmesh up --detach (mesh, sidecars, control plane): {m:6.2f}s")
    print(f"  the same 4 containers, docker SDK, no sidecars:      {p:6.2f}s")
    print(f"  ratio: {m / p:.2f}x")


if __name__ == "__main__":
    main()
