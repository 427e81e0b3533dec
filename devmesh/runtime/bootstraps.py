"""The bootstrap files of the local runtime's sidecars: what each one says, and where it is
written (``bootstrap.json`` in the sidecar's own folder of the workspace).

A sidecar is started as ``COMMAND --bootstrap FILE`` (``devmesh.runtime.dataplane``
says which command); once every listener is up it writes its bound ports to the
bootstrap's ``ready_file``, which is how its starter learns them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from devmesh.config.model import Project
from devmesh.plan import InstanceSpec
from devmesh.runtime.ports import free_port
from devmesh.workspace import Workspace
from proxy.bootstrap import Bootstrap

BOOTSTRAP_FILE = "bootstrap.json"
READY_FILE = "ready.json"


def sidecar_bootstrap(
    workspace: Workspace,
    instance: str,
    service: str,
    version: str,
    controlplane: str,
    **extra: Any,
) -> Bootstrap:
    """The bootstrap of ``instance``'s sidecar (or of the gateway, with ``role="gateway"``)
    linked to the control plane at ``controlplane``: its folder made, and any ready file of
    an earlier run removed (so that the one read next is this run's). ``extra``: the other
    fields of ``Bootstrap``."""
    state_dir = workspace.sidecar_dir(instance)
    state_dir.mkdir(parents=True, exist_ok=True)
    ready = state_dir / READY_FILE
    ready.unlink(missing_ok=True)
    return Bootstrap(
        service=service,
        version=version,
        instance=instance,
        control_plane=controlplane,
        token_file=workspace.token_file,
        state_dir=state_dir,
        ready_file=ready,
        **extra,
    )


def write_bootstrap(boot: Bootstrap) -> Path:
    """Write ``boot`` to ``bootstrap.json`` in its state folder; that file's path."""
    path = boot.state_dir / BOOTSTRAP_FILE
    path.write_text(json.dumps(boot.to_dict(), indent=1))
    return path


def app_port_for(project: Project, spec: InstanceSpec) -> int:
    """A port of the instance's own; an exposed tcp service listens on its host port
    itself (there is no gateway for tcp)."""
    service = project.services[spec.service]
    if service.protocol == "tcp" and service.expose is not None:
        return service.expose
    return free_port()
