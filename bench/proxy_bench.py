"""What a sidecar pair costs on loopback, against direct calls and a pair of HAProxy.

    python bench/proxy_bench.py [--rate 1000] [--rate-duration 15] [--sat-duration 10]
                                [--rounds 1] [--pin auto|none] [--telemetry buffer|sink]
                                [--route-policy full|default] [--sidecar python|rust]
                                [--sidecar-python PATH] [--proxy-bin PATH] [--json FILE]

Needs (it says which is missing and exits 2): Linux (/proc), Debian's
``haproxy`` and ``wrk`` (``apt-get install -y haproxy wrk``), and the project's
virtualenv (httptools, for the sidecars). The open-loop generator
(bench/openloop.py) is standard-library Python. No Docker. About 80 s a round.

One origin serves every path: an HAProxy process (one thread) that answers
every request itself, ``200`` with a fixed 100-byte body (``http-request
return``), keep-alive. Three paths to it, measured one after the other:

1. direct: client -> origin;
2. sidecar pair, the mesh path: client -> outbound sidecar (``python -m proxy``, or
   with ``--sidecar rust`` the Rust sidecar's binary,
   service ``bench-client``; the client sends ``Host: origin``) -> the inbound
   sidecar of service ``origin`` -> origin. Each starts from a last-good
   snapshot written into its state dir (the outbound one routes ``origin`` to
   the inbound one's fixed port, with every policy feature on and no fault:
   timeout, retries, outlier detection, pool limits, a balancer; ``--route-policy
   default`` gives none). Their control plane is a closed port: they
   keep dialling in the background and buffer their telemetry (``--telemetry
   sink`` runs bench/telemetry_sink.py, a stand-in that drains it instead);
3. HAProxy pair: client -> HAProxy -> HAProxy -> origin, HTTP mode, keep-alive
   to the next hop (``http-reuse safe``), ``nbthread 1``, no logging.

Per path: first a fixed rate (open loop, bench/openloop.py, ``--rate`` req/s on
8 keep-alive connections, after a 2 s warm-up), then saturation (closed loop:
wrk, one thread, 16 keep-alive connections). Each proxy's CPU time
(/proc/PID/stat utime+stime) is read around both, its resident memory
(VmRSS, VmHWM) before and after. Figures are printed, never asserted. Every
process it starts is stopped when it ends, fails or is interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from proxy_paths import (
    BODY,
    FULL_POLICY,
    HOST,
    REPO,
    Failed,
    Proc,
    Processes,
    check_path,
    child_setup,
    free_port,
    start_haproxy_pair,
    start_origin,
    start_sidecar_pair,
    wait_listening,
)
from proxy_report import (
    PathResult,
    combine,
    report_fixed,
    report_mtls,
    report_resources,
    report_saturation,
    report_targets,
)

from devmesh.errors import DevmeshError
from devmesh.runtime.dataplane import DATAPLANE_ENV, PROXY_BIN_ENV, choose, crate_dir

BENCH = Path(__file__).resolve().parent
Cpus = set[int] | None


class Missing(Exception):
    """Something the benchmark needs is not there; the message says how to get it."""


def check_requirements() -> None:
    problems = []
    if not Path("/proc/self/stat").exists():
        problems.append("Linux with /proc (CPU time and memory are read from it)")
    for tool in ("haproxy", "wrk"):
        if shutil.which(tool) is None:
            problems.append(f"`{tool}`: apt-get install -y {tool}")
    try:
        import aiohttp  # noqa: F401  (the stand-in control plane of --telemetry sink)
        import httptools  # noqa: F401
    except ImportError:
        problems.append(
            f"the project's packages: run with the project's virtualenv "
            f"(. {REPO}/.venv/bin/activate; pip install -e .)"
        )
    if problems:
        raise Missing("this benchmark needs:\n  " + "\n  ".join(problems))


@dataclass
class Layout:
    """Which CPUs each kind of process may run on (``None``: anywhere)."""

    load: Cpus
    origin: Cpus
    proxies: tuple[Cpus, Cpus]
    """(first hop, second hop)."""
    text: str


def cpu_layout(pin: str) -> Layout:
    cpus = sorted(os.sched_getaffinity(0))
    if pin == "none" or len(cpus) < 2:
        why = "--pin none" if pin == "none" else "one CPU"
        return Layout(None, None, (None, None), f"not pinned ({why}): the scheduler shares them")
    if len(cpus) >= 4:
        a, b, c, d = cpus[:4]
        return Layout(
            {a},
            {b},
            ({c}, {d}),
            f"load generator and this script on CPU {a}, origin on CPU {b}, "
            f"first proxy on CPU {c}, second on CPU {d} (sched_setaffinity)",
        )
    a, b = cpus[:2]
    return Layout(
        {a},
        {a},
        ({b}, {b}),
        f"CPU {a}: load generator (wrk or openloop), origin and this script; "
        f"CPU {b}: both proxies of the path under test (sched_setaffinity). "
        f"So each pair gets one core between its two proxies",
    )


# -- load ---------------------------------------------------------------------


def _run_client(argv: list[str], cpus: Cpus, timeout: float) -> tuple[str, float]:
    """Run a load generator to its end; its stdout and its CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: child_setup(cpus),
    ) as popen:
        try:
            out, err = popen.communicate(timeout=timeout)
        except BaseException:
            popen.kill()
            popen.wait()
            raise
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if popen.returncode != 0:
        raise Failed(f"{argv[0]} failed ({popen.returncode}): {err.decode(errors='replace')}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out.decode(), cpu


def run_wrk(port: int, seconds: float, connections: int, cpus: Cpus) -> dict[str, Any]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    argv += ["-H", f"Host: {HOST}", f"http://127.0.0.1:{port}/"]
    out, cpu = _run_client(argv, cpus, seconds + 30)
    requests = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if requests is None or rps is None:
        raise Failed(f"cannot read wrk's output:\n{out}")
    latency = {
        f"p{m[1]}": _to_ms(float(m[2]), m[3])
        for m in re.finditer(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)", out, re.M)
    }
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return {
        "rps": float(rps[1]),
        "requests": int(requests[1]),
        "connections": connections,
        "latency_ms": latency,
        "errors": (int(non2xx[1]) if non2xx else 0)
        + (sum(int(g) for g in sockets.groups()) if sockets else 0),
        "load_cpu_s": cpu,
    }


def _to_ms(value: float, unit: str) -> float:
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_openloop(port: int, args: argparse.Namespace, cpus: Cpus) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH / "openloop.py"), f"http://127.0.0.1:{port}/"]
    argv += [f"--rate={args.rate:g}", f"--duration={args.rate_duration:g}", "--warmup=2"]
    argv += [f"--connections={args.rate_connections}", f"--host={HOST}"]
    out, cpu = _run_client(argv, cpus, args.rate_duration + 40)
    result: dict[str, Any] = json.loads(out)
    result["process_cpu_s"] = cpu
    return result


# -- one path -----------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Clock:
    """CPU seconds used so far: by the whole machine (busy, and stolen by the hypervisor),
    by this script, and by each process of the path under test."""

    wall: float
    busy: float
    steal: float
    self_cpu: float
    procs: dict[str, float]

    @classmethod
    def read(cls, procs: list[Proc]) -> Clock:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = values
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            wall=time.monotonic(),
            busy=(user + nice + system + irq + softirq) / CLK_TCK,
            steal=steal / CLK_TCK,
            self_cpu=usage.ru_utime + usage.ru_stime,
            procs={p.name: p.cpu_seconds() for p in procs},
        )

    def since(self, before: Clock, client_cpu: float) -> dict[str, float]:
        """Per process, CPU seconds in the interval; ``other``: the machine's busy time
        not accounted for by them, this script and the load generator (``client_cpu``)."""
        used = {name: cpu - before.procs[name] for name, cpu in self.procs.items()}
        ours = sum(used.values()) + client_cpu + (self.self_cpu - before.self_cpu)
        return used | {
            "wall": self.wall - before.wall,
            "other": max(0.0, (self.busy - before.busy) - ours),
            "steal": self.steal - before.steal,
        }


def measure(
    label: str,
    port: int,
    proxies: list[Proc],
    origin: Proc,
    args: argparse.Namespace,
    layout: Layout,
) -> PathResult:
    check_path(label, port)
    watched = [*proxies, origin]
    idle = {p.name: p.memory_kb() for p in proxies}
    print(f"  {label}: {args.rate:g} req/s for {args.rate_duration:g} s ...", flush=True)
    t0 = Clock.read(watched)
    fixed = run_openloop(port, args, layout.load)
    t1 = Clock.read(watched)
    print(f"  {label}: saturation for {args.sat_duration:g} s ...", flush=True)
    sat = run_wrk(port, args.sat_duration, args.sat_connections, layout.load)
    t2 = Clock.read(watched)
    result = PathResult(
        label,
        [p.name for p in proxies],
        fixed,
        sat,
        cpu_fixed=t1.since(t0, fixed["process_cpu_s"]) | {"client": fixed["process_cpu_s"]},
        cpu_sat=t2.since(t1, sat["load_cpu_s"]) | {"client": sat["load_cpu_s"]},
    )
    for p in proxies:
        after = p.memory_kb()
        result.memory[p.name] = {
            "rss_idle_kb": idle[p.name].get("VmRSS", 0),
            "rss_after_kb": after.get("VmRSS", 0),
            "hwm_kb": after.get("VmHWM", 0),
        }
    return result


# -- main ---------------------------------------------------------------------


def _output(argv: list[str]) -> str:
    """What a command prints, or "" if it cannot run or fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _describe(args: argparse.Namespace) -> list[str]:
    commit = _output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]) or "?"
    if _output(["git", "-C", str(REPO), "status", "--porcelain", "--", "proxy"]):
        commit += " + uncommitted changes in proxy/"
    hap = _output(["haproxy", "-v"]).split()
    if args.sidecar == "rust":
        try:
            program = sidecar_program(args)
        except DevmeshError as exc:
            raise Missing(str(exc)) from None
        sidecar = f"the Rust sidecar, {program[0]}"
    else:
        probe = _output([args.sidecar_python, "-c", SIDECAR_PYTHON_PROBE])
        if not probe:
            raise Missing(f"{args.sidecar_python} cannot import httptools (for the sidecars)")
        sidecar = f"{args.sidecar_python}: {probe}"
    telemetry = (
        "drained every 100 ms by a stand-in control plane (bench/telemetry_sink.py)"
        if args.telemetry == "sink"
        else "control plane unreachable (a closed port): records wait in each sidecar's buffer"
    )
    return [
        f"devmesh {commit}; {os.cpu_count()} CPUs ({platform.machine()}); "
        f"HAProxy {hap[2] if len(hap) > 2 else '?'}; wrk",
        f"sidecars: {sidecar}",
        f"sidecar telemetry: {telemetry}",
        "route policy of origin: "
        + (
            "timeout, retries (per-try timeout), outlier detection, pool limits, round robin; "
            "no fault"
            if args.route_policy == "full"
            else "none given (the sidecar's defaults)"
        ),
        f"origin: HAProxy, 1 thread, answers 200 with a fixed {len(BODY)}-byte body itself "
        "(http-request return), keep-alive",
    ]


SIDECAR_PYTHON_PROBE = (
    "import platform, httptools; "
    "print('Python', platform.python_version(), 'httptools', httptools.__version__)"
)


def run(args: argparse.Namespace, procs: Processes, layout: Layout) -> dict[str, PathResult]:
    """Measure the three paths (direct, HAProxy pair, sidecar pair), ``--rounds`` times in
    turn; each pair is started afresh for each round and stopped after it."""
    origin, origin_port = start_origin(procs, layout.origin)
    rounds: dict[str, list[PathResult]] = {"direct": [], "sidecar": [], "haproxy": []}
    if args.mtls:
        rounds["mtls"] = []
    for number in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"round {number} of {args.rounds}", flush=True)
        rounds["direct"].append(measure("direct", origin_port, [], origin, args, layout))
        pair, port = start_haproxy_pair(procs, origin_port, layout.proxies)
        rounds["haproxy"].append(measure("haproxy pair", port, pair, origin, args, layout))
        for proc in pair:
            procs.stop(proc)
        rounds["sidecar"].append(measure_sidecars(procs, origin, origin_port, args, layout))
        if args.mtls:
            rounds["mtls"].append(
                measure_sidecars(procs, origin, origin_port, args, layout, mtls=True)
            )
    return {key: combine(results) for key, results in rounds.items()}


def sidecar_program(args: argparse.Namespace) -> tuple[str, ...]:
    """The program that runs a sidecar of the data plane ``--sidecar`` names."""
    env = {DATAPLANE_ENV: args.sidecar}
    if args.proxy_bin:
        env[PROXY_BIN_ENV] = args.proxy_bin
    return choose(env, crate_dir(), args.sidecar_python, Path.is_file).program


def measure_sidecars(
    procs: Processes,
    origin: Proc,
    origin_port: int,
    args: argparse.Namespace,
    layout: Layout,
    mtls: bool = False,
) -> PathResult:
    sink = None
    if args.telemetry == "sink":
        sink_port = free_port()
        sink = procs.start(
            "telemetry sink",
            [sys.executable, str(BENCH / "telemetry_sink.py"), str(sink_port)],
            layout.load,
        )
        wait_listening(sink, sink_port)
        control_plane = f"http://127.0.0.1:{sink_port}"
    else:
        control_plane = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    policy = FULL_POLICY if args.route_policy == "full" else None
    pair, port = start_sidecar_pair(
        procs, origin_port, control_plane, layout.proxies, sidecar_program(args), policy, mtls
    )
    label = "sidecar pair mTLS" if mtls else "sidecar pair"
    result = measure(label, port, pair, origin, args, layout)
    for proc in pair:
        procs.stop(proc)  # SIGTERM: each hands what it buffered to the sink, if there is one
    if sink is not None:
        procs.stop(sink)
        lines = sink.log.read_text().strip().splitlines()
        result.fixed["telemetry_received"] = json.loads(lines[-1])["records"] if lines else {}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/proxy_bench.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="fixed rate, req/s (1000)")
    parser.add_argument("--rate-duration", type=float, default=15.0, help="seconds (15)")
    parser.add_argument("--rate-connections", type=int, default=8, help="(8)")
    parser.add_argument("--sat-duration", type=float, default=10.0, help="seconds (10)")
    parser.add_argument("--sat-connections", type=int, default=16, help="(16)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every path this many times, in turn, and print the medians (1)",
    )
    parser.add_argument(
        "--pin",
        choices=["auto", "none"],
        default="auto",
        help="auto: pin load, origin and proxies to CPUs (default); none: don't",
    )
    parser.add_argument(
        "--telemetry",
        choices=["buffer", "sink"],
        default="buffer",
        help="buffer: control plane away, records buffered (default); "
        "sink: a stand-in control plane drains them",
    )
    parser.add_argument(
        "--route-policy",
        choices=["full", "default"],
        default="full",
        help="full: origin's route has a timeout, retries with a per-try timeout, outlier "
        "detection, pool limits and a balancer, no fault (default); default: no policy given",
    )
    parser.add_argument(
        "--sidecar-python",
        default=sys.executable,
        help="the interpreter that runs the sidecars (default: this one); it needs httptools",
    )
    parser.add_argument(
        "--sidecar",
        choices=["python", "rust"],
        default="python",
        help="which data plane the sidecar pair runs: python -m proxy (default), or the Rust "
        "sidecar's binary (proxy/target/release/devmesh-proxy: cargo build --release "
        "--manifest-path proxy/Cargo.toml)",
    )
    parser.add_argument("--proxy-bin", help="the Rust sidecar's binary, if not the crate's own")
    parser.add_argument(
        "--mtls",
        action="store_true",
        help="also measure the sidecar pair over mTLS (origin strict), and print what mTLS "
        "adds over the same pair without it",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    if not (
        0 < args.rate_duration <= 120
        and 0 < args.sat_duration <= 120
        and 0 < args.rate <= 20000
        and 1 <= args.rounds <= 5
    ):
        parser.error(
            "durations must be in (0, 120] s, the rate in (0, 20000] req/s, rounds from 1 to 5"
        )

    try:
        check_requirements()
    except Missing as exc:
        print(f"proxy_bench: {exc}", file=sys.stderr)
        return 2

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    layout = cpu_layout(args.pin)
    if layout.load:
        os.sched_setaffinity(0, layout.load)
    try:
        header = _describe(args)
    except Missing as exc:
        print(f"proxy_bench: {exc}", file=sys.stderr)
        return 2
    print("devmesh proxy benchmark: direct vs sidecar pair vs HAProxy pair, on loopback")
    print("\n".join([*header, f"CPUs: {layout.text}"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="devmesh-proxy-bench-") as tmp:
        procs = Processes(Path(tmp))
        try:
            results = run(args, procs, layout)
        except Failed as exc:
            print(f"proxy_bench: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nproxy_bench: interrupted; stopping what it started", file=sys.stderr)
            return 130
        finally:
            with contextlib.suppress(KeyboardInterrupt):
                procs.stop_all()
    ordered = [results["direct"], results["sidecar"], results["haproxy"]]
    for part in (report_fixed, report_saturation, report_resources, report_targets):
        print("\n".join(part(ordered, args)))
    if "mtls" in results:
        print("\n".join(report_mtls(results["direct"], results["sidecar"], results["mtls"], args)))
    received = results["sidecar"].fixed.get("telemetry_received")
    if received is not None:
        print(f"telemetry records the stand-in control plane received: {received}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"json": str(args.json)},
                    "header": header,
                    "layout": layout.text,
                    "results": {k: asdict(v) for k, v in results.items()},
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
