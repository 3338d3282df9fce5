"""The one module that talks to the Docker Engine.

Everything goes through :meth:`Engine._request`, a thin layer over aiodocker's HTTP
session: it counts requests (the benchmarks report API calls per job), maps HTTP errors to
three exceptions the rest of covey decides on (:class:`NotFound`, :class:`Conflict`,
:class:`Unavailable`), and returns typed records (:mod:`covey.records`) instead of dicts.
aiodocker's higher-level helpers are avoided where they lose information (``services.logs``
joins stdout and stderr) or mutate their input (``services.create``).
"""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError

from covey.capture import STDERR, Demux, LogRead, Tail
from covey.errors import EngineError
from covey.records import (
    ContainerRecord,
    EngineEvent,
    EngineInfo,
    NodeRecord,
    ServiceRecord,
    TaskRecord,
)

ATTEMPT_LABEL = "covey.attempt"
DEFAULT_TIMEOUT = 30.0
LOG_CHUNK = 64 * 1024  # bytes read from a log stream at a time
PING_TIMEOUT = 5.0
ARCHIVE_TIMEOUT = 120.0  # a PUT of up to 64 MiB of job inputs to a remote engine
API_VERSION = "v1.41"
LARGE_BODY = 256 * 1024  # request bodies sent as a stream, in pieces (aiohttp warns at 1 MiB)
_JSON_HEADERS = {"Content-Type": "application/json"}
_TAR_HEADERS = {"Content-Type": "application/x-tar"}


class NotFound(EngineError):
    """The object does not exist (HTTP 404)."""


class Conflict(EngineError):
    """The name is taken (HTTP 409): for covey's fixed attempt names, a create that already ran."""


class InUse(EngineError):
    """A swarm config (or secret) that a service still names cannot be removed (HTTP 400
    "... is in use by the following service: ..."); it can be once the service is gone."""


class Unavailable(EngineError):
    """The engine cannot serve the request right now: worth asking again later.

    Connection refused or reset, a timeout, 502/503/504, or a 500 whose message says the
    swarm manager is transiently unable (no leader, a gRPC deadline) or that comes from an
    engine that then does not answer ``_ping``. Any other error is the engine's refusal of
    this request (:class:`~covey.errors.EngineError`), which asking again cannot change.
    """


async def _status_error(response: aiohttp.ClientResponse) -> DockerError:
    """What aiodocker raises for a 4xx/5xx: the engine's own message."""
    raw = await response.read()
    message = raw.decode("utf-8", errors="replace").strip()
    if response.content_type == "application/json":
        with suppress(ValueError, AttributeError):
            message = str(json.loads(raw).get("message", message))
    return DockerError(response.status, message)


# What a 500 says when the manager cannot serve *now* but will: moby maps swarmkit's gRPC
# Unknown and DeadlineExceeded to 500 (api/server/httpstatus), and these are swarmkit's raft
# and gRPC messages for a lost quorum, a leader election and a manager still starting.
TRANSIENT_MESSAGES = (
    "does not have a leader",  # lost quorum
    "no elected cluster leader",
    "lost leader status",
    "node is stopped",
    "code = unavailable",
    "code = deadlineexceeded",
    "context deadline exceeded",
    "transport is closing",
    "connection is closing",
    "connection is unavailable",
    "has trouble connecting to the cluster",
)


def transient(message: str) -> bool:
    """Does this 5xx message say the manager is only transiently unable to answer?"""
    lowered = message.lower()
    return any(marker in lowered for marker in TRANSIENT_MESSAGES)


def _error(exc: DockerError, what: str, *, alive: bool = True) -> EngineError:
    """Map an HTTP error to what covey decides on.

    The status code alone does not tell a refused request from a sick engine: Engine 20.10
    answers a service create naming a missing network with 500. So a 500 is
    :class:`Unavailable` only when its message says so or the engine did not answer a ping
    just after (``alive=False``); otherwise it is a refusal, final for this request.
    """
    message = f"{what}: {exc.message}".strip()
    if exc.status == 404:
        return NotFound(message)
    if exc.status == 409:
        return Conflict(message)
    if exc.status in (900, 502, 503, 504):
        return Unavailable(message)
    if exc.status >= 500 and (not alive or transient(exc.message)):
        return Unavailable(message)
    return EngineError(message)


DAEMON_LOG_ERROR = b"Error grabbing logs: "


def daemon_log_errors(data: bytes) -> tuple[bytes, list[str]]:
    """Split the engine's own complaints out of a service's log stream.

    When a node cannot serve its part (it is down or its session flaps), swarm writes
    ``Error grabbing logs: ...`` *into the job's stream*; covey must not store that as
    the job's output.
    """
    if DAEMON_LOG_ERROR not in data:
        return data, []
    kept: list[bytes] = []
    errors: list[str] = []
    for line in data.splitlines(keepends=True):
        if line.startswith(DAEMON_LOG_ERROR):
            errors.append(line[len(DAEMON_LOG_ERROR) :].decode(errors="replace").strip())
        else:
            kept.append(line)
    return b"".join(kept), errors


def request_kind(method: str, path: str) -> str:
    """``GET services/{id}/logs`` for ``GET services/abc/logs``: counts stay few and readable."""
    parts = path.split("/")
    if len(parts) >= 2 and parts[1] != "create":
        parts[1] = "{id}"
    return f"{method} /{'/'.join(parts)}"


def _labels(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()}


def engine_time(value: Any) -> float | None:
    """An engine timestamp (RFC 3339, nanoseconds) as epoch seconds; ``None`` for the zero
    time the engine reports for what has not happened."""
    if not value or not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None
    return at if at > 0 else None


def task_record(raw: Mapping[str, Any]) -> TaskRecord:
    """Reduce one ``GET /tasks`` entry to a :class:`TaskRecord`."""
    status = raw.get("Status") or {}
    container = status.get("ContainerStatus") or {}
    spec = raw.get("Spec") or {}
    labels = (spec.get("ContainerSpec") or {}).get("Labels") or {}
    reservations = (spec.get("Resources") or {}).get("Reservations") or {}
    exit_code = container.get("ExitCode")
    return TaskRecord(
        id=raw["ID"],
        service_id=raw.get("ServiceID", ""),
        node_id=raw.get("NodeID") or None,
        state=status.get("State", "new"),
        desired_state=raw.get("DesiredState", ""),
        err=status.get("Err") or None,
        message=status.get("Message") or None,
        exit_code=int(exit_code) if exit_code is not None else None,
        container_id=container.get("ContainerID") or None,
        attempt=labels.get(ATTEMPT_LABEL),
        reserve_nano_cpus=int(reservations.get("NanoCPUs") or 0),
        reserve_memory=int(reservations.get("MemoryBytes") or 0),
        updated_at=str(raw.get("UpdatedAt", "")),
        status_at=engine_time(status.get("Timestamp")),
    )


def node_record(raw: Mapping[str, Any]) -> NodeRecord:
    """Reduce one ``GET /nodes`` entry to a :class:`NodeRecord`."""
    spec = raw.get("Spec") or {}
    desc = raw.get("Description") or {}
    resources = desc.get("Resources") or {}
    platform = desc.get("Platform") or {}
    return NodeRecord(
        id=raw["ID"],
        hostname=desc.get("Hostname", ""),
        role=spec.get("Role", "worker"),
        availability=spec.get("Availability", "active"),
        state=(raw.get("Status") or {}).get("State", "unknown"),
        nano_cpus=int(resources.get("NanoCPUs") or 0),
        memory=int(resources.get("MemoryBytes") or 0),
        labels=_labels(spec.get("Labels")),
        engine_labels=_labels((desc.get("Engine") or {}).get("Labels")),
        os=platform.get("OS", "linux"),
        arch=platform.get("Architecture", "x86_64"),
    )


def container_record(raw: Mapping[str, Any]) -> ContainerRecord:
    """Reduce a ``GET /containers/{id}/json`` (or list entry) to a :class:`ContainerRecord`."""
    state = raw.get("State")
    labels = raw.get("Labels") or (raw.get("Config") or {}).get("Labels") or {}
    name = raw.get("Name") or (raw.get("Names") or [""])[0]
    if isinstance(state, Mapping):
        return ContainerRecord(
            id=raw["Id"],
            name=str(name).lstrip("/"),
            state=str(state.get("Status", "")),
            exit_code=int(state["ExitCode"]) if state.get("ExitCode") is not None else None,
            error=state.get("Error") or None,
            oom_killed=bool(state.get("OOMKilled")),
            attempt=labels.get(ATTEMPT_LABEL),
            finished_at=engine_time(state.get("FinishedAt")),
        )
    return ContainerRecord(
        id=raw["Id"],
        name=str(name).lstrip("/"),
        state=str(state or ""),
        exit_code=None,
        error=None,
        oom_killed=False,
        attempt=labels.get(ATTEMPT_LABEL),
    )


@dataclass(frozen=True, slots=True)
class ConfigRecord:
    """A swarm config: what covey needs to own and remove it; ``data`` only when one config
    was read (``GET /configs/{id}``), not from a listing."""

    id: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    data: bytes | None = None
    template: bool = False  # its data is a Go template the engine renders per task

    @property
    def attempt(self) -> str | None:
        return self.labels.get(ATTEMPT_LABEL)


def config_record(raw: Mapping[str, Any], *, data: bool = False) -> ConfigRecord:
    """Reduce a ``GET /configs`` entry (or ``/configs/{id}``) to a :class:`ConfigRecord`."""
    spec = raw.get("Spec") or {}
    return ConfigRecord(
        id=raw["ID"],
        name=spec.get("Name", ""),
        labels=_labels(spec.get("Labels")),
        data=base64.b64decode(spec.get("Data") or "") if data else None,
        template=bool((spec.get("Templating") or {}).get("Name")),
    )


NO_ENGINE = (
    "cannot reach the Docker engine: DOCKER_HOST is not set, no docker context names one, and"
    " there is no socket at /run/docker.sock, /var/run/docker.sock or ~/.docker/run/docker.sock;"
    " start an engine or set DOCKER_HOST (scripts/engine.sh up starts a private one)"
)


class Engine:
    """An open connection to one Docker Engine (``DOCKER_HOST`` and TLS variables, as docker)."""

    def __init__(self, docker_host: str | None = None) -> None:
        self.docker_host = docker_host
        self.requests: Counter[str] = Counter()
        self._docker: aiodocker.Docker | None = None
        self._events_response: aiohttp.ClientResponse | None = None
        self._base = ""
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}

    async def __aenter__(self) -> Engine:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect and agree on the API version; unreachable engines become :class:`EngineError`."""
        try:
            self._docker = aiodocker.Docker(url=self.docker_host, api_version=API_VERSION)
        except (ValueError, OSError) as exc:
            raise EngineError(f"cannot reach the Docker engine: {exc}") from exc
        except AssertionError:  # aiodocker's way of saying it found no engine to talk to
            raise EngineError(NO_ENGINE) from None
        if not self._docker.docker_host:  # the same, when asserts are off (python -O)
            await self.close()
            raise EngineError(NO_ENGINE)
        self._base = f"{self._docker.docker_host}/{API_VERSION}/"
        try:
            await self.ping()
        except BaseException:
            await self.close()  # its session, or aiohttp reports it unclosed
            raise

    async def close(self) -> None:
        if self._docker is not None:
            docker, self._docker = self._docker, None
            await docker.close()

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            raise EngineError("the engine connection is closed")
        return self._docker

    @asynccontextmanager
    async def _response(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        tar: bytes | None = None,
        timeout: float | aiohttp.ClientTimeout | None = DEFAULT_TIMEOUT,
        auth: str | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One counted request; errors mapped; the response closed on exit.

        Sent on aiodocker's own session (its connector, TLS and ``DOCKER_HOST`` handling),
        but not through its ``_query``: header multidicts, URL canonicalisation and timeout
        evolution per call were a tenth of covey's CPU per job. Status handling is the same
        as aiodocker's (the engine's JSON ``message`` on 4xx/5xx).
        """
        self.requests[request_kind(method, path)] += 1
        if isinstance(timeout, aiohttp.ClientTimeout):
            client_timeout = timeout
        elif timeout in self._timeouts:
            client_timeout = self._timeouts[timeout]
        else:
            client_timeout = aiohttp.ClientTimeout(total=timeout, sock_read=timeout)
            self._timeouts[timeout] = client_timeout
        raw: str | bytes | None = json.dumps(body) if body is not None else None
        headers = _JSON_HEADERS if raw is not None else None
        if tar is not None:  # a tar archive (PUT .../archive) instead of a JSON body
            raw, headers = tar, _TAR_HEADERS
        if auth is not None:  # registry credentials (--with-registry-auth), as docker sends them
            headers = {**(headers or {}), "X-Registry-Auth": auth}
        data: str | bytes | io.BytesIO | None = raw
        if raw is not None and len(raw) > LARGE_BODY:  # a config's or an archive's bytes
            data = io.BytesIO(raw.encode() if isinstance(raw, str) else raw)
        try:
            async with self.docker.session.request(
                method,
                self._base + path,
                params=params,
                data=data,
                headers=headers,
                timeout=client_timeout,
            ) as response:
                if response.status >= 400:
                    raise await _status_error(response)
                try:
                    yield response
                finally:
                    # a stream left unread (followed logs, a cut event stream) must not
                    # keep its connection; a response read to the end has released it
                    response.close()
        except DockerError as exc:
            alive = path != "_ping"
            if alive and exc.status == 500 and not transient(exc.message):
                alive = await self.answers_ping()  # refused, or sick? (one request, on errors only)
            raise _error(exc, what, alive=alive) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"{what}: {type(exc).__name__}: {exc}") from None

    async def _json(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        tar: bytes | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        auth: str | None = None,
    ) -> Any:
        async with self._response(
            method, path, what=what, params=params, body=body, tar=tar, timeout=timeout, auth=auth
        ) as response:
            try:
                raw = await response.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise Unavailable(f"{what}: {type(exc).__name__}: {exc}") from None
        return json.loads(raw) if raw else None

    # -- engine -----------------------------------------------------------------------

    async def ping(self, timeout: float = 10.0) -> None:
        async with self._response("GET", "_ping", what="ping", timeout=timeout) as response:
            await response.read()

    async def answers_ping(self) -> bool:
        """Is the engine there at all? Tells a refusal from a sick engine after a 500."""
        try:
            await self.ping(timeout=PING_TIMEOUT)
        except EngineError:
            return False
        return True

    async def info(self) -> EngineInfo:
        raw = await self._json("GET", "info", what="info")
        swarm = raw.get("Swarm") or {}
        return EngineInfo(
            name=raw.get("Name", ""),
            server_version=raw.get("ServerVersion", ""),
            swarm_manager=bool(swarm.get("ControlAvailable"))
            and swarm.get("LocalNodeState") == "active",
            node_id=swarm.get("NodeID") or None,
            ncpu=int(raw.get("NCPU") or 1),
            memory=int(raw.get("MemTotal") or 0),
        )

    async def events(
        self, filters: Mapping[str, list[str]], *, since: int | None = None
    ) -> AsyncIterator[EngineEvent]:
        """Follow ``GET /events``; ends only when the connection does (raises Unavailable)."""
        params: dict[str, Any] = {"filters": json.dumps(filters)}
        if since is not None:
            params["since"] = str(since)
        async with self._response(
            "GET", "events", what="events", params=params, timeout=None
        ) as response:
            self._events_response = response
            try:
                async for line in response.content:
                    if not line.strip():
                        continue
                    raw = json.loads(line)
                    actor = raw.get("Actor") or {}
                    yield EngineEvent(
                        type=raw.get("Type", ""),
                        action=raw.get("Action", raw.get("status", "")),
                        actor_id=actor.get("ID", raw.get("id", "")),
                        attributes=_labels(actor.get("Attributes")),
                        time_nano=int(raw.get("timeNano") or 0),
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise Unavailable(f"event stream: {type(exc).__name__}: {exc}") from None
            finally:
                self._events_response = None
        raise Unavailable("event stream: closed by the engine")

    def cut_events(self) -> bool:
        """Drop the open event stream's connection, as a network fault would (for tests)."""
        response = self._events_response
        transport = response.connection.transport if response and response.connection else None
        if transport is None:
            return False
        transport.abort()
        return True

    # -- swarm ------------------------------------------------------------------------

    async def nodes(self) -> list[NodeRecord]:
        return [node_record(n) for n in await self._json("GET", "nodes", what="nodes")]

    async def tasks(self, filters: Mapping[str, list[str]]) -> list[TaskRecord]:
        raw = await self._json(
            "GET", "tasks", what="tasks", params={"filters": json.dumps(filters)}
        )
        return [task_record(t) for t in raw]

    async def services(self, filters: Mapping[str, list[str]]) -> list[ServiceRecord]:
        raw = await self._json(
            "GET", "services", what="services", params={"filters": json.dumps(filters)}
        )
        return [
            ServiceRecord(
                id=s["ID"], name=s["Spec"]["Name"], labels=_labels(s["Spec"].get("Labels"))
            )
            for s in raw
        ]

    async def service(self, ident: str) -> ServiceRecord:
        raw = await self._json("GET", f"services/{ident}", what=f"service {ident}")
        return ServiceRecord(
            id=raw["ID"], name=raw["Spec"]["Name"], labels=_labels(raw["Spec"].get("Labels"))
        )

    async def create_service(self, body: Mapping[str, Any], *, auth: str | None = None) -> str:
        """Create; ``auth`` (an ``X-Registry-Auth`` value) goes with the task to every node
        that pulls the image, as ``docker service create --with-registry-auth`` sends it."""
        raw = await self._json(
            "POST", "services/create", what="create service", body=body, auth=auth
        )
        return str(raw["ID"])

    async def remove_service(self, ident: str) -> bool:
        """Remove; ``False`` when it was already gone."""
        try:
            await self._json("DELETE", f"services/{ident}", what=f"remove service {ident}")
        except NotFound:
            return False
        return True

    async def service_logs(self, ident: str, *, timeout: float, cap: int = 0) -> LogRead:
        """All logs so far of a service, stdout and stderr apart (see :meth:`_logs`)."""
        return await self._logs(f"services/{ident}/logs", f"logs of {ident}", timeout, cap)

    def follow_service_logs(
        self, ident: str, *, follow: bool = True, since: float | None = None
    ) -> AsyncIterator[tuple[int, bytes]]:
        """``since``: only what was logged from then on (a UNIX time)."""
        return self._follow(f"services/{ident}/logs", f"logs of {ident}", follow, since)

    # -- configs (job inputs, swarm mode) ---------------------------------------------------

    async def create_config(
        self, name: str, data: bytes, labels: Mapping[str, str], *, template: bool = False
    ) -> str:
        """Create a swarm config; ``template``: its data is a Go template the engine renders
        for each task (covey's only use: an empty file, which plain configs cannot be)."""
        body: dict[str, Any] = {
            "Name": name,
            "Labels": dict(labels),
            "Data": base64.b64encode(data).decode("ascii"),
        }
        if template:
            body["Templating"] = {"Name": "golang"}
        raw = await self._json("POST", "configs/create", what=f"create config {name}", body=body)
        return str(raw["ID"])

    async def config(self, ident: str) -> ConfigRecord:
        """One config, by id or by name, with its data."""
        raw = await self._json("GET", f"configs/{ident}", what=f"config {ident}")
        return config_record(raw, data=True)

    async def configs(self, filters: Mapping[str, list[str]]) -> list[ConfigRecord]:
        """The configs that match (the engine sends each one's data too: this costs about
        4/3 of their size in transfer)."""
        raw = await self._json(
            "GET", "configs", what="configs", params={"filters": json.dumps(filters)}
        )
        return [config_record(c) for c in raw or []]

    async def remove_config(self, ident: str) -> bool:
        """Remove; ``False`` when it was already gone; :class:`InUse` while a service names it."""
        try:
            await self._json("DELETE", f"configs/{ident}", what=f"remove config {ident}")
        except NotFound:
            return False
        except EngineError as exc:
            if "in use" in str(exc) and not isinstance(exc, Unavailable):
                raise InUse(str(exc)) from None
            raise
        return True

    # -- containers (container mode) ----------------------------------------------------

    async def create_container(self, name: str, body: Mapping[str, Any]) -> str:
        raw = await self._json(
            "POST", "containers/create", what="create container", params={"name": name}, body=body
        )
        return str(raw["Id"])

    async def start_container(self, ident: str) -> None:
        await self._json("POST", f"containers/{ident}/start", what=f"start container {ident}")

    async def inspect_container(self, ident: str) -> ContainerRecord:
        raw = await self._json("GET", f"containers/{ident}/json", what=f"container {ident}")
        return container_record(raw)

    async def containers(self, filters: Mapping[str, list[str]]) -> list[ContainerRecord]:
        raw = await self._json(
            "GET",
            "containers/json",
            what="containers",
            params={"all": "1", "filters": json.dumps(filters)},
        )
        return [container_record(c) for c in raw]

    async def kill_container(self, ident: str, signal: str = "KILL") -> None:
        try:
            await self._json(
                "POST", f"containers/{ident}/kill", what=f"kill {ident}", params={"signal": signal}
            )
        except Conflict:  # not running any more
            return

    async def stop_container(self, ident: str, grace: float) -> None:
        try:
            await self._json(
                "POST",
                f"containers/{ident}/stop",
                what=f"stop {ident}",
                params={"t": str(int(grace))},
                timeout=grace + DEFAULT_TIMEOUT,
            )
        except Conflict:
            return

    async def remove_container(self, ident: str) -> bool:
        try:
            await self._json(
                "DELETE",
                f"containers/{ident}",
                what=f"remove container {ident}",
                params={"force": "1", "v": "1"},
            )
        except NotFound:
            return False
        return True

    async def container_logs(self, ident: str, *, timeout: float, cap: int = 0) -> LogRead:
        return await self._logs(f"containers/{ident}/logs", f"logs of {ident}", timeout, cap)

    def follow_container_logs(
        self, ident: str, *, follow: bool = True
    ) -> AsyncIterator[tuple[int, bytes]]:
        return self._follow(f"containers/{ident}/logs", f"logs of {ident}", follow)

    async def put_archive(self, ident: str, path: str, tar: bytes) -> None:
        """Unpack an uncompressed tar archive into a container's filesystem at ``path``
        (``PUT /containers/{id}/archive``); the container may be created and not started."""
        await self._json(
            "PUT",
            f"containers/{ident}/archive",
            what=f"copy files into container {ident}",
            params={"path": path},
            tar=tar,
            timeout=ARCHIVE_TIMEOUT,
        )

    async def distribution_digest(
        self, image: str, *, auth: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> str:
        """The digest the image's registry names for it now (``GET /distribution/NAME/json``:
        the engine asks the registry, with ``auth`` when given)."""
        raw = await self._json(
            "GET",
            f"distribution/{image}/json",
            what=f"distribution inspect {image}",
            auth=auth,
            timeout=timeout,
        )
        descriptor = (raw or {}).get("Descriptor") or {}  # an OCI descriptor: lower-case keys
        digest = descriptor.get("digest") or descriptor.get("Digest")
        if not digest:
            raise EngineError(f"distribution inspect {image}: the engine gave no digest")
        return str(digest)

    async def image_exists(self, image: str) -> bool:
        try:
            await self._json("GET", f"images/{image}/json", what=f"image {image}")
        except NotFound:
            return False
        return True

    # -- logs -------------------------------------------------------------------------

    async def _logs(self, path: str, what: str, idle: float, cap: int) -> LogRead:
        """Read a log to its end as a stream: per stream its last ``cap`` bytes (0: all) and
        its size, in memory bounded by the cap, however long the log.

        ``idle`` bounds the wait for the *next* bytes, not the whole read: a long log keeps
        being read while bytes flow. A read that breaks or stalls midway keeps what it read
        and says so (``LogRead.problem``); only a request the engine does not answer at all
        raises (:class:`Unavailable`, :class:`NotFound`).
        """
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=idle, sock_read=idle)
        params = {"stdout": "1", "stderr": "1"}
        out, err, frames = Tail(cap), Tail(cap), Demux()
        problem: str | None = None
        async with self._response("GET", path, what=what, params=params, timeout=timeout) as resp:
            try:
                async for chunk in resp.content.iter_chunked(LOG_CHUNK):
                    for stream, data in frames.feed(chunk):
                        (err if stream == STDERR else out).write(data)
            except (TimeoutError, aiohttp.ClientError) as exc:
                problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if problem is None and frames.mid_frame:
            problem = "the stream ended inside a frame"
        if problem is not None:
            problem = f"{what}: the read broke after {out.size + err.size} bytes ({problem})"
        complete = problem is None
        return LogRead(out.captured(complete=complete), err.captured(complete=complete), problem)

    async def _follow(
        self, path: str, what: str, follow: bool = True, since: float | None = None
    ) -> AsyncIterator[tuple[int, bytes]]:
        """(STDOUT or STDERR, bytes) of a log stream as they arrive, frames passed on in pieces,
        never held whole. Followed, a service's stream never ends (the caller ends it) and a
        container's ends when the container stops; ``follow=False``: the log as it is now."""
        params = {"stdout": "1", "stderr": "1", "follow": "1" if follow else "0"}
        if since is not None:
            params["since"] = f"{since:.9f}"
        async with self._response("GET", path, what=what, params=params, timeout=None) as resp:
            frames = Demux()
            try:
                async for chunk in resp.content.iter_any():
                    for piece in frames.feed(chunk):
                        yield piece
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise Unavailable(f"{what}: {type(exc).__name__}: {exc}") from None


async def secret_id(engine: Engine, name: str) -> str:
    """The id of the swarm secret called ``name`` (services must name secrets by id too)."""
    raw = await engine._json(
        "GET", "secrets", what="secrets", params={"filters": json.dumps({"name": [name]})}
    )
    for secret in raw or []:
        if secret["Spec"]["Name"] == name:
            return str(secret["ID"])
    raise NotFound(f"no swarm secret named {name!r}")
