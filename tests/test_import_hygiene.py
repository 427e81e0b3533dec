"""The boundaries between the three parts hold (see DESIGN.md, "Dependency direction").

* ``proxy/`` imports only the standard library, httptools, multidict and uvloop: it
  ships alone in the sidecar image, and never loads aiohttp (whose import alone
  would be most of a sidecar's memory).
* ``tui/`` reaches the mesh only through the control plane's API client, and shares with
  the CLI only its pure modules: how what a user types is read (``devmesh.forms``,
  ``devmesh.units``), the API's payloads, the errors and the trace tree. It never
  imports aiohttp: the client turns every failure into a ``DevmeshError``.
* ``devmesh.forms`` and ``devmesh.units`` are pure: importing them loads no framework.
* ``devmesh/`` never imports the TUI.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
SIDECAR_PACKAGES = {"httptools", "multidict", "uvloop"}


def imports_of(package: str) -> dict[str, set[str]]:
    """Top-level-qualified module names imported by each file of ``package``."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_proxy_imports_only_the_standard_library_and_its_three_packages() -> None:
    for path, names in imports_of("proxy").items():
        allowed = STDLIB | SIDECAR_PACKAGES | {"proxy"}
        foreign = {n for n in names if n.split(".")[0] not in allowed}
        assert not foreign, f"{path} imports {sorted(foreign)}"


TUI_MAY_IMPORT = {
    "devmesh.client",
    "devmesh.errors",
    "devmesh.forms",
    "devmesh.payloads",
    "devmesh.statetext",
    "devmesh.tracetree",
    "devmesh.units",
}
"""What of devmesh the TUI may import (``devmesh.forms``: with its modules): the API's
client and payloads, and the pure modules that parse and word what the CLI does too."""
FRAMEWORKS = ("aiohttp", "docker", "rich", "textual", "typer")
FORMS_MAY_IMPORT = {
    "devmesh.config.dump",
    "devmesh.config.model",
    "devmesh.config.report",
    "devmesh.errors",
    "devmesh.units",
}
"""The pure modules of devmesh the forms build on (the config's model, its words). Importing
them runs ``devmesh.config``'s package, which loads PyYAML and the config's readers: a
parser, no framework and no I/O at import; the forms check values by the config's own
lists (``LB_POLICIES``, ``RETRY_ON_VALUES``) rather than keep copies."""


def allowed_in_tui(name: str) -> bool:
    return name in TUI_MAY_IMPORT or name.startswith("devmesh.forms.")


def test_tui_talks_to_the_mesh_only_through_the_api_client_and_the_pure_modules() -> None:
    for path, names in imports_of("tui").items():
        ours = {n for n in names if n.split(".")[0] in {"devmesh", "proxy"}}
        foreign = {n for n in ours if not allowed_in_tui(n)}
        assert not foreign, f"{path} imports {sorted(foreign)}"


def test_tui_never_imports_aiohttp() -> None:
    for path, names in imports_of("tui").items():
        assert not {n for n in names if n.split(".")[0] == "aiohttp"}, path


def test_the_forms_import_only_the_standard_library_and_pure_modules() -> None:
    for path, names in imports_of("devmesh/forms").items():
        foreign = {
            n
            for n in names
            if n.split(".")[0] not in STDLIB
            and n not in FORMS_MAY_IMPORT
            and not n.startswith("devmesh.forms.")
        }
        assert not foreign, f"{path} imports {sorted(foreign)}"


def test_importing_the_forms_loads_no_framework() -> None:
    modules = ["devmesh.units"] + [
        f"devmesh.forms.{path.stem}" for path in sorted((ROOT / "devmesh/forms").glob("*.py"))
    ]
    code = (
        f"import sys, {', '.join(modules)}; "
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}); "
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == ""


def test_the_core_never_imports_the_tui() -> None:
    for path, names in imports_of("devmesh").items():
        assert not {n for n in names if n.split(".")[0] == "tui"}, path


@pytest.mark.parametrize("module", ["proxy.__main__", "proxy.server", "proxy.control"])
def test_importing_the_sidecar_loads_nothing_of_devmesh_nor_aiohttp(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('devmesh', 'tui', 'aiohttp')); "
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == ""
