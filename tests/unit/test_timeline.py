"""timeline.py (lanes, packing, when lanes are counted, colours, the three formats, 10,000
attempts) on made-up rows, and store/timeline.py with ``timeline.command`` on a real store."""

from __future__ import annotations

import io
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import anyio
import pytest

from covey import timeline
from covey.errors import SpecError, StoreError
from covey.spec import JobSpec, RetryPolicy
from covey.states import Outcome
from covey.store import AttemptEnd, BatchRow, Store
from covey.store.timeline import BatchTimeline, Span, Wait

T0 = 1000.0


def span(
    job: str,
    created: float,
    ended: float | None,
    *,
    n: int = 1,
    node: str | None = "node-a",
    queued: float | None = None,
    started: float | None = None,
    outcome: str | None = "succeeded",
    stage: str | None = None,
    code: int | None = 0,
) -> Span:
    """An attempt; times in seconds after the batch was created."""
    return Span(
        job_id=job,
        name=f"name-{job}",
        index=None,
        stage=stage,
        n=n,
        node=node,
        queued=T0 + (created if queued is None else queued),
        created=T0 + created,
        started=T0 + (created if started is None else started),
        ended=None if ended is None else T0 + ended,
        outcome=outcome,
        exit_code=code,
        error=None,
        pulling=None,
    )


def batch(*spans: Span, stages: tuple[str, ...] = (), now: float | None = None) -> BatchTimeline:
    last = max((s.ended or T0 for s in spans), default=T0)
    waits = tuple(Wait(s.job_id, "queued", s.queued, s.created) for s in spans if s.n)
    return BatchTimeline(BatchRow("b1", "jobs.yaml", T0, len(spans)), spans, waits, stages,
                         now or last)  # fmt: skip


def many(count: int, nodes: int, slots: int = 8) -> BatchTimeline:
    """``count`` attempts on ``nodes`` nodes of ``slots`` each, back to back, some retried
    or lost, all queued when the batch was created."""
    spans = []
    free = {(n, s): 0.0 for n in range(nodes) for s in range(slots)}
    outcomes = ["succeeded"] * 7 + ["failed", "lost", "timed_out"]
    for i in range(count):
        node = i % nodes
        slot = min(range(slots), key=lambda s: free[(node, s)])
        created = free[(node, slot)] + 0.01
        ended = created + 0.2 + (i % 13) * 0.1
        free[(node, slot)] = ended
        spans.append(
            span(f"j{i:05d}", created, ended, started=created + 0.05, node=f"node-{node}",
                 queued=0.0, n=1 + (i % 9 == 0), outcome=outcomes[i % 10], stage="map")
        )  # fmt: skip
    spans.sort(key=lambda s: s.created)
    return batch(*spans, stages=("map",))


# -- lanes, packing, counting -----------------------------------------------------------------


def test_one_lane_per_node_by_name_then_unplaced() -> None:
    found = timeline.lanes(
        batch(
            span("a", 0, 1, node="zeta"),
            span("b", 0, 1, node=None, outcome="rejected"),
            span("c", 0, 1, node="alpha"),
            span("d", 2, 3, node="zeta"),
        ),
        0.01,
    )
    assert [(lane.name, [s.job_id for s in lane.spans]) for lane in found] == [
        ("alpha", ["c"]),
        ("zeta", ["a", "d"]),
        ("unplaced", ["b"]),
    ]


def test_overlapping_bars_go_to_sub_rows_and_free_ones_are_reused() -> None:
    spans = [span("a", 0, 2), span("b", 1, 3), span("c", 2.5, 4), span("d", 2.6, 2.7)]
    rows, queue, height = timeline.pack(spans, 0.01, T0 + 10)
    assert (rows, height) == ([0, 1, 0, 2], 3)
    assert queue == [True, True, True, True]


def test_a_wait_for_admission_is_drawn_only_where_its_sub_row_has_room() -> None:
    spans = [
        span("a", 0, 2),  # new row: room
        span("b", 3, 4, queued=1),  # row 0 free since 2, waited from 1: no room
        span("c", 5, 6, queued=4.5),  # row 0 free since 4: room
    ]
    rows, queue, _ = timeline.pack(spans, 0.01, T0 + 10)
    assert rows == [0, 0, 0]
    assert queue == [True, False, True]


def test_an_attempt_still_running_ends_now_and_blocks_its_row() -> None:
    spans = [span("a", 0, None, outcome=None), span("b", 5, 6)]
    rows, _, height = timeline.pack(spans, 0.01, T0 + 8)
    assert (rows, height) == ([0, 1], 2)


def test_lanes_of_too_many_bars_are_counted() -> None:
    over = [span(f"x{i}", i, i + 0.5, node="big") for i in range(timeline.COUNT_OVER + 1)]
    wide = [span(f"w{i}", 0, 5, node="wide") for i in range(1000)]  # 1000 sub-rows at once
    small = [span("s", 0, 1, node="small")]
    found, row_px = timeline.fit(timeline.lanes(batch(*over, *wide, *small), 0.01))
    counted = {lane.name: lane.counted for lane in found}
    assert counted == {"big": True, "small": False, "wide": True}
    assert row_px == timeline.ROW_PX


def test_many_sub_rows_get_thinner_down_to_the_least() -> None:
    wide = [span(f"w{i}", 0, 5, node="wide") for i in range(400)]
    found, row_px = timeline.fit(timeline.lanes(batch(*wide), 0.01))
    assert not found[0].counted
    assert timeline.MIN_ROW_PX <= row_px == timeline.BARS_PX / 400 < timeline.ROW_PX


def test_in_progress_is_the_average_over_each_slice() -> None:
    assert timeline.in_progress([(0, 10)], 0, 10, 5) == [1.0] * 5
    assert timeline.in_progress([(0, 10), (4, 6)], 0, 10, 5) == [1.0, 1.0, 2.0, 1.0, 1.0]
    assert timeline.in_progress([(0, 1)], 0, 10, 5) == [0.5, 0, 0, 0, 0]
    assert timeline.in_progress([], 0, 10, 2) == [0.0, 0.0]


def test_durations_and_hover_details() -> None:
    s = replace(
        span("j1", 2, 9, queued=0.5, started=4, outcome="failed", code=3, n=2),
        index=7,
        stage="map",
        error="boom",
    )
    assert timeline.durations(s, T0 + 20) == (1.5, 2.0, 5.0)
    assert timeline.details(s, T0 + 20).splitlines() == [
        "job j1 name-j1, index 7, stage map",
        "attempt 2: failed, exit 3",
        "node node-a",
        "queued 1.5s, pending 2.0s, running 5.0s",
        "boom",
    ]
    pulling = replace(span("j2", 2, None, started=None, outcome=None), pulling=T0 + 3, started=None)
    assert timeline.durations(pulling, T0 + 5) == (0.0, 3.0, None)
    assert "pulling the image since 2.0s" in timeline.details(pulling, T0 + 5)


# -- pictures ---------------------------------------------------------------------------------


OUTCOMES = ("succeeded", "failed", "timed_out", "rejected", "lost", "cancelled", None)


def rainbow() -> BatchTimeline:
    """One bar per outcome (None: still running), one after the other on one node, and a
    retry; every one running from its admission."""
    spans = [span(f"o{i}", i * 2, i * 2 + 1.5, outcome=o) for i, o in enumerate(OUTCOMES[:-1])]
    spans.append(span("o6", 12, None, outcome=None))
    spans.append(span("r1", 14, 15.5, n=2))
    return batch(*spans, now=T0 + 16)


class Page(HTMLParser):
    """What the HTML holds: hover rectangles with their titles, links, scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.rects: dict[str, dict[str, str]] = {}
        self.titles: dict[str, str] = {}
        self.urls: list[str] = []
        self.tags: set[str] = set()
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        found = {k: v or "" for k, v in attrs}
        self.urls += [v for k, v in found.items() if k in ("src", "href", "xlink:href")]
        if tag == "rect" and found.get("class") == "hit":
            self.rects[found["id"]] = found
            self._in = found["id"]

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self.titles[self._in] = self.titles.get(self._in, "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in = None


def parse(data: bytes) -> Page:
    page = Page()
    page.feed(data.decode())
    page.close()
    return page


def pixels(png: bytes) -> object:
    from matplotlib.image import imread

    return imread(io.BytesIO(png), format="png")


def test_each_outcome_has_its_colour_and_a_retry_is_hatched() -> None:
    import numpy as np
    from matplotlib.colors import to_rgb

    tl = rainbow()
    page = parse(timeline.render(tl, "html"))
    image = np.asarray(pixels(timeline.render(tl, "png")))[:, :, :3]
    scale = timeline.DPI / 72  # the SVG is in points, the PNG in pixels
    for s in tl.spans:
        rect = {
            k: float(v)
            for k, v in page.rects[f"a-{s.id}"].items()
            if k in ("x", "y", "width", "height")
        }
        x0, x1 = (int((rect["x"] + rect["width"] * f) * scale) for f in (0.3, 0.7))
        y0, y1 = (int((rect["y"] + rect["height"] * f) * scale) for f in (0.3, 0.6))
        patch = image[y0:y1, x0:x1].reshape(-1, 3)  # the middle of the bar
        want = np.asarray(to_rgb(timeline.COLOURS[timeline.outcome_of(s)]))
        share = np.mean(np.abs(patch - want).max(axis=1) < 0.02)
        white = np.mean(patch.min(axis=1) > 0.6)  # hatch lines (drawn in white, blended)
        if s.n > 1 or s.outcome == "lost":
            assert 0.2 < share < 0.95 and white > 0.05, (s.job_id, share, white)
        else:
            assert share > 0.95, (s.job_id, share)


def test_the_html_holds_every_attempt_and_fetches_nothing() -> None:
    tl = batch(
        span("a", 0, 3, node="n1", outcome="failed", code=3),
        span("a", 4, 6, node="n2", n=2),
        span("b", 0, 2, node=None, outcome="rejected", code=None),
        Span("c", "name-c", None, "reduce", 0, None, T0, T0 + 5, None, T0 + 5, "skipped",
             None, "a failed", None),
        stages=("map", "reduce"),
    )  # fmt: skip
    data = timeline.render(tl, "html")
    page = parse(data)
    assert set(page.rects) == {"a-a-1", "a-a-2", "a-b-1", "a-c"}
    assert page.titles["a-a-1"].splitlines() == [
        "job a name-a",
        "attempt 1: failed, exit 3",
        "node n1",
        "queued 0.0s, pending 0.0s, running 3.0s",
    ]
    assert "no attempt: skipped" in page.titles["a-c"]
    assert not [u for u in page.urls if not u.startswith("#")]
    assert "script" not in page.tags and "link" not in page.tags
    text = data.decode()
    assert "http" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
        'xmlns:xlink="http://www.w3.org/1999/xlink"', ""
    )
    assert all(f">{s.id}<" in text for s in tl.spans)  # the table too


def test_png_and_svg() -> None:
    tl = rainbow()
    png = timeline.render(tl, "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    root = ET.fromstring(timeline.render(tl, "svg"))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_a_counted_lane_is_named_in_the_title(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeline, "COUNT_OVER", 50)
    tl = many(200, 2)
    picture = timeline.draw(tl)
    assert "node-0, node-1: too many attempts to draw one by one" in picture.title
    assert picture.hits == []  # no bars: nothing to hover, but the table has them all
    data = timeline.render(tl, "html")
    assert parse(data).rects == {}
    assert all(f">{s.id}<" in data.decode() for s in tl.spans)


@pytest.fixture
def timed() -> Iterator[dict[str, float]]:
    took: dict[str, float] = {}
    yield took
    print("render times:", {k: f"{v:.2f}s" for k, v in took.items()})


def test_10000_attempts_render_in_time(timed: dict[str, float]) -> None:
    """Drawn bar by bar (8 nodes, 1,250 each); the target is 10 s each, the bound generous
    for a loaded CI machine."""
    tl = many(10_000, 8)
    assert not any(lane.counted for lane in timeline.frame(tl).lanes)
    for fmt in ("png", "svg", "html"):
        started = time.perf_counter()
        data = timeline.render(tl, fmt)
        timed[fmt] = time.perf_counter() - started
        assert data
    assert max(timed.values()) < 30
    assert timeline.frame(many(10_000, 2)).lanes[0].counted  # 5,000 a lane: counted


# -- the store and the command ----------------------------------------------------------------


async def ran(store: Store, job_id: str, node: str | None, outcome: Outcome, code: int | None,
              *, runs: bool = True) -> None:  # fmt: skip
    """One attempt of the job, from admission to its end."""
    job = await store.job(job_id)
    assert job is not None
    attempt = await store.begin_attempt(job, "swarm")
    assert attempt is not None
    if runs:
        store.attempt_running(attempt.id, job_id, node, time.time(), "poll")
        await store.flush()
    await store.finish(attempt, AttemptEnd(outcome, code, None, node, time.time(), "poll"))


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    """A store with one batch "jobs.yaml": flaky (fails with 75, then succeeds), gone
    (rejected, never ran), waiting (still queued)."""
    path = tmp_path / "covey.db"
    retry = RetryPolicy(attempts=2, backoff=0.0, on_exit_codes=(75,))
    specs = [
        JobSpec(image="busybox", command=("true",), name="flaky", retry=retry, index=4),
        JobSpec(image="busybox", command=("true",), name="gone"),
        JobSpec(image="busybox", command=("true",), name="waiting"),
    ]
    async with Store.open(path) as store:
        _, (flaky, gone, _), _ = await store.create_batch(specs, name="jobs.yaml")
        await ran(store, flaky, "node-1", Outcome.FAILED, 75)
        await ran(store, flaky, "node-2", Outcome.SUCCEEDED, 0)
        await ran(store, gone, None, Outcome.REJECTED, None, runs=False)
        await store.create_batch([], name="empty")
    return path


async def test_the_store_reads_every_attempt_and_each_wait(db: Path) -> None:
    async with Store.open(db, readonly=True) as store:
        tl = await store.timeline("jobs.yaml")  # by name
        assert tl is not None
        by_id = await store.timeline(tl.batch.id)
        assert by_id is not None and by_id.spans == tl.spans
        assert await store.timeline("nope") is None
    assert [(s.name, s.n, s.node, s.outcome, s.exit_code, s.index) for s in tl.spans] == [
        ("flaky", 1, "node-1", "failed", 75, 4),
        ("flaky", 2, "node-2", "succeeded", 0, 4),
        ("gone", 1, None, "rejected", None, None),
    ]
    first, second, gone = tl.spans
    assert first.queued == tl.batch.created
    assert (
        first.created
        <= (first.started or 0)
        <= (first.ended or 0)
        <= second.queued
        <= second.created
    )
    assert gone.started is None and gone.ended is not None
    waits = {(w.state, w.until is None) for w in tl.waits}
    assert waits == {("queued", False), ("retrying", False), ("queued", True)}


async def test_the_command_writes_each_format(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    async with Store.open(db, readonly=True) as store:
        (flaky,) = await store.jobs(name="flaky")
    assert await timeline.command(db, "jobs.yaml", None, False) == 0  # the batch's name
    assert capsys.readouterr().out == f"timeline-{flaky.batch_id}.html\n"
    page = await anyio.Path(tmp_path / f"timeline-{flaky.batch_id}.html").read_bytes()
    assert len(parse(page).rects) == 3
    assert await timeline.command(db, flaky.id, tmp_path / "t.png", True) == 0  # a job's id
    doc = json.loads(capsys.readouterr().out)
    assert (doc["batch"], doc["attempts"], doc["jobs"]) == (flaky.batch_id, 3, 2)
    assert (await anyio.Path(tmp_path / "t.png").read_bytes()).startswith(b"\x89PNG")
    assert await timeline.command(db, "flaky", tmp_path / "t.svg", False) == 0  # a job's name
    ET.fromstring(await anyio.Path(tmp_path / "t.svg").read_bytes())


async def test_the_command_refuses_what_it_cannot_draw(db: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"unknown picture format '\.pdf': use \.html"):
        await timeline.command(db, "jobs.yaml", tmp_path / "t.pdf", False)
    with pytest.raises(StoreError, match="no job or batch 'nope'"):
        await timeline.command(db, "nope", None, False)
    with pytest.raises(StoreError, match="has no attempts yet: nothing to draw"):
        await timeline.command(db, "empty", None, False)
