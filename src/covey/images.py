"""Images: each image of a batch pinned to one digest, and the credentials its pulls need.

A tag is a name that moves: pushed again in the middle of a batch, it would give the
batch two different programs. So covey asks the registry once per batch and image (the
engine's distribution endpoint, as ``docker service create`` does) and every attempt of
that batch, retries and fan-outs included, runs ``image:tag@sha256:...``. The answer is
kept in the store (table ``images``), so a restarted supervisor keeps the same digest.

What the registry says decides:

- a digest: pinned;
- "unauthorized", "manifest unknown", "not found" for an image the engine does not have
  either: the image cannot run anywhere, so the batch fails before anything is created,
  with the registry's own words;
- anything else (no registry reachable, a local-only image such as one made with
  ``docker build`` or ``docker import`` on a single node): it runs unpinned, with one
  warning, as docker does, and the store says it is unpinned and why. On a swarm of one
  node the warning is left out (logged at info level): there is no other node whose
  copy could differ, and ``covey run`` there should print what ``docker run`` prints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import anyio

from covey import credentials
from covey.engine import Engine, NotFound, Unavailable
from covey.errors import EngineError, SpecError
from covey.spec import JobSpec
from covey.store import Store

log = logging.getLogger("covey")

RESOLVE_TIMEOUT = 30.0
# what a registry says (through Engine 20.10) when an image cannot be pulled by anyone
# with these credentials: the batch fails before anything runs
REFUSALS = (
    "unauthorized",
    "authentication required",
    "no basic auth credentials",
    "manifest unknown",
    "not found",
    "denied",
    "does not exist",
)
AUTH_REFUSALS = ("unauthorized", "authentication required", "no basic auth credentials", "denied")
NOT_RESOLVED = "not resolved (--no-resolve-image)"
LOCAL_ONLY = "the engine has the image, but no registry gave its digest"


class ImageError(SpecError):
    """An image no node can pull: the registry refused it or does not know it (exit 125)."""


@dataclass(frozen=True, slots=True)
class Pin:
    """An image as a batch runs it: its digest, or why it runs unpinned."""

    image: str
    digest: str | None = None  # "sha256:..."
    note: str | None = None  # why there is no digest

    @property
    def reference(self) -> str:
        """What the engine is given: ``name:tag@digest`` when pinned (the tag kept for
        people reading ``docker service ls``; the engine pulls by the digest)."""
        if self.digest is None:
            return self.image
        return f"{self.image.split('@', 1)[0]}@{self.digest}"


def digest_in(image: str) -> str | None:
    """The digest a reference already names (``name@sha256:...``), or ``None``."""
    return image.split("@", 1)[1] if "@" in image else None


def auth_header(image: str) -> str | None:
    """The ``X-Registry-Auth`` value for the image's registry, from the docker CLI's
    configuration; ``None`` when it has no credentials for that registry."""
    auth = credentials.auth_for(image)
    return auth.header() if auth is not None else None


async def auth_for(image: str, wanted: bool) -> str | None:
    """The header when credentials were asked for (``--with-registry-auth``); credential
    helpers are programs, so they run in a worker thread."""
    if not wanted:
        return None
    return await anyio.to_thread.run_sync(auth_header, image)


async def resolve(
    engine: Engine, image: str, *, auth: str | None, resolve: bool = True, nodes: int = 2
) -> Pin:
    """Pin ``image`` to the digest its registry names now (see the module's docstring);
    ``nodes``: how many nodes the swarm has.

    A refusal fails unless the engine has the image itself and either the swarm is one
    node or the name leaves its registry implicit (``myapp:latest``: Docker Hub refuses a
    name it never had, which says nothing about the copies the nodes were given). A name
    that says where it lives (``registry.example.com/app``), refused on a swarm of several
    nodes, cannot be pulled by the other nodes: the batch fails.
    """
    named = digest_in(image)
    if named is not None:
        return Pin(image, named)
    if not resolve:
        return Pin(image, None, NOT_RESOLVED)
    try:
        digest = await engine.distribution_digest(image, auth=auth, timeout=RESOLVE_TIMEOUT)
    except Unavailable as exc:
        local = await _local(engine, image)
        why = LOCAL_ONLY if local else f"its registry did not answer ({exc})"
        return _warned(Pin(image, None, why), nodes)
    except (NotFound, EngineError) as exc:
        message = str(exc)
        refused = any(word in message.lower() for word in REFUSALS)
        if not refused:
            return _warned(Pin(image, None, f"its registry could not be asked ({message})"), nodes)
        explicit = credentials.registry_of(image) != credentials.HUB_REGISTRY
        if (nodes <= 1 or not explicit) and await _local(engine, image):
            return _warned(Pin(image, None, LOCAL_ONLY), nodes)
        private = any(word in message.lower() for word in AUTH_REFUSALS)
        raise ImageError(
            f"image {image}: the registry refused it: {_registry_words(message)}"
            + (" (a private image? use --with-registry-auth)" if private and not auth else "")
        ) from None
    return Pin(image, digest)


async def _local(engine: Engine, image: str) -> bool:
    try:
        return await engine.image_exists(image)
    except EngineError:
        return False


def _warned(pin: Pin, nodes: int) -> Pin:
    log.log(
        logging.WARNING if nodes > 1 else logging.INFO,
        "image %s is not pinned to a digest (%s): each node uses the image it has or"
        " pulls under that name, so nodes may run different versions of it",
        pin.image,
        pin.note,
    )
    return pin


def _registry_words(message: str) -> str:
    """The engine prefixes its own context ("distribution inspect ...: "): keep the
    registry's part, which is what a user can act on."""
    return message.split(": ", 1)[1] if message.startswith("distribution") else message


AUTH_TTL = 300.0  # credentials read again after this long (helpers give short-lived tokens)
REFUSAL_TTL = 60.0  # a refused image is asked again after this long (credentials fixed?)


class Pins:
    """The pins and credentials of the batches one orchestrator runs.

    Each (batch, image) is resolved once: remembered here, kept in the store (the first
    process to save it wins, so two processes cannot pin one batch twice), and read back
    from the store by a restarted process. A refusal is remembered for a minute only, so a
    thousand jobs of a batch whose image is refused ask the registry once, and a retry
    after the credentials were fixed asks again.
    """

    def __init__(self, store: Store, engine: Engine, nodes: Callable[[], int]) -> None:
        self.store = store
        self.engine = engine
        self.nodes = nodes  # how many nodes the swarm has now
        self._pins: dict[tuple[str, str], Pin] = {}
        self._refused: dict[tuple[str, str], tuple[float, ImageError]] = {}
        self._auth: dict[str, tuple[float, str | None]] = {}
        self._locks: dict[tuple[str, str], anyio.Lock] = {}

    async def auth(self, spec: JobSpec) -> str | None:
        """The ``X-Registry-Auth`` header for the spec's image, if it asks for one."""
        if not spec.registry_auth:
            return None
        now = time.monotonic()
        cached = self._auth.get(spec.image)
        if cached is None or now - cached[0] > AUTH_TTL:
            cached = (now, await auth_for(spec.image, True))
            self._auth[spec.image] = cached
        return cached[1]

    async def pin(self, batch_id: str, spec: JobSpec) -> Pin:
        """The batch's pin of the spec's image; :class:`ImageError` if it was refused."""
        key = (batch_id, spec.image)
        found = self._pins.get(key)
        if found is not None:
            return found
        async with self._locks.setdefault(key, anyio.Lock()):
            found = self._pins.get(key)
            if found is not None:
                return found
            refused = self._refused.get(key)
            if refused is not None and time.monotonic() - refused[0] < REFUSAL_TTL:
                raise refused[1]
            saved = await self.store.pin(batch_id, spec.image)
            if saved is None:
                try:
                    pin = await resolve(
                        self.engine,
                        spec.image,
                        auth=await self.auth(spec),
                        resolve=spec.resolve_image,
                        nodes=self.nodes(),
                    )
                except ImageError as exc:
                    self._refused[key] = (time.monotonic(), exc)
                    raise
                saved = await self.store.save_pin(batch_id, spec.image, pin.digest, pin.note)
            found = self._pins[key] = Pin(spec.image, *saved)
            self._locks.pop(key, None)
            return found


async def resolve_all(engine: Engine, specs: Iterable[JobSpec], nodes: int) -> list[Pin]:
    """Pin every image of a batch before it is stored (a foreground run): an image no node
    can pull fails the whole batch before anything is created, naming the image."""
    pins: dict[str, Pin] = {}
    for spec in specs:
        if spec.image not in pins:
            auth = await auth_for(spec.image, spec.registry_auth)
            pins[spec.image] = await resolve(
                engine, spec.image, auth=auth, resolve=spec.resolve_image, nodes=nodes
            )
    return list(pins.values())
