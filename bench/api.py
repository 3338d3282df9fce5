"""A minimal Docker Engine API client for the baselines and the harness (aiohttp, unix socket).

Deliberately not covey's :class:`covey.engine.Engine`: the baselines must not borrow covey's
code, and the harness's own requests (cleanup, events) go to the engine socket directly so the
counting proxy sees only what the approach under test sends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

API = "v1.41"
FINAL_TASK_STATES = frozenset({"complete", "failed", "rejected", "shutdown", "orphaned", "remove"})


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def socket_path(docker_host: str) -> str:
    """``unix:///path`` -> ``/path`` (the benchmark only drives local unix-socket engines)."""
    if not docker_host.startswith("unix://"):
        raise ValueError(f"the benchmark needs a unix:// docker host, not {docker_host!r}")
    return docker_host.removeprefix("unix://")


class Docker:
    """``async with Docker("/path/docker.sock") as d: await d.get("info")``."""

    def __init__(self, socket: str, *, limit: int = 100) -> None:
        self.socket = socket
        self.limit = limit
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Docker:
        connector = aiohttp.UnixConnector(path=self.socket, limit=self.limit)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=30)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use Docker as an async context manager"
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        timeout: float = 120.0,
    ) -> Any:
        url = f"http://docker/{API}/{path.lstrip('/')}"
        query = {
            k: (json.dumps(v) if k == "filters" else str(v)) for k, v in (params or {}).items()
        }
        async with self.session.request(
            method,
            url,
            params=query,
            data=json.dumps(body) if body is not None else None,
            headers={"Content-Type": "application/json"} if body is not None else None,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                try:
                    message = json.loads(raw).get("message", "")
                except ValueError:
                    message = raw.decode(errors="replace")
                raise ApiError(resp.status, message)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return await self.request("POST", path, params=params, body=body)

    async def delete(self, path: str, **params: Any) -> Any:
        return await self.request("DELETE", path, params=params)

    async def events(self, filters: Mapping[str, list[str]]) -> AsyncIterator[dict[str, Any]]:
        """Follow ``GET /events`` until the caller stops iterating."""
        url = f"http://docker/{API}/events"
        async with self.session.get(
            url,
            params={"filters": json.dumps(filters)},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as resp:
            if resp.status >= 400:
                raise ApiError(resp.status, (await resp.read()).decode(errors="replace"))
            async for line in resp.content:
                if line.strip():
                    yield json.loads(line)


def service_body(
    name: str,
    command: list[str],
    labels: Mapping[str, str],
    *,
    image: str = "busybox:latest",
    mode: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A one-shot service, as a seed script would write it (restart condition none)."""
    return {
        "Name": name,
        "Labels": dict(labels),
        "TaskTemplate": {
            "ContainerSpec": {"Image": image, "Args": list(command), "Labels": dict(labels)},
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        },
        "Mode": dict(mode or {"Replicated": {"Replicas": 1}}),
    }
