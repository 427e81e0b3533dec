"""The processes of bench/proxy_bench.py: the origin, the HAProxy pair and the sidecar pair.

Every process is started through ``Processes``, which stops them all at the end
(TERM, then KILL); each child also gets SIGTERM if the benchmark itself dies
(PR_SET_PDEATHSIG) and runs in its own session, so a Ctrl-C reaches the
benchmark alone, which then stops them in order. ``cpus`` pins a child with
``sched_setaffinity`` before it runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BODY = (
    "devmesh bench origin: one fixed answer of a hundred bytes, the same for every path. "
    + "0" * 16
)
assert len(BODY) == 100
HOST = "origin"
PR_SET_PDEATHSIG = 1


class Failed(Exception):
    """A process did not start or a path does not answer as it should."""


# -- processes ----------------------------------------------------------------


def child_setup(cpus: set[int] | None) -> None:
    """In the child, before exec: die with the benchmark (PR_SET_PDEATHSIG), run where told."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if cpus:
        os.sched_setaffinity(0, cpus)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        """utime + stime so far, from /proc/PID/stat (clock ticks)."""
        fields = self._proc_file("stat").rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_kb(self) -> dict[str, int]:
        """VmRSS (resident now) and VmHWM (peak resident), in kB."""
        out = {}
        for line in self._proc_file("status").splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
        return out

    def _proc_file(self, name: str) -> str:
        if self.popen.poll() is None:
            try:
                return Path(f"/proc/{self.pid}/{name}").read_text()
            except OSError:
                pass
        raise Failed(f"{self.name} exited ({self.popen.poll()}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Processes:
    """Every process the benchmark starts; ``stop_all`` ends them (TERM, then KILL)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: list[Proc] = []

    def start(self, name: str, argv: list[str], cpus: set[int] | None) -> Proc:
        log = self.workdir / f"{name.replace(' ', '-')}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,  # a Ctrl-C reaches this script only, which stops it
                preexec_fn=lambda: child_setup(cpus),
            )
        proc = Proc(name, popen, log)
        self.running.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 5.0) -> None:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(proc: Proc, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.popen.poll() is not None:
            raise Failed(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if time.monotonic() > deadline:
            raise Failed(f"{proc.name} not listening on {port} after {timeout}s")
        time.sleep(0.02)


def check_path(name: str, port: int) -> None:
    """One GET with ``Host: origin``: it must come back 200 with the origin's body."""
    with socket.create_connection(("127.0.0.1", port), 5.0) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 200 " not in status + " " or body != BODY.encode():
        raise Failed(f"{name}: expected 200 with the origin's body, got {status!r}: {body[:200]!r}")


# -- the paths ----------------------------------------------------------------

HAPROXY_COMMON = """\
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
"""


def start_haproxy(procs: Processes, name: str, body: str, cpus: set[int] | None) -> Proc:
    config = procs.workdir / f"{name.replace(' ', '-')}.cfg"
    config.write_text(HAPROXY_COMMON + body)
    check = subprocess.run(["haproxy", "-c", "-q", "-f", str(config)], capture_output=True)
    if check.returncode != 0:
        raise Failed(f"haproxy rejects {config}: {check.stderr.decode(errors='replace')}")
    # -db: foreground, no master process: the pid is the one worker.
    return procs.start(name, ["haproxy", "-db", "-f", str(config)], cpus)


def start_origin(procs: Processes, cpus: set[int] | None) -> tuple[Proc, int]:
    port = free_port()
    body = (
        f"frontend origin\n    bind 127.0.0.1:{port}\n"
        f'    http-request return status 200 content-type text/plain string "{BODY}"\n'
    )
    proc = start_haproxy(procs, "origin", body, cpus)
    wait_listening(proc, port)
    return proc, port


def start_haproxy_pair(
    procs: Processes, origin_port: int, cpus: tuple[set[int] | None, set[int] | None]
) -> tuple[list[Proc], int]:
    front_port, back_port = free_port(), free_port()
    back = start_haproxy(
        procs,
        "haproxy in",
        f"frontend in\n    bind 127.0.0.1:{back_port}\n    default_backend app\n"
        f"backend app\n    http-reuse safe\n    server origin 127.0.0.1:{origin_port}\n",
        cpus[1],
    )
    front = start_haproxy(
        procs,
        "haproxy out",
        f"frontend out\n    bind 127.0.0.1:{front_port}\n    default_backend next\n"
        f"backend next\n    http-reuse safe\n    server in 127.0.0.1:{back_port}\n",
        cpus[0],
    )
    wait_listening(back, back_port)
    wait_listening(front, front_port)
    return [front, back], front_port


FULL_POLICY: dict[str, Any] = {
    "timeout": 15.0,
    "retries": {"attempts": 2, "per_try_timeout": 5.0, "retry_on": ["5xx", "connect-failure"]},
    "outlier": {
        "consecutive_5xx": 5,
        "interval": 10.0,
        "base_ejection_time": 30.0,
        "max_ejection_time": 300.0,
        "max_ejection_percent": 10.0,
    },
    "pool": {"max_connections": 1024, "max_pending": 1024, "max_requests": 1024},
    "lb": "round-robin",
}
"""The route policy of ``origin`` with every feature on and no fault: a route timeout,
retries with a per-try timeout, outlier detection, pool limits, a balancer."""


def sidecar_snapshot(
    inbound_address: str, policy: dict[str, Any] | None, mtls: bool = False
) -> dict[str, Any]:
    """The snapshot both sidecars start from, in wire form: ``origin`` is one endpoint,
    the inbound sidecar; ``policy`` is its route policy (``None``: the sidecar's defaults);
    ``mtls``: origin is mTLS strict (else the default, permissive, which without
    identities is plaintext)."""
    route: dict[str, Any] = {
        "endpoints": [{"instance": "origin-1", "version": "v1", "address": inbound_address}]
    }
    if policy is not None:
        route["policy"] = policy
    if mtls:
        route["mtls"] = "strict"
    return {"version": 1, "routes": {HOST: route}}


def start_sidecar_pair(
    procs: Processes,
    origin_port: int,
    control_plane: str,
    cpus: tuple[set[int] | None, set[int] | None],
    program: tuple[str, ...] = (sys.executable, "-m", "proxy"),
    policy: dict[str, Any] | None = FULL_POLICY,
    mtls: bool = False,
) -> tuple[list[Proc], int]:
    """Start the inbound sidecar (of ``origin``), then the outbound one (of ``bench-client``)
    with ``program`` (``python -m proxy``, run in the repository so that it imports this
    checkout's ``proxy``, or the Rust sidecar's binary) and ``--bootstrap FILE``;
    returns them (first hop first) and the outbound listener's port. With ``mtls``, each
    starts with an identity of a throwaway CA kept in its state folder, as a sidecar
    restarted without its control plane does, and they talk mTLS."""
    from devmesh.pki import CertificateAuthority
    from proxy.bootstrap import Bootstrap
    from proxy.identity import IdentityStore
    from proxy.snapshot import SnapshotError, parse_snapshot, save_snapshot

    ca = CertificateAuthority.create("bench", time.time()) if mtls else None

    token = procs.workdir / "token"
    token.write_text("bench-token\n")
    token.chmod(0o600)
    inbound_port = free_port()
    wire = sidecar_snapshot(f"127.0.0.1:{inbound_port}", policy, mtls)
    try:
        snapshot = parse_snapshot(wire)  # the sidecar's own validation: fail here, not there
    except SnapshotError as exc:
        raise Failed(f"this checkout's sidecar rejects the benchmark's snapshot: {exc}") from None
    started = []
    for name, service, app_port, port, cpu in (
        ("sidecar in", "origin", origin_port, inbound_port, cpus[1]),
        ("sidecar out", "bench-client", None, 0, cpus[0]),
    ):
        root = procs.workdir / name.replace(" ", "-")
        boot = Bootstrap(
            service=service,
            version="v1",
            instance=f"{service}-1",
            control_plane=control_plane,
            token_file=token,
            state_dir=root / "state",
            inbound_port=port,
            app_port=app_port,
            ready_file=root / "ready.json",
        )
        save_snapshot(snapshot, boot.snapshot_file)  # the last good one: it starts from it
        if ca is not None:
            identity = ca.issue("bench", service, time.time())
            IdentityStore(boot.state_dir / "identity").install(identity.to_wire())
        assert boot.ready_file is not None
        boot.ready_file.unlink(missing_ok=True)
        (root / "bootstrap.json").write_text(json.dumps(boot.to_dict()))
        argv = [*program, "--bootstrap", str(root / "bootstrap.json")]
        started.append((procs.start(name, argv, cpu), boot))
    ports = {}
    for proc, boot in started:
        ports[proc.name] = _wait_ready_file(proc, boot.ready_file)
    return [started[1][0], started[0][0]], ports["sidecar out"]["outbound"]


def _wait_ready_file(proc: Proc, path: Path | None, timeout: float = 15.0) -> dict[str, Any]:
    assert path is not None
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.popen.poll() is not None:
            raise Failed(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            raise Failed(f"{proc.name} not ready after {timeout}s:\n{proc.log_tail()}")
        time.sleep(0.02)
    ready: dict[str, Any] = json.loads(path.read_text())
    return ready
