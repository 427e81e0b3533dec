"""``down`` on Docker: remove exactly what devmesh made for one project folder.

Containers and networks are found by their ``devmesh.project-dir`` label, so
``down`` needs neither the config nor a record of what ran, and never touches
what devmesh did not make or another folder's mesh.
"""

from __future__ import annotations

import docker

from devmesh.errors import DevmeshError
from devmesh.runtime.docker import containers
from devmesh.runtime.docker.daemon import connect
from devmesh.runtime.docker.reconcile import REMOVE_ORDER
from devmesh.runtime.processes import RuntimeRecord, set_supervised, stop_all
from devmesh.workspace import Workspace


def remove_project(client: docker.DockerClient, project_dir: str) -> list[str]:
    """Remove every container and network devmesh made for ``project_dir``; their names."""
    found = containers.list_project(client, project_dir)
    found.sort(key=lambda f: (REMOVE_ORDER.get(f.role, 9), f.name))
    containers.stop(client, [f.name for f in found if f.role == "service"])
    containers.remove(client, [f.name for f in found])
    return [f.name for f in found] + containers.remove_networks(client, project_dir)


def forget_record(workspace: Workspace) -> None:
    workspace.forget_run()


def down(workspace: Workspace) -> list[str]:
    """Stop the control plane and remove the project's containers and network.

    Without a Docker daemon this stops what runs on this machine and, unless the
    record says a Docker mesh runs (then it raises), forgets the rest.
    """
    set_supervised(workspace.runtime_file, False)  # nothing restarts what goes now
    record = RuntimeRecord.load(workspace.runtime_file)
    stopped = stop_all(record.processes) if record is not None else []
    try:
        client = connect()
    except DevmeshError:
        if record is not None and record.runtime == "docker":
            raise
        forget_record(workspace)
        return stopped
    try:
        removed = remove_project(client, str(workspace.project_dir))
    finally:
        client.close()
    forget_record(workspace)
    return stopped + removed
