"""The little HTTP plumbing the shop's services share. Standard library only.

Each service listens on $HOST:$PORT (127.0.0.1:8000 by default) and calls the
others by name, e.g. ``http://pricing/prices``: the mesh's sidecar (through
HTTP_PROXY, or transparently) routes the call.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Route = Callable[[dict[str, list[str]]], tuple[int, Any]]

TRACE_HEADERS = ("traceparent", "tracestate", "x-request-id")
"""What a service passes on from the request it serves to the calls it makes, so that the
mesh can join them into one trace (the one thing a mesh asks of an app)."""
_serving = threading.local()


class UpstreamError(Exception):
    def __init__(self, url: str, status: int, detail: str) -> None:
        super().__init__(f"{url}: {status} {detail}")
        self.status = status


def call(url: str) -> Any:
    """GET ``url`` and decode its JSON; raises UpstreamError on any failure."""
    passed_on = getattr(_serving, "trace_headers", {})
    try:
        request = urllib.request.Request(url, headers=passed_on)
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise UpstreamError(url, exc.code, exc.read().decode("utf-8", "replace")) from exc
    except (OSError, ValueError) as exc:
        raise UpstreamError(url, 502, str(exc)) from exc


class Breakage:
    """A real failure to demonstrate the mesh's breaker with: ``POST /admin/fail?seconds=30``
    makes every answer but the health check a 500 for that long; ``POST /admin/heal`` ends it.
    (An injected fault is the mesh's, and does not open a breaker: this is the service's.)"""

    def __init__(self) -> None:
        self.until = 0.0

    def admin(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        if path == "/admin/fail":
            seconds = float(query.get("seconds", ["30"])[0])
            self.until = time.monotonic() + seconds
            return 200, {"failing_for": seconds}
        if path == "/admin/heal":
            self.until = 0.0
            return 200, {"failing_for": 0}
        return 404, {"error": f"no {path}"}

    @property
    def broken(self) -> bool:
        return time.monotonic() < self.until


def serve(name: str, routes: dict[str, Route]) -> None:
    routes = {"/healthz": lambda query: (200, {"status": "ok"}), **routes}
    breakage = Breakage()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so the sidecar can pool connections
        # Headers and body go out in two writes; without TCP_NODELAY, Nagle holds the
        # body back until the peer's delayed ACK (40 ms) on a kept-alive connection.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.answer(*breakage.admin(url.path, parse_qs(url.query)))

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            _serving.trace_headers = {
                name: self.headers[name] for name in TRACE_HEADERS if name in self.headers
            }
            route = routes.get(url.path)
            if breakage.broken and url.path != "/healthz":
                status, body = 500, {"error": f"{name} is broken (POST /admin/heal mends it)"}
            elif route is None:
                status, body = 404, {"error": f"{name} has no {url.path}"}
            else:
                try:
                    status, body = route(parse_qs(url.query))
                except UpstreamError as exc:
                    status, body = 502, {"error": f"{name} could not call {exc}"}
            self.answer(status, body)

        def answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            if not self.path.startswith("/healthz"):  # the sidecar probes it every second
                sys.stderr.write(f"{name}: {format % args}\n")

    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    print(f"{name} listening on {host}:{port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
