"""``python -m proxy --bootstrap FILE``: run one sidecar (or the gateway) until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path

from proxy.bootstrap import Bootstrap, BootstrapError
from proxy.runner import SidecarRunner
from proxy.server import BoundPorts

log = logging.getLogger("devmesh.proxy")

EXIT_BIND_FAILED = 3


async def serve(boot: Bootstrap) -> int:
    runner = SidecarRunner(boot)
    try:
        ports = await runner.start()
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        log.error("cannot listen on %s: %s", boot.listen_host, reason or exc)
        return EXIT_BIND_FAILED
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # What start-up made lives as long as the process: out of the collector's way, so that
    # its full passes stay short (they pause every request in flight).
    gc.freeze()
    if boot.ready_file is not None:
        write_ready_file(boot.ready_file, ports)
    log.info("%s %s listening: %s", boot.role, boot.instance, ports)
    await stop.wait()
    log.info("stopping")
    await runner.stop()
    return 0


def write_ready_file(path: Path, ports: BoundPorts) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "inbound": ports.inbound,
                "outbound": ports.outbound,
                "gateway": ports.gateway,
            }
        )
    )
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy", description=__doc__)
    parser.add_argument(
        "--bootstrap", type=Path, help="bootstrap JSON file (default: $DEVMESH_BOOTSTRAP)"
    )
    parser.add_argument("--log-level", default=os.environ.get("DEVMESH_PROXY_LOG", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        boot = Bootstrap.load(args.bootstrap) if args.bootstrap else Bootstrap.from_env()
    except BootstrapError as exc:
        log.error("%s", exc)
        return 2
    return run(serve(boot))


def run(main: Coroutine[None, None, int]) -> int:
    """On uvloop (libuv's event loop) where it is installed, as it is in the sidecar image: the
    same sidecar spends a fifth to a third less CPU per request on it than on asyncio's own
    loop (bench/README.md)."""
    try:
        import uvloop
    except ImportError:
        log.info("uvloop is not installed: running on asyncio's own event loop")
        return asyncio.run(main)
    return uvloop.run(main)


if __name__ == "__main__":
    sys.exit(main())
