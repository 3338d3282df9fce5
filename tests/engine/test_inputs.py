"""Job inputs on the real engine: files a job finds read-only under /covey/inputs.

The backends are driven directly (an Engine, a backend, an attempt row made up by the test,
no store): swarm mode carries each file as one swarm config, container mode as one tar archive
unpacked before the start (on the same engine: it runs plain containers too). Every test has a
store id of its own, so "nothing of this attempt is left" is asked by its labels.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TypeVar

import anyio
import pytest

from covey.backend import (
    CONFIG_PREFIX,
    STORE_LABEL,
    ContainerBackend,
    SwarmBackend,
    config_name,
    covey_labels,
)
from covey.engine import ATTEMPT_LABEL, Engine
from covey.errors import EngineError
from covey.inputs import MAX_CONFIG, MAX_TOTAL, InputFile, InputsTooLarge
from covey.spec import JobSpec
from covey.store import AttemptRow

pytestmark = pytest.mark.engine
T = TypeVar("T")

IMAGE = "busybox:latest"
KiB = 1024
BINARY = bytes(range(256)) * 4 + b"\x00\xff\r\n\x1b[0m"  # every byte value, and a few more
LISTING = "stat -c '%a %u:%g %s %F %n' /covey/inputs/a /covey/inputs/a/* /covey/inputs/index.json"


@pytest.fixture
async def engine(swarm_host: str) -> AsyncIterator[Engine]:
    async with Engine(swarm_host) as e:
        yield e


@pytest.fixture
async def store(engine: Engine) -> AsyncIterator[str]:
    """A store id of the test's own; whatever carries it is removed after the test, even
    one that failed (the engine is shared with the other engine tests)."""
    store_id = secrets.token_hex(6)
    yield store_id
    label = {"label": [f"{STORE_LABEL}={store_id}"]}
    for service in await engine.services(label):
        await engine.remove_service(service.id)
    for container in await engine.containers(label):
        await engine.remove_container(container.id)
    for config in await engine.configs(label):
        await engine.remove_config(config.id)


def attempt_row(mode: str) -> AttemptRow:
    job = secrets.token_hex(6)
    return AttemptRow(f"{job}-1", job, 1, f"covey-{job}-1", mode, created=time.time())


def labels_of(store: str, attempt: AttemptRow) -> dict[str, str]:
    return covey_labels(store, attempt, "batch0", "inputs-test")


def sh(script: str, **changes: object) -> JobSpec:
    return JobSpec(image=IMAGE, command=("sh", "-c", script)).with_changes(**changes)


async def finish(backend: SwarmBackend | ContainerBackend, attempt: AttemptRow) -> None:
    """Wait until the attempt's container has ended (task list, or container inspect)."""
    with anyio.fail_after(30):
        while True:
            if isinstance(backend, SwarmBackend):
                tasks = await backend.engine.tasks({"service": [attempt.service]})
                if tasks and tasks[0].state in ("complete", "failed", "rejected"):
                    assert tasks[0].state != "rejected", tasks[0].err
                    return
            else:
                found = await backend.engine.inspect_container(attempt.service)
                if found.state in ("exited", "dead"):
                    return
            await anyio.sleep(0.1)


async def run(
    backend: SwarmBackend | ContainerBackend,
    spec: JobSpec,
    inputs: Sequence[InputFile],
    *,
    remove: bool = True,
) -> tuple[AttemptRow, bytes, bytes]:
    """Create an attempt with inputs, wait for its end, read its output; then remove it."""
    attempt = attempt_row(backend.mode)
    await backend.create(attempt, spec, labels_of(backend.store_id, attempt), inputs)
    await finish(backend, attempt)
    read = await backend.logs(attempt, timeout=10)
    if remove:
        await backend.remove(attempt)
    return attempt, read.stdout.data, read.stderr.data


async def both(first: Awaitable[T], second: Awaitable[T]) -> tuple[T, T]:
    """Two runs at the same time (the engine tests stay fast)."""
    results: dict[int, T] = {}

    async def one(k: int, call: Awaitable[T]) -> None:
        results[k] = await call

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, 0, first)
        tg.start_soon(one, 1, second)
    return results[0], results[1]


async def configs_of(engine: Engine, attempt: AttemptRow) -> list[str]:
    return sorted(
        c.name for c in await engine.configs({"label": [f"{ATTEMPT_LABEL}={attempt.id}"]})
    )


async def nothing_left(engine: Engine, attempt: AttemptRow) -> None:
    """No config, service or container of the attempt exists (swarm removes a removed
    service's container a moment later)."""
    label = {"label": [f"{ATTEMPT_LABEL}={attempt.id}"]}
    assert await engine.configs(label) == []
    assert await engine.services(label) == []
    with anyio.fail_after(10):
        while await engine.containers(label):
            await anyio.sleep(0.1)


# -- swarm mode -------------------------------------------------------------------------------


FILES = [
    InputFile("a/0", b"zero\n"),
    InputFile("a/1", BINARY),
    InputFile("a/cap", bytes(range(251)) * (MAX_CONFIG // 251) + b"!" * (MAX_CONFIG % 251)),
    InputFile("a/empty", b""),
    InputFile("index.json", b'{"a": ["0", "1"]}\n'),
]
CAT = "cat /covey/inputs/a/0 /covey/inputs/a/1 /covey/inputs/a/cap /covey/inputs/index.json"


async def test_swarm_inputs_arrive_byte_for_byte_and_read_only(engine: Engine, store: str) -> None:
    assert len(FILES[2].data) == MAX_CONFIG  # the largest config swarm accepts
    backend = SwarmBackend(engine, store)
    script = (
        f"{CAT}; {LISTING} >&2;"
        " echo x > /covey/inputs/a/0 || echo REFUSED >&2;"  # root, and still no
        " rm /covey/inputs/a/0 || echo REFUSED >&2"
    )
    attempt, out, err = await run(backend, sh(script), FILES)
    assert out == b"zero\n" + BINARY + FILES[2].data + FILES[4].data
    lines = err.decode().splitlines()
    assert lines == [
        "755 0:0 4096 directory /covey/inputs/a",
        "444 0:0 5 regular file /covey/inputs/a/0",
        f"444 0:0 {len(BINARY)} regular file /covey/inputs/a/1",
        f"444 0:0 {MAX_CONFIG} regular file /covey/inputs/a/cap",
        "444 0:0 0 regular empty file /covey/inputs/a/empty",
        "444 0:0 18 regular file /covey/inputs/index.json",
        "sh: can't create /covey/inputs/a/0: Read-only file system",
        "REFUSED",
        "rm: can't remove '/covey/inputs/a/0': Device or resource busy",
        "REFUSED",
    ]
    await nothing_left(engine, attempt)


async def test_swarm_one_config_per_file_and_remove_takes_them_all(
    engine: Engine, store: str
) -> None:
    backend = SwarmBackend(engine, store)
    files = [InputFile(f"a/{k}", bytes([65 + k]) * (400 * KiB)) for k in range(3)]
    cat = sh("cat /covey/inputs/a/0 /covey/inputs/a/1 /covey/inputs/a/2")
    (attempt, out, _), (other, _, _) = await both(
        run(backend, cat, files, remove=False),
        run(backend, sh("true"), [InputFile("x", b"x")], remove=False),
    )
    assert out == b"".join(f.data for f in files)  # 1.2 MiB in all: more than one config holds
    assert await configs_of(engine, attempt) == [config_name(attempt, k) for k in range(3)]
    assert await backend.remove(attempt) is True
    await nothing_left(engine, attempt)
    assert await configs_of(engine, other) == [config_name(other, 0)]  # only its own went
    adopter = SwarmBackend(engine, store)  # another process's backend: it lists the configs
    assert await adopter.remove(other) is True
    await nothing_left(engine, other)


async def test_swarm_over_the_limits_leaves_nothing(engine: Engine, store: str) -> None:
    backend = SwarmBackend(engine, store)
    too_big_file = [InputFile("a/0", b"x"), InputFile("a/1", b"x" * (MAX_CONFIG + 1))]
    too_much = [InputFile(f"a/{k}", b"y" * MAX_CONFIG) for k in range(66)]  # 64.5 MiB
    refusals = [
        (too_big_file, "input /covey/inputs/a/1 of 1,024,000 bytes"),
        (too_much, "inputs of 64.5 MiB are more than covey delivers"),
    ]
    for inputs, message in refusals:
        attempt = attempt_row("swarm")
        with pytest.raises(InputsTooLarge, match=re.escape(message)):
            await backend.create(attempt, sh("true"), labels_of(backend.store_id, attempt), inputs)
        await nothing_left(engine, attempt)


async def test_swarm_a_refused_service_takes_its_configs_with_it(
    engine: Engine, store: str
) -> None:
    backend = SwarmBackend(engine, store)
    attempt = attempt_row("swarm")
    spec = sh("true", networks=("covey-no-such-network",))
    files = [InputFile(f"a/{k}", b"data") for k in range(10)]
    with pytest.raises(EngineError, match="covey-no-such-network"):
        await backend.create(attempt, spec, labels_of(backend.store_id, attempt), files)
    await nothing_left(engine, attempt)


async def test_swarm_a_create_asked_again_reuses_its_configs(engine: Engine, store: str) -> None:
    """A create whose reply was lost is asked again: the same service, the same configs."""
    backend = SwarmBackend(engine, store)
    attempt = attempt_row("swarm")
    labels = labels_of(backend.store_id, attempt)
    files = [InputFile("a/0", b"once\n"), InputFile("a/1", b"")]
    first = await backend.create(attempt, sh("cat /covey/inputs/a/0"), labels, files)
    made = {c.id for c in await engine.configs({"label": [f"{ATTEMPT_LABEL}={attempt.id}"]})}
    again = await backend.create(attempt, sh("cat /covey/inputs/a/0"), labels, files)
    assert again == first
    now = {c.id for c in await engine.configs({"label": [f"{ATTEMPT_LABEL}={attempt.id}"]})}
    assert now == made and len(made) == 2
    await finish(backend, attempt)
    assert (await backend.logs(attempt, timeout=10)).stdout.data == b"once\n"
    await backend.remove(attempt)
    await nothing_left(engine, attempt)


async def test_swarm_prune_finds_and_removes_configs(engine: Engine, store: str) -> None:
    """leftovers(): configs whose service is gone (a crash between the two removals) are
    reported on their own; removing a leftover service removes its configs too."""
    backend = SwarmBackend(engine, store)
    (orphaned, _, _), (kept, _, _) = await both(
        run(backend, sh("true"), [InputFile("a", b"1")], remove=False),
        run(backend, sh("true"), [InputFile("a", b"2")], remove=False),
    )
    await engine.remove_service(orphaned.service)  # its configs stay behind
    left = await backend.leftovers()
    by_attempt = {attempt: (ident, name) for ident, name, attempt in left}
    assert len(left) == 2, left  # kept's service (its config goes with it) and orphaned's config
    assert by_attempt[orphaned.id] == (by_attempt[orphaned.id][0], config_name(orphaned, 0))
    assert by_attempt[orphaned.id][0].startswith(CONFIG_PREFIX)
    assert by_attempt[kept.id][1] == kept.service
    for ident, _, _ in left:
        assert await backend.remove_object(ident) is True
    assert await backend.leftovers() == []
    await nothing_left(engine, orphaned)
    await nothing_left(engine, kept)


# -- container mode ---------------------------------------------------------------------------


async def test_container_inputs_arrive_byte_for_byte_and_read_only(
    engine: Engine, store: str
) -> None:
    backend = ContainerBackend(engine, store)
    big = InputFile("a/big", bytes(range(256)) * 4 * KiB)  # over one swarm config: fine here
    files = [*FILES, big]
    script = (
        f"{CAT} /covey/inputs/a/big; {LISTING} >&2;"
        " echo x > /covey/inputs/a/0 || echo REFUSED >&2;"
        " touch /covey/inputs/a/new || echo REFUSED >&2"
    )
    attempt, out, err = await run(backend, sh(script, user="1000:1000"), files)
    assert out == b"zero\n" + BINARY + FILES[2].data + FILES[4].data + big.data
    lines = err.decode().splitlines()
    assert lines[0].startswith("555 0:0 ") and lines[0].endswith(" directory /covey/inputs/a")
    assert lines[1:] == [
        "444 0:0 5 regular file /covey/inputs/a/0",
        f"444 0:0 {len(BINARY)} regular file /covey/inputs/a/1",
        f"444 0:0 {len(big.data)} regular file /covey/inputs/a/big",
        f"444 0:0 {MAX_CONFIG} regular file /covey/inputs/a/cap",
        "444 0:0 0 regular empty file /covey/inputs/a/empty",
        "444 0:0 18 regular file /covey/inputs/index.json",
        "sh: can't create /covey/inputs/a/0: Permission denied",
        "REFUSED",
        "touch: /covey/inputs/a/new: Permission denied",
        "REFUSED",
    ]
    await nothing_left(engine, attempt)


async def test_container_over_the_total_leaves_nothing(engine: Engine, store: str) -> None:
    backend = ContainerBackend(engine, store)
    attempt = attempt_row("container")
    inputs = [InputFile("a/0", b"z" * (MAX_TOTAL + 1))]
    with pytest.raises(InputsTooLarge, match=r"inputs of 64\.0 MiB are more than covey delivers"):
        await backend.create(attempt, sh("true"), labels_of(backend.store_id, attempt), inputs)
    await nothing_left(engine, attempt)
