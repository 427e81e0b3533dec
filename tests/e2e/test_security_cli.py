"""mTLS and authorization on recipes/shop through the CLI, as a user drives them: lock the
mesh, see every edge locked, deny one caller, watch it refused and counted, undo it."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import MeshProject
from tests.e2e.test_shop import get_json
from tests.e2e.test_traffic_policy import edge, status_of, wait_until

pytestmark = pytest.mark.e2e


def test_a_locked_mesh_serves_and_a_deny_rule_refuses_one_caller(shop: MeshProject) -> None:
    locked = shop.cli("mtls", "strict")
    assert locked.returncode == 0, locked.stderr
    assert "mTLS of the mesh: strict" in locked.stdout
    modes = json.loads(shop.cli("mtls", "--json").stdout)["modes"]
    assert modes == {"frontend": "strict", "catalog": "strict", "pricing": "strict"}

    def every_edge_locked() -> bool:
        assert get_json(shop.url + "/")["items"]  # the gateway's and each hop's mTLS works
        pairs = [("ingress", "frontend"), ("frontend", "catalog"), ("catalog", "pricing")]
        return all(edge(shop, *pair).get("security", {}).get("shown") == "locked" for pair in pairs)

    wait_until(every_edge_locked, 15, "every edge shown locked")
    assert edge(shop, "catalog", "pricing")["security"]["mtls_requests"] > 0
    assert "locked" in shop.cli("status").stdout

    added = shop.cli("authz", "add", "pricing", "--deny", "--from", "catalog", "--path", "/*")
    assert added.returncode == 0, added.stderr
    assert "added rule pricing-deny-1: deny any method /* to pricing from catalog" in added.stdout

    def denied() -> bool:
        status_of(shop.url + "/")
        return int(edge(shop, "catalog", "pricing")["security"]["denied"]) > 0

    wait_until(denied, 15, "catalog's calls to pricing denied and counted")
    shown = shop.cli("status")
    assert "denied" in shown.stdout
    listed = shop.cli("authz", "ls")
    assert "pricing-deny-1" in listed.stdout
    assert shop.cli("authz", "rm", "pricing-deny-1").returncode == 0
    wait_until(lambda: status_of(shop.url + "/") == 200, 15, "the shop to serve again")


def test_bad_security_input_is_refused_and_changes_nothing(shop: MeshProject) -> None:
    for args, message in [
        (["mtls", "locked"], "'locked' is not an mTLS mode"),
        (["mtls", "strict", "--service", "nope"], "there is no service named 'nope'"),
        (["authz", "add", "pricing"], "give --allow or --deny"),
        (["authz", "add", "pricing", "--deny", "--from", "catalgo"], "did you mean 'catalog'"),
        (["authz", "add", "pricing", "--allow", "--path", "a*b"], "'*' inside it"),
        (["authz", "rm", "nope"], "no authorization rule named 'nope'"),
    ]:
        result = shop.cli(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert json.loads(shop.cli("authz", "ls", "--json").stdout)["rules"] == []
    modes = json.loads(shop.cli("mtls", "--json").stdout)["modes"]
    assert set(modes.values()) == {"permissive"}
