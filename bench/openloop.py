"""An open-loop HTTP/1.1 load generator: requests leave on schedule, whatever the answers do.

    python bench/openloop.py URL [--rate 1000] [--duration 15] [--warmup 2] [--connections 8]
                             [--host NAME]

Request ``i`` is due at ``start + i / rate``. A pacer sends every request that
is due on an idle keep-alive connection (round robin over ``--connections``),
or queues it until one is free, so a slow server makes requests wait instead of
slowing the schedule down (no coordinated omission, as wrk2). Prints one JSON
object on stdout:

* ``latency_ms``: from the moment a request is written to the moment its last
  byte is read, p50/p90/p99/p999/max; what the path under test costs, plus this
  generator's own read/parse overhead (the same on every path: measure a direct
  path to see it);
* ``from_due_ms``: the same, counted from when the request was due (includes
  any wait for a free connection and the pacer's lateness);
* ``send_lag_ms``: how late requests left, their due time to their write: the
  pacer wakes from epoll with 1 ms resolution, so about 0-1 ms here is the
  generator itself; more means every connection was busy;
* ``cpu_s``: this process's own CPU time over the measured window;
* ``failures``: the first requests that did not get a 2xx (``at_s``: when each
  was due, from the start; ``what``: its status, or why it got none), so that
  a test under load can say when things went wrong.

Only the standard library: a raw ``asyncio.Protocol`` client with a minimal
response parser (Content-Length or chunked), no HTTP library in the way.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import time
from array import array
from collections import deque
from urllib.parse import urlsplit

DRAIN_TIMEOUT = 5.0
"""How long to wait for the answers still due after the last request has left."""
MAX_FAILURES_KEPT = 50


class _ParseError(Exception):
    pass


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.index = -1
        """The request in flight on this connection, or -1."""
        self.status = 0
        self.body_left = -1
        """Bytes of body still to read; -1: reading the head; -2: reading chunks."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.index >= 0:
            index, self.index = self.index, -1
            self.gen.failed(self, index, "connection lost mid-response")
        self.gen.lost(self)

    def send(self, index: int) -> None:
        assert self.transport is not None
        self.index = index
        self.body_left = -1
        self.gen.sent[index] = time.perf_counter()
        self.transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            while self.index >= 0 and self._advance():
                pass
        except _ParseError as exc:
            index, self.index = self.index, -1
            if self.transport is not None:
                self.transport.abort()
                self.transport = None
            self.gen.failed(self, index, str(exc))

    def _advance(self) -> bool:
        """Consume what the buffer holds of the response in flight; True when one completed
        (so the next, pipelined by nobody, may start) and there is more to look at."""
        if self.body_left == -1:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = bytes(self.buf[:end]).split(b"\r\n")
            del self.buf[: end + 4]
            try:
                self.status = int(head[0].split(b" ", 2)[1])
            except (IndexError, ValueError) as exc:
                raise _ParseError(f"bad status line {head[0][:60]!r}") from exc
            length, chunked = 0, False
            for line in head[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            self.body_left = -2 if chunked else length
        if self.body_left == -2:
            return self._advance_chunks()
        if len(self.buf) < self.body_left:
            return False
        del self.buf[: self.body_left]
        self._done()
        return bool(self.buf)

    def _advance_chunks(self) -> bool:
        while True:
            end = self.buf.find(b"\r\n")
            if end < 0:
                return False
            try:
                size = int(bytes(self.buf[:end]).split(b";")[0], 16)
            except ValueError as exc:
                raise _ParseError("bad chunk size") from exc
            if size == 0:
                trailer_end = self.buf.find(b"\r\n\r\n", end)
                if trailer_end < 0:
                    return False
                del self.buf[: trailer_end + 4]
                self._done()
                return bool(self.buf)
            if len(self.buf) < end + 2 + size + 2:
                return False
            del self.buf[: end + 2 + size + 2]

    def _done(self) -> None:
        index, self.index = self.index, -1
        self.gen.completed(self, index, self.status)


class Generator:
    def __init__(self, host: str, port: int, path: str, host_header: str, rate: float) -> None:
        self.host, self.port = host, port
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\n\r\n".encode()
        self.rate = rate
        self.sent = array("d")
        self.done = array("d")
        self.status: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.failures: list[tuple[int, str]] = []
        """(request index, what went wrong), for the first ``MAX_FAILURES_KEPT``."""
        self.idle: deque[Connection] = deque()
        self.waiting: deque[int] = deque()
        self.outstanding = 0
        self.all_done: asyncio.Event | None = None
        self.conns: list[Connection] = []
        self.tasks: set[asyncio.Future[None]] = set()
        self.reconnects = 0
        self.closing = False

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: Connection(self), self.host, self.port)
        self.conns.append(conn)
        return conn

    def lost(self, conn: Connection) -> None:
        """A connection closed (the server's choice, or after an error): open another."""
        if conn in self.idle:
            self.idle.remove(conn)
        if conn in self.conns:
            self.conns.remove(conn)
        if not self.closing:
            self.reconnects += 1
            task = asyncio.ensure_future(self._replace())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _replace(self) -> None:
        try:
            conn = await self.connect()
        except OSError as exc:
            self.errors[f"reconnect: {exc}"] = self.errors.get(f"reconnect: {exc}", 0) + 1
            return
        self._next(conn, finished=False)

    def dispatch(self, index: int) -> None:
        self.outstanding += 1
        if self.idle:
            self.idle.popleft().send(index)
        else:
            self.waiting.append(index)

    def completed(self, conn: Connection, index: int, status: int) -> None:
        self.done[index] = time.perf_counter()
        self.status[status] = self.status.get(status, 0) + 1
        if not 200 <= status < 300:
            self._keep_failure(index, str(status))
        self._next(conn)

    def failed(self, conn: Connection, index: int, why: str) -> None:
        self.errors[why] = self.errors.get(why, 0) + 1
        self._keep_failure(index, why)
        self.done[index] = -1.0
        if conn.transport is not None:
            self._next(conn)
        else:
            self._finished()

    def _keep_failure(self, index: int, what: str) -> None:
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append((index, what))

    def _next(self, conn: Connection, finished: bool = True) -> None:
        if finished:
            self._finished()
        if self.waiting:
            conn.send(self.waiting.popleft())
        else:
            self.idle.append(conn)

    def _finished(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0 and self.all_done is not None:
            self.all_done.set()

    async def run(self, total: int, connections: int) -> float:
        """Send ``total`` requests on schedule; returns the schedule's start time."""
        self.sent = array("d", bytes(8 * total))
        self.done = array("d", bytes(8 * total))
        for _ in range(connections):
            self.idle.append(await self.connect())
        interval = 1.0 / self.rate
        start = time.perf_counter() + 0.01
        index = 0
        while index < total:
            now = time.perf_counter()
            while index < total and start + index * interval <= now:
                self.dispatch(index)
                index += 1
            if index < total:
                await asyncio.sleep(start + index * interval - now)
        self.all_done = asyncio.Event()
        if self.outstanding:
            try:
                await asyncio.wait_for(self.all_done.wait(), DRAIN_TIMEOUT)
            except TimeoutError:
                self.errors["no answer in time"] = self.outstanding
        self.closing = True
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.close()
        return start


def percentiles(values: list[float]) -> dict[str, float]:
    """Nearest-rank percentiles, in milliseconds (``values`` in seconds)."""
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)

    def rank(p: float) -> float:
        return ordered[min(n - 1, max(0, int(p / 100.0 * n + 0.999999) - 1))] * 1000.0

    return {
        "p50": rank(50),
        "p90": rank(90),
        "p99": rank(99),
        "p999": rank(99.9),
        "max": ordered[-1] * 1000.0,
        "mean": sum(ordered) / n * 1000.0,
    }


async def measure(args: argparse.Namespace) -> dict[str, object]:
    url = urlsplit(args.url)
    gen = Generator(
        url.hostname or "127.0.0.1",
        url.port or 80,
        url.path or "/",
        args.host or url.netloc,
        args.rate,
    )
    warm = int(args.warmup * args.rate)
    total = warm + int(args.duration * args.rate)
    gc.collect()
    gc.freeze()
    gc.disable()  # no collector pauses in the client's own timings
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = await gen.run(total, args.connections)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    gc.enable()
    interval = 1.0 / args.rate
    service, from_due, lag = [], [], []
    for i in range(warm, total):
        done = gen.done[i]
        if done <= 0.0:
            continue
        due = start + i * interval
        service.append(done - gen.sent[i])
        from_due.append(done - due)
        lag.append(gen.sent[i] - due)
    last = max(gen.done[total - 1], gen.sent[total - 1], start + total * interval)
    window = last - (start + warm * interval)
    return {
        "requests_total": total,
        "requests_measured": total - warm,
        "completed": len(service),
        "achieved_rps": len(service) / window if window > 0 else 0.0,
        "rate": args.rate,
        "connections": args.connections,
        "status": {str(k): v for k, v in sorted(gen.status.items())},
        "errors": gen.errors,
        "reconnects": gen.reconnects,
        "latency_ms": percentiles(service),
        "from_due_ms": percentiles(from_due),
        "send_lag_ms": percentiles(lag),
        "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "wall_s": time.perf_counter() - start,
        "failures": [
            {"at_s": round(index * interval, 3), "what": what} for index, what in gen.failures
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/openloop.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("url", help="e.g. http://127.0.0.1:8080/")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds sent, not measured")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--host", help="Host header (default: the URL's)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.connections < 1:
        parser.error("--rate, --duration and --connections must be positive")
    try:
        result = asyncio.run(measure(args))
    except OSError as exc:
        print(f"openloop: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
