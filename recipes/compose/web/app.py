"""web: calls api by name and answers JSON with what api said. Standard library only.

Listens on 0.0.0.0:8000 (or $PORT); finds api at $API_URL (http://api:8000).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

API_URL = os.environ.get("API_URL", "http://api:8000")


def ask_api() -> tuple[int, Any]:
    url = f"{API_URL}/hello"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return 200, {"service": "web", "api": json.loads(response.read())}
    except urllib.error.HTTPError as exc:
        return 502, {"service": "web", "error": f"{url} answered {exc.code}"}
    except (OSError, ValueError) as exc:
        return 502, {"service": "web", "error": f"{url} could not be called: {exc}"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a proxy in front can reuse connections
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle holds the
    # body back until the peer's delayed ACK (40 ms) on a kept-alive connection.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            self.reply(200, {"status": "ok"})
        elif path == "/":
            self.reply(*ask_api())
        else:
            self.reply(404, {"error": f"web has no {path}"})

    def reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop at once as PID 1 in a container
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler)
    server.daemon_threads = True
    print(f"web listening on 0.0.0.0:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
