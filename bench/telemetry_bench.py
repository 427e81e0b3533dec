"""How fast the control plane takes in telemetry, and how soon a request shows in its stream.

    python bench/telemetry_bench.py [--duration 10] [--senders 4] [--rate 500]

Two parts, on loopback, with every process it starts stopped at the end:

1. *Ingest*: stand-in sidecars (this process, on CPU 0) send telemetry batches of
   1,000 realistic request records as fast as the receiver takes them, for
   ``--duration`` seconds, to (a) ``bench/telemetry_sink.py``, which only decodes
   the JSON (the baseline: the floor of any receiver in Python), then (b) the
   real control plane (``python -m devmesh.controlplane``) while it serves an
   event-stream subscriber and a tap subscriber. Each receiver has CPU 1 to
   itself. Printed: records per second taken in, records per CPU-second, and
   the ratio of the control plane to the sink.
2. *Delay*: a real sidecar pair connected to that control plane, with an origin
   (HAProxy) behind it, carries ``--rate`` requests per second (open loop) for
   ``--duration`` seconds; a tap subscriber with no sampling measures, for every
   request, the time from the sidecar finishing it (its record's timestamp) to
   the record arriving in the stream. Printed: p50/p90/p99/max of that delay and
   how many requests the tap saw of those sent. The sidecars send their records
   every 100 ms, so about 50 ms of the median is that interval.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from proxy_paths import (  # noqa: E402 (after the path is set)
    REPO,
    Failed,
    Proc,
    Processes,
    free_port,
    start_origin,
    start_sidecar_pair,
    wait_listening,
)

TOKEN = "bench-token"
BATCH = 1000
SERVICES = ["frontend", "catalog", "pricing", "checkout", "users", "search"]


def cpus() -> tuple[set[int] | None, set[int] | None]:
    """(this process and the load, the receiver): one core each where there are two."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return {available[0]}, {available[1]}


def records(count: int, rng: random.Random) -> list[dict[str, Any]]:
    now = time.time()
    made = []
    for n in range(count):
        source, destination = rng.sample(SERVICES, 2)
        version = rng.choice(("v1", "v2"))
        status = 503 if rng.random() < 0.05 else 200
        made.append(
            {
                "ts": now + n / 1000,
                "direction": "outbound" if n % 2 else "inbound",
                "source": source,
                "destination": destination,
                "version": version,
                "instance": f"{destination}-{version}-1",
                "status": status,
                "latency_ms": rng.lognormvariate(2.0, 1.0),
                "method": "GET",
                "path": f"/items/{rng.randrange(1000)}",
                "error": None,
                "fault": None,
                "retries": 0,
                "trace_id": f"{rng.getrandbits(128):032x}",
                "span_id": f"{rng.getrandbits(64):016x}",
                "parent_id": None,
            }
        )
    return made


def batches(count: int) -> list[str]:
    """Telemetry messages, encoded once: the senders only send."""
    rng = random.Random(1)
    return [
        json.dumps({"type": "telemetry", "records": records(BATCH, rng), "dropped": 0})
        for _ in range(count)
    ]


def hello(instance: str) -> str:
    node = {"service": "bench", "version": "v1", "instance": instance, "role": "sidecar"}
    return json.dumps({"type": "hello", "node": {**node, "inbound": None}})


async def send_for(url: str, seconds: float, senders: int, messages: list[str]) -> int:
    """Records sent by ``senders`` stand-in sidecars in ``seconds``."""
    sent = 0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def sender(index: int) -> None:
            nonlocal sent
            async with session.ws_connect(url + "/v1/sidecar/stream", max_msg_size=0) as ws:
                await ws.send_str(hello(f"bench-{index}"))
                end = time.monotonic() + seconds
                turn = index
                while time.monotonic() < end:
                    await ws.send_str(messages[turn % len(messages)])
                    sent += BATCH
                    turn += 1

        await asyncio.gather(*(sender(i) for i in range(senders)))
    return sent


async def drain(ws: aiohttp.ClientWebSocketResponse, seen: list[int]) -> None:
    async for message in ws:
        if message.type == aiohttp.WSMsgType.TEXT:
            seen[0] += 1


async def ingest_into_controlplane(
    url: str, seconds: float, senders: int, messages: list[str], proc: Proc
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        events_seen, tap_seen = [0], [0]
        events = await session.ws_connect(url + "/v1/events?window=10", max_msg_size=0)
        tap = await session.ws_connect(url + "/v1/tap?rate=100", max_msg_size=0)
        readers = [
            asyncio.create_task(drain(events, events_seen)),
            asyncio.create_task(drain(tap, tap_seen)),
        ]
        before = await _ingested(session, url)
        cpu_before, wall_before = proc.cpu_seconds(), time.monotonic()
        sent = await send_for(url, seconds, senders, messages)
        # What was sent is taken in once the receiver has caught up with its socket.
        deadline = time.monotonic() + 60
        while (taken := await _ingested(session, url) - before) < sent:
            if time.monotonic() > deadline:
                raise Failed(f"the control plane took {taken} of {sent} records in a minute")
            await asyncio.sleep(0.05)
        wall = time.monotonic() - wall_before
        cpu = proc.cpu_seconds() - cpu_before
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await events.close()
        await tap.close()
    return {
        "records": taken,
        "seconds": wall,
        "cpu_s": cpu,
        "events_messages": events_seen[0],
        "tap_messages": tap_seen[0],
    }


async def _ingested(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url + "/v1/status") as response:
        data = await response.json()
    return int(data["telemetry"]["records"])


def ingest_into_sink(
    procs: Processes, seconds: float, senders: int, messages: list[str], cpu: set[int] | None
) -> dict[str, Any]:
    port = free_port()
    sink = procs.start("sink", [sys.executable, str(BENCH / "telemetry_sink.py"), str(port)], cpu)
    wait_listening(sink, port)
    cpu_before, wall_before = sink.cpu_seconds(), time.monotonic()
    sent = asyncio.run(send_for(f"http://127.0.0.1:{port}", seconds, senders, messages))
    # The sink counts as it decodes: stop it once its CPU use has settled (it caught up).
    last = -1.0
    while (used := sink.cpu_seconds()) != last:
        last = used
        time.sleep(0.2)
    wall = time.monotonic() - wall_before - 0.2
    procs.stop(sink)
    counted = json.loads(sink.log.read_text().strip().splitlines()[-1])["records"]
    return {
        "records": sum(counted.values()),
        "sent": sent,
        "seconds": wall,
        "cpu_s": last - cpu_before,
    }


def start_controlplane(procs: Processes, root: Path, cpu: set[int] | None) -> tuple[Proc, str]:
    project = root / "project"
    (project / ".devmesh").mkdir(parents=True)
    token = project / ".devmesh" / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    argv = [sys.executable, "-m", "devmesh.controlplane", "--project-dir", str(project)]
    proc = procs.start("control plane", [*argv, "--log-level", "WARNING"], cpu)
    info = project / ".devmesh" / "controlplane.json"
    deadline = time.monotonic() + 15
    while not info.exists():
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise Failed(f"the control plane did not start:\n{proc.log_tail()}")
        time.sleep(0.05)
    return proc, str(json.loads(info.read_text())["url"])


async def apply_project(url: str, origin_port: int) -> None:
    project = {
        "name": "bench",
        "services": {
            "origin": {"command": "true", "port": origin_port},
            "bench-client": {"command": "true"},
        },
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.put(url + "/v1/project", json=project) as response,
    ):
        if response.status != 200:
            raise Failed(f"the control plane refused the project: {await response.text()}")


async def measure_delay(url: str, run_load: Any) -> dict[str, Any]:
    """Run ``run_load()`` (blocking, in a thread) while a tap measures each record's delay."""
    delays: list[float] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        # The load's path only: not the request that checked the route was ready.
        tap = await session.ws_connect(url + "/v1/tap?rate=1000000&service=origin&path=/load")

        async def read() -> None:
            async for message in tap:
                data = json.loads(message.data)
                if data["type"] == "request":
                    delays.append((time.time() - data["ts"]) * 1000.0)

        reader = asyncio.create_task(read())
        load = await asyncio.to_thread(run_load)
        await asyncio.sleep(1.0)  # the last records' flush
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await tap.close()
    delays.sort()

    def rank(q: float) -> float:
        return delays[min(len(delays) - 1, int(q * len(delays)))] if delays else float("nan")

    return {
        "tapped": len(delays),
        "sent": load.get("completed", load.get("requests")),
        "p50_ms": rank(0.50),
        "p90_ms": rank(0.90),
        "p99_ms": rank(0.99),
        "max_ms": delays[-1] if delays else float("nan"),
    }


def wait_routed(port: int, timeout: float = 20.0) -> None:
    """Until the outbound sidecar answers ``origin`` with 200 (the control plane's snapshot
    names the inbound sidecar as its endpoint once that one reports ready)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": "origin"})
        with contextlib.suppress(OSError), opener.open(request, timeout=2) as response:
            if response.status == 200:
                return
        if time.monotonic() > deadline:
            raise Failed("the sidecar pair did not route to origin through the control plane")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per part (10)")
    parser.add_argument("--senders", type=int, default=4, help="stand-in sidecars (4)")
    parser.add_argument("--rate", type=float, default=500.0, help="requests/s, part 2 (500)")
    args = parser.parse_args(argv)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    load_cpu, receiver_cpu = cpus()
    if load_cpu:
        os.sched_setaffinity(0, load_cpu)
    layout = "not pinned (one CPU)" if load_cpu is None else "CPU 0: load; CPU 1: the receiver"
    print("devmesh telemetry benchmark: the control plane's ingest and its stream's delay")
    print(f"{len(os.sched_getaffinity(0)) if load_cpu is None else 2} CPUs used; {layout}")
    messages = batches(16)
    with tempfile.TemporaryDirectory(prefix="devmesh-telemetry-bench-") as tmp:
        procs = Processes(Path(tmp))
        try:
            print(f"  ingest: sink for {args.duration:g} s ...", flush=True)
            sink = ingest_into_sink(procs, args.duration, args.senders, messages, receiver_cpu)
            plane, url = start_controlplane(procs, Path(tmp), receiver_cpu)
            print(f"  ingest: control plane for {args.duration:g} s ...", flush=True)
            ingest = asyncio.run(
                ingest_into_controlplane(url, args.duration, args.senders, messages, plane)
            )
            print(f"  delay: {args.rate:g} req/s through a sidecar pair for {args.duration:g} s")
            delay = run_delay(procs, url, args, load_cpu, receiver_cpu)
        except Failed as exc:
            print(f"telemetry_bench: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ntelemetry_bench: interrupted; stopping what it started", file=sys.stderr)
            return 130
        finally:
            with contextlib.suppress(KeyboardInterrupt):
                procs.stop_all()
    report(sink, ingest, delay)
    return 0


def run_delay(
    procs: Processes,
    url: str,
    args: argparse.Namespace,
    load_cpu: set[int] | None,
    receiver_cpu: set[int] | None,
) -> dict[str, Any]:
    _, origin_port = start_origin(procs, load_cpu)
    asyncio.run(apply_project(url, origin_port))
    _, port = start_sidecar_pair(procs, origin_port, url, (load_cpu, load_cpu))
    wait_routed(port)

    def load() -> dict[str, Any]:
        argv = [sys.executable, str(BENCH / "openloop.py"), f"http://127.0.0.1:{port}/load"]
        argv += [f"--rate={args.rate:g}", f"--duration={args.duration:g}", "--warmup=0"]
        argv += ["--host=origin"]
        done = subprocess.run(
            argv, capture_output=True, text=True, cwd=REPO, timeout=args.duration + 60
        )
        if done.returncode != 0:
            raise Failed(f"openloop failed: {done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    return asyncio.run(measure_delay(url, load))


def report(sink: dict[str, Any], ingest: dict[str, Any], delay: dict[str, Any]) -> None:
    rows = []
    for name, data in (("sink (decode only)", sink), ("control plane", ingest)):
        rate = data["records"] / data["seconds"]
        per_cpu = data["records"] / data["cpu_s"] if data["cpu_s"] else float("nan")
        rows.append((name, data["records"], rate, data["cpu_s"] / data["seconds"], per_cpu))
    print("\nINGEST: telemetry records taken in, batches of 1,000, the receiver on one core")
    print(f"{'receiver':<20} {'records':>10} {'records/s':>11} {'busy':>6} {'per CPU-s':>11}")
    for name, count, rate, busy, per_cpu in rows:
        print(f"{name:<20} {count:>10,} {rate:>11,.0f} {busy:>6.0%} {per_cpu:>11,.0f}")
    ratio = rows[1][4] / rows[0][4]
    print(f"control plane / sink, per CPU-second: {ratio:.2f}")
    print(
        f"while serving: {ingest['events_messages']} event messages, "
        f"{ingest['tap_messages']} tap messages (at most 100 requests a second)"
    )
    print("\nDELAY: a request's end (its record's timestamp) to its arrival in the tap stream")
    print(f"{'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  tapped / sent")
    print(
        f"{delay['p50_ms']:>6.1f}ms {delay['p90_ms']:>6.1f}ms {delay['p99_ms']:>6.1f}ms "
        f"{delay['max_ms']:>6.1f}ms  {delay['tapped']:,} / {delay['sent']}"
    )


if __name__ == "__main__":
    sys.exit(main())
