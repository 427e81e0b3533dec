"""The local runtime: every instance a local process, each with a sidecar process.

``up`` starts the control plane, every sidecar (and the gateway, which owns
the exposed host ports), then the services level by level in dependency
order, waiting for each level to be ready. It returns when every instance
is ready and every proxy holds the latest snapshot; if anything fails it
stops everything it started and raises a ``DevmeshError`` saying which
instance failed and why. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from devmesh.client import ControlPlaneClient, Endpoint
from devmesh.config import dump_project
from devmesh.config.model import Project
from devmesh.controlplane.mesh import GATEWAY_INSTANCE
from devmesh.errors import DevmeshError, UsageError
from devmesh.plan import (
    InstanceSpec,
    describe_instance,
    expected_proxies,
    exposed,
    gateway_routes,
    plan_instances,
    start_levels,
)
from devmesh.runtime.bootstraps import app_port_for, sidecar_bootstrap, write_bootstrap
from devmesh.runtime.controlplane import (
    POLL_INTERVAL,
    StartFailed,
    failure,
    held_for_restart,
    instance_states,
    is_ready,
    start_controlplane,
    wait_converged,
)
from devmesh.runtime.dataplane import DataPlane, selected
from devmesh.runtime.environment import infra_env, proxy_env, without_proxy_settings
from devmesh.runtime.ports import port_in_use
from devmesh.runtime.processes import (
    Role,
    RuntimeRecord,
    describe_exit,
    is_alive,
    launch,
    relaunch,
    restartable,
    restarting,
    set_supervised,
    stop_all,
)
from devmesh.runtime.progress import Progress, SilentProgress
from devmesh.workspace import Workspace, read_json
from proxy.bootstrap import Bootstrap, GatewayListener
from proxy.health import HealthProbe

SIDECAR_START_TIMEOUT = 15.0


@dataclass
class _Started:
    """One instance on its way up."""

    spec: InstanceSpec
    sidecar: subprocess.Popen[bytes] | None
    """Its sidecar's process, if this run started it (else it was running already)."""
    outbound_port: int
    app_port: int
    app: subprocess.Popen[bytes] | None = None
    began: float = 0.0


def config_hash(project: Project) -> str:
    text = json.dumps(dump_project(project), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class LocalRuntime:
    name = "local"

    def __init__(
        self, project: Project, workspace: Workspace, progress: Progress | None = None
    ) -> None:
        self.project = project
        self.ws = workspace
        self.progress: Progress = progress or SilentProgress()
        self.dataplane: DataPlane | None = None
        """Which data plane ``up`` starts the sidecars of (``$DEVMESH_DATAPLANE``)."""

    # -- up ------------------------------------------------------------------------

    async def up(self) -> None:
        self.dataplane = selected()
        self._check_commands()
        self.ws.ensure()
        self.ws.token(create=True)
        if await self._resume():
            return
        self._check_ports()
        record = RuntimeRecord(self.ws.runtime_file, self.project.name, config_hash(self.project))
        record.save()
        try:
            await self._start_all(record)
        except BaseException:
            self.progress.note("stopping everything that had started")
            stop_all(record.processes)
            self._forget()
            raise
        record.supervised = True  # from now on, what dies is started again
        record.save()

    async def _start_all(self, record: RuntimeRecord, controlplane_port: int = 0) -> None:
        endpoint = await self._start_controlplane(record, controlplane_port)
        async with ControlPlaneClient(endpoint) as client:
            await client.apply_project(dump_project(self.project))
            started = await self._start_proxies(record, endpoint.url)
            for level in start_levels(self.project):
                batch = [s for s in started if s.spec.service in level]
                for instance in batch:
                    self._start_app(record, instance)
                await self._wait_ready(client, batch)
            await self._wait_converged(client)

    def _check_commands(self) -> None:
        """Refuse, before starting anything, an instance this runtime cannot run."""
        for spec in plan_instances(self.project):
            if spec.command is None:
                raise UsageError(
                    f"{describe_instance(spec)} has no command, and the local runtime runs "
                    f"commands ({self._where_version(spec)})",
                    "add `command:` for it, or run the project in containers with "
                    "`--runtime docker`",
                )

    def _check_ports(self) -> None:
        """Refuse, before starting anything, an exposed port that something else holds."""
        for service, port in exposed(self.project).items():
            if port_in_use(port):
                raise UsageError(
                    f"port {port} on 127.0.0.1, where {service} is exposed, is already in use "
                    f"({self.project.where(f'services.{service}.expose', f'services.{service}')})",
                    "stop what listens there, or change `expose:` for that service",
                )

    async def _resume(self) -> bool:
        """Converge a mesh that is already up: start again what is down (the control plane,
        a process that died, an instance killed on purpose). True if it was up."""
        existing = RuntimeRecord.load(self.ws.runtime_file)
        if existing is None:
            return False
        if not any(is_alive(p) for p in existing.processes):
            self._forget()
            return False
        if existing.runtime != self.name:
            raise UsageError(
                f"the mesh for {existing.project} is already running on the "
                f"{existing.runtime} runtime",
                "run `devmesh down`, then `devmesh up --runtime local`",
            )
        if existing.config_hash != config_hash(self.project):
            raise UsageError(
                f"the mesh for {existing.project} is already running with a different "
                "configuration",
                "run `devmesh down`, then `devmesh up`",
            )
        dead = [p for p in existing.processes if p.role != "controlplane" and not is_alive(p)]
        stuck = [p.name for p in dead if not restartable(p)]
        if stuck:  # recorded by a devmesh that did not keep how it started them
            raise UsageError(
                f"the mesh for {existing.project} is already running but "
                f"{', '.join(stuck)} stopped",
                "run `devmesh down`, then `devmesh up`",
            )
        controlplane = existing.find("controlplane")
        controlplane_alive = controlplane is not None and is_alive(controlplane)
        if controlplane_alive and not dead and not existing.stopped:
            self.progress.note(f"the mesh for {existing.project} is already up")
            return True
        set_supervised(self.ws.runtime_file, False)  # this `up` starts what is down, alone
        try:
            if controlplane_alive:
                endpoint = Endpoint.of(self.ws)
            else:
                # Bring it back on its old port, where the sidecars are dialling; they say
                # hello again and keep their place in routing.
                old_port = controlplane.ports[0] if controlplane and controlplane.ports else 0
                with RuntimeRecord.locked(self.ws.runtime_file) as record:
                    assert record is not None
                    record.processes = [p for p in record.processes if p.role != "controlplane"]
                    record.save()
                endpoint = await self._start_controlplane(record, old_port)
            async with ControlPlaneClient(endpoint) as client:
                await client.apply_project(dump_project(self.project))
                started = await self._start_again()
                await self._wait_all_ready(client, started)
                await self._wait_converged(client)
        finally:
            set_supervised(self.ws.runtime_file, True)  # whatever came of it, it is watched
        if not controlplane_alive:
            self.progress.note("restarted the control plane; every sidecar reconnected")
        if started:
            self.progress.note(f"started again: {', '.join(sorted(started))}")
        return True

    async def _start_again(self) -> dict[str, tuple[subprocess.Popen[bytes], float]]:
        """Start again every recorded process that is down (killed ones too), sidecars
        first; by name, each new process and when it started."""
        started: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
        with RuntimeRecord.locked(self.ws.runtime_file) as record:
            assert record is not None
            record.stopped = []
            down = [p for p in record.processes if p.role != "controlplane" and not is_alive(p)]
            try:
                for entry in sorted(down, key=lambda p: p.role == "service"):
                    self.progress.begin(f"starting {entry.name} again")
                    try:
                        started[entry.name] = (relaunch(entry), time.monotonic())
                    except OSError as exc:
                        raise DevmeshError(
                            f"could not start {entry.name} again: {exc.strerror or exc}",
                            "fix what stops it and run `devmesh up` again",
                        ) from None
            finally:
                record.save()  # what did start is recorded, so that `down` stops it
        for name, (process, _) in started.items():
            if name.endswith(".sidecar") or name == GATEWAY_INSTANCE:
                instance = name.removesuffix(".sidecar")
                boot = Bootstrap.load(self.ws.sidecar_dir(instance) / "bootstrap.json")
                await self._wait_listening(boot, process)
        return started

    async def _wait_all_ready(
        self,
        client: ControlPlaneClient,
        started: dict[str, tuple[subprocess.Popen[bytes], float]],
    ) -> None:
        """Wait until every instance is ready; a process started again that exits fails."""
        record = RuntimeRecord.load(self.ws.runtime_file)
        now = time.monotonic()
        batch = []
        for spec in plan_instances(self.project):
            app, sidecar = started.get(spec.id), started.get(f"{spec.id}.sidecar")
            entry = record.find(spec.id) if record is not None else None
            batch.append(
                _Started(
                    spec,
                    sidecar[0] if sidecar else None,
                    outbound_port=0,
                    app_port=entry.ports[0] if entry is not None and entry.ports else 0,
                    app=app[0] if app else None,
                    began=app[1] if app else now,
                )
            )
        await self._wait_ready(client, batch)

    async def _start_controlplane(self, record: RuntimeRecord, port: int) -> Endpoint:
        return await start_controlplane(self.ws, record, port, self.progress)

    async def _start_proxies(self, record: RuntimeRecord, controlplane: str) -> list[_Started]:
        """Start every sidecar, and the gateway, at once; wait until all listen."""
        self.progress.begin("starting sidecars")
        began = time.monotonic()
        pending: list[tuple[Bootstrap, subprocess.Popen[bytes], InstanceSpec | None]] = []
        for spec in plan_instances(self.project):
            boot = sidecar_bootstrap(
                self.ws,
                spec.id,
                spec.service,
                spec.version,
                controlplane,
                app_port=app_port_for(self.project, spec),
                health_path=spec.health.path,
            )
            pending.append((boot, self._spawn_proxy(record, boot, "sidecar"), spec))
        listeners = tuple(
            GatewayListener(port, svc) for svc, port in gateway_routes(self.project).items()
        )
        if listeners:
            boot = sidecar_bootstrap(
                self.ws,
                GATEWAY_INSTANCE,
                GATEWAY_INSTANCE,
                "default",
                controlplane,
                role="gateway",
                gateway=listeners,
            )
            pending.append((boot, self._spawn_proxy(record, boot, "gateway"), None))
        started = []
        for boot, process, planned in pending:
            ports = await self._wait_listening(boot, process)
            # Started again after a crash, it must bind the very ports its app and the mesh
            # know it by.
            write_bootstrap(
                replace(
                    boot,
                    inbound_port=ports.get("inbound") or 0,
                    outbound_port=ports.get("outbound") or 0,
                )
            )
            entry = record.find(_proxy_name(boot))
            if entry is not None:
                entry.ports = [p for p in (ports.get("inbound"), ports.get("outbound")) if p]
                entry.ports += list((ports.get("gateway") or {}).values())
            if planned is not None:
                assert boot.app_port is not None
                started.append(_Started(planned, process, int(ports["outbound"]), boot.app_port))
        record.save()
        self.progress.done("sidecars", f"{len(pending)} listening", time.monotonic() - began)
        return started

    def _spawn_proxy(
        self, record: RuntimeRecord, boot: Bootstrap, role: Role
    ) -> subprocess.Popen[bytes]:
        assert self.dataplane is not None, "chosen by `up`"
        path = write_bootstrap(boot)
        sidecar = role == "sidecar"
        log_path = self.ws.log_file(boot.instance, sidecar=sidecar)
        process, entry = launch(
            self.dataplane.command(path),
            env=infra_env(),
            cwd=self.ws.project_dir,
            log_path=log_path,
            name=_proxy_name(boot),
            role=role,
            instance=boot.instance,
        )
        record.add(entry)
        return process

    async def _wait_listening(
        self, boot: Bootstrap, process: subprocess.Popen[bytes]
    ) -> dict[str, Any]:
        assert boot.ready_file is not None
        what = "the gateway" if boot.role == "gateway" else f"the sidecar of {boot.instance}"
        log_path = self.ws.log_file(boot.instance, sidecar=boot.role == "sidecar")
        deadline = time.monotonic() + SIDECAR_START_TIMEOUT
        while True:
            ports = read_json(boot.ready_file)
            if isinstance(ports, dict) and ports.get("pid") == process.pid:
                return ports
            self._check_exit(process, what, log_path)
            if time.monotonic() > deadline:
                raise self._failure(
                    f"{what} did not start listening within {SIDECAR_START_TIMEOUT:g}s", log_path
                )
            await asyncio.sleep(POLL_INTERVAL)

    def _start_app(self, record: RuntimeRecord, instance: _Started) -> None:
        instance.app = self._spawn_app(
            record, instance.spec, instance.outbound_port, instance.app_port
        )
        instance.began = time.monotonic()

    def _spawn_app(
        self, record: RuntimeRecord, spec: InstanceSpec, outbound_port: int, app_port: int
    ) -> subprocess.Popen[bytes]:
        assert spec.command is not None
        self.progress.begin(f"starting {spec.id}")
        proxy_url = f"http://127.0.0.1:{outbound_port}"
        env = without_proxy_settings()
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(spec.env)
        env.update(proxy_env(proxy_url))
        env.update(
            {
                "PORT": str(app_port),
                "DEVMESH_SERVICE": spec.service,
                "DEVMESH_VERSION": spec.version,
                "DEVMESH_INSTANCE": spec.id,
            }
        )
        log_path = self.ws.log_file(spec.id)
        process, entry = launch(
            ["/bin/sh", "-c", spec.command],
            env=env,
            cwd=self._cwd(),
            log_path=log_path,
            name=spec.id,
            role="service",
            instance=spec.id,
        )
        entry.ports = [app_port]
        record.processes = [p for p in record.processes if p.name != spec.id]
        record.add(entry)
        return process

    async def _wait_ready(self, client: ControlPlaneClient, batch: list[_Started]) -> None:
        pending = {s.spec.id: s for s in batch}
        while pending:
            states = instance_states(await client.status())
            for instance_id, started in list(pending.items()):
                spec = started.spec
                log_path = self.ws.log_file(spec.id)
                if started.app is not None:
                    self._check_exit(started.app, spec.id, log_path, service=spec)
                if started.sidecar is not None:
                    self._check_exit(
                        started.sidecar,
                        f"the sidecar of {spec.id}",
                        self.ws.log_file(spec.id, sidecar=True),
                    )
                state = states.get(instance_id, {})
                elapsed = time.monotonic() - started.began
                if is_ready(state, spec, elapsed):
                    self.progress.done(spec.id, "ready", elapsed)
                    del pending[instance_id]
                elif elapsed > spec.health.start_timeout:
                    path = f"services.{spec.service}"
                    raise self._failure(
                        f"{spec.id} did not become ready within "
                        f"{spec.health.start_timeout:g}s: {state.get('detail', 'no report')}",
                        log_path,
                        hint=f"make sure it listens on $PORT (here {started.app_port}), or give it "
                        f"more time with services.{spec.service}.health.start_timeout "
                        f"({self.project.where(f'{path}.health', path)})",
                    )
            if pending:
                await asyncio.sleep(POLL_INTERVAL * 2)

    async def _wait_converged(self, client: ControlPlaneClient) -> None:
        """Wait until every proxy is connected and holds the latest snapshot."""
        expected = expected_proxies(self.project)
        await wait_converged(client, expected, f"see the sidecar logs under {self.ws.logs_dir}")

    # -- day two -------------------------------------------------------------------

    async def restart(self, service: str, announce: Callable[[str], None]) -> list[str]:
        """Stop and start again every instance of ``service`` (sidecars stay); wait till ready."""
        if running_record(self.ws) is None:
            raise UsageError(
                f"no mesh is running for {self.ws.project_dir}", "start it with `devmesh up`"
            )
        specs = [s for s in plan_instances(self.project) if s.service == service]
        restarted = []
        async with ControlPlaneClient(Endpoint.of(self.ws)) as client:
            for spec in specs:
                async with held_for_restart(client, spec.id, self.progress.note):
                    await self._restart_one(spec)
                announce(f"restarted {spec.id}")
                restarted.append(spec.id)
        return restarted

    async def _restart_one(self, spec: InstanceSpec) -> None:
        """Stop the instance's app, start it again on its port, wait till it answers."""
        with restarting(self.ws.runtime_file, spec.id) as record:  # its supervisor keeps off
            app = record.find(spec.id)
            sidecar = record.find(f"{spec.id}.sidecar")
            if app is None or sidecar is None or len(sidecar.ports) < 2 or not app.ports:
                raise UsageError(
                    f"{spec.id} is not part of the running mesh",
                    "run `devmesh down`, then `devmesh up`",
                )
            stop_all([app])
            with RuntimeRecord.locked(self.ws.runtime_file) as current:
                assert current is not None
                process = self._spawn_app(current, spec, sidecar.ports[1], app.ports[0])
            await self._probe_until_ready(spec, process, app.ports[0], time.monotonic())

    async def _probe_until_ready(
        self, spec: InstanceSpec, process: subprocess.Popen[bytes], port: int, began: float
    ) -> None:
        probe = HealthProbe(port, spec.health.path)
        while True:
            passed, seen = await probe.check()
            if passed:
                return
            self._check_exit(process, spec.id, self.ws.log_file(spec.id), service=spec)
            if time.monotonic() - began > spec.health.start_timeout:
                raise self._failure(
                    f"{spec.id} did not become ready within {spec.health.start_timeout:g}s "
                    f"of its restart: {seen}",
                    self.ws.log_file(spec.id),
                )
            await asyncio.sleep(POLL_INTERVAL * 2)

    def kill(self, instance: str) -> None:
        """SIGKILL the instance's process; it stays down (``stopped``) until ``restart`` or
        ``up``."""
        with RuntimeRecord.locked(self.ws.runtime_file) as record:
            process = record.find(instance) if record is not None else None
            if record is None or process is None or not is_alive(process):
                raise UsageError(f"{instance} is not running", "see `devmesh status`")
            if instance not in record.stopped:
                record.stopped.append(instance)
                record.save()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    # -- down ----------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop everything recorded; returns the names of what was still running."""
        return stop_recorded(self.ws)

    def _forget(self) -> None:
        forget(self.ws)

    # -- helpers -------------------------------------------------------------------

    def _cwd(self) -> Path:
        source = self.project.source
        return source.parent if source is not None else self.ws.project_dir

    def _where_version(self, spec: InstanceSpec, key: str | None = None) -> str:
        """Where a version's settings are: its own entry, else the service's."""
        service = f"services.{spec.service}"
        version = f"{service}.versions.{spec.version}"
        paths = (
            [version, service]
            if key is None
            else [f"{version}.{key}", version, f"{service}.{key}", service]
        )
        return self.project.where(*paths)

    def _check_exit(
        self,
        process: subprocess.Popen[bytes],
        what: str,
        log_path: Path,
        service: InstanceSpec | None = None,
    ) -> None:
        code = process.poll()
        if code is None:
            return
        hint = "fix what its log shows and run `devmesh up` again"
        if service is not None:
            hint = (
                f"fix the command of {describe_instance(service)} "
                f"({self._where_version(service, 'command')}) and run `devmesh up` again"
            )
        raise self._failure(
            f"{what} {describe_exit(code)} before it was ready", log_path, hint=hint
        )

    def _failure(self, message: str, log_path: Path, hint: str | None = None) -> StartFailed:
        return failure(message, log_path, hint)


def _proxy_name(boot: Bootstrap) -> str:
    return f"{boot.instance}.sidecar" if boot.role == "sidecar" else boot.instance


def stop_recorded(workspace: Workspace) -> list[str]:
    set_supervised(workspace.runtime_file, False)  # what is stopped now stays stopped
    record = RuntimeRecord.load(workspace.runtime_file)
    stopped = stop_all(record.processes) if record is not None else []
    forget(workspace)
    return stopped


def forget(workspace: Workspace) -> None:
    """Remove the records of a run that no longer runs (state, token and logs stay)."""
    workspace.forget_run()
    shutil.rmtree(workspace.root / "sidecars", ignore_errors=True)


def running_record(workspace: Workspace) -> RuntimeRecord | None:
    """The record of a local mesh with at least one live process, if any."""
    record = RuntimeRecord.load(workspace.runtime_file)
    if record is None or not any(is_alive(p) for p in record.processes):
        return None
    return record
