"""How a job attempt becomes an engine object: a swarm service or, in container mode, a
plain container. Both backends give the orchestrator the same few operations, so the
submitter, tracker and reaper never ask which one they drive.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from covey.capture import LogRead
from covey.engine import (
    ATTEMPT_LABEL,
    ConfigRecord,
    Conflict,
    Engine,
    InUse,
    NotFound,
    secret_id,
)
from covey.errors import EngineError
from covey.governor import Usage, foreign_usage
from covey.inputs import InputFile, check_inputs, output_config, tar_archive
from covey.records import NANO, EngineEvent, NodeRecord
from covey.spec import JobSpec
from covey.states import (
    PRE_RUNNING,
    Observation,
    Outcome,
    Phase,
    observe_container,
    observe_task,
    start_failure_code,
)
from covey.store import AttemptRow

MANAGED_LABEL = "covey.managed"
STORE_LABEL = "covey.store"
BATCH_LABEL = "covey.batch"
JOB_LABEL = "covey.job"
NAME_LABEL = "covey.name"

# Every job logs through the engine's ``local`` driver, whatever the engine's default: the
# default ``json-file`` stores each line as a JSON string and turns bytes that are not UTF-8
# into U+FFFD (a job printing 0xFF is read back as EF BF BD); ``local`` keeps bytes as they
# were written. Its default rotation (5 compressed files of 20 MB) drops the head of a long
# log (measured: 7.1 of 10 MB kept for `yes | head -c 10M`: it frames every line, ~27 bytes
# each), and covey's size count and ``covey run``'s passthrough need all of it: one file,
# never rotated in practice (max-size 0 would rotate at every write; compression needs two
# files), so the engine keeps a job's whole log until covey removes the job, as json-file did.
LOG_OPTIONS = {"max-size": "1t", "max-file": "1", "compress": "false"}
LOG_DRIVER = "local"
CONTAINER_POLL = 0.25  # a follower waiting for its task's container
CONFIGS_AT_ONCE = 8  # concurrent config creates/removes of one attempt
CONFIG_PREFIX = "config:"  # leftovers(): a config's ident, apart from services'
OUTPUT_PREFIX = "output:"  # leftovers(): a shared output's config (kept while its batch runs)
AGENT_LABEL = "covey.agent"  # covey's agent service and its config (covey.agent)
OUTPUT_LABEL = "covey.output"  # a shared output's config: the attempt whose stdout it holds
EMPTY_TEMPLATE = b"{{/* an empty input file */}}"  # swarm refuses empty configs
IN_USE_TRIES = 4  # a config named by a service being removed (never seen on 20.10)
IN_USE_PAUSE = 0.25
CLEANUP_TIMEOUT = 30.0

log = logging.getLogger("covey")


class StartFailed(EngineError):
    """The container exists but its command could not be started (docker run's 126/127).

    ``engine_id`` is that container: it is left for the reaper, which reads its (empty)
    logs and removes it like any other attempt's. Removing it here raced the ``die`` event
    the engine sends for the failed start: a reaper acting on that event found no container
    to read and reported the output incomplete."""

    def __init__(self, message: str, engine_id: str) -> None:
        super().__init__(message)
        self.exit_code = start_failure_code(message)
        self.engine_id = engine_id


@dataclass(frozen=True, slots=True)
class Seen:
    """One attempt as one listing showed it."""

    attempt: str
    engine_id: str
    observation: Observation


def covey_labels(
    store_id: str, attempt: AttemptRow, batch_id: str, job_name: str
) -> dict[str, str]:
    return {
        MANAGED_LABEL: "1",
        STORE_LABEL: store_id,
        BATCH_LABEL: batch_id,
        JOB_LABEL: attempt.job_id,
        ATTEMPT_LABEL: attempt.id,
        NAME_LABEL: job_name,
    }


OWN_LABELS = (MANAGED_LABEL, STORE_LABEL, BATCH_LABEL, JOB_LABEL, ATTEMPT_LABEL, NAME_LABEL)


def config_name(attempt: AttemptRow, k: int) -> str:
    """The attempt's k-th input config: ``covey-<attempt id>-in-<k>`` (the service's name
    with ``-in-<k>`` for covey's own names). Fixed, so a create asked again after a lost
    reply finds what it made; short, so it stays within swarm's 64 characters whatever the
    job's ``--name``."""
    return f"covey-{attempt.id}-in-{k}"


def config_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """An input config's labels: covey's own labels of its attempt (not the job's)."""
    return {k: labels[k] for k in OWN_LABELS if k in labels}


def config_reference(name: str, ident: str, f: InputFile) -> dict[str, Any]:
    """``ContainerSpec.Configs`` entry: the config as read-only file ``/covey/inputs/<path>``."""
    return {
        "ConfigName": name,
        "ConfigID": ident,
        "File": {"Name": f.target, "UID": "0", "GID": "0", "Mode": 0o444},
    }


class Backend(Protocol):
    mode: str
    engine: Engine

    async def create(
        self,
        attempt: AttemptRow,
        spec: JobSpec,
        labels: Mapping[str, str],
        inputs: Sequence[InputFile] = (),
        *,
        auth: str | None = None,
    ) -> str: ...
    async def observe(self, nodes: Mapping[str, NodeRecord]) -> list[Seen]: ...
    async def capacity(self, ours: set[str]) -> tuple[list[NodeRecord], dict[str, Usage]]: ...
    async def stop(self, attempt: AttemptRow) -> None: ...
    async def logs(
        self, attempt: AttemptRow, timeout: float, container: str | None = None, *, cap: int = 0
    ) -> LogRead: ...
    def follow_logs(
        self, attempt: AttemptRow, *, follow: bool = True
    ) -> AsyncIterator[tuple[int, bytes]]: ...
    async def remove(self, attempt: AttemptRow) -> bool: ...
    async def leftovers(self) -> list[tuple[str, str, str | None]]: ...
    async def remove_object(self, ident: str) -> bool: ...
    def event_filters(self) -> dict[str, list[str]]: ...


def _env(spec: JobSpec) -> list[str]:
    return [f"{k}={v}" for k, v in spec.env]


class SwarmBackend:
    """One replicated service per attempt, restart condition ``none``."""

    mode = "swarm"

    def __init__(self, engine: Engine, store_id: str) -> None:
        self.engine = engine
        self.store_id = store_id
        self._node_id: str | None = None  # the engine's own node (follow_logs)
        self._made: dict[str, list[str]] = {}  # input configs each attempt here created

    def event_filters(self) -> dict[str, list[str]]:
        return event_filters(self.store_id)

    async def _service_body(
        self, attempt: AttemptRow, spec: JobSpec, labels: Mapping[str, str]
    ) -> dict[str, Any]:
        container: dict[str, Any] = {
            "Image": spec.image,
            "Labels": dict(labels),
            "Env": _env(spec),
        }
        if spec.command:
            container["Args"] = list(spec.command)
        if spec.entrypoint is not None:
            container["Command"] = list(spec.entrypoint)
        if spec.user:
            container["User"] = spec.user
        if spec.workdir:
            container["Dir"] = spec.workdir
        if spec.stop_grace_period is not None:
            container["StopGracePeriod"] = int(spec.stop_grace_period * NANO)
        if spec.mounts:
            container["Mounts"] = [
                {"Type": m.type, "Target": m.target, "ReadOnly": m.read_only}
                | ({"Source": m.source} if m.source else {})
                for m in spec.mounts
            ]
        if spec.secrets:
            container["Secrets"] = [
                {
                    "SecretName": s.source,
                    "SecretID": await secret_id(self.engine, s.source),
                    "File": {"Name": s.target or s.source, "UID": "0", "GID": "0", "Mode": 0o444},
                }
                for s in spec.secrets
            ]
        r = spec.resources
        template: dict[str, Any] = {
            "ContainerSpec": container,
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
            "LogDriver": {"Name": LOG_DRIVER, "Options": dict(LOG_OPTIONS)},
            "Resources": {
                "Limits": {"NanoCPUs": r.limit_nano_cpus, "MemoryBytes": r.limit_memory},
                "Reservations": {"NanoCPUs": r.reserve_nano_cpus, "MemoryBytes": r.reserve_memory},
            },
        }
        if spec.constraints:
            template["Placement"] = {"Constraints": list(spec.constraints)}
        if spec.networks:
            template["Networks"] = [{"Target": n} for n in spec.networks]
        return {
            "Name": attempt.service,
            "Labels": dict(labels),
            "TaskTemplate": template,
            "Mode": {"Replicated": {"Replicas": 1}},
        }

    async def create(
        self,
        attempt: AttemptRow,
        spec: JobSpec,
        labels: Mapping[str, str],
        inputs: Sequence[InputFile] = (),
        *,
        auth: str | None = None,
    ) -> str:
        """Create the attempt's service; a create that already happened is adopted, not repeated.

        ``auth`` (``X-Registry-Auth``) travels with the task to the node that pulls its image.

        Its ``inputs`` become one swarm config each, created first (8 at a time) and named
        by the service; if anything fails, the configs are removed again before the error
        is raised (a config the service already uses, after a lost reply, stays: the engine
        refuses to remove it, and the next try adopts both).
        """
        check_inputs(inputs, swarm=True)
        body = await self._service_body(attempt, spec, labels)
        if not inputs:
            self._made[attempt.id] = []
            return await self._create_service(attempt, body, auth)
        # a file already shared (covey.sharer) is named, not made again
        own = [(k, f) for k, f in enumerate(inputs) if f.shared is None]
        made = await self._create_configs(attempt, config_labels(labels), own)
        try:
            body["TaskTemplate"]["ContainerSpec"]["Configs"] = [
                config_reference(f.shared[1], f.shared[0], f)
                if f.shared is not None
                else config_reference(config_name(attempt, k), made[k], f)
                for k, f in enumerate(inputs)
            ]
            ident = await self._create_service(attempt, body, auth)
        except BaseException:
            await self._drop_configs(list(made.values()))
            raise
        self._made[attempt.id] = [config_name(attempt, k) for k in made]
        return ident

    async def share_output(self, attempt_id: str, batch_id: str, data: bytes) -> str:
        """Put an attempt's stdout in a swarm config of its own, for the jobs that will read
        it as an input (covey.sharer); the config's id. One that exists already (a share
        asked again) is taken if it holds the same data."""
        name = output_config(attempt_id)
        labels = {
            MANAGED_LABEL: "true",
            STORE_LABEL: self.store_id,
            BATCH_LABEL: batch_id,
            OUTPUT_LABEL: attempt_id,
        }
        data, template = (data, False) if data else (EMPTY_TEMPLATE, True)
        try:
            return await self.engine.create_config(name, data, labels, template=template)
        except Conflict:
            found = await self.engine.config(name)
            if found.labels.get(STORE_LABEL) != self.store_id or found.data != data:
                raise EngineError(f"config {name!r} exists with other data") from None
            return found.id

    async def remove_shared(self, config_id: str) -> bool:
        """Remove a shared output once no job can still need it."""
        return await self._remove_config(config_id)

    async def _create_service(
        self, attempt: AttemptRow, body: Mapping[str, Any], auth: str | None
    ) -> str:
        try:
            return await self.engine.create_service(body, auth=auth)
        except Conflict:
            existing = await self.engine.service(attempt.service)
            if existing.labels.get(ATTEMPT_LABEL) != attempt.id:
                raise EngineError(
                    f"the name {attempt.service!r} is taken by a service covey does not own"
                ) from None
            return existing.id

    async def _create_configs(
        self,
        attempt: AttemptRow,
        labels: Mapping[str, str],
        inputs: Sequence[tuple[int, InputFile]],
    ) -> dict[int, str]:
        """One config per input file, a few at a time: their ids by index. On a failure
        no new one is started, the ones made are removed, and the first error raised."""
        made: dict[int, str] = {}
        failed: list[EngineError] = []
        todo = iter(inputs)

        async def worker() -> None:
            for k, f in todo:
                if failed:
                    return
                try:
                    made[k] = await self._create_config(attempt, k, f, labels)
                except EngineError as exc:
                    failed.append(exc)
                    return

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(min(CONFIGS_AT_ONCE, len(inputs))):
                    tg.start_soon(worker)
        except BaseException:
            await self._drop_configs(list(made.values()))
            raise
        if failed:
            await self._drop_configs(list(made.values()))
            raise failed[0]
        return made

    async def _create_config(
        self, attempt: AttemptRow, k: int, f: InputFile, labels: Mapping[str, str]
    ) -> str:
        """Create one input config, or adopt the one an earlier try of this create made."""
        name = config_name(attempt, k)
        data, template = (f.data, False) if f.data else (EMPTY_TEMPLATE, True)
        try:
            return await self.engine.create_config(name, data, labels, template=template)
        except Conflict:
            found = await self.engine.config(name)
            if found.attempt != attempt.id or found.labels.get(STORE_LABEL) != self.store_id:
                raise EngineError(
                    f"the name {name!r} is taken by a config covey does not own"
                ) from None
            if (found.data, found.template) != (data, template):
                raise EngineError(
                    f"config {name!r} of attempt {attempt.id} exists with other data"
                ) from None
            return found.id

    async def _drop_configs(self, idents: Sequence[str]) -> None:
        """Remove configs after a failed create, even when cancelled; errors are only logged
        (what stays carries this store's label: ``covey prune`` finds it)."""
        if not idents:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT):
            try:
                await self._remove_configs(idents)
            except EngineError as exc:
                log.warning("%s (left for `covey prune`)", exc)

    async def _remove_configs(self, idents: Sequence[str]) -> None:
        """Remove configs, a few at a time; the first error is raised after all were tried."""
        failed: list[EngineError] = []
        todo = iter(idents)

        async def worker() -> None:
            for ident in todo:
                try:
                    await self._remove_config(ident)
                except EngineError as exc:
                    failed.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(min(CONFIGS_AT_ONCE, len(idents))):
                tg.start_soon(worker)
        if failed:
            raise failed[0]

    async def _remove_config(self, ident: str) -> bool:
        """Remove one config; ``False`` when it was already gone. Swarm frees a config as
        soon as the service naming it is removed (measured: at once, even while the task's
        container still runs), so :class:`InUse` is asked again only a few times."""
        for tried in range(1, IN_USE_TRIES + 1):
            try:
                return await self.engine.remove_config(ident)
            except InUse:
                if tried == IN_USE_TRIES:
                    raise
                await anyio.sleep(IN_USE_PAUSE)
        raise AssertionError("unreachable")

    async def _attempt_configs(self, attempt_id: str) -> list[ConfigRecord]:
        return await self.engine.configs(
            {"label": [f"{STORE_LABEL}={self.store_id}", f"{ATTEMPT_LABEL}={attempt_id}"]}
        )

    async def observe(self, nodes: Mapping[str, NodeRecord]) -> list[Seen]:
        """Every task of this store's services, in one ``GET /tasks``."""
        tasks = await self.engine.tasks({"label": [f"{STORE_LABEL}={self.store_id}"]})
        latest: dict[str, Any] = {}
        for task in tasks:
            if task.attempt is None:
                continue
            best = latest.get(task.attempt)
            if best is None or task.updated_at > best.updated_at:
                latest[task.attempt] = task
        return [
            Seen(a, t.service_id, observe_task(t, nodes.get(t.node_id or "")))
            for a, t in latest.items()
        ]

    async def capacity(self, ours: set[str]) -> tuple[list[NodeRecord], dict[str, Usage]]:
        nodes = await self.engine.nodes()
        tasks = await self.engine.tasks({"desired-state": ["running"]})
        return nodes, foreign_usage(tasks, lambda a: a is not None and a in ours)

    async def stop(self, attempt: AttemptRow) -> None:
        """Swarm has no 'stop' for a task: the reaper reads logs, then removes the service."""
        return

    async def logs(
        self, attempt: AttemptRow, timeout: float, container: str | None = None, *, cap: int = 0
    ) -> LogRead:
        """The service's logs; or, given the task's container on this engine, that container's.

        Swarm serves a service's logs only after the manager has taken in the task's end
        (read at the ``die`` event they are often empty), but a local container's logs are
        complete when its ``die`` event is sent: the reaper need not wait for a listing.
        ``timeout`` bounds the wait for the next bytes; ``cap`` is the tail kept per stream.
        """
        if container is not None:
            return await self.engine.container_logs(container, timeout=timeout, cap=cap)
        ident = attempt.engine_id or attempt.service
        return await self.engine.service_logs(ident, timeout=timeout, cap=cap)

    async def follow_logs(
        self, attempt: AttemptRow, *, follow: bool = True
    ) -> AsyncIterator[tuple[int, bytes]]:
        """The attempt's output as it is written (``follow=False``: as it is now): at its
        container when its task runs on this engine, else the service's stream.

        Swarm passes a service's stream line by line through the manager's log broker, at
        several times the engine's cost per line (2 MB of `yes` lines: 117 s against 15 s for
        the container's), and a dockerd whose log pipeline is more than about 12 s behind
        the job when it exits drops the rest of the log ("Logger didn't exit in time").
        """
        container = await self._local_container(attempt)
        if container is not None:
            stream = self.engine.follow_container_logs(container, follow=follow)
        else:
            ident = attempt.engine_id or attempt.service
            stream = self.engine.follow_service_logs(ident, follow=follow)
        async for piece in stream:
            yield piece

    async def _local_container(self, attempt: AttemptRow) -> str | None:
        """The attempt's container once its task has one, if it is on this engine."""
        if self._node_id is None:
            self._node_id = (await self.engine.info()).node_id or ""
        ident = attempt.engine_id or attempt.service
        while True:
            for task in await self.engine.tasks({"service": [ident]}):
                if task.container_id:
                    return task.container_id if task.node_id == self._node_id else None
                if task.state not in PRE_RUNNING:
                    return None  # ended without a container: nothing to follow anywhere
            await anyio.sleep(CONTAINER_POLL)

    async def remove(self, attempt: AttemptRow) -> bool:
        """Remove the service, then its input configs. ``False``: the service was gone.

        The configs of an attempt this backend created are removed by name; any other
        attempt's (adopted from another process) are found by one listing, which costs
        their size again: the engine lists configs with their data.
        """
        removed = await self.engine.remove_service(attempt.engine_id or attempt.service)
        idents = self._made.get(attempt.id)
        if idents is None:
            idents = [c.id for c in await self._attempt_configs(attempt.id)]
        await self._remove_configs(idents)
        self._made.pop(attempt.id, None)
        return removed

    async def leftovers(self) -> list[tuple[str, str, str | None]]:
        """This store's services, and the input configs of attempts that have no service
        (any more); a config's ident is ``config:<id>`` (see :meth:`remove_object`)."""
        label = {"label": [f"{STORE_LABEL}={self.store_id}"]}
        services = await self.engine.services(label)
        configs = await self.engine.configs(label)
        served = {s.labels.get(ATTEMPT_LABEL) for s in services}
        return (
            [(s.id, s.name, s.labels.get(ATTEMPT_LABEL)) for s in services]
            + [
                (CONFIG_PREFIX + c.id, c.name, c.attempt)
                for c in configs
                if c.attempt not in served and OUTPUT_LABEL not in c.labels
            ]
            + [
                (OUTPUT_PREFIX + c.id, c.name, c.labels[OUTPUT_LABEL])
                for c in configs
                if OUTPUT_LABEL in c.labels
            ]
        )

    async def remove_object(self, ident: str) -> bool:
        """Remove a leftover: a config (``config:<id>``), or a service and its input configs."""
        if ident.startswith(CONFIG_PREFIX):
            return await self._remove_config(ident.removeprefix(CONFIG_PREFIX))
        if ident.startswith(OUTPUT_PREFIX):
            return await self._remove_config(ident.removeprefix(OUTPUT_PREFIX))
        try:
            service = await self.engine.service(ident)
        except NotFound:
            return False  # its configs, if any, are the next listing's leftovers
        removed = await self.engine.remove_service(ident)
        attempt = service.labels.get(ATTEMPT_LABEL)
        if attempt:
            await self._remove_configs([c.id for c in await self._attempt_configs(attempt)])
        agent_config = service.labels.get(AGENT_LABEL)  # covey's agent (covey.agent)
        if agent_config:
            await self._remove_config(agent_config)
        return removed


class ContainerBackend:
    """Container mode: the same jobs as plain containers on an engine that is not a manager."""

    mode = "container"
    LOCAL = "local"

    def __init__(self, engine: Engine, store_id: str) -> None:
        self.engine = engine
        self.store_id = store_id
        self._node: NodeRecord | None = None

    def event_filters(self) -> dict[str, list[str]]:
        return event_filters(self.store_id)

    @staticmethod
    def _body(spec: JobSpec, labels: Mapping[str, str]) -> dict[str, Any]:
        r = spec.resources
        host: dict[str, Any] = {
            "NanoCpus": r.limit_nano_cpus,
            "Memory": r.limit_memory,
            "LogConfig": {"Type": LOG_DRIVER, "Config": dict(LOG_OPTIONS)},
        }
        if spec.mounts:
            host["Mounts"] = [
                {"Type": m.type, "Target": m.target, "ReadOnly": m.read_only}
                | ({"Source": m.source} if m.source else {})
                for m in spec.mounts
            ]
        if spec.networks:
            host["NetworkMode"] = spec.networks[0]
        body: dict[str, Any] = {
            "Image": spec.image,
            "Env": _env(spec),
            "Labels": dict(labels),
            "HostConfig": host,
        }
        if spec.command:
            body["Cmd"] = list(spec.command)
        if spec.entrypoint is not None:
            body["Entrypoint"] = list(spec.entrypoint)
        if spec.user:
            body["User"] = spec.user
        if spec.workdir:
            body["WorkingDir"] = spec.workdir
        if spec.stop_grace_period is not None:
            body["StopTimeout"] = max(1, int(spec.stop_grace_period))
        return body

    async def create(
        self,
        attempt: AttemptRow,
        spec: JobSpec,
        labels: Mapping[str, str],
        inputs: Sequence[InputFile] = (),
        *,
        auth: str | None = None,
    ) -> str:
        """Create and start the attempt's container; its ``inputs`` are copied in (one tar
        archive, through the API: a remote engine too) between create and start. A
        container that a lost reply left created but not started gets them again.
        (``auth`` is unused: a container runs the image as this engine has it.)"""
        if spec.secrets:
            raise EngineError("secrets need swarm mode (this engine is not a swarm manager)")
        if spec.constraints:
            raise EngineError("placement constraints need swarm mode")
        check_inputs(inputs, swarm=False)
        try:
            ident = await self.engine.create_container(attempt.service, self._body(spec, labels))
        except Conflict:
            found = await self.engine.inspect_container(attempt.service)
            if found.attempt != attempt.id:
                raise EngineError(
                    f"the name {attempt.service!r} is taken by a container covey does not own"
                ) from None
            ident = found.id
            if found.state != "created":
                return ident
        except NotFound as exc:  # docker run's 125 (swarm: rejected), not a start failure
            raise EngineError(f"No such image: {spec.image}") from exc
        if inputs:
            await self._copy_inputs(ident, inputs)
        try:
            await self.engine.start_container(ident)
        except NotFound:
            raise
        except EngineError as exc:
            if (
                "executable" in str(exc)
                or "no such file" in str(exc).lower()
                or "permission denied" in str(exc)
            ):
                raise StartFailed(str(exc), ident) from None
            raise
        return ident

    async def _copy_inputs(self, ident: str, inputs: Sequence[InputFile]) -> None:
        """Unpack the inputs into the created container at ``/``; if that fails the
        container is removed (even when cancelled) before the error is raised."""
        try:
            await self.engine.put_archive(ident, "/", tar_archive(inputs))
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT):
                try:
                    await self.engine.remove_container(ident)
                except EngineError as exc:
                    log.warning("%s (left for `covey prune`)", exc)
            raise

    async def observe(self, nodes: Mapping[str, NodeRecord]) -> list[Seen]:
        containers = await self.engine.containers({"label": [f"{STORE_LABEL}={self.store_id}"]})
        seen: list[Seen] = []
        for c in containers:
            if c.attempt is None:
                continue
            record = c
            if c.state in ("exited", "dead"):  # the list has no exit code: inspect the ended ones
                try:
                    record = await self.engine.inspect_container(c.id)
                except NotFound:
                    continue
            seen.append(Seen(c.attempt, c.id, observe_container(record)))
        return seen

    async def capacity(self, ours: set[str]) -> tuple[list[NodeRecord], dict[str, Usage]]:
        if self._node is None:
            info = await self.engine.info()
            self._node = NodeRecord(
                id=self.LOCAL,
                hostname=info.name or "local",
                role="manager",
                availability="active",
                state="ready",
                nano_cpus=info.ncpu * NANO,
                memory=info.memory,
            )
        return [self._node], {}

    async def stop(self, attempt: AttemptRow) -> None:
        try:  # by name when the id is not noted yet (the store notes it lazily)
            await self.engine.kill_container(attempt.engine_id or attempt.service)
        except NotFound:
            return

    async def logs(
        self, attempt: AttemptRow, timeout: float, container: str | None = None, *, cap: int = 0
    ) -> LogRead:
        return await self.engine.container_logs(
            container or attempt.engine_id or attempt.service, timeout=timeout, cap=cap
        )

    def follow_logs(
        self, attempt: AttemptRow, *, follow: bool = True
    ) -> AsyncIterator[tuple[int, bytes]]:
        return self.engine.follow_container_logs(
            attempt.engine_id or attempt.service, follow=follow
        )

    async def remove(self, attempt: AttemptRow) -> bool:
        return await self.engine.remove_container(attempt.engine_id or attempt.service)

    async def leftovers(self) -> list[tuple[str, str, str | None]]:
        containers = await self.engine.containers({"label": [f"{STORE_LABEL}={self.store_id}"]})
        return [(c.id, c.name, c.attempt) for c in containers]

    async def remove_object(self, ident: str) -> bool:
        return await self.engine.remove_container(ident)


def event_filters(store_id: str) -> dict[str, list[str]]:
    """This store's container events: ``start`` and ``die`` (hints about an attempt), and
    ``kill``, which docker sends before the ``die`` of a container it was told to stop."""
    return {
        "type": ["container"],
        "event": ["start", "kill", "die"],
        "label": [f"{STORE_LABEL}={store_id}"],
    }


def event_observation(
    event: EngineEvent, killed: Container[str] = frozenset()
) -> tuple[str, Observation] | None:
    """A container start/die event as a hint about one attempt.

    Only ``start`` and a zero-exit ``die`` of a container no one signalled are taken as
    facts. A non-zero ``die`` may be a drain's SIGTERM or covey's own stop, which only the
    task list can tell apart; and a job that traps SIGTERM exits 0 when it is stopped, so a
    zero exit of a container in ``killed`` (it had a ``kill`` event first) is left to the
    task list too, which says ``complete`` or ``shutdown``.
    """
    attempt = event.attributes.get(ATTEMPT_LABEL)
    if not attempt:
        return None
    node = event.attributes.get("com.docker.swarm.node.id")
    if event.action == "start":
        return attempt, Observation(Phase.RUNNING, node_id=node)
    if (
        event.action == "die"
        and event.attributes.get("exitCode") == "0"
        and event.actor_id not in killed
    ):
        return attempt, Observation(Phase.ENDED, Outcome.SUCCEEDED, 0, node_id=node)
    return None
