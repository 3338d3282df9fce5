"""covey.images: what a registry's answer means for a batch (the engine's side is tested
against a real registry in tests/engine/test_registry.py)."""

from __future__ import annotations

import logging

import pytest

from covey.engine import NotFound, Unavailable
from covey.errors import EngineError
from covey.images import LOCAL_ONLY, NOT_RESOLVED, ImageError, Pin, resolve

DIGEST = "sha256:" + "a" * 64


class Answers:
    """The two questions covey.images asks an engine, answered as given."""

    def __init__(self, digest: str | Exception, local: bool = False) -> None:
        self.digest = digest
        self.local = local
        self.asked: list[tuple[str, str | None]] = []

    async def distribution_digest(self, image: str, *, auth: str | None, timeout: float) -> str:
        self.asked.append((image, auth))
        if isinstance(self.digest, Exception):
            raise self.digest
        return self.digest

    async def image_exists(self, image: str) -> bool:
        return self.local


async def pin(answers: Answers, image: str, **kw: object) -> Pin:
    return await resolve(answers, image, **{"auth": None, **kw})  # type: ignore[arg-type]


async def test_a_tag_is_pinned_to_the_digest_its_registry_names() -> None:
    answers = Answers(DIGEST)
    found = await pin(answers, "reg.example:5000/app:1", auth="AUTH")
    assert found == Pin("reg.example:5000/app:1", DIGEST)
    assert found.reference == f"reg.example:5000/app:1@{DIGEST}"
    assert answers.asked == [("reg.example:5000/app:1", "AUTH")]


async def test_a_reference_with_a_digest_is_not_asked_again() -> None:
    answers = Answers(DIGEST)
    found = await pin(answers, f"app:1@sha256:{'b' * 64}")
    assert found.digest == f"sha256:{'b' * 64}"
    assert found.reference == f"app:1@sha256:{'b' * 64}"
    assert answers.asked == []


async def test_no_resolve_image_runs_the_tag_unpinned_and_says_so() -> None:
    answers = Answers(DIGEST)
    found = await pin(answers, "app:1", resolve=False)
    assert (found.digest, found.note, found.reference) == (None, NOT_RESOLVED, "app:1")
    assert answers.asked == []


@pytest.mark.parametrize(
    "message",
    [
        "distribution inspect reg:5000/a:1: errors: unauthorized: authentication required",
        "distribution inspect reg:5000/a:1: manifest unknown: manifest unknown",
        "distribution inspect reg:5000/a:1: no basic auth credentials",
    ],
)
async def test_a_refused_image_the_engine_lacks_fails_naming_it(message: str) -> None:
    with pytest.raises(ImageError) as caught:
        await pin(Answers(EngineError(message)), "reg:5000/a:1")
    text = str(caught.value)
    assert text.startswith("image reg:5000/a:1: the registry refused it: ")
    assert message.split(": ", 1)[1] in text
    assert ("--with-registry-auth" in text) is ("manifest unknown" not in message)
    assert caught.value.exit_code == 125


async def test_the_hint_about_credentials_is_left_out_when_they_were_sent() -> None:
    refused = EngineError("distribution inspect reg:5000/a:1: unauthorized")
    with pytest.raises(ImageError) as caught:
        await pin(Answers(refused), "reg:5000/a:1", auth="AUTH")
    assert "--with-registry-auth" not in str(caught.value)


async def test_a_local_image_with_an_implicit_registry_runs_unpinned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``myapp:latest`` built on the node: Docker Hub's refusal says nothing about it."""
    refused = EngineError("distribution inspect myapp:latest: denied: access denied")
    with caplog.at_level(logging.INFO, logger="covey"):
        found = await pin(Answers(refused, local=True), "myapp:latest", nodes=3)
    assert (found.digest, found.note) == (None, LOCAL_ONLY)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "myapp:latest is not pinned" in caplog.records[0].getMessage()


async def test_a_named_registry_refusing_on_several_nodes_fails_even_if_local() -> None:
    """The manager pushed it, the workers cannot pull it: fail before anything runs."""
    refused = EngineError("distribution inspect reg:5001/p:1: no basic auth credentials")
    with pytest.raises(ImageError):
        await pin(Answers(refused, local=True), "reg:5001/p:1", nodes=3)


async def test_on_one_node_a_local_image_runs_unpinned_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refused = EngineError("distribution inspect reg:5001/p:1: no basic auth credentials")
    with caplog.at_level(logging.INFO, logger="covey"):
        found = await pin(Answers(refused, local=True), "reg:5001/p:1", nodes=1)
    assert found.note == LOCAL_ONLY
    assert [r.levelno for r in caplog.records] == [logging.INFO]


@pytest.mark.parametrize(
    "error",
    [
        Unavailable("distribution inspect a:1: TimeoutError"),
        EngineError('distribution inspect a:1: Get "https://registry-1.docker.io/v2/": dial tcp'),
        NotFound("distribution inspect a:1: 404 page"),
    ],
)
async def test_no_registry_to_ask_runs_unpinned(error: Exception) -> None:
    found = await pin(Answers(error, local=False), "a:1", nodes=2)
    assert found.digest is None
    assert found.note is not None
