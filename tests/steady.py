"""Steady traffic for end-to-end tests: ``bench/openloop.py`` in the background.

Requests leave on schedule (open loop) whatever the answers do, and every one
is counted: a test asserts on how many did not get a 2xx, and its failure
message says when and what (the first ones, each with the second it was due).
The generator stops by itself after its duration.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

OPENLOOP = Path(__file__).resolve().parents[1] / "bench" / "openloop.py"


@dataclass(frozen=True)
class LoadResult:
    sent: int
    status: dict[str, int]
    errors: dict[str, int]
    failures: list[dict[str, Any]]
    latency_ms: dict[str, float]

    @property
    def ok(self) -> int:
        return sum(n for code, n in self.status.items() if code.startswith("2"))

    @property
    def failed(self) -> int:
        return self.sent - self.ok

    def describe(self) -> str:
        first = ", ".join(f"{f['what']} at {f['at_s']:.1f}s" for f in self.failures[:10])
        return (
            f"{self.failed} of {self.sent} requests failed (statuses {self.status}, "
            f"errors {self.errors}; first: {first or 'none'})"
        )


class SteadyLoad:
    """``rate`` requests a second to ``url`` for ``seconds``, on 8 keep-alive connections."""

    def __init__(self, url: str, seconds: float, rate: float = 100.0) -> None:
        self.url = url
        self.seconds = seconds
        self.rate = rate
        self.began = 0.0
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> SteadyLoad:
        argv = [sys.executable, str(OPENLOOP), self.url, "--rate", str(self.rate)]
        argv += ["--duration", str(self.seconds), "--warmup", "0", "--connections", "8"]
        self._process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.began = time.monotonic()
        return self

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def wait_until(self, second: float) -> None:
        """Block until the load has run ``second`` seconds (a point in its schedule)."""
        left = second - self.elapsed()
        if left > 0:
            time.sleep(left)

    def result(self) -> LoadResult:
        """Wait for the generator to finish (it stops by itself) and read its figures."""
        assert self._process is not None
        out, err = self._process.communicate(timeout=self.seconds + 60)
        assert self._process.returncode == 0, f"the load generator failed: {err}"
        data = json.loads(out)
        return LoadResult(
            sent=int(data["requests_total"]),
            status=dict(data["status"]),
            errors=dict(data["errors"]),
            failures=list(data["failures"]),
            latency_ms=dict(data["latency_ms"]),
        )

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
