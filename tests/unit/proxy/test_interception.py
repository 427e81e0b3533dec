"""proxy.interception: the iptables rules that put the sidecar in an instance's path."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.interception import INBOUND_CHAIN, OUTBOUND_CHAIN, InterceptionError, Plan, apply, rules


def joined(plan: Plan) -> list[str]:
    return [" ".join(args) for args in rules(plan)]


def test_outbound_to_mesh_ports_goes_to_the_sidecar_except_its_own_and_loopback() -> None:
    lines = joined(Plan(outbound_port=15001, inbound_port=15006, redirect_ports=(8000, 80, 8000)))
    appended = [line for line in lines if f"-A {OUTBOUND_CHAIN}" in line]
    assert appended == [
        f"-t nat -A {OUTBOUND_CHAIN} -m owner --uid-owner 1337 -j RETURN",
        f"-t nat -A {OUTBOUND_CHAIN} -d 127.0.0.0/8 -j RETURN",
        f"-t nat -A {OUTBOUND_CHAIN} -p tcp -m multiport --dports 80,8000 "
        "-j REDIRECT --to-ports 15001",
    ], "the exemptions must come before the redirect, and each port once"


def test_inbound_to_the_service_port_goes_to_the_sidecar() -> None:
    lines = joined(Plan(15001, 15006, (80,), app_port=8080))
    assert f"-t nat -A {INBOUND_CHAIN} -p tcp --dport 8080 -j REDIRECT --to-ports 15006" in lines
    assert not [
        line for line in joined(Plan(15001, 15006, (80,))) if f"-A {INBOUND_CHAIN}" in line
    ], "a service without a port has nothing to redirect inbound"


def test_chains_are_made_flushed_and_hooked_before_rules_are_added() -> None:
    lines = joined(Plan(15001, 15006, (80,), app_port=8080))
    first_rule = next(i for i, line in enumerate(lines) if " -A " in line)
    setup = lines[:first_rule]
    assert setup == [
        f"-t nat -N {OUTBOUND_CHAIN}",
        f"-t nat -F {OUTBOUND_CHAIN}",
        f"-t nat -C OUTPUT -p tcp -j {OUTBOUND_CHAIN}",
        f"-t nat -N {INBOUND_CHAIN}",
        f"-t nat -F {INBOUND_CHAIN}",
        f"-t nat -C PREROUTING -p tcp -j {INBOUND_CHAIN}",
    ]


def test_many_ports_are_split_into_rules_multiport_accepts() -> None:
    ports = tuple(range(9000, 9032))
    redirects = [line for line in joined(Plan(15001, 15006, ports)) if "REDIRECT" in line]
    assert len(redirects) == 3
    listed = [p for line in redirects for p in line.split("--dports ")[1].split()[0].split(",")]
    assert sorted(int(p) for p in listed) == list(ports)


def test_a_failing_iptables_is_reported_with_the_command(tmp_path: Path) -> None:
    failing = tmp_path / "iptables"
    failing.write_text(
        "#!/bin/sh\necho 'iptables: Permission denied (you must be root)' >&2\nexit 4\n"
    )
    failing.chmod(0o755)
    with pytest.raises(
        InterceptionError,
        match=r"`iptables -t nat -F DEVMESH_OUTBOUND` failed: "
        r"iptables: Permission denied",
    ):
        apply(Plan(15001, 15006, (80,)), iptables=str(failing))


def test_no_iptables_in_the_image_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InterceptionError, match="interception: env"):
        apply(Plan(15001, 15006, (80,)))
