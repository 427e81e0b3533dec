"""The one client of the control plane's API, shared by the CLI and the TUI.

It turns every HTTP-level failure into a ``DevmeshError`` that says what is
wrong and what to do, so callers never see aiohttp exceptions.

Each method answers its route's shape from ``devmesh.payloads``. The JSON is not
checked against it here: the control plane builds its answers as those types
(``tests/unit/test_payloads.py`` holds it to them), so a decoded answer is
``typing.cast`` to its type once, here, and callers read it as typed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote, urlencode

import aiohttp

from devmesh import payloads
from devmesh.errors import DevmeshError, UsageError
from devmesh.workspace import Workspace, read_json

_TIMEOUT = aiohttp.ClientTimeout(total=10.0, sock_connect=2.0)
RESTART_TIMEOUT = aiohttp.ClientTimeout(total=330.0, sock_connect=2.0)
HOLD_TIMEOUT = aiohttp.ClientTimeout(total=30.0, sock_connect=2.0)
"""A restart answers once every instance is ready again (each has its start timeout)."""


class ControlPlaneUnavailable(DevmeshError):
    """No control plane answers for this project."""


@dataclass(frozen=True)
class Endpoint:
    url: str
    token: str
    pid: int | None = None

    @classmethod
    def of(cls, workspace: Workspace) -> Endpoint:
        """Where the project's running control plane listens; raises if none is recorded."""
        info = read_json(workspace.controlplane_file)
        if not isinstance(info, dict) or "url" not in info:
            raise ControlPlaneUnavailable(
                f"no mesh is running for {workspace.project_dir}",
                "start it with `devmesh up`",
            )
        try:
            token = workspace.token()
        except OSError as exc:
            raise ControlPlaneUnavailable(
                f"cannot read the project token {workspace.token_file}: {exc.strerror}",
                "run `devmesh down` and `devmesh up` to make a new one",
            ) from exc
        return cls(url=str(info["url"]), token=token, pid=info.get("pid"))

    @classmethod
    def of_project(cls, project_dir: Path) -> Endpoint:
        """Where the running control plane of the project in ``project_dir`` listens."""
        return cls.of(Workspace(project_dir))

    @property
    def port(self) -> int:
        return int(self.url.rpartition(":")[2])


class ControlPlaneClient:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ControlPlaneClient:
        self._session = aiohttp.ClientSession(
            base_url=self.endpoint.url,
            headers={"Authorization": f"Bearer {self.endpoint.token}"},
            timeout=_TIMEOUT,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def healthz(self) -> payloads.Healthz:
        return cast(payloads.Healthz, await self._call("GET", "/healthz"))

    async def status(self, window: int = 10, history: bool = False) -> payloads.Status:
        """The mesh, with rates over the last ``window`` seconds (1, 10 or 60)."""
        query = f"?window={window}" + ("&history=1" if history else "")
        return cast(payloads.Status, await self._call("GET", "/v1/status" + query))

    async def metrics_text(self) -> str:
        """``/metrics``, in Prometheus' text format."""
        if self._session is None:
            raise RuntimeError("use `async with ControlPlaneClient(...)`")
        try:
            async with self._session.get("/metrics") as response:
                if response.status >= 400:
                    raise _api_error(response.status, await response.json(content_type=None))
                return await response.text()
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise self._unavailable(exc) from exc

    async def traces(
        self, limit: int = 20, service: str | None = None, failed: bool = False
    ) -> list[payloads.TraceSummary]:
        """The latest traces' summaries, newest first."""
        query = {"limit": str(limit), **({"service": service} if service else {})}
        if failed:
            query["failed"] = "1"
        result = cast(payloads.Traces, await self._call("GET", f"/v1/traces?{urlencode(query)}"))
        return result["traces"]

    async def trace(self, trace_id: str) -> payloads.Trace:
        """One trace and its spans (``trace_id`` may be the start of one)."""
        return cast(payloads.Trace, await self._call("GET", f"/v1/traces/{_segment(trace_id)}"))

    async def otlp(
        self,
        trace_id: str | None = None,
        limit: int = 20,
        service: str | None = None,
        failed: bool = False,
    ) -> payloads.Otlp:
        """One trace, or the latest ``limit`` (through ``service``, with a failure), as
        OTLP/JSON."""
        chosen = {"limit": str(limit), **({"service": service} if service else {})}
        if failed:
            chosen["failed"] = "1"
        query = urlencode(chosen)
        path = f"/v1/traces/{_segment(trace_id)}" if trace_id else f"/v1/traces?{query}&"
        separator = "?" if trace_id else ""
        return cast(payloads.Otlp, await self._call("GET", f"{path}{separator}format=otlp"))

    async def certs(self) -> payloads.Certs:
        """The project's CA and the identity each sidecar holds."""
        return cast(payloads.Certs, await self._call("GET", "/v1/certs"))

    async def logs(self, instance: str, lines: int = 100) -> list[str]:
        """The instance's latest log lines."""
        path = f"/v1/instances/{_segment(instance)}/logs?lines={lines}"
        result = cast(payloads.Logs, await self._call("GET", path))
        return result["lines"]

    async def kill(self, instance: str) -> None:
        """Kill an instance (SIGKILL), as `devmesh kill` does."""
        await self._call("POST", f"/v1/instances/{_segment(instance)}/kill")

    async def hold(self, instance: str) -> int:
        """Hold the instance's calls at its sidecar while its app restarts; returns once none
        is in flight (how many still are, if draining timed out)."""
        path = f"/v1/instances/{_segment(instance)}/hold"
        result = cast(payloads.Held, await self._call("POST", path, limits=HOLD_TIMEOUT))
        return result["in_flight"]

    async def release(self, instance: str) -> None:
        """Let the calls held for the instance's restart go on to its (new) app."""
        await self._call("POST", f"/v1/instances/{_segment(instance)}/release")

    async def restart(self, service: str) -> list[str]:
        """Restart a service's instances; returns them once each is ready again."""
        path = f"/v1/services/{_segment(service)}/restart"
        result = cast(payloads.Restarted, await self._call("POST", path, limits=RESTART_TIMEOUT))
        return result["restarted"]

    async def events(self, window: int = 10) -> AsyncGenerator[payloads.Event, None]:
        """The live event stream: a status each second, breaker and config changes (tell
        them apart by ``type``)."""
        async for message in self._stream("/v1/events", {"window": str(window)}):
            yield cast(payloads.Event, message)

    async def tap(self, **filters: str | float | None) -> AsyncGenerator[payloads.TapMessage, None]:
        """Sampled requests (``service``, ``path``, ``status``, ``min_latency_ms``, ``rate``),
        and once a second a ``stats`` message of what was not shown."""
        query = {k: str(v) for k, v in filters.items() if v is not None}
        async for message in self._stream("/v1/tap", query):
            yield cast(payloads.TapMessage, message)

    async def _stream(
        self, path: str, query: dict[str, str]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """JSON messages from a WebSocket stream of the API, until it ends."""
        if self._session is None:
            raise RuntimeError("use `async with ControlPlaneClient(...)`")
        try:
            ws = await self._session.ws_connect(path, params=query, heartbeat=10.0)
        except aiohttp.WSServerHandshakeError as exc:
            # The refusal's reason is in a JSON body the handshake does not read: ask again.
            await self._call("GET", f"{path}?{urlencode(query)}")
            raise DevmeshError(
                f"the control plane refused the stream {path} ({exc.status})"
            ) from None
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    yield self._message(path, message.data)
                elif message.type == aiohttp.WSMsgType.ERROR:
                    raise self._dropped(path, message.data or ws.exception() or "no reason")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._dropped(path, exc) from exc
        finally:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                await ws.close()
        raise self._dropped(path)

    def _message(self, path: str, data: str) -> dict[str, Any]:
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            raise DevmeshError(
                f"the control plane at {self.endpoint.url} sent a message on {path} "
                "that is not a JSON object",
                "is it another devmesh's? `devmesh down` then `devmesh up` starts this one's",
            )
        return message

    def _dropped(self, path: str, why: object = None) -> ControlPlaneUnavailable:
        """The stream ended: the control plane closed it (``why`` ``None``), or the
        connection broke (``why``: the error)."""
        url = self.endpoint.url
        return ControlPlaneUnavailable(
            f"the control plane at {url} closed the stream {path} (it stopped?)"
            if why is None
            else f"the stream {path} from the control plane at {url} broke ({why})",
            "`devmesh status` tells whether the mesh runs; `devmesh up` starts it again",
        )

    def _unavailable(self, exc: BaseException) -> ControlPlaneUnavailable:
        return ControlPlaneUnavailable(
            f"the control plane at {self.endpoint.url} is not answering ({exc})",
            "run `devmesh up` to start it again",
        )

    async def apply_project(self, project: Mapping[str, Any]) -> payloads.ProjectApplied:
        return cast(payloads.ProjectApplied, await self._call("PUT", "/v1/project", json=project))

    async def set_split(self, service: str, weights: Mapping[str, float]) -> payloads.SplitAnswer:
        body = {"weights": dict(weights)}
        answer = await self._call("PUT", f"/v1/services/{service}/split", json=body)
        return cast(payloads.SplitAnswer, answer)

    async def clear_split(self, service: str) -> payloads.SplitAnswer:
        answer = await self._call("DELETE", f"/v1/services/{service}/split")
        return cast(payloads.SplitAnswer, answer)

    async def faults(self) -> list[payloads.Fault]:
        result = cast(payloads.Faults, await self._call("GET", "/v1/faults"))
        return result["faults"]

    async def add_fault(
        self, service: str, fault: Mapping[str, Any], lasts: float | str | None = None
    ) -> payloads.Fault:
        """Add a fault (devmesh.yaml's shape) for ``lasts`` seconds (or a duration, "2m")."""
        body = {"service": service, "fault": dict(fault), "for": lasts}
        result = cast(payloads.FaultAdded, await self._call("POST", "/v1/faults", json=body))
        return result["fault"]

    async def remove_fault(self, fault_id: str) -> payloads.FaultRemoved:
        answer = await self._call("DELETE", f"/v1/faults/{fault_id}")
        return cast(payloads.FaultRemoved, answer)

    async def reset_faults(self, service: str | None = None) -> list[str]:
        path = "/v1/faults" + (f"?service={service}" if service else "")
        result = cast(payloads.FaultsReset, await self._call("DELETE", path))
        return result["removed"]

    async def authz_rules(self) -> list[payloads.Rule]:
        result = cast(payloads.Rules, await self._call("GET", "/v1/authz"))
        return result["rules"]

    async def add_authz_rule(self, rule: Mapping[str, Any]) -> payloads.Rule:
        """Add an authorization rule (devmesh.yaml's shape)."""
        answer = await self._call("POST", "/v1/authz", json={"rule": dict(rule)})
        return cast(payloads.RuleAdded, answer)["rule"]

    async def remove_authz_rule(self, name: str) -> payloads.Rule:
        answer = await self._call("DELETE", f"/v1/authz/{_segment(name)}")
        return cast(payloads.RuleRemoved, answer)["removed"]

    async def mtls_modes(self) -> dict[str, str]:
        result = cast(payloads.MtlsModes, await self._call("GET", "/v1/mtls"))
        return result["modes"]

    async def set_mtls(self, service: str | None, mode: str | None) -> dict[str, str]:
        """Set ``service``'s mTLS mode (``None``: the mesh's); ``mode`` ``None``: back to
        devmesh.yaml's. Every service's mode then."""
        body = {"service": service, "mode": mode}
        result = cast(payloads.MtlsModes, await self._call("PUT", "/v1/mtls", json=body))
        return result["modes"]

    async def policy(self, service: str) -> payloads.PolicyAnswer:
        answer = await self._call("GET", f"/v1/services/{service}/policy")
        return cast(payloads.PolicyAnswer, answer)

    async def set_policy(self, service: str, settings: Mapping[str, Any]) -> payloads.PolicyAnswer:
        body = {"settings": dict(settings)}
        answer = await self._call("PUT", f"/v1/services/{service}/policy", json=body)
        return cast(payloads.PolicyAnswer, answer)

    async def clear_policy(self, service: str) -> payloads.PolicyAnswer:
        answer = await self._call("DELETE", f"/v1/services/{service}/policy")
        return cast(payloads.PolicyAnswer, answer)

    async def _call(
        self,
        method: str,
        path: str,
        json: Any = None,
        limits: aiohttp.ClientTimeout | None = None,
    ) -> Any:
        if self._session is None:
            raise RuntimeError("use `async with ControlPlaneClient(...)`")
        try:
            async with self._session.request(
                method, path, json=json, timeout=limits or _TIMEOUT
            ) as response:
                body = await response.json(content_type=None)
                if response.status >= 400:
                    raise _api_error(response.status, body)
                return body
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        except ValueError as exc:
            raise DevmeshError(
                f"the control plane at {self.endpoint.url} sent a reply that is not JSON"
            ) from exc


def _api_error(status: int, body: Any) -> DevmeshError:
    if not isinstance(body, dict):
        return DevmeshError(f"the control plane answered {status}")
    message = str(body.get("error") or f"the control plane answered {status}")
    hint = body.get("hint")
    if status == 401:
        return DevmeshError(
            message,
            "the token in .devmesh/token does not match; run `devmesh down`, then `devmesh up`",
        )
    if 400 <= status < 500:
        return UsageError(message, hint)
    return DevmeshError(message, hint)


def _segment(name: str) -> str:
    """``name`` as one path segment, whatever it holds (``/``, ``..``, ``#``)."""
    return quote(name, safe="")
