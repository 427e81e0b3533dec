"""Transparent interception: the iptables rules that send an instance's traffic through its sidecar.

As Istio's init container does, a short-lived step with NET_ADMIN installs NAT
rules in the network namespace the sidecar owns (and the service joins):

* outbound: TCP that the service opens to a mesh port (a port some service of
  the mesh listens on, and 80) is redirected to the sidecar's outbound
  listener, which reads the original destination (``SO_ORIGINAL_DST``); the
  sidecar's own connections (its uid) and loopback are left alone;
* inbound: TCP arriving for the service's port from outside the namespace is
  redirected to the sidecar's inbound listener, so nothing reaches the service
  around its sidecar.

``rules`` is pure (it builds the ``iptables`` argument lists) so it is tested
without privileges; ``python -m proxy.interception`` applies them. Applying is
idempotent: devmesh's chains are flushed and filled again.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

OUTBOUND_CHAIN = "DEVMESH_OUTBOUND"
INBOUND_CHAIN = "DEVMESH_INBOUND"
PROXY_UID = 1337
"""The uid the sidecar runs as; its own connections are never redirected (Istio uses the same)."""
_MULTIPORT_MAX = 15
"""The most ports one ``-m multiport`` rule takes."""


class InterceptionError(RuntimeError):
    """The rules could not be installed; the message says which command failed and why."""


@dataclass(frozen=True)
class Plan:
    outbound_port: int
    """The sidecar's outbound listener (on 127.0.0.1 in the namespace)."""
    inbound_port: int
    redirect_ports: tuple[int, ...]
    """Destination ports whose outbound TCP goes through the sidecar."""
    app_port: int | None = None
    """The service's own port; inbound TCP to it goes through the sidecar."""
    proxy_uid: int = PROXY_UID


def rules(plan: Plan) -> list[list[str]]:
    """Every ``iptables`` invocation (without the program name), in order."""
    nat = ["-t", "nat"]
    commands: list[list[str]] = []
    for chain, hook in ((OUTBOUND_CHAIN, "OUTPUT"), (INBOUND_CHAIN, "PREROUTING")):
        commands.append([*nat, "-N", chain])  # may exist already: see apply()
        commands.append([*nat, "-F", chain])
        commands.append([*nat, "-C", hook, "-p", "tcp", "-j", chain])  # jump present?
    out = [*nat, "-A", OUTBOUND_CHAIN]
    commands.append([*out, "-m", "owner", "--uid-owner", str(plan.proxy_uid), "-j", "RETURN"])
    commands.append([*out, "-d", "127.0.0.0/8", "-j", "RETURN"])
    ports = sorted(set(plan.redirect_ports))
    for start in range(0, len(ports), _MULTIPORT_MAX):
        chunk = ",".join(str(p) for p in ports[start : start + _MULTIPORT_MAX])
        match = ["-p", "tcp", "-m", "multiport", "--dports", chunk]
        commands.append([*out, *match, "-j", "REDIRECT", "--to-ports", str(plan.outbound_port)])
    if plan.app_port is not None:
        match = ["-p", "tcp", "--dport", str(plan.app_port)]
        redirect = ["-j", "REDIRECT", "--to-ports", str(plan.inbound_port)]
        commands.append([*nat, "-A", INBOUND_CHAIN, *match, *redirect])
    return commands


def apply(plan: Plan, iptables: str | None = None) -> list[str]:
    """Install the rules; returns them as shell lines. Raises ``InterceptionError``."""
    program = iptables or shutil.which("iptables")
    if program is None:
        raise InterceptionError(
            "iptables is not installed in the sidecar image; rebuild it on a base image "
            "that has it, or use `interception: env`"
        )
    done = []
    for args in rules(plan):
        result = subprocess.run([program, *args], capture_output=True, text=True, check=False)
        line = " ".join(["iptables", *args])
        if result.returncode == 0:
            done.append(line)
            continue
        if "-N" in args:  # the chain exists from an earlier run: flushed next
            continue
        if "-C" in args:  # the jump is missing: add it
            hook_rule = [("-A" if a == "-C" else a) for a in args]
            _run(program, hook_rule)
            done.append(" ".join(["iptables", *hook_rule]))
            continue
        raise InterceptionError(f"`{line}` failed: {(result.stderr or result.stdout).strip()}")
    return done


def _run(program: str, args: Sequence[str]) -> None:
    result = subprocess.run([program, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        line = " ".join(["iptables", *args])
        raise InterceptionError(f"`{line}` failed: {(result.stderr or result.stdout).strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.interception", description=__doc__)
    parser.add_argument("--outbound-port", type=int, required=True)
    parser.add_argument("--inbound-port", type=int, required=True)
    parser.add_argument("--app-port", type=int, default=None)
    parser.add_argument("--redirect-ports", default="", help="comma-separated destination ports")
    parser.add_argument("--proxy-uid", type=int, default=PROXY_UID)
    args = parser.parse_args(argv)
    ports = tuple(int(p) for p in args.redirect_ports.split(",") if p.strip())
    plan = Plan(args.outbound_port, args.inbound_port, ports, args.app_port, args.proxy_uid)
    try:
        for line in apply(plan):
            print(line, flush=True)
    except (InterceptionError, OSError) as exc:
        print(f"interception failed: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
