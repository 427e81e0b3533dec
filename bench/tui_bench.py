"""The TUI under load: what a refresh costs with 50 services, its CPU in a real terminal,
and a run on the real shop recipe in tmux.

    python bench/tui_bench.py [--services 50] [--seconds 20]

1. *Refresh*: headless (Textual's ``run_test``, 120 x 40), the time the main view
   takes to redraw from one status, 30 times: with ``--services`` services and
   twice as many edges, and with the shop's 3 (the baseline, same run).
2. *CPU in a terminal*: the TUI in a tmux pane (120 x 40) fed a new status of
   ``--services`` services every second for ``--seconds``; its CPU use
   (``/proc/PID/stat``), against the same TUI shown the same data once and never
   updated (the baseline: what an idle Textual app costs).
3. *The shop in a terminal*: ``recipes/shop`` on the local runtime, with traffic,
   and ``devmesh tui`` in a tmux pane; after a few seconds the pane is captured
   and printed, and the script says whether it shows live numbers.

Needs tmux (``apt-get install -y tmux``). Everything it starts is stopped at
the end, tmux sessions included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tui.app import MeshApp  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
SESSION = "devmesh-tui-bench"


def synthetic_status(services: int, tick: int, rng: random.Random) -> dict[str, Any]:
    """``services`` services in a chain with a fan-out (two edges each), numbers that move."""

    def traffic() -> dict[str, Any]:
        rps = rng.uniform(1, 200)
        return {
            "requests": tick * 100,
            "errors": tick,
            "rps": rps,
            "success_rate": rng.uniform(0.9, 1.0),
            "p50_ms": rng.uniform(1, 20),
            "p90_ms": rng.uniform(20, 50),
            "p99_ms": rng.uniform(50, 300),
            "history": {"requests": [rng.randrange(300) for _ in range(60)]},
        }

    names = [f"service-{i:02d}" for i in range(services)]
    edges = []
    for i, name in enumerate(names):
        for j in (i + 1, i + 7):
            if j < services:
                state = "open" if (i + tick) % 13 == 0 else "closed"
                edges.append(
                    {
                        "source": name,
                        "destination": names[j],
                        **traffic(),
                        "breaker": {"state": state, "retry_in": 12.0},
                    }
                )
    return {
        "type": "status",
        "ts": time.time(),
        "project": "bench",
        "snapshot_version": tick,
        "window_s": 10,
        "services": [
            {
                "name": name,
                "versions": ["v1", "v2"] if i % 3 == 0 else ["default"],
                "split": {"v1": 90, "v2": 10} if i % 6 == 0 else None,
                "instances": [{"id": f"{name}-1", "version": "v1", "state": "ready"}],
                "traffic": traffic(),
            }
            for i, name in enumerate(names)
        ],
        "edges": edges,
        "faults": [{"service": names[k], "id": f"f{k}"} for k in range(0, services, 10)],
    }


class SyntheticSource:
    """A status of ``services`` services each second (or once, when ``still``)."""

    def __init__(self, services: int, still: bool = False) -> None:
        self.services = services
        self.still = still

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        rng = random.Random(1)
        tick = 0
        while True:
            yield synthetic_status(self.services, tick, rng)
            tick += 1
            if self.still:
                await asyncio.Event().wait()
            await asyncio.sleep(1.0)

    async def tap(self, **filters: str | float | None) -> AsyncIterator[dict[str, Any]]:
        await asyncio.Event().wait()
        yield {}

    async def trace(self, trace_id: str) -> dict[str, Any]:
        raise NotImplementedError

    async def add_fault(
        self, service: str, fault: Mapping[str, Any], lasts: float | None
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def remove_fault(self, fault_id: str) -> None:
        raise NotImplementedError

    async def reset_faults(self, service: str | None) -> list[str]:
        raise NotImplementedError

    async def set_split(self, service: str, weights: Mapping[str, float]) -> dict[str, Any]:
        raise NotImplementedError


# -- 1. refresh cost ----------------------------------------------------------------------


async def refresh_ms(services: int, rounds: int = 30) -> list[float]:
    app = MeshApp(SyntheticSource(services, still=True))
    rng = random.Random(2)
    timings = []
    async with app.run_test(size=(120, 40)) as pilot:
        while not app.overview.is_mounted:
            await pilot.pause(0.02)
        for tick in range(rounds):
            status = synthetic_status(services, tick, rng)
            started = time.perf_counter()
            app.overview.show(status)
            await pilot.pause()  # the redraw itself
            timings.append((time.perf_counter() - started) * 1000.0)
    return timings


# -- 2. CPU in a terminal -----------------------------------------------------------------


def tmux(*args: str) -> str:
    done = subprocess.run(["tmux", *args], capture_output=True, text=True, check=False)
    return done.stdout


def pane_pid() -> int:
    return int(tmux("display-message", "-p", "-t", SESSION, "#{pane_pid}").strip())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def terminal_cpu(services: int, seconds: float, still: bool) -> float:
    """Percent of a core the TUI used in a tmux pane, after a 3 s start."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve", str(services)]
    if still:
        argv.append("--still")
    command = " ".join(argv)
    tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "40", command)
    try:
        time.sleep(3.0)
        pid = pane_pid()
        before, wall = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        used = cpu_seconds(pid) - before
        return 100.0 * used / (time.monotonic() - wall)
    finally:
        tmux("kill-session", "-t", SESSION)


# -- 3. the shop in a terminal --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shop_in_a_terminal() -> str:
    with tempfile.TemporaryDirectory(prefix="devmesh-tui-bench-") as tmp:
        project = Path(tmp) / "shop"
        shutil.copytree(REPO / "recipes" / "shop", project)
        port = free_port()
        config = project / "devmesh.yaml"
        config.write_text(config.read_text().replace("expose: 8080", f"expose: {port}"))
        cli = [sys.executable, "-m", "devmesh", "-C", str(project)]
        stop = threading.Event()

        def traffic() -> None:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            while not stop.is_set():
                try:
                    with opener.open(f"http://127.0.0.1:{port}/", timeout=5) as response:
                        response.read()
                except OSError:
                    pass
                time.sleep(0.05)

        sender = threading.Thread(target=traffic)
        try:
            subprocess.run([*cli, "up", "--detach", "--runtime", "local"], check=True,
                           capture_output=True, cwd=REPO)  # fmt: skip
            sender.start()
            tmux("new-session", "-d", "-s", SESSION, "-x", "100", "-y", "24",
                 " ".join([*cli, "tui"]))  # fmt: skip
            time.sleep(8.0)
            return tmux("capture-pane", "-p", "-t", SESSION)
        finally:
            stop.set()
            if sender.is_alive():
                sender.join()
            tmux("kill-session", "-t", SESSION)
            subprocess.run([*cli, "down"], capture_output=True, cwd=REPO, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--still", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:  # the process inside the tmux pane
        MeshApp(SyntheticSource(args.serve, still=args.still), project="bench").run()
        return 0
    if shutil.which("tmux") is None:
        print("tui_bench: needs tmux (apt-get install -y tmux)", file=sys.stderr)
        return 2

    print("devmesh TUI benchmark")
    print("\nREFRESH: redrawing the main view from one status, headless, 120 x 40, 30 times")
    print(f"{'services':>9} {'edges':>6} {'p50':>8} {'max':>8}")
    for count in (3, args.services):
        timings = asyncio.run(refresh_ms(count))
        edges = len(synthetic_status(count, 0, random.Random(0))["edges"])
        print(f"{count:>9} {edges:>6} {statistics.median(timings):>6.1f}ms {max(timings):>6.1f}ms")

    print(f"\nCPU: the TUI in a tmux pane (120 x 40) for {args.seconds:g} s, % of one core")
    updating = terminal_cpu(args.services, args.seconds, still=False)
    idle = terminal_cpu(args.services, args.seconds, still=True)
    print(f"{args.services} services, a new status each second: {updating:5.1f} %")
    print(f"{args.services} services, shown once (baseline):   {idle:5.1f} %")
    print(f"updating costs {updating - idle:.1f} % of a core more than sitting still")

    print("\nSHOP: devmesh tui on recipes/shop (local runtime) with traffic, in tmux (100 x 24)")
    pane = shop_in_a_terminal()
    print(pane.rstrip())
    live = "● live" in pane and any(
        line.split()[:1] == ["catalog"] and "ms" in line for line in pane.splitlines()
    )
    print(f"\nshows live numbers: {'yes' if live else 'NO'}")
    return 0 if live else 1


if __name__ == "__main__":
    sys.exit(main())
