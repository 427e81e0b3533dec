"""``python -m devmesh.controlplane --project-dir DIR``: run a project's control plane.

Started in the background by ``devmesh up``. It listens on 127.0.0.1 (for the
CLI and local sidecars) and, for the Docker runtime, also on the project
network's gateway address, where only that network's containers can reach it
(``--listen 172.18.0.1 --allow 172.18.0.0/16``): any other peer is refused
before its token is even read. It writes ``.devmesh/controlplane.json``
(pid, port) once it is listening, and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from devmesh.controlplane.api import ControlPlaneAPI
from devmesh.controlplane.mesh import Mesh
from devmesh.controlplane.roster import Roster
from devmesh.controlplane.store import StateStore
from devmesh.errors import DevmeshError
from devmesh.pki import DEFAULT_TTL
from devmesh.workspace import Workspace, read_json, write_json

log = logging.getLogger("devmesh.controlplane")

LISTEN_HOST = "127.0.0.1"
EXIT_BIND_FAILED = 3


async def serve(
    workspace: Workspace,
    port: int,
    extra_hosts: list[str] | None = None,
    allowed: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None,
) -> int:
    try:
        token = workspace.token()
        mesh = Mesh(StateStore(workspace.state_file), roster=Roster(workspace.roster_file))
        cert_ttl = float(os.environ.get("DEVMESH_CERT_TTL", DEFAULT_TTL))
    except DevmeshError as exc:  # a state file it refuses: its sentence, not a traceback
        log.error("cannot start: %s", exc.message)
        if exc.hint:
            log.error("%s", exc.hint)
        return 1
    except (OSError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    api = ControlPlaneAPI(
        mesh, token, allowed_networks=allowed or [], workspace=workspace, cert_ttl=cert_ttl
    )
    runner = web.AppRunner(api.app(), handle_signals=False, access_log=None)
    await runner.setup()
    host = LISTEN_HOST
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = runner.addresses[0][1]
        for host in extra_hosts or []:  # the same port, so sidecars have one address to dial
            await web.TCPSite(runner, host, bound, reuse_address=True).start()
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        log.error("cannot listen on %s:%d: %s", host, port, reason)
        await runner.cleanup()
        return EXIT_BIND_FAILED
    write_json(
        workspace.controlplane_file,
        {"pid": os.getpid(), "port": bound, "url": f"http://{LISTEN_HOST}:{bound}"},
    )
    log.info("control plane for %s listening on %s:%d", workspace.project_dir, LISTEN_HOST, bound)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await runner.cleanup()
    info = read_json(workspace.controlplane_file)
    if isinstance(info, dict) and info.get("pid") == os.getpid():
        workspace.controlplane_file.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devmesh.controlplane", description=__doc__)
    parser.add_argument("--project-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--listen", action="append", default=[], help="another address to listen on, as well"
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        type=ipaddress.ip_network,
        help="a network whose peers may connect (loopback always may)",
    )
    parser.add_argument("--log-level", default=os.environ.get("DEVMESH_LOG", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(
        serve(Workspace(args.project_dir.resolve()), args.port, args.listen, args.allow)
    )


if __name__ == "__main__":
    sys.exit(main())
