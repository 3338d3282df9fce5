"""``covey timeline`` on a real batch: two stages, a queue (3 at a time), two retries.

The picture in the README (docs/timeline.png) is this test's PNG:
``pytest tests/engine/test_timeline.py --basetemp=/tmp/tl`` leaves it in /tmp/tl.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import pytest
from tests.engine.covey_env import CoveyEnv

from covey import timeline

pytestmark = pytest.mark.engine

IMAGE = "busybox:latest"
FLAKY = ("b", "e")  # these items fail once (exit 75), then succeed


def jobs(out: Path) -> list[dict[str, Any]]:
    fail_once = (
        f"f=/out/ran-$COVEY_ITEM; case $COVEY_ITEM in {'|'.join(FLAKY)})"
        " [ -e $f ] || { touch $f; sleep 1; exit 75; };; esac;"
        " sleep $((COVEY_INDEX % 3 + 1)); echo $COVEY_ITEM"
    )
    return [
        {
            "name": "map",
            "image": IMAGE,
            "command": ["sh", "-c", fail_once],
            "for_each": ["a", "b", "c", "d", "e", "f"],
            "volumes": [f"{out}:/out"],
            "retry": {"attempts": 2, "backoff": "1s", "on_exit_codes": [75]},
        },
        {
            "name": "reduce",
            "image": IMAGE,
            "command": ["sh", "-c", "sleep 2; echo done"],
            "needs": ["map"],
        },
    ]


class Hits(HTMLParser):
    """The hover rectangles (id -> title) of the HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.titles: dict[str, str] = {}
        self.urls: list[str] = []
        self._at: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]
        if tag == "rect" and found.get("class") == "hit":
            self._at = found["id"]
            self.titles[self._at or ""] = ""

    def handle_data(self, data: str) -> None:
        if self._at is not None:
            self.titles[self._at] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._at = None


async def test_the_timeline_of_a_batch_with_retries_and_two_stages(env: CoveyEnv) -> None:
    out = env.tmp / "out"
    out.mkdir()
    os.chmod(out, 0o777)
    done = env.covey(
        "batch", env.batch_file("timeline.yaml", jobs(out)), "--json", "--max-concurrent", "3",
        timeout=180,
    )  # fmt: skip
    doc = json.loads(done.stdout)
    assert doc["succeeded"] == 7
    attempts = {
        f"a-{r['id']}": (r["n"], r["node"])
        for r in env.query(
            "SELECT a.id, a.n, a.node FROM attempts a JOIN jobs j ON j.id=a.job_id"
            " WHERE j.batch_id=?",
            (doc["batch"],),
        )
    }
    assert sorted(n for n, _ in attempts.values()) == [1] * 7 + [2] * 2

    page = env.tmp / "timeline.html"
    assert await timeline.command(env.db, doc["batch"], page, False) == 0
    hits = Hits()
    hits.feed((await anyio.Path(page).read_bytes()).decode())
    hits.close()
    assert set(hits.titles) == set(attempts)  # every attempt, each under its bar
    assert not [u for u in hits.urls if not u.startswith("#")]
    retried = [t for t in hits.titles.values() if "attempt 2: succeeded" in t]
    assert len(retried) == 2 and all("stage map" in t for t in retried)
    failed = [t for t in hits.titles.values() if "attempt 1: failed, exit 75" in t]
    assert len(failed) == 2
    (node,) = {node for _, node in attempts.values()}  # one node: one lane
    assert node and all(f"node {node}" in t for t in hits.titles.values())

    png = env.tmp / "timeline.png"
    assert await timeline.command(env.db, "timeline.yaml", png, False) == 0  # by name
    data = await anyio.Path(png).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    svg = env.tmp / "timeline.svg"
    assert await timeline.command(env.db, doc["batch"], svg, False) == 0
    ET.fromstring(await anyio.Path(svg).read_bytes())
