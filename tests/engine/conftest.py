"""Fixtures of the engine tests that start covey processes against a store of their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.engine.covey_env import CoveyEnv


@pytest.fixture
def env(swarm_host: str, tmp_path: Path) -> Iterator[CoveyEnv]:
    e = CoveyEnv(swarm_host, tmp_path)
    try:
        yield e
    finally:
        e.close()
