"""The Rust sidecar's own tests (`cargo test` in proxy/), run by the same `pytest` as the rest.

One command runs every test of the project. The crate's unit tests check its
pure decisions on a paused clock; this test fails with cargo's own report when
one of them fails, or when the crate does not build.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CRATE = Path(__file__).resolve().parent.parent / "proxy"


@pytest.mark.timeout(1200)  # a first build of the crate and its dependencies
def test_cargo_test_passes() -> None:
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.fail("cargo is not on PATH: install Rust (https://rustup.rs) to build proxy/")
    result = subprocess.run(
        [cargo, "test", "--manifest-path", str(CRATE / "Cargo.toml"), "--color", "never"],
        capture_output=True,
        text=True,
        check=False,
    )
    report = result.stdout + result.stderr
    if result.returncode != 0:
        failed = re.findall(r"^test (\S+) \.\.\. FAILED$", report, flags=re.MULTILINE)
        what = f"these failed: {', '.join(failed)}" if failed else "see cargo's output below"
        pytest.fail(f"cargo test in proxy/ failed, {what}\n\n{report[-20000:]}", pytrace=False)
    counts = [int(n) for n in re.findall(r"^test result: ok\. (\d+) passed", report, re.M)]
    assert counts, f"cargo test printed no result line:\n{report[-5000:]}"
